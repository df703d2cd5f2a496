"""Sign requests in PostgreSQL (an action begun on the command line, signed on a one-time page; see
:mod:`idwall.sign_requests`); the same rules and errors as :mod:`idwall.store.sqlite.signing`. Volatile writes
(without the trust write lock): a request is not trust state. A move locks the request's row before it checks the
state, so of two nodes moving one request at once exactly one wins, and the count of a device's live requests is
taken under a per-device advisory lock, so two nodes cannot both take its last place.
"""

from __future__ import annotations

from ...model import SignRequest
from ..base import AlreadyUsed, Expired, LimitReached, Missing
# the same record from a row, whichever driver read it (both rows are read by column name)
from ..sqlite.signing import KEEP_AFTER_EXPIRY, _record
from .core import Conn, PostgresCore

#: the advisory lock key space of the per-device bound ("IDWS"); the device id's hash picks the key in it
_DEVICE_LOCK = 0x49445753


class SignRequestRecords(PostgresCore):
    """The ``sign_requests`` table."""

    async def create_sign_request(self, request: SignRequest, *, max_per_device: int) -> None:
        """Store a new request; refuse (:class:`LimitReached`) past ``max_per_device`` live ones of its device."""

        async def tx(conn: Conn) -> None:
            now = self._clock()
            # two-key form (space, hashtext(device)): a lock per device, released at commit or rollback
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _DEVICE_LOCK, request.device_id)
            await conn.execute("DELETE FROM sign_requests WHERE expires_at <= $1", now - KEEP_AFTER_EXPIRY)
            live = await conn.fetchval("SELECT COUNT(*) FROM sign_requests WHERE device_id = $1 AND expires_at > $2"
                                       " AND state IN ('waiting', 'opened', 'signed')", request.device_id, now)
            if live >= max_per_device:
                raise LimitReached(f"{live} sign requests of this device are already waiting for a passkey; "
                                   "finish or let one expire first")
            await conn.execute(
                "INSERT INTO sign_requests (id, link_hash, poll_hash, binding, user_id, device_id, action_id, action,"
                " state, credential, detail, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                request.id, request.link_hash, request.poll_hash, request.binding, request.user_id,
                request.device_id, request.action_id, request.action, request.state, request.credential,
                request.detail, request.created_at, request.expires_at)

        await self.write_volatile(tx)

    async def get_sign_request(self, request_id: str) -> SignRequest | None:
        """The request, or None."""
        row = await self._fetchrow("SELECT * FROM sign_requests WHERE id = $1", request_id)
        return _record(row) if row is not None else None

    async def move_sign_request(self, request_id: str, *, expect: tuple[str, ...], state: str,
                                credential: str | None, detail: str | None, now: float) -> SignRequest:
        """Move the request from one of ``expect`` to ``state`` (setting ``credential`` and ``detail``) at once.

        :class:`Missing`, :class:`Expired` past its expiry, :class:`AlreadyUsed` when it is in another state.
        """

        async def tx(conn: Conn) -> SignRequest:
            # FOR UPDATE: a second node moving the same request waits here, then sees the state the first left
            row = await conn.fetchrow("SELECT * FROM sign_requests WHERE id = $1 FOR UPDATE", request_id)
            if row is None:
                raise Missing("no such sign request")
            if row["expires_at"] <= now:
                raise Expired("this sign request has expired; run the command again")
            if row["state"] not in expect:
                raise AlreadyUsed(f"this sign request is already {row['state']}")
            moved = await conn.fetchrow("UPDATE sign_requests SET state = $1, credential = $2, detail = $3"
                                        " WHERE id = $4 RETURNING *", state, credential, detail, request_id)
            return _record(moved)

        return await self.write_volatile(tx)
