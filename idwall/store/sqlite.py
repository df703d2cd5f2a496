"""The embedded SQLite backend.

One connection, driven from one dedicated thread, so the event loop never
blocks on disk and writes are strictly serialised. Every write runs in
``BEGIN IMMEDIATE`` (the database write lock is taken up front, so two
processes cannot both read the ledger head and fork the chain) and commits with
``synchronous=FULL`` (a committed ledger entry survives power loss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from .. import audit
from .base import (
    ActionEffect,
    ActivateEffect,
    AdminEffect,
    AlreadyUsed,
    Ceremony,
    Credential,
    Device,
    Enrollment,
    Event,
    Expired,
    Invite,
    InviteEffect,
    KillResult,
    LastAdmin,
    LedgerDraft,
    LimitReached,
    Missing,
    NewDevice,
    Resolved,
    Session,
    WorkerRow,
    Signer,
    StoreError,
    Token,
    TokenEffect,
    User,
)
from ..encoding import b64url_decode
from ..errors import Conflict, Forbidden

T = TypeVar("T")

KILL_SCOPES = ("session", "device", "user", "group", "all")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("idwall.store") / "migrations"
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's version; return the version reached."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, sql in _migrations():
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current


def _groups(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["name"], row["email"], _groups(row["groups_json"]), bool(row["admin"]),
                row["created_at"])


def _device(row: sqlite3.Row) -> Device:
    return Device(row["id"], row["user_id"], row["name"], row["status"], row["cert_sha256"], row["cert_pem"],
                  row["enrolled_at"], row["not_after"], row["approved_by"], row["revoked_at"], row["enrollment_id"])


def _credential(row: sqlite3.Row) -> Credential:
    return Credential(bytes(row["id"]), row["user_id"], row["device_id"], bytes(row["public_key"]), row["alg"],
                      row["sign_count"], row["created_at"])


def _session(row: sqlite3.Row) -> Session:
    return Session(row["id"], row["user_id"], row["device_id"], bytes(row["credential_id"]),
                   bytes(row["cert_sha256"]), tuple(json.loads(row["amr_json"])), row["auth_time"],
                   row["created_at"], row["expires_at"], row["last_seen"], row["revoked_at"], row["revoke_reason"])


def _invite(row: sqlite3.Row) -> Invite:
    return Invite(row["id"], row["user_id"], row["name"], row["email"], _groups(row["groups_json"]),
                  bool(row["admin"]), bool(row["bootstrap"]), row["created_by"], row["created_at"],
                  row["expires_at"], row["used_at"])


def _enrollment(row: sqlite3.Row) -> Enrollment:
    return Enrollment(row["id"], bytes(row["nonce"]), bytes(row["challenge"]), bytes(row["spki_sha256"]),
                      row["csr_pem"], row["device_name"], row["invite_id"], row["user_id"], row["name"],
                      row["email"], _groups(row["groups_json"]), bool(row["admin"]), bool(row["bootstrap"]),
                      row["status"], row["device_id"], row["created_at"], row["expires_at"])


def _token(row: sqlite3.Row) -> Token:
    return Token(row["id"], row["name"], bytes(row["hash"]), tuple(json.loads(row["scopes_json"])),
                 row["created_by"], row["created_at"], row["expires_at"], row["revoked_at"])


class SQLiteStore:
    """The :class:`~idwall.store.base.Store` on one SQLite file."""

    def __init__(self, path: Path, *, ledger_key: ec.EllipticCurvePrivateKey | None,
                 clock: Callable[[], float] | None = None) -> None:
        self.path = Path(path)
        self._ledger_key = ledger_key
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idwall-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._clock = clock or time.time

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        migrate(conn)
        self._conn = conn

    async def open(self) -> None:
        """Open the file (creating and migrating it when new)."""
        await self._run(self._connect)

    async def close(self) -> None:
        """Close the connection and stop the store thread."""
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError("the store is unavailable; nothing was changed",
                             log_detail=f"sqlite: {exc}") from None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "store is not open"
        return fn(self._conn)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside one IMMEDIATE transaction; roll back on any exception."""
        assert self._conn is not None, "store is not open"
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._read, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._write, fn)

    def _append(self, conn: sqlite3.Connection, draft: LedgerDraft) -> int:
        """Seal ``draft`` onto the head of the chain; must run inside a write transaction."""
        if self._ledger_key is None:
            raise StoreError("this store was opened without the ledger key; it cannot record trust changes")
        row = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row["seq"] + 1, bytes(row["hash"])) if row else (1, audit.GENESIS_PREV)
        entry = audit.new_entry(seq=seq, time=self._clock(), type=draft.type, actor=draft.actor,
                                subject=draft.subject, data=draft.data, approval=draft.approval)
        sealed = audit.seal(entry, prev=prev, key=self._ledger_key)
        conn.execute("INSERT INTO ledger (seq, hash, entry) VALUES (?, ?, ?)",
                     (seq, b64url_decode(sealed["hash"]), json.dumps(sealed, sort_keys=True)))
        return seq

    @staticmethod
    def _event(conn: sqlite3.Connection, kind: str, payload: dict[str, Any], now: float) -> None:
        conn.execute("INSERT INTO events (kind, payload, time) VALUES (?, ?, ?)",
                     (kind, json.dumps(payload, sort_keys=True), now))

    # -- invites and users ----------------------------------------------------------------------

    async def create_invite(self, invite: Invite, draft: LedgerDraft | None) -> int | None:
        """Store an invite (only its hash); append ``draft`` when given (the bootstrap invite has none)."""

        def tx(conn: sqlite3.Connection) -> int | None:
            conn.execute(
                "INSERT INTO invites (id, user_id, name, email, groups_json, admin, bootstrap, created_by,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (invite.id, invite.user_id, invite.name, invite.email, json.dumps(list(invite.groups)),
                 int(invite.admin), int(invite.bootstrap), invite.created_by, invite.created_at,
                 invite.expires_at),
            )
            return self._append(conn, draft) if draft else None

        return await self.write(tx)

    async def get_invite(self, invite_id: str) -> Invite | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM invites WHERE id = ?", (invite_id,)).fetchone())
        return _invite(row) if row else None

    async def get_user(self, user_id: str) -> User | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
        return _user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self.read(lambda c: c.execute("SELECT * FROM users ORDER BY id").fetchall())
        return [_user(r) for r in rows]

    async def has_admin(self) -> bool:
        """Whether any administrator has enrolled (the bootstrap has happened)."""
        row = await self.read(lambda c: c.execute("SELECT 1 FROM users WHERE admin = 1 LIMIT 1").fetchone())
        return row is not None

    # -- enrollment -----------------------------------------------------------------------------

    async def create_enrollment(self, enrollment: Enrollment, *, max_open: int | None = None,
                                max_pending_devices: int | None = None, forget_before: float | None = None) -> None:
        """Store a begun enrollment.

        Anyone may begin one, so the bounds are checked in the same transaction as the insert: at most
        ``max_open`` unexpired begun enrollments per invite (or, self-service, per user), and a self-service
        one only while the user has fewer than ``max_pending_devices`` devices waiting for approval. Begun
        enrollments that expired before ``forget_before`` are deleted. Raises :class:`LimitReached`.
        """

        def tx(conn: sqlite3.Connection) -> None:
            if forget_before is not None:
                conn.execute("DELETE FROM enrollments WHERE status = 'begun' AND expires_at <= ?", (forget_before,))
            if max_open is not None:
                if enrollment.invite_id is not None:
                    where, key = "invite_id = ?", enrollment.invite_id
                else:
                    where, key = "invite_id IS NULL AND user_id = ?", enrollment.user_id
                row = conn.execute(f"SELECT COUNT(*) FROM enrollments WHERE status = 'begun' AND expires_at > ?"
                                   f" AND {where}", (enrollment.created_at, key)).fetchone()
                if row[0] >= max_open:
                    raise LimitReached(f"{row[0]} enrollments are already open for this "
                                       f"{'code' if enrollment.invite_id else 'user'}; finish one or wait until "
                                       "they expire")
            if max_pending_devices is not None and enrollment.invite_id is None:
                self._check_pending_devices(conn, enrollment.user_id, max_pending_devices)
            conn.execute(
                "INSERT INTO enrollments (id, nonce, challenge, spki_sha256, csr_pem, device_name, invite_id,"
                " user_id, name, email, groups_json, admin, bootstrap, status, device_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (enrollment.id, enrollment.nonce, enrollment.challenge, enrollment.spki_sha256, enrollment.csr_pem,
                 enrollment.device_name, enrollment.invite_id, enrollment.user_id, enrollment.name,
                 enrollment.email, json.dumps(list(enrollment.groups)), int(enrollment.admin),
                 int(enrollment.bootstrap), enrollment.status, enrollment.device_id, enrollment.created_at,
                 enrollment.expires_at),
            )

        await self.write(tx)

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        row = await self.read(
            lambda c: c.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone())
        return _enrollment(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone())
        return _device(row) if row else None

    async def credential_exists(self, credential_id: bytes) -> bool:
        row = await self.read(
            lambda c: c.execute("SELECT 1 FROM credentials WHERE id = ?", (credential_id,)).fetchone())
        return row is not None

    async def user_credentials(self, user_id: str) -> list[Credential]:
        rows = await self.read(lambda c: c.execute(
            "SELECT c.* FROM credentials c JOIN devices d ON d.id = c.device_id"
            " WHERE c.user_id = ? AND d.status = 'active'", (user_id,)).fetchall())
        return [_credential(r) for r in rows]

    @staticmethod
    def _check_pending_devices(conn: sqlite3.Connection, user_id: str, limit: int) -> None:
        row = conn.execute("SELECT COUNT(*) FROM devices WHERE user_id = ? AND status = 'pending_approval'",
                           (user_id,)).fetchone()
        if row[0] >= limit:
            raise LimitReached(f"{row[0]} devices of this user are already waiting for approval; approve or "
                               "revoke them first")

    @staticmethod
    def _check_an_admin_remains(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM users WHERE admin = 1 LIMIT 1").fetchone() is None:
            raise LastAdmin("this would leave no administrator; grant another one first")

    async def complete_enrollment(self, *, enrollment_id: str, new: NewDevice, now: float,
                                  draft: LedgerDraft, max_pending_devices: int | None = None) -> int:
        """Consume the enrollment (and its invite), write user, device and credential, and append the entry.

        Raises :class:`AlreadyUsed` when the enrollment or invite was consumed by a concurrent finish,
        :class:`Conflict` when the credential ID is registered already (to anyone), :class:`LimitReached`
        when a self-service device would make more than ``max_pending_devices`` wait for approval, and
        :class:`LastAdmin` when an invite's role would demote the last administrator.
        """

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
            if row is None:
                raise Missing("unknown enrollment")
            enrollment = _enrollment(row)
            if enrollment.status != "begun":
                raise AlreadyUsed("this enrollment was already completed; start a new one")
            if enrollment.expires_at <= now:
                raise Expired("this enrollment challenge has expired; start again")
            if enrollment.invite_id is not None:
                used = conn.execute("UPDATE invites SET used_at = ? WHERE id = ? AND used_at IS NULL"
                                    " AND expires_at > ?", (now, enrollment.invite_id, now))
                if used.rowcount != 1:
                    raise AlreadyUsed("this enrollment code was already used or has expired")
            if conn.execute("SELECT 1 FROM credentials WHERE id = ?", (new.credential.id,)).fetchone():
                raise Conflict("this passkey is already registered; use a new passkey for this device")
            user = new.user
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user.id,)).fetchone() is None:
                conn.execute(
                    "INSERT INTO users (id, name, email, groups_json, admin, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (user.id, user.name, user.email, json.dumps(list(user.groups)), int(user.admin),
                     user.created_at))
            elif enrollment.invite_id is not None:
                conn.execute("UPDATE users SET name = ?, email = ?, groups_json = ?, admin = ? WHERE id = ?",
                             (user.name, user.email, json.dumps(list(user.groups)), int(user.admin), user.id))
                self._check_an_admin_remains(conn)
            device = new.device
            if max_pending_devices is not None and enrollment.invite_id is None \
                    and device.status == "pending_approval":
                self._check_pending_devices(conn, user.id, max_pending_devices)
            conn.execute(
                "INSERT INTO devices (id, user_id, name, status, cert_sha256, cert_pem, enrolled_at, not_after,"
                " approved_by, revoked_at, enrollment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device.id, device.user_id, device.name, device.status, device.cert_sha256, device.cert_pem,
                 device.enrolled_at, device.not_after, device.approved_by, device.revoked_at,
                 device.enrollment_id))
            cred = new.credential
            conn.execute(
                "INSERT INTO credentials (id, user_id, device_id, public_key, alg, sign_count, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cred.id, cred.user_id, cred.device_id, cred.public_key, cred.alg, cred.sign_count,
                 cred.created_at))
            conn.execute("UPDATE enrollments SET status = ?, device_id = ? WHERE id = ?",
                         (device.status, device.id, enrollment_id))
            return self._append(conn, draft)

        return await self.write(tx)

    # -- connections, logins, sessions ----------------------------------------------------------

    async def resolve_certificate(self, cert_sha256: bytes, *, now: float) -> Resolved | None:
        """Map a connection's certificate to device, user, credentials and newest live session."""

        def read(conn: sqlite3.Connection) -> Resolved | None:
            row = conn.execute("SELECT * FROM devices WHERE cert_sha256 = ?", (cert_sha256,)).fetchone()
            if row is None:
                return None
            # the PEM stays in the store: a connection holds this record for its whole life and never needs it
            device = dataclasses.replace(_device(row), cert_pem=None)
            user = _user(conn.execute("SELECT * FROM users WHERE id = ?", (device.user_id,)).fetchone())
            creds = tuple(_credential(r) for r in conn.execute(
                "SELECT * FROM credentials WHERE device_id = ?", (device.id,)).fetchall())
            srow = conn.execute(
                "SELECT * FROM sessions WHERE device_id = ? AND cert_sha256 = ? AND revoked_at IS NULL"
                " AND expires_at > ? ORDER BY auth_time DESC LIMIT 1", (device.id, cert_sha256, now)).fetchone()
            return Resolved(device, user, creds, _session(srow) if srow else None)

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
            row = conn.execute("UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ?"
                               " AND revoked_at IS NULL RETURNING device_id, user_id",
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
        row = await self.read(lambda c: c.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone())
        return _session(row) if row else None

    async def had_session(self, device_id: str, cert_sha256: bytes) -> bool:
        """Whether this device certificate ever had a session (so a login prompt can say it *ended*)."""
        row = await self.read(lambda c: c.execute(
            "SELECT 1 FROM sessions WHERE device_id = ? AND cert_sha256 = ? LIMIT 1",
            (device_id, cert_sha256)).fetchone())
        return row is not None

    async def live_sessions(self, *, now: float) -> list[Session]:
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM sessions WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at",
            (now,)).fetchall())
        return [_session(r) for r in rows]

    # -- signed-action effects ------------------------------------------------------------------

    async def set_admin(self, user_id: str, admin: bool, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            updated = conn.execute("UPDATE users SET admin = ? WHERE id = ?", (int(admin), user_id))
            if updated.rowcount != 1:
                raise Missing(f"no user {user_id!r}")
            seq = self._append(conn, draft)
            self._event(conn, "user.changed", {"user": user_id}, self._clock())
            return seq

        return await self.write(tx)

    async def create_token(self, token: Token, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO tokens (id, name, hash, scopes_json, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.name, token.hash, json.dumps(list(token.scopes)), token.created_by,
                 token.created_at, token.expires_at))
            return self._append(conn, draft)

        return await self.write(tx)

    async def get_token_by_hash(self, token_hash: bytes) -> Token | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone())
        return _token(row) if row else None

    async def list_tokens(self) -> list[Token]:
        rows = await self.read(lambda c: c.execute("SELECT * FROM tokens ORDER BY created_at").fetchall())
        return [_token(r) for r in rows]

    async def revoke_token(self, token_id: str, *, now: float, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            updated = conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                   (now, token_id))
            if updated.rowcount != 1:
                raise Missing(f"no active token {token_id!r}")
            return self._append(conn, draft)

        return await self.write(tx)

    # -- kill -----------------------------------------------------------------------------------

    async def kill(self, *, scope: str, target: str | None, revoke_devices: bool, now: float,
                   draft: LedgerDraft) -> KillResult:
        """Revoke every matching live session (and device when asked), durably, with its ledger entry.

        The ledger entry's ``data`` gets the ids that were cut, so the record says exactly what happened.
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
            sessions = [r["id"] for r in conn.execute(
                f"SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id"
                f" WHERE s.revoked_at IS NULL AND s.expires_at > ? AND {where}", [now, *args]).fetchall()]
            conn.executemany("UPDATE sessions SET revoked_at = ?, revoke_reason = 'kill' WHERE id = ?",
                             [(now, sid) for sid in sessions])
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
            users = sorted({r["user_id"] for r in conn.execute(
                f"SELECT user_id FROM sessions WHERE id IN ({','.join('?' * len(sessions))})",
                sessions).fetchall()}) if sessions else []
            data = dict(draft.data, sessions=sorted(sessions), devices=sorted(devices))
            seq = self._append(conn, LedgerDraft(draft.type, draft.actor, draft.subject, data, draft.approval))
            self._event(conn, "kill", {"scope": scope, "target": target, "sessions": sorted(sessions),
                                       "devices": sorted(devices), "revoke_devices": revoke_devices,
                                       "audit_seq": seq}, now)
            return KillResult(tuple(sorted(sessions)), tuple(sorted(devices)), tuple(users), seq)

        return await self.write(tx)

    async def events_after(self, event_id: int) -> list[Event]:
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id", (event_id,)).fetchall())
        return [Event(r["id"], r["kind"], json.loads(r["payload"]), r["time"]) for r in rows]

    async def last_event_id(self) -> int:
        row = await self.read(lambda c: c.execute("SELECT MAX(id) FROM events").fetchone())
        return row[0] or 0

    # -- ledger ---------------------------------------------------------------------------------

    async def ledger_entries(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self.read(lambda c: c.execute(
            "SELECT entry FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall())
        return [json.loads(r["entry"]) for r in rows]

    # -- signed actions -------------------------------------------------------------------------

    async def get_credential(self, credential_id: bytes) -> Credential | None:
        """The stored credential (fresh, with its current sign count), or None."""
        row = await self.read(
            lambda c: c.execute("SELECT * FROM credentials WHERE id = ?", (credential_id,)).fetchone())
        return _credential(row) if row else None

    async def perform_action(self, *, signer: Signer, effect: ActionEffect, now: float,
                             draft: LedgerDraft) -> int:
        """Commit a signed action at once: the signer's sign count (compare-and-set), the effect, the entry.

        The signer's device must still be active and, when ``signer.must_be_admin``, the signer must still be
        an admin inside this transaction, so a concurrent revocation cannot slip an action through.
        Raises :class:`Forbidden`, :class:`AlreadyUsed` (counter raced, device not pending), :class:`Missing`.
        """

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT d.status, u.admin FROM credentials c JOIN devices d ON d.id = c.device_id"
                " JOIN users u ON u.id = c.user_id WHERE c.id = ? AND c.user_id = ?",
                (signer.credential_id, signer.user_id)).fetchone()
            if row is None or row["status"] != "active":
                raise Forbidden("the signing passkey is not on an active device of the signer")
            if signer.must_be_admin and not row["admin"]:
                raise Forbidden(f"user {signer.user_id} is not an administrator; this action needs one")
            bumped = conn.execute("UPDATE credentials SET sign_count = ? WHERE id = ? AND sign_count = ?",
                                  (signer.new_sign_count, signer.credential_id, signer.expected_sign_count))
            if bumped.rowcount != 1:
                raise AlreadyUsed("the passkey's signature counter changed during this action; try again")
            self._apply_effect(conn, effect, now)
            return self._append(conn, draft)

        return await self.write(tx)

    def _apply_effect(self, conn: sqlite3.Connection, effect: ActionEffect, now: float) -> None:
        if isinstance(effect, InviteEffect):
            invite = effect.invite
            conn.execute(
                "INSERT INTO invites (id, user_id, name, email, groups_json, admin, bootstrap, created_by,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (invite.id, invite.user_id, invite.name, invite.email, json.dumps(list(invite.groups)),
                 int(invite.admin), int(invite.bootstrap), invite.created_by, invite.created_at,
                 invite.expires_at))
        elif isinstance(effect, AdminEffect):
            updated = conn.execute("UPDATE users SET admin = ? WHERE id = ?", (int(effect.admin), effect.user_id))
            if updated.rowcount != 1:
                raise Missing(f"no user {effect.user_id!r}")
            # the handler's last-admin check ran before this transaction; two concurrent revocations pass it
            self._check_an_admin_remains(conn)
            self._event(conn, "user.changed", {"user": effect.user_id}, now)
        elif isinstance(effect, TokenEffect):
            token = effect.token
            conn.execute(
                "INSERT INTO tokens (id, name, hash, scopes_json, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.name, token.hash, json.dumps(list(token.scopes)), token.created_by,
                 token.created_at, token.expires_at))
        elif isinstance(effect, ActivateEffect):
            updated = conn.execute(
                "UPDATE devices SET status = 'active', cert_sha256 = ?, cert_pem = ?, not_after = ?, approved_by = ?"
                " WHERE id = ? AND enrollment_id = ? AND user_id = ? AND status = 'pending_approval'",
                (effect.cert_sha256, effect.cert_pem, effect.not_after, effect.approved_by, effect.device_id,
                 effect.enrollment_id, effect.user_id))
            if updated.rowcount != 1:
                raise AlreadyUsed(f"device {effect.device_id} is not pending approval (already approved or revoked)")
            conn.execute("UPDATE enrollments SET status = 'active' WHERE id = ?", (effect.enrollment_id,))
            self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id}, now)
        else:
            raise TypeError(f"unknown action effect {type(effect).__name__}")

    # -- worker processes and event acknowledgements (schema 2) ---------------------------------

    def _write_volatile(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write that need not survive power loss (heartbeats, acks): no fsync of its own.

        In WAL mode the next ``synchronous=FULL`` commit syncs these frames too, so trust writes stay
        exactly as durable as before; this only spares a liveness signal its own fsync.
        """
        assert self._conn is not None, "store is not open"
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._write(fn)
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

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
