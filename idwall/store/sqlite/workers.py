"""Which worker processes are alive and what each acknowledged (``serve --workers N``, see idwall.cluster)."""

from __future__ import annotations

import sqlite3

from ...model import WorkerRow
from .core import SQLiteCore


class WorkerRecords(SQLiteCore):
    """The workers table and kill acknowledgements."""

    async def register_worker(self, worker: WorkerRow, *, forget_before: float) -> None:
        """Announce a worker process; forget workers and acks older than ``forget_before`` while at it."""

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE heartbeat < ?", (forget_before,))
            conn.execute("DELETE FROM event_acks WHERE acked_at < ?", (forget_before,))
            conn.execute("INSERT OR REPLACE INTO workers (id, host, pid, nudge, started_at, heartbeat)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (worker.id, worker.host, worker.pid, worker.nudge, worker.started_at, worker.heartbeat))

        await self._run(self._write_volatile, tx)

    async def heartbeat_worker(self, worker_id: str, now: float) -> None:
        """Record that ``worker_id``'s event poller is alive at ``now``."""
        await self._run(self._write_volatile, lambda c: c.execute(
            "UPDATE workers SET heartbeat = ? WHERE id = ?", (now, worker_id)))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that is stopping (nobody waits for it any more)."""
        await self._run(self._write_volatile, lambda c: c.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))

    async def live_workers(self, *, since: float) -> list[WorkerRow]:
        """Workers whose last heartbeat is at or after ``since``."""
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM workers WHERE heartbeat >= ? ORDER BY id", (since,)).fetchall())
        return [WorkerRow(r["id"], r["host"], r["pid"], r["nudge"], r["started_at"], r["heartbeat"]) for r in rows]

    async def ack_events(self, worker_id: str, acks: list[tuple[int, int]], *, now: float) -> None:
        """Record that ``worker_id`` applied each ``(event_id, connections_closed)`` of ``acks``."""
        await self._run(self._write_volatile, lambda c: c.executemany(
            "INSERT OR REPLACE INTO event_acks (event_id, worker_id, connections_closed, acked_at)"
            " VALUES (?, ?, ?, ?)", [(event_id, worker_id, closed, now) for event_id, closed in acks]))

    async def event_acks(self, event_id: int) -> dict[str, int]:
        """Who acknowledged ``event_id``: worker id -> connections that worker closed for it."""
        rows = await self.read(lambda c: c.execute(
            "SELECT worker_id, connections_closed FROM event_acks WHERE event_id = ?", (event_id,)).fetchall())
        return {r["worker_id"]: r["connections_closed"] for r in rows}

    async def kill_event_id(self, audit_seq: int) -> int | None:
        """The id of the ``kill`` event committed with ledger entry ``audit_seq`` (scans from the newest)."""
        row = await self.read(lambda c: c.execute(
            "SELECT id FROM events WHERE kind = 'kill' AND json_extract(payload, '$.audit_seq') = ?"
            " ORDER BY id DESC LIMIT 1", (audit_seq,)).fetchone())
        return row["id"] if row else None
