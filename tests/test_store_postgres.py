"""idwall.store.postgres: the backend for several nodes composed of its parts (core, trust, sessions, workers,
signing, directory, listen). What the composition must give: every method SQLiteStore has, with the same
signature (so no caller can tell the backends apart, and a method main gives SQLite alone fails here), every
method of each store protocol the gateway types against, each from exactly one part, and one database on which a
trust change, a renewal, a session, a kill, a sign request and a worker's acknowledgement are one ledger chain
that a second node reads as it was written. Each part's own rules are in tests/test_store_postgres_*.py and,
run against both backends, tests/test_store_sqlite_*.py.

Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from idwall import pki
from idwall.cluster import WorkerStore
from idwall.killswitch import KillStore
from idwall.store import PostgresStore, Store
from idwall.model import LedgerDraft, Renewal, RenewEffect, Signer, WorkerRow
from idwall.store.postgres.core import PostgresCore
from idwall.store.postgres.directory import DirectoryRecords
from idwall.store.postgres.sessions import SessionRecords
from idwall.store.postgres.signing import SignRequestRecords
from idwall.store.postgres.trust import TrustRecords
from idwall.store.postgres.workers import WorkerRecords
from idwall.store.sqlite import SQLiteStore
from tests.helpers.records import NOW, sign_request
from tests.helpers.store import defined_twice, dump, enroll, login, opened

PARTS = (TrustRecords, SessionRecords, WorkerRecords, SignRequestRecords, DirectoryRecords, PostgresCore)
#: PostgreSQL's own: claiming a shared database at ``init --store``, LISTEN, liveness writes outside the lock
POSTGRES_ONLY = {"create_bootstrap_invite", "listening", "write_volatile"}
#: the raw escape hatches: the same parameters, but ``fn`` takes the backend's own kind of connection
RAW = {"read", "write"}


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_two_backends_have_the_same_methods_with_the_same_signatures() -> None:
    ours, theirs = _public(PostgresStore), _public(SQLiteStore)
    assert sorted(set(theirs) - set(ours)) == [], "SQLiteStore has these and PostgresStore does not"
    assert sorted(set(ours) - set(theirs)) == sorted(POSTGRES_ONLY)
    for name, signature in theirs.items():
        assert inspect.iscoroutinefunction(getattr(PostgresStore, name)), f"PostgresStore.{name} is not async"
        if name in RAW:
            assert list(ours[name].parameters) == list(signature.parameters), name
        else:
            assert ours[name] == signature, f"PostgresStore.{name}{ours[name]} but SQLiteStore.{name}{signature}"


@pytest.mark.parametrize("name", sorted(_public(Store)))
def test_every_method_of_the_interface_has_the_same_signature(name: str) -> None:
    method = getattr(PostgresStore, name)
    assert inspect.iscoroutinefunction(method), name
    assert inspect.signature(method) == inspect.signature(getattr(Store, name)), name


@pytest.mark.parametrize("protocol", [KillStore, WorkerStore], ids=lambda p: p.__name__)
def test_the_store_has_every_method_the_kill_switch_and_the_cluster_call(protocol: type) -> None:
    for name, value in vars(protocol).items():
        if callable(value) and not name.startswith("_"):
            ours = getattr(PostgresStore, name, None)
            assert ours is not None and inspect.iscoroutinefunction(ours), f"PostgresStore.{name}"
            assert list(inspect.signature(value).parameters) == list(inspect.signature(ours).parameters), name


def test_each_method_comes_from_one_part() -> None:
    """A method two parts define would be resolved by the order of the bases: one would silently win."""
    assert defined_twice(PARTS) == []


async def test_one_database_holds_one_chain_across_the_parts_that_another_node_reads(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key) as one, opened(pg_url, ledger_key=key) as other:
        alice = await enroll(one, "alice", groups=("eng",))  # trust
        session = await login(one, alice)  # sessions
        device = alice.device
        assert device.cert_sha256 is not None
        await one.create_renewal(Renewal("ren-1", device.id, "alice", "CSR", b"K" * 32, "begun", NOW, NOW + 300),
                                 max_open=3, forget_before=0)
        await other.perform_action(  # a renewal signed on the other node
            signer=Signer("alice", alice.credential.id, 1, 2, False),
            effect=RenewEffect(device.id, "alice", device.cert_sha256, b"N" * 32, "PEM-NEW", NOW + 86400, b"K" * 32),
            now=NOW, draft=LedgerDraft("device.renew", "alice", device.id, {}))
        await one.create_sign_request(dataclasses.replace(sign_request(), device_id=device.id), max_per_device=8)
        result = await other.kill(scope="group", target="eng", revoke_devices=True, now=NOW + 1,
                                  draft=LedgerDraft("kill", "token:t1", "eng", {"scope": "group", "target": "eng",
                                                                               "reason": "x", "revoke_devices": True}))
        await one.register_worker(WorkerRow("w1", "host", 1, None, NOW, NOW), forget_before=0)  # workers
        event_id = await one.kill_event_id(result.audit_seq)
        assert event_id is not None
        await one.ack_events("w1", [(event_id, 2)], now=NOW + 2)
        assert result.sessions == (session.id,) and result.devices == (device.id,)
        assert await other.event_acks(event_id) == {"w1": 2}
        assert (await other.get_renewal("ren-1")).status == "renewed"  # type: ignore[union-attr]
        assert (await other.get_sign_request(sign_request().id)).device_id == device.id  # type: ignore[union-attr]
        [listed] = await other.directory_users()
        assert [(d.id, d.status) for d in listed.devices] == [(device.id, "revoked")]
        entries = await other.search_ledger()
        assert entries == await one.ledger_entries()
        assert await dump(one) == await dump(other)
    assert [e["type"] for e in entries] == ["device.enroll", "session.login", "device.renew", "kill"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert all(entry["prev"] == previous["hash"] for previous, entry in zip(entries, entries[1:]))
