"""idwall.store.sqlite: the embedded backend composed of its parts (core, trust, sessions, workers).

What the composition must give: every method of each store protocol the rest of the gateway types against
(``Store``, the kill switch's ``KillStore``, the cluster's ``WorkerStore``), each from exactly one part, and
one file on which a trust change, a session, a kill and a worker's acknowledgement are one ledger chain and
survive a reopen. Each part's own rules are in tests/test_store_sqlite_{core,trust,sessions,workers}.py.

Tested on real files in ``tmp_path``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from idwall import pki
from idwall.cluster import WorkerStore
from idwall.connections import SCOPES
from idwall.killswitch import KillStore
from idwall.model import LedgerDraft, WorkerRow
from idwall.store.base import Store
from idwall.store.sqlite import KILL_SCOPES, SQLiteStore
from idwall.store.sqlite.core import SQLiteCore
from idwall.store.sqlite.directory import DirectoryRecords
from idwall.store.sqlite.renewals import RenewalRecords
from idwall.store.sqlite.sessions import SessionRecords
from idwall.store.sqlite.signing import SignRequestRecords
from idwall.store.sqlite.trust import TrustRecords
from idwall.store.sqlite.workers import WorkerRecords
from tests.helpers.records import NOW
from tests.helpers.store import defined_twice, dump, enroll, login, opened

PARTS = (TrustRecords, RenewalRecords, SessionRecords, WorkerRecords, SignRequestRecords, DirectoryRecords, SQLiteCore)


def _protocol_methods(protocol: type) -> list[str]:
    return sorted(name for name, value in vars(protocol).items()
                  if callable(value) and not name.startswith("_"))


@pytest.mark.parametrize("protocol", [Store, KillStore, WorkerStore], ids=lambda p: p.__name__)
def test_the_store_has_every_method_its_users_call_with_their_parameters(protocol: type) -> None:
    for name in _protocol_methods(protocol):
        ours = getattr(SQLiteStore, name, None)
        assert ours is not None, f"SQLiteStore has no {name}, which {protocol.__name__} promises"
        assert inspect.iscoroutinefunction(ours), f"SQLiteStore.{name} is not async"
        wanted = inspect.signature(getattr(protocol, name)).parameters
        given = inspect.signature(ours).parameters
        for param in wanted.values():
            assert param.name in given, f"SQLiteStore.{name} takes no {param.name!r}"
            assert given[param.name].kind == param.kind, f"SQLiteStore.{name}({param.name}) is passed differently"


def test_each_method_comes_from_one_part() -> None:
    """A method two parts define would be resolved by the order of the bases: one would silently win."""
    assert defined_twice(PARTS) == []


def test_the_store_and_the_registry_know_the_same_kill_scopes() -> None:
    assert KILL_SCOPES == SCOPES, "a scope the store can revoke must be one the registry can cut, and back"


async def test_one_file_holds_one_chain_across_the_parts_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "idwall.db"
    key = pki.generate_p256_key()
    async with opened(path, ledger_key=key) as store:
        alice = await enroll(store, "alice", groups=("eng",))  # trust
        session = await login(store, alice)  # sessions
        result = await store.kill(scope="group", target="eng", revoke_devices=True, now=NOW + 1,  # sessions
                                  draft=LedgerDraft("kill", "token:t1", "eng", {"scope": "group", "target": "eng",
                                                                               "reason": "x", "revoke_devices": True}))
        await store.register_worker(WorkerRow("w1", "host", 1, None, NOW, NOW), forget_before=0)  # workers
        event_id = await store.kill_event_id(result.audit_seq)
        assert event_id is not None
        await store.ack_events("w1", [(event_id, 2)], now=NOW + 2)
        assert result.sessions == (session.id,) and result.devices == (alice.device.id,)
        assert await store.event_acks(event_id) == {"w1": 2}
        entries = await store.ledger_entries()
    async with opened(path, ledger_key=key) as first:  # what the kill left for after its answer is written now
        before = await dump(first)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["type"] for e in entries] == ["device.enroll", "session.login", "kill"]
    assert all(entry["prev"] == previous["hash"] for previous, entry in zip(entries, entries[1:]))
    async with opened(path, ledger_key=key) as again:
        assert await dump(again) == before, "reopening (and so migrating again) changed the file"
        found = await again.resolve_certificate(alice.device.cert_sha256, now=NOW + 3)
        assert found is not None and found.device.status == "revoked" and found.session is None
