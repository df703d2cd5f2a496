"""idwall.store.sqlite.workers: which worker processes of a node are alive and what each acknowledged. A worker
announces itself (a restarted one keeps one row), heartbeats, and is forgotten when it stops or has been silent
too long, with its old acknowledgements; a kill's event is found by its ledger entry, and each worker's
acknowledgement of it says how many connections it closed. These are liveness signals, written without an fsync
of their own, so they must leave the trust writes after them exactly as durable as before.

Tested on a real SQLite file in ``tmp_path`` (helpers/store.py), with a second store on the same file standing
for another worker process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.model import WorkerRow
from idwall.store.sqlite import SQLiteStore
from tests.helpers.records import NOW
from tests.helpers.store import BACKENDS, draft, enroll, login, opened, place


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


def worker(id: str, *, heartbeat: float = NOW, pid: int = 100, nudge: str | None = None) -> WorkerRow:
    return WorkerRow(id, "node-1", pid, nudge, NOW - 60, heartbeat)


async def test_a_registered_worker_is_live_until_its_heartbeat_is_too_old(store: SQLiteStore) -> None:
    await store.register_worker(worker("w-1", nudge="\0idwall-w-1"), forget_before=NOW - 3600)
    await store.register_worker(worker("w-0", heartbeat=NOW - 30), forget_before=NOW - 3600)
    assert await store.live_workers(since=NOW - 30) == [worker("w-0", heartbeat=NOW - 30),
                                                        worker("w-1", nudge="\0idwall-w-1")]  # by id
    assert await store.live_workers(since=NOW - 29) == [worker("w-1", nudge="\0idwall-w-1")]
    await store.heartbeat_worker("w-0", NOW + 5)
    assert [w.id for w in await store.live_workers(since=NOW + 1)] == ["w-0"]


async def test_a_restarted_worker_keeps_one_row(store: SQLiteStore) -> None:
    await store.register_worker(worker("w-1", pid=100), forget_before=0)
    await store.register_worker(worker("w-1", pid=200, heartbeat=NOW + 1), forget_before=0)
    assert await store.live_workers(since=0) == [worker("w-1", pid=200, heartbeat=NOW + 1)]


async def test_a_heartbeat_of_an_unknown_worker_creates_nothing(store: SQLiteStore) -> None:
    await store.heartbeat_worker("w-ghost", NOW)
    assert await store.live_workers(since=0) == []


async def test_a_stopping_worker_is_forgotten(store: SQLiteStore) -> None:
    await store.register_worker(worker("w-1"), forget_before=0)
    await store.register_worker(worker("w-2"), forget_before=0)
    await store.remove_worker("w-1")
    await store.remove_worker("w-never")
    assert [w.id for w in await store.live_workers(since=0)] == ["w-2"]


async def test_registering_forgets_silent_workers_and_old_acknowledgements(store: SQLiteStore) -> None:
    await store.register_worker(worker("w-old", heartbeat=NOW - 7200), forget_before=0)
    await store.register_worker(worker("w-recent", heartbeat=NOW - 60), forget_before=0)
    await store.ack_events("w-old", [(1, 3)], now=NOW - 7200)
    await store.ack_events("w-recent", [(1, 2)], now=NOW - 60)
    await store.register_worker(worker("w-new"), forget_before=NOW - 3600)
    assert [w.id for w in await store.live_workers(since=0)] == ["w-new", "w-recent"]
    assert await store.event_acks(1) == {"w-recent": 2}


async def test_acknowledgements_say_what_each_worker_closed(store: SQLiteStore) -> None:
    await store.ack_events("w-1", [(7, 2), (8, 0)], now=NOW)
    await store.ack_events("w-2", [(7, 5)], now=NOW)
    await store.ack_events("w-1", [(7, 3)], now=NOW + 1)  # acknowledged again: the latest count stands
    await store.ack_events("w-3", [], now=NOW)
    assert await store.event_acks(7) == {"w-1": 3, "w-2": 5}
    assert await store.event_acks(8) == {"w-1": 0}
    assert await store.event_acks(9) == {}


async def test_a_kill_event_is_found_by_its_ledger_entry(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    await login(store, alice)
    first = await store.kill(scope="all", target=None, revoke_devices=False, now=NOW, draft=draft("kill", "x"))
    second = await store.kill(scope="user", target="alice", revoke_devices=False, now=NOW, draft=draft("kill", "y"))
    events = {e.payload.get("audit_seq"): e.id for e in await store.events_after(0) if e.kind == "kill"}
    assert await store.kill_event_id(first.audit_seq) == events[first.audit_seq]
    assert await store.kill_event_id(second.audit_seq) == events[second.audit_seq]
    assert await store.kill_event_id(second.audit_seq + 1) is None
    # a ledger seq that is not a kill's (the login's) names no kill event
    assert await store.kill_event_id(2) is None


async def test_another_process_sees_workers_and_acknowledgements(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as one, opened(tmp_path / "idwall.db") as other:
        await one.register_worker(worker("w-1"), forget_before=0)
        await one.ack_events("w-1", [(4, 1)], now=NOW)
        await one.heartbeat_worker("w-1", NOW + 2)
        assert await other.live_workers(since=NOW + 2) == [worker("w-1", heartbeat=NOW + 2)]
        assert await other.event_acks(4) == {"w-1": 1}


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # SQLite's fsync setting; PostgreSQL has no such knob
async def test_liveness_writes_leave_trust_writes_fully_durable(store: SQLiteStore) -> None:
    def synchronous() -> object:
        return store.read(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])

    await store.register_worker(worker("w-1"), forget_before=0)
    assert await synchronous() == 2
    await store.heartbeat_worker("w-1", NOW + 1)
    await store.ack_events("w-1", [(1, 0)], now=NOW)
    await store.remove_worker("w-1")
    assert await synchronous() == 2  # FULL again: the next ledger entry is synced as before
    assert await store.append_ledger(draft()) == 1
