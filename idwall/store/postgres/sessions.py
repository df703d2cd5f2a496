"""What is live, in PostgreSQL: a certificate's device, user and session, login ceremonies, sessions, the kill
switch's revocations, the trust events every node follows, and the ledger read back. The same rules and errors
as :mod:`idwall.store.sqlite.sessions`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ...encoding import b64url_encode
from ...model import Ceremony, Event, KillResult, LedgerDraft, Resolved, Session
from ..base import AlreadyUsed, Expired
from ..sqlite.core import credential_from_row, device_from_row, session_from_row, user_from_row
from ...audit import revokes_passkeys
from ..sqlite.sessions import FRESH_AUTH_SQL, KILL_SCOPES, kill_counts, kill_event, killed_session
from .core import Conn, PostgresCore, rowcount

# The sessions (and devices) a kill scope covers, with ``u`` the user row; ``$2`` is the target.
_IN_GROUP = "EXISTS (SELECT 1 FROM json_array_elements_text(u.groups_json::json) g WHERE g = $2)"
_KILL_SESSIONS = {"session": "s.id = $2", "device": "s.device_id = $2", "user": "s.user_id = $2",
                  "group": _IN_GROUP, "all": "TRUE"}
_KILL_DEVICES = {"session": "d.id IN (SELECT device_id FROM sessions WHERE id = $2)", "device": "d.id = $2",
                 "user": "d.user_id = $2", "group": _IN_GROUP, "all": "TRUE"}
#: no kill's pending row names session ``s`` (see idwall.store.settle; as SQLite's)
NOT_KILLED = "s.id NOT IN (SELECT unnest(sessions) FROM kill_pending)"
#: when a pending kill revoked session ``s`` (NULL: none did)
_KILLED_AT = "(SELECT p.at FROM kill_pending p WHERE s.id = ANY(p.sessions) LIMIT 1) AS killed_at"


class SessionRecords(PostgresCore):
    """Certificates resolved, ceremonies, sessions, kills, trust events and the ledger's pages."""

    async def resolve_certificate(self, cert_sha256: bytes, *, now: float) -> Resolved | None:
        """Map a connection's certificate to device, user, credentials and newest live session."""

        async def read(conn: Conn) -> Resolved | None:
            # one snapshot: a kill committing between these reads cannot pair a revoked device with a live session
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                row = await conn.fetchrow("SELECT * FROM devices WHERE cert_sha256 = $1", cert_sha256)
                if row is None:
                    return None
                # the PEM stays in the store: a connection holds this record for its whole life
                device = dataclasses.replace(device_from_row(row), cert_pem=None)
                user = user_from_row(await conn.fetchrow("SELECT * FROM users WHERE id = $1", device.user_id))
                creds = tuple(credential_from_row(r) for r in await conn.fetch(
                    "SELECT * FROM credentials WHERE device_id = $1", device.id))
                srow = await conn.fetchrow(
                    f"SELECT * FROM sessions s WHERE s.device_id = $1 AND s.cert_sha256 = $2 AND s.revoked_at IS NULL"
                    f" AND s.expires_at > $3 AND {NOT_KILLED} ORDER BY s.auth_time DESC LIMIT 1",
                    device.id, cert_sha256, now)
                fresh_auth = await conn.fetchval(FRESH_AUTH_SQL, user.id)
                return Resolved(device, user, creds, session_from_row(srow) if srow else None, fresh_auth=fresh_auth)

        return await self.read(read)

    async def create_ceremony(self, ceremony: Ceremony, *, max_per_device: int | None = None) -> None:
        """Store a ceremony; expired ones go, and a device keeps only its ``max_per_device`` newest."""

        async def tx(conn: Conn) -> None:
            await conn.execute("DELETE FROM ceremonies WHERE expires_at <= $1", self._clock())
            if max_per_device is not None and ceremony.device_id is not None:
                await conn.execute("DELETE FROM ceremonies WHERE device_id = $1 AND made NOT IN (SELECT made FROM"
                                   " ceremonies WHERE device_id = $1 ORDER BY made DESC LIMIT $2)",
                                   ceremony.device_id, max(max_per_device - 1, 0))
            await conn.execute(
                "INSERT INTO ceremonies (id, kind, nonce, binding, user_id, device_id, payload, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                ceremony.id, ceremony.kind, ceremony.nonce, ceremony.binding, ceremony.user_id,
                ceremony.device_id, ceremony.payload, ceremony.expires_at)

        await self.write(tx)

    async def consume_ceremony(self, ceremony_id: str, *, kind: str, now: float) -> Ceremony:
        """Delete and return a ceremony: each challenge can be answered once."""

        async def tx(conn: Conn) -> Ceremony:
            row = await conn.fetchrow("DELETE FROM ceremonies WHERE id = $1 AND kind = $2 RETURNING *",
                                      ceremony_id, kind)
            if row is None:
                raise AlreadyUsed("this challenge is unknown or was already used; start again")
            ceremony = Ceremony(row["id"], row["kind"], bytes(row["nonce"]), bytes(row["binding"]), row["user_id"],
                                row["device_id"], row["payload"], row["expires_at"])
            if ceremony.expires_at <= now:
                raise Expired("this challenge has expired; start again")
            return ceremony

        return await self.write(tx)

    async def create_session(self, session: Session, *, expected_sign_count: int, new_sign_count: int,
                             draft: LedgerDraft) -> int:
        """Store the new sign count (compare-and-set) and the session, and append the login entry."""

        async def tx(conn: Conn) -> int:
            status = await conn.fetchval("SELECT status FROM devices WHERE id = $1", session.device_id)
            if status != "active":
                raise AlreadyUsed("this device is not active; it cannot log in")
            updated = await conn.execute("UPDATE credentials SET sign_count = $1 WHERE id = $2 AND sign_count = $3",
                                         new_sign_count, session.credential_id, expected_sign_count)
            if rowcount(updated) != 1:
                raise AlreadyUsed("the passkey's signature counter changed during this login; try again")
            await conn.execute(
                "INSERT INTO sessions (id, user_id, device_id, credential_id, cert_sha256, amr_json, auth_time,"
                " created_at, expires_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                session.id, session.user_id, session.device_id, session.credential_id, session.cert_sha256,
                json.dumps(list(session.amr)), session.auth_time, session.created_at, session.expires_at,
                session.last_seen)
            seq = await self._append(conn, draft)
            await self._event(conn, "session.login", {"session": session.id, "device": session.device_id,
                                                      "user": session.user_id}, session.created_at)
            return seq

        return await self.write(tx)

    async def record_anomaly(self, draft: LedgerDraft) -> int:
        return await self.write(lambda conn: self._append(conn, draft))

    async def append_ledger(self, draft: LedgerDraft) -> int:
        return await self.write(lambda conn: self._append(conn, draft))

    async def end_session(self, session_id: str, *, now: float, reason: str, draft: LedgerDraft | None) -> None:
        async def tx(conn: Conn) -> None:
            row = await conn.fetchrow(
                f"UPDATE sessions s SET revoked_at = $1, revoke_reason = $2 WHERE s.id = $3 AND s.revoked_at IS NULL"
                f" AND {NOT_KILLED} RETURNING device_id, user_id", now, reason, session_id)
            if row is None:
                return
            if draft is not None:
                await self._append(conn, draft)
            await self._event(conn, "session.end", {"session": session_id, "device": row["device_id"],
                                                    "user": row["user_id"], "reason": reason}, now)

        await self.write(tx)

    async def touch_sessions(self, last_seen: dict[str, float]) -> None:
        """Record when sessions were last used (batched off the request path; ``last_seen`` never goes back)."""
        if not last_seen:
            return
        await self.write_volatile(lambda conn: conn.executemany(
            "UPDATE sessions SET last_seen = GREATEST(last_seen, $1) WHERE id = $2",
            [(t, sid) for sid, t in last_seen.items()]))

    async def get_session(self, session_id: str) -> Session | None:
        row = await self._fetchrow(f"SELECT s.*, {_KILLED_AT} FROM sessions s WHERE s.id = $1", session_id)
        return killed_session(row) if row else None

    async def had_session(self, device_id: str, cert_sha256: bytes) -> bool:
        """Whether this device certificate ever had a session (so a login prompt can say it *ended*)."""
        row = await self._fetchrow("SELECT 1 FROM sessions WHERE device_id = $1 AND cert_sha256 = $2 LIMIT 1",
                                   device_id, cert_sha256)
        return row is not None

    async def live_sessions(self, *, now: float) -> list[Session]:
        rows = await self._fetch(f"SELECT * FROM sessions s WHERE s.revoked_at IS NULL AND s.expires_at > $1"
                                 f" AND {NOT_KILLED} ORDER BY s.created_at", now)
        return [session_from_row(r) for r in rows]

    async def kill(self, *, scope: str, target: str | None, revoke_devices: bool, now: float,
                   draft: LedgerDraft) -> KillResult:
        """Revoke every matching live session (and device when asked), durably, with its ledger entry.

        The ledger entry's ``data`` gets how many were cut and a digest of their ids; the session ids go to
        ``kill_pending`` in the same transaction (as SQLite's; see :mod:`idwall.store.settle`).
        """
        if scope not in KILL_SCOPES:
            raise ValueError(f"unknown kill scope {scope!r}")
        args = (now,) if scope == "all" else (now, target)  # "all" has no target to bind as $2

        async def tx(conn: Conn) -> KillResult:
            rows = await conn.fetch(
                f"SELECT s.id, s.user_id FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.revoked_at IS NULL"
                f" AND s.expires_at > $1 AND {NOT_KILLED} AND {_KILL_SESSIONS[scope]}", *args)
            sessions = sorted(r["id"] for r in rows)
            users = sorted({r["user_id"] for r in rows})
            devices: list[str] = []
            if revoke_devices:
                # the "session" scope finds its device through the session, revoked a moment ago: still there
                drows = await conn.fetch(
                    f"UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id IN (SELECT d.id FROM devices d"
                    f" JOIN users u ON u.id = d.user_id WHERE d.status != 'revoked' AND {_KILL_DEVICES[scope]})"
                    f" RETURNING id", *args)
                devices = sorted(r["id"] for r in drows)
            # a lost device's passkeys, even when an earlier kill already revoked its certificate
            passkeys = sorted(b64url_encode(bytes(r["id"])) for r in await conn.fetch(
                "UPDATE credentials SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL RETURNING id",
                now, target)) if revokes_passkeys(scope, revoke_devices) else []
            data = dict(draft.data, **kill_counts(sessions, devices, passkeys))
            seq = await self._append(conn, LedgerDraft(draft.type, draft.actor, draft.subject, data, draft.approval))
            if devices:
                await conn.execute("INSERT INTO kill_revocations (audit_seq, kind, id)"
                                   " SELECT $1::bigint, 'device', unnest($2::text[])", seq, devices)
            if sessions:  # one row, not one per session: idwall.store.settle writes them out after the answer
                await conn.execute("INSERT INTO kill_pending (audit_seq, at, sessions) VALUES ($1, $2, $3)",
                                   seq, now, sessions)
            await self._event(conn, "kill", kill_event(scope, target, sessions, devices,
                                                       revoke_devices=revoke_devices, audit_seq=seq), now)
            return KillResult(tuple(sessions), tuple(devices), tuple(users), seq, tuple(passkeys))

        result = await self.write(tx)
        if result.sessions:
            self._settle_soon()
        return result

    async def _settle_pending(self) -> None:
        async def tx(conn: Conn) -> None:
            # locks the rows it deletes: a node settling at the same time waits, then finds nothing left
            for row in await conn.fetch("DELETE FROM kill_pending RETURNING audit_seq, at, sessions"):
                await conn.execute("UPDATE sessions SET revoked_at = $1, revoke_reason = 'kill'"
                                   " WHERE id = ANY($2::text[]) AND revoked_at IS NULL", row["at"], row["sessions"])
                await conn.execute("INSERT INTO kill_revocations (audit_seq, kind, id) SELECT $1::bigint, 'session',"
                                   " unnest($2::text[]) ON CONFLICT DO NOTHING", row["audit_seq"], row["sessions"])

        await self.write_volatile(tx)

    async def kill_revocations(self, audit_seq: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The (sessions, devices) the kill recorded at ``audit_seq`` revoked, each sorted."""
        rows = await self._fetch("SELECT kind, id FROM kill_revocations WHERE audit_seq = $1 UNION ALL SELECT"
                                 " 'session', unnest(sessions) FROM kill_pending WHERE audit_seq = $1 ORDER BY id",
                                 audit_seq)
        return (tuple(r["id"] for r in rows if r["kind"] == "session"),
                tuple(r["id"] for r in rows if r["kind"] == "device"))

    async def events_after(self, event_id: int) -> list[Event]:
        """The events after ``event_id``, in order; up to (not including) one a write of this process has
        committed but not yet returned (the poller reads it next time, after the writer acted on it)."""
        rows = await self._fetch("SELECT * FROM events WHERE id > $1 ORDER BY id", event_id)
        rows = rows[:self._visible([r["id"] for r in rows])]
        return [Event(r["id"], r["kind"], json.loads(r["payload"]), r["time"]) for r in rows]

    async def last_event_id(self) -> int:
        return await self._run(lambda conn: conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM events"))

    async def ledger_entries(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._fetch("SELECT entry FROM ledger WHERE seq > $1 ORDER BY seq LIMIT $2", after, limit)
        return [json.loads(r["entry"]) for r in rows]
