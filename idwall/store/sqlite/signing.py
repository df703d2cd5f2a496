"""Sign requests in SQLite: created with a per-device bound, read, and moved from state to state by
compare-and-set (see :mod:`idwall.sign_requests`). Volatile writes: a request is not trust state."""

from __future__ import annotations

import sqlite3

from ...model import SignRequest
from ..base import AlreadyUsed, Expired, LimitReached, Missing
from .core import SQLiteCore

#: ended requests stay readable this long past their expiry, so a late poll is told why, not "unknown"
KEEP_AFTER_EXPIRY = 600.0


def _record(row: sqlite3.Row) -> SignRequest:
    return SignRequest(row["id"], bytes(row["link_hash"]), bytes(row["poll_hash"]), bytes(row["binding"]),
                       row["user_id"], row["device_id"], row["action_id"], row["action"], row["state"],
                       row["credential"], row["detail"], row["created_at"], row["expires_at"])


class SignRequestRecords(SQLiteCore):
    """The ``sign_requests`` table."""

    async def create_sign_request(self, request: SignRequest, *, max_per_device: int) -> None:
        """Store a new request; refuse (:class:`LimitReached`) past ``max_per_device`` live ones of its device."""

        def tx(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute("DELETE FROM sign_requests WHERE expires_at <= ?", (now - KEEP_AFTER_EXPIRY,))
            live = conn.execute("SELECT COUNT(*) FROM sign_requests WHERE device_id = ? AND expires_at > ? AND"
                                " state IN ('waiting', 'opened', 'signed')", (request.device_id, now)).fetchone()[0]
            if live >= max_per_device:
                raise LimitReached(f"{live} sign requests of this device are already waiting for a passkey; "
                                   "finish or let one expire first")
            conn.execute(
                "INSERT INTO sign_requests (id, link_hash, poll_hash, binding, user_id, device_id, action_id, action,"
                " state, credential, detail, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request.id, request.link_hash, request.poll_hash, request.binding, request.user_id,
                 request.device_id, request.action_id, request.action, request.state, request.credential,
                 request.detail, request.created_at, request.expires_at))

        await self._run(self._write_volatile, tx)

    async def get_sign_request(self, request_id: str) -> SignRequest | None:
        """The request, or None."""
        row = await self.read(lambda c: c.execute("SELECT * FROM sign_requests WHERE id = ?",
                                                  (request_id,)).fetchone())
        return _record(row) if row is not None else None

    async def move_sign_request(self, request_id: str, *, expect: tuple[str, ...], state: str,
                                credential: str | None, detail: str | None, now: float) -> SignRequest:
        """Move the request from one of ``expect`` to ``state`` (setting ``credential`` and ``detail``) at once.

        :class:`Missing`, :class:`Expired` past its expiry, :class:`AlreadyUsed` when it is in another state.
        """

        def tx(conn: sqlite3.Connection) -> SignRequest:
            row = conn.execute("SELECT * FROM sign_requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise Missing("no such sign request")
            if row["expires_at"] <= now:
                raise Expired("this sign request has expired; run the command again")
            if row["state"] not in expect:
                raise AlreadyUsed(f"this sign request is already {row['state']}")
            conn.execute("UPDATE sign_requests SET state = ?, credential = ?, detail = ? WHERE id = ?",
                         (state, credential, detail, request_id))
            return _record(conn.execute("SELECT * FROM sign_requests WHERE id = ?", (request_id,)).fetchone())

        return await self._run(self._write_volatile, tx)
