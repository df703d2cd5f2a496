"""What is live, in SQLite: a certificate's device, user and session, login ceremonies, sessions, the kill
switch's revocations, the trust events other processes follow, and the ledger read back.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from ...audit import ids_digest, revokes_passkeys
from ...encoding import b64url_encode
from ...model import Ceremony, Event, KillResult, LedgerDraft, Resolved, Session
from ..base import AlreadyUsed, Expired
from .core import SQLiteCore, credential_from_row, device_from_row, session_from_row, user_from_row


KILL_SCOPES = ("session", "device", "user", "group", "all")


def kill_counts(sessions: list[str], devices: list[str], passkeys: list[str]) -> dict[str, Any]:
    """What a kill's ledger entry records of what it cut: counts and digests (the ids go to kill_revocations)."""
    return {"sessions_revoked": len(sessions), "sessions_sha256": ids_digest(sessions),
            "devices_revoked": len(devices), "devices_sha256": ids_digest(devices),
            "passkeys_revoked": len(passkeys), "passkeys_sha256": ids_digest(passkeys)}


#: the kill scopes whose connections every node finds in its own registry by the scope's target (connections are
#: indexed by device and user, and "all" is every one): their events need not carry what the kill revoked. A
#: group's connections are indexed by the groups they resolved with, which may be older than the store's, and a
#: session scope's revoked device may have connections without a session: those events carry the ids.
INDEXED_SCOPES = frozenset({"device", "user", "all"})


def kill_event(scope: str, target: str | None, sessions: list[str], devices: list[str], *, revoke_devices: bool,
               audit_seq: int) -> dict[str, Any]:
    """The payload of a kill's trust event: its scope and counts, and the revoked ids only where a node needs them
    to find the connections (a kill of 10,000 sessions ships no 10,000 ids to every node; the ids stay queryable
    in kill_revocations)."""
    payload: dict[str, Any] = {"scope": scope, "target": target, "revoke_devices": revoke_devices,
                               "audit_seq": audit_seq, "sessions_revoked": len(sessions),
                               "devices_revoked": len(devices)}
    if scope not in INDEXED_SCOPES:
        payload.update(sessions=sorted(sessions), devices=sorted(devices))
    return payload


#: no kill's pending row names session ``s``: a kill revokes from its commit on, and its sessions' own rows say so
#: only once it has been written out (idwall.store.settle). NOT IN, so a kill reading 10,000 sessions builds the set
#: of pending ids once.
NOT_KILLED = "s.id NOT IN (SELECT j.value FROM kill_pending p, json_each(p.sessions) j)"
#: when a pending kill revoked session ``s`` (NULL: none did)
_KILLED_AT = ("(SELECT p.at FROM kill_pending p, json_each(p.sessions) j WHERE j.value = s.id LIMIT 1)"
              " AS killed_at")


def killed_session(row: Any) -> Session:
    """A session row read with ``killed_at``: revoked by a kill whose sessions are not written out yet, it says so."""
    session = session_from_row(row)
    if session.revoked_at is None and row["killed_at"] is not None:
        return dataclasses.replace(session, revoked_at=row["killed_at"], revoke_reason="kill")
    return session

#: the tightest fresh_auth a live incident imposes on user $1 (NULL: none)
FRESH_AUTH_SQL = ("SELECT MIN(r.fresh_auth) FROM incident_restrictions r WHERE r.user_id = $1 AND r.kind = 'fresh_auth'"
                  " AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = r.incident_id AND i.ended_at IS NULL)")


class SessionRecords(SQLiteCore):
    """Certificates resolved, ceremonies, sessions, kills, trust events and the ledger's pages."""

    async def resolve_certificate(self, cert_sha256: bytes, *, now: float) -> Resolved | None:
        """Map a connection's certificate to device, user, credentials and newest live session."""

        def read(conn: sqlite3.Connection) -> Resolved | None:
            row = conn.execute("SELECT * FROM devices WHERE cert_sha256 = ?", (cert_sha256,)).fetchone()
            if row is None:
                return None
            # the PEM stays in the store: a connection holds this record for its whole life and never needs it
            device = dataclasses.replace(device_from_row(row), cert_pem=None)
            user = user_from_row(conn.execute("SELECT * FROM users WHERE id = ?", (device.user_id,)).fetchone())
            creds = tuple(credential_from_row(r) for r in conn.execute(
                "SELECT * FROM credentials WHERE device_id = ?", (device.id,)).fetchall())
            srow = conn.execute(
                f"SELECT * FROM sessions s WHERE s.device_id = ? AND s.cert_sha256 = ? AND s.revoked_at IS NULL"
                f" AND s.expires_at > ? AND {NOT_KILLED} ORDER BY s.auth_time DESC LIMIT 1",
                (device.id, cert_sha256, now)).fetchone()
            # the step-up a live incident imposes on this user (raise_fresh_auth), read in the same snapshot
            (fresh_auth,) = conn.execute(FRESH_AUTH_SQL.replace("$1", "?"), (user.id,)).fetchone()
            return Resolved(device, user, creds, session_from_row(srow) if srow else None, fresh_auth=fresh_auth)

        return await self.read(read)

    async def create_ceremony(self, ceremony: Ceremony, *, max_per_device: int | None = None) -> None:
        """Store a ceremony; expired ones go, and a device keeps only its ``max_per_device`` newest."""

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ceremonies WHERE expires_at <= ?", (self._clock(),))
            if max_per_device is not None and ceremony.device_id is not None:
                conn.execute("DELETE FROM ceremonies WHERE device_id = ? AND rowid NOT IN (SELECT rowid FROM"
                             " ceremonies WHERE device_id = ? ORDER BY rowid DESC LIMIT ?)",
                             (ceremony.device_id, ceremony.device_id, max(max_per_device - 1, 0)))
            conn.execute(
                "INSERT INTO ceremonies (id, kind, nonce, binding, user_id, device_id, payload, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ceremony.id, ceremony.kind, ceremony.nonce, ceremony.binding, ceremony.user_id,
                 ceremony.device_id, ceremony.payload, ceremony.expires_at))

        await self.write(tx)

    async def consume_ceremony(self, ceremony_id: str, *, kind: str, now: float) -> Ceremony:
        """Delete and return a ceremony: each challenge can be answered once."""

        def tx(conn: sqlite3.Connection) -> Ceremony:
            row = conn.execute("DELETE FROM ceremonies WHERE id = ? AND kind = ? RETURNING *",
                               (ceremony_id, kind)).fetchone()
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

        def tx(conn: sqlite3.Connection) -> int:
            dev = conn.execute("SELECT status FROM devices WHERE id = ?", (session.device_id,)).fetchone()
            if dev is None or dev["status"] != "active":
                raise AlreadyUsed("this device is not active; it cannot log in")
            updated = conn.execute("UPDATE credentials SET sign_count = ? WHERE id = ? AND sign_count = ?",
                                   (new_sign_count, session.credential_id, expected_sign_count))
            if updated.rowcount != 1:
                raise AlreadyUsed("the passkey's signature counter changed during this login; try again")
            conn.execute(
                "INSERT INTO sessions (id, user_id, device_id, credential_id, cert_sha256, amr_json, auth_time,"
                " created_at, expires_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session.id, session.user_id, session.device_id, session.credential_id, session.cert_sha256,
                 json.dumps(list(session.amr)), session.auth_time, session.created_at, session.expires_at,
                 session.last_seen))
            seq = self._append(conn, draft)
            self._event(conn, "session.login", {"session": session.id, "device": session.device_id,
                                                "user": session.user_id}, session.created_at)
            return seq

        return await self.write(tx)

    async def record_anomaly(self, draft: LedgerDraft) -> int:
        return await self.write(lambda conn: self._append(conn, draft))

    async def append_ledger(self, draft: LedgerDraft) -> int:
        return await self.write(lambda conn: self._append(conn, draft))

    async def end_session(self, session_id: str, *, now: float, reason: str, draft: LedgerDraft | None) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            row = conn.execute(f"UPDATE sessions AS s SET revoked_at = ?, revoke_reason = ? WHERE s.id = ?"
                               f" AND s.revoked_at IS NULL AND {NOT_KILLED} RETURNING device_id, user_id",
                               (now, reason, session_id)).fetchone()
            if row is None:
                return
            if draft is not None:
                self._append(conn, draft)
            self._event(conn, "session.end", {"session": session_id, "device": row["device_id"],
                                              "user": row["user_id"], "reason": reason}, now)

        await self.write(tx)

    async def touch_sessions(self, last_seen: dict[str, float]) -> None:
        """Record when sessions were last used (batched off the request path)."""
        if not last_seen:
            return

        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE sessions SET last_seen = MAX(last_seen, ?) WHERE id = ?",
                             [(t, sid) for sid, t in last_seen.items()])

        await self.write(tx)

    async def get_session(self, session_id: str) -> Session | None:
        row = await self.read(lambda c: c.execute(f"SELECT s.*, {_KILLED_AT} FROM sessions s WHERE s.id = ?",
                                                  (session_id,)).fetchone())
        return killed_session(row) if row else None

    async def had_session(self, device_id: str, cert_sha256: bytes) -> bool:
        """Whether this device certificate ever had a session (so a login prompt can say it *ended*)."""
        row = await self.read(lambda c: c.execute(
            "SELECT 1 FROM sessions WHERE device_id = ? AND cert_sha256 = ? LIMIT 1",
            (device_id, cert_sha256)).fetchone())
        return row is not None

    async def live_sessions(self, *, now: float) -> list[Session]:
        rows = await self.read(lambda c: c.execute(
            f"SELECT * FROM sessions s WHERE s.revoked_at IS NULL AND s.expires_at > ? AND {NOT_KILLED}"
            f" ORDER BY s.created_at", (now,)).fetchall())
        return [session_from_row(r) for r in rows]

    async def kill(self, *, scope: str, target: str | None, revoke_devices: bool, now: float,
                   draft: LedgerDraft) -> KillResult:
        """Revoke every matching live session (and device when asked), durably, with its ledger entry.

        The ledger entry's ``data`` gets how many sessions and devices were cut and a digest of their ids
        (:func:`kill_counts`); the device ids go to ``kill_revocations`` and the session ids to ``kill_pending`` in
        the same transaction (see :mod:`idwall.store.settle`).
        """
        if scope not in KILL_SCOPES:
            raise ValueError(f"unknown kill scope {scope!r}")

        def tx(conn: sqlite3.Connection) -> KillResult:
            where, args = {
                "session": ("s.id = ?", [target]),
                "device": ("s.device_id = ?", [target]),
                "user": ("s.user_id = ?", [target]),
                "group": ("EXISTS (SELECT 1 FROM json_each(u.groups_json) g WHERE g.value = ?)", [target]),
                "all": ("1 = 1", []),
            }[scope]
            found = conn.execute(
                f"SELECT s.id, s.user_id FROM sessions s JOIN users u ON u.id = s.user_id"
                f" WHERE s.revoked_at IS NULL AND s.expires_at > ? AND {NOT_KILLED} AND {where}",
                [now, *args]).fetchall()
            sessions = sorted(r["id"] for r in found)
            devices: list[str] = []
            if revoke_devices:
                dwhere, dargs = {
                    "session": ("d.id IN (SELECT device_id FROM sessions WHERE id = ?)", [target]),
                    "device": ("d.id = ?", [target]),
                    "user": ("d.user_id = ?", [target]),
                    "group": ("EXISTS (SELECT 1 FROM json_each(u.groups_json) g WHERE g.value = ?)", [target]),
                    "all": ("1 = 1", []),
                }[scope]
                devices = [r["id"] for r in conn.execute(
                    f"SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id"
                    f" WHERE d.status != 'revoked' AND {dwhere}", dargs).fetchall()]
                conn.executemany("UPDATE devices SET status = 'revoked', revoked_at = ? WHERE id = ?",
                                 [(now, did) for did in devices])
            # a lost device's passkeys, even when an earlier kill already revoked its certificate
            passkeys = sorted(b64url_encode(bytes(r[0])) for r in conn.execute(
                "UPDATE credentials SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL RETURNING id",
                (now, target)).fetchall()) if revokes_passkeys(scope, revoke_devices) else []
            users = sorted({r["user_id"] for r in found})
            data = dict(draft.data, **kill_counts(sessions, devices, passkeys))
            seq = self._append(conn, LedgerDraft(draft.type, draft.actor, draft.subject, data, draft.approval))
            conn.executemany("INSERT INTO kill_revocations (audit_seq, kind, id) VALUES (?, 'device', ?)",
                             [(seq, i) for i in devices])
            if sessions:  # one row, not one per session: idwall.store.settle writes them out after the answer
                conn.execute("INSERT INTO kill_pending (audit_seq, at, sessions) VALUES (?, ?, ?)",
                             (seq, now, json.dumps(sessions)))
            self._event(conn, "kill", kill_event(scope, target, sessions, devices, revoke_devices=revoke_devices,
                                                 audit_seq=seq), now)
            return KillResult(tuple(sessions), tuple(sorted(devices)), tuple(users), seq, tuple(passkeys))

        result = await self.write(tx)
        if result.sessions:
            self._settle_soon()
        return result

    async def _settle_pending(self) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            for row in conn.execute("DELETE FROM kill_pending RETURNING audit_seq, at, sessions").fetchall():
                ids = json.loads(row["sessions"])
                conn.executemany("UPDATE sessions SET revoked_at = ?, revoke_reason = 'kill' WHERE id = ?"
                                 " AND revoked_at IS NULL", [(row["at"], i) for i in ids])
                conn.executemany("INSERT OR IGNORE INTO kill_revocations (audit_seq, kind, id) VALUES (?, 'session', ?)",
                                 [(row["audit_seq"], i) for i in ids])

        await self.write(tx)

    async def kill_revocations(self, audit_seq: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The (sessions, devices) the kill recorded at ``audit_seq`` revoked, each sorted."""
        rows = await self.read(lambda c: c.execute(
            "SELECT kind, id FROM kill_revocations WHERE audit_seq = ? UNION ALL SELECT 'session', j.value"
            " FROM kill_pending p, json_each(p.sessions) j WHERE p.audit_seq = ? ORDER BY id",
            (audit_seq, audit_seq)).fetchall())
        return (tuple(r["id"] for r in rows if r["kind"] == "session"),
                tuple(r["id"] for r in rows if r["kind"] == "device"))

    async def events_after(self, event_id: int) -> list[Event]:
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id", (event_id,)).fetchall())
        return [Event(r["id"], r["kind"], json.loads(r["payload"]), r["time"]) for r in rows]

    async def last_event_id(self) -> int:
        row = await self.read(lambda c: c.execute("SELECT MAX(id) FROM events").fetchone())
        return row[0] or 0

    async def ledger_entries(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self.read(lambda c: c.execute(
            "SELECT entry FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall())
        return [json.loads(r["entry"]) for r in rows]
