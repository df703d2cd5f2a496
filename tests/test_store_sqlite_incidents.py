"""The store's incidents on both backends (a real SQLite file, a fresh PostgreSQL schema): stages in order, each with its ledger entry, the restrictions
tied to a live incident, suspect passkeys, and nothing changed when a stage is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idwall.errors import Conflict
from idwall.model import Incident, LedgerDraft, StageWork
from idwall.store.base import Missing
from tests.helpers.records import NOW
from tests.helpers.store import BACKENDS, dump, enroll, login, opened, place


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


def _incident(id: str = "inc-1", stages: int = 2) -> Incident:
    return Incident(id, "org-wide-reset", "test", "alice", NOW, {"stages": []}, stages, 0, 0)


def _start(id: str = "inc-1") -> LedgerDraft:
    return LedgerDraft("incident.start", "alice", id, {"incident_id": id})


def _stage(number: int, id: str = "inc-1") -> LedgerDraft:
    return LedgerDraft("incident.stage", "alice", id, {"incident_id": id, "number": number})


async def test_a_stage_sends_devices_back_marks_passkeys_revokes_tokens_and_records_the_ids(store: Any) -> None:
    alice = await enroll(store, "alice", admin=True)
    bob = await enroll(store, "bob", groups=("eng",))
    seq = await store.start_incident(_incident(), _start())
    commit = await store.commit_incident_stage(
        "inc-1", 1, StageWork(users=("bob",), reapprove=True, suspect=True, fresh_auth=300,
                              block_code_enrollment=True), result={"users": 1}, now=NOW, draft=_stage(1))
    assert commit.devices_reapproval == (bob.device.id,)
    assert (await store.get_device(bob.device.id)).status == "pending_approval"
    assert (await store.get_device(alice.device.id)).status == "active"
    assert await store.credential_suspect(bob.credential.id) == "inc-1"
    assert await store.credential_suspect(alice.credential.id) is None
    assert await store.enrollment_blocked("bob") == "inc-1" and await store.enrollment_blocked("alice") is None
    entry = (await store.ledger_entries(after=seq))[0]
    assert entry["type"] == "incident.stage" and entry["data"]["devices_reapproval"] == [bob.device.id]
    assert len(entry["data"]["credentials_suspect"]) == 1
    (row,) = await store.incident_stages("inc-1")
    assert row.number == 1 and row.audit_seq == entry["seq"] and row.result["audit_seq"] == entry["seq"]
    assert (await store.get_incident("inc-1")).stages_committed == 1


async def test_stages_commit_only_in_order_and_a_refused_stage_changes_nothing(store: Any) -> None:
    await enroll(store, "bob")
    await store.start_incident(_incident(), _start())
    before = await dump(store)
    with pytest.raises(Conflict, match="stage 2 is not the next one"):
        await store.commit_incident_stage("inc-1", 2, StageWork(users=("bob",), suspect=True), result={},
                                          now=NOW, draft=_stage(2))
    with pytest.raises(Missing):
        await store.commit_incident_stage("nope", 1, StageWork(users=("bob",)), result={}, now=NOW,
                                          draft=_stage(1, "nope"))
    assert await dump(store) == before
    await store.commit_incident_stage("inc-1", 1, StageWork(users=("bob",)), result={}, now=NOW, draft=_stage(1))
    with pytest.raises(Conflict, match="stage 1 is not the next one"):
        await store.commit_incident_stage("inc-1", 1, StageWork(users=("bob",)), result={}, now=NOW,
                                          draft=_stage(1))


async def test_restrictions_hold_while_the_incident_is_active_and_revocations_outlive_it(store: Any) -> None:
    bob = await enroll(store, "bob")
    await login(store, bob)
    await store.start_incident(_incident(stages=1), _start())
    await store.commit_incident_stage("inc-1", 1, StageWork(users=("bob",), suspect=True, fresh_auth=120,
                                                            block_code_enrollment=True),
                                      result={}, now=NOW, draft=_stage(1))
    resolved = await store.resolve_certificate(bob.device.cert_sha256, now=NOW)
    assert resolved is not None and resolved.fresh_auth == 120
    assert [i.id for i in await store.active_incidents()] == ["inc-1"]
    await store.end_incident("inc-1", now=NOW + 10, draft=LedgerDraft("incident.end", "alice", "inc-1",
                                                                     {"incident_id": "inc-1"}))
    resolved = await store.resolve_certificate(bob.device.cert_sha256, now=NOW + 10)
    assert resolved is not None and resolved.fresh_auth is None
    assert await store.enrollment_blocked("bob") is None
    assert await store.credential_suspect(bob.credential.id) == "inc-1"  # a finding, not a restriction
    assert await store.active_incidents() == []
    with pytest.raises(Conflict, match="already ended"):
        await store.end_incident("inc-1", now=NOW, draft=LedgerDraft("incident.end", "alice", "inc-1", {}))
    with pytest.raises(Conflict, match="has ended"):
        await store.commit_incident_stage("inc-1", 2, StageWork(users=()), result={}, now=NOW, draft=_stage(2))


async def test_the_snapshot_counts_what_each_user_holds(store: Any) -> None:
    bob = await enroll(store, "bob", groups=("eng",))
    await enroll(store, "bob")
    await login(store, bob)
    await enroll(store, "carol", status="pending_approval")
    snap = await store.incident_snapshot(now=NOW)
    assert [u.id for u in snap.users] == ["bob", "carol"]
    assert snap.sessions == {"bob": 1} and snap.devices == {"bob": 2, "carol": 1}
    assert snap.credentials == {"bob": 2, "carol": 1}
    assert snap.device_owners[bob.device.id] == "bob"
