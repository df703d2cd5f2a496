"""idwall.store.postgres.workers: the workers of every node in one table. A worker announced on one node is seen
with its nudge address (an abstract unix address, which begins with a NUL byte PostgreSQL's TEXT cannot hold)
by the others, and its acknowledgement of a kill is read by whichever node committed the kill.

(The rules themselves run against this backend in tests/test_store_sqlite_workers.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

from idwall.model import WorkerRow
from tests.helpers.records import NOW
from tests.helpers.store import draft, enroll, login, opened


async def test_another_node_sees_workers_and_their_acknowledgements(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        worker = WorkerRow("node-b:17", "node-b", 17, "\0idwall-ab12", NOW - 60, NOW)
        await one.register_worker(worker, forget_before=0)
        victim = await login(other, await enroll(other, "alice"))
        result = await other.kill(scope="user", target="alice", revoke_devices=False, now=NOW,
                                  draft=draft("kill", "alice"))
        event_id = await one.kill_event_id(result.audit_seq)
        assert event_id is not None and result.sessions == (victim.id,)
        await one.ack_events(worker.id, [(event_id, 3)], now=NOW)
        assert await other.live_workers(since=NOW) == [worker]  # the NUL byte and all
        assert await other.event_acks(event_id) == {"node-b:17": 3}


async def test_an_acknowledgement_keeps_a_worker_id_with_quotes_exactly(pg_url: str) -> None:
    """Acknowledgements are written as one simple query with the values in it: a worker id that tries to end
    the string literal stays data."""
    async with opened(pg_url) as one, opened(pg_url) as other:
        odd = "node'); DELETE FROM event_acks; --"
        await one.ack_events("plain", [(7, 1)], now=NOW)
        await one.ack_events(odd, [(7, 2), (8, 0)], now=NOW)
        assert await other.event_acks(7) == {odd: 2, "plain": 1}
        assert await other.event_acks(8) == {odd: 0}
