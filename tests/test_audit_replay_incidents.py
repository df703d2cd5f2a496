"""Replay of incident entries on the committed ledger vector: what a stage does to devices, passkeys and tokens,
and what an incident token may do."""

from __future__ import annotations

from typing import Any

import pytest

from idwall.audit import LedgerState
from tests.helpers.ledger import LEDGER_KEY, fails, full_ledger, gen


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return full_ledger()


def _replay(entries: list[dict[str, Any]], upto: int) -> LedgerState:
    state = LedgerState()
    for entry in entries[:upto]:
        state.apply(entry)
    return state


def _seq(entries: list[dict[str, Any]], type_: str, subject: str, nth: int = 0) -> int:
    return [e["seq"] for e in entries if e["type"] == type_ and e["subject"] == subject][nth]


def test_a_stage_sends_a_device_back_to_approval_and_a_later_approval_is_valid(full: list[dict[str, Any]]) -> None:
    stage = _seq(full, "incident.stage", "inc-1")
    assert _replay(full, stage - 1).devices["dev-dave-laptop"].status == "active"
    assert _replay(full, stage).devices["dev-dave-laptop"].status == "pending_approval"
    assert _replay(full, _seq(full, "device.approve", "dev-dave-laptop")).devices["dev-dave-laptop"].status == "active"


def test_a_stage_marks_passkeys_suspect_for_good(full: list[dict[str, Any]]) -> None:
    stage = _seq(full, "incident.stage", "inc-1", 1)
    (marked,) = full[stage - 1]["data"]["credentials_suspect"]
    assert not _replay(full, stage - 1).credentials[marked].suspect
    assert _replay(full, len(full)).credentials[marked].suspect  # the incident ended; the finding stays


def test_incidents_are_tracked_to_their_end(full: list[dict[str, Any]]) -> None:
    state = _replay(full, len(full))
    assert {i.id: (i.actor, i.stages, i.committed, i.ended_by is not None) for i in state.incidents.values()} == {
        "inc-1": ("alice", 2, 2, True), "inc-2": ("token:tok-ir", 1, 1, True)}


def test_a_stage_by_someone_else_than_the_incident_actor_is_refused(full: list[dict[str, Any]]) -> None:
    stage = _seq(full, "incident.stage", "inc-1")
    forged = [dict(e) for e in full[:stage]]
    forged[stage - 1] = {**forged[stage - 1], "actor": "carol"}
    fails(gen.reseal(forged, LEDGER_KEY, stage), stage, "incident inc-1 is run by alice")
