"""Which worker processes (of every node) are alive and what each acknowledged, in PostgreSQL; the same rules as
:mod:`idwall.store.sqlite.workers`. Liveness state, not trust state: written without the trust write lock.
"""

from __future__ import annotations

from ...model import WorkerRow
from .core import Conn, PostgresCore


def _encode(nudge: str | None) -> bytes | None:
    # an abstract unix address starts with NUL, which PostgreSQL's TEXT cannot hold
    return None if nudge is None else nudge.encode("utf-8")


class WorkerRecords(PostgresCore):
    """The workers table and kill acknowledgements."""

    async def register_worker(self, worker: WorkerRow, *, forget_before: float) -> None:
        """Announce a worker process; forget workers and acks older than ``forget_before`` while at it."""

        async def tx(conn: Conn) -> None:
            await conn.execute("DELETE FROM workers WHERE heartbeat < $1", forget_before)
            await conn.execute("DELETE FROM event_acks WHERE acked_at < $1", forget_before)
            await conn.execute(
                "INSERT INTO workers (id, host, pid, nudge, started_at, heartbeat) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, nudge = EXCLUDED.nudge,"
                " started_at = EXCLUDED.started_at, heartbeat = EXCLUDED.heartbeat",
                worker.id, worker.host, worker.pid, _encode(worker.nudge), worker.started_at, worker.heartbeat)

        await self.write_volatile(tx)

    async def heartbeat_worker(self, worker_id: str, now: float) -> None:
        """Record that ``worker_id``'s event poller is alive at ``now``."""
        await self.write_volatile(lambda c: c.execute("UPDATE workers SET heartbeat = $1 WHERE id = $2",
                                                      now, worker_id))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that is stopping (nobody waits for it any more)."""
        await self.write_volatile(lambda c: c.execute("DELETE FROM workers WHERE id = $1", worker_id))

    async def live_workers(self, *, since: float) -> list[WorkerRow]:
        """Workers whose last heartbeat is at or after ``since``."""
        rows = await self._fetch("SELECT * FROM workers WHERE heartbeat >= $1 ORDER BY id", since)
        return [WorkerRow(r["id"], r["host"], r["pid"], None if r["nudge"] is None else bytes(r["nudge"]).decode("utf-8"),
                          r["started_at"], r["heartbeat"]) for r in rows]

    async def ack_events(self, worker_id: str, acks: list[tuple[int, int]], *, now: float) -> None:
        """Record that ``worker_id`` applied each ``(event_id, connections_closed)`` of ``acks``.

        One round trip: a kill's answer waits for this row, and this process has just queued the teardown of
        every connection the kill cut, so whatever else the write waited for (a BEGIN, a statement to prepare on
        this pooled connection) would come back only after that teardown. Hence one statement, no transaction,
        sent as a simple query with its values written in (integers, a float, and our own worker id quoted).
        """
        if not acks:
            return
        rows = ", ".join(f"({int(event_id)}, {_literal(worker_id)}, {int(closed)}, {float(now)!r}::float8)"
                         for event_id, closed in acks)
        await self._run(lambda c: c.execute(
            f"INSERT INTO event_acks (event_id, worker_id, connections_closed, acked_at) VALUES {rows}"
            " ON CONFLICT (event_id, worker_id) DO UPDATE SET connections_closed = EXCLUDED.connections_closed,"
            " acked_at = EXCLUDED.acked_at"))

    async def event_acks(self, event_id: int) -> dict[str, int]:
        """Who acknowledged ``event_id``: worker id -> connections that worker closed for it."""
        rows = await self._fetch("SELECT worker_id, connections_closed FROM event_acks WHERE event_id = $1", event_id)
        return {r["worker_id"]: r["connections_closed"] for r in rows}

    async def kill_event_id(self, audit_seq: int) -> int | None:
        """The id of the ``kill`` event committed with ledger entry ``audit_seq`` (scans from the newest)."""
        return await self._run(lambda c: c.fetchval(
            "SELECT id FROM events WHERE kind = 'kill' AND (payload::json ->> 'audit_seq')::bigint = $1"
            " ORDER BY id DESC LIMIT 1", audit_seq))


def _literal(text: str) -> str:
    """``text`` as an SQL string literal (PostgreSQL's standard_conforming_strings: only ``'`` is special)."""
    if "\x00" in text:
        raise ValueError("an SQL string cannot hold a NUL character")
    return "'" + text.replace("'", "''") + "'"
