"""The SQLite backend's plumbing: one connection on one thread, transactions, migrations, rows to records.

One connection, driven from one dedicated thread, so the event loop never blocks on disk and writes are
strictly serialised. Every write runs in ``BEGIN IMMEDIATE`` (the database write lock is taken up front,
so two processes cannot both read the ledger head and fork the chain) and commits with
``synchronous=FULL`` (a committed ledger entry survives power loss).
"""


from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
import json
from pathlib import Path
import sqlite3
import time
from typing import Any, Callable, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from ... import audit
from ...encoding import b64url_decode
from ...model import Credential, Device, Enrollment, Invite, LedgerDraft, Renewal, Session, Token, User
from ..base import StoreError
from ..settle import Settling


T = TypeVar("T")


def migration_files(folder: Any = None) -> list[tuple[int, str]]:
    """Every ``NNNN_name.sql`` in order; two files claiming one version is refused (one would never run)."""
    folder = folder if folder is not None else resources.files("idwall.store") / "migrations"
    found: dict[int, tuple[str, str]] = {}
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            version = int(item.name.split("_", 1)[0])
            if version in found:
                names = sorted((found[version][0], item.name))
                raise StoreError(f"migrations {names[0]} and {names[1]} both claim version {version}; "
                                 "renumber one of them")
            found[version] = (item.name, item.read_text(encoding="utf-8"))
    return sorted((version, sql) for version, (_, sql) in found.items())


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database's version; return the version reached."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, sql in migration_files():
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


def groups_from_json(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def user_from_row(row: sqlite3.Row) -> User:
    return User(row["id"], row["name"], row["email"], groups_from_json(row["groups_json"]), bool(row["admin"]),
                row["created_at"], row["manager"])


def device_from_row(row: sqlite3.Row) -> Device:
    return Device(row["id"], row["user_id"], row["name"], row["status"], row["cert_sha256"], row["cert_pem"],
                  row["enrolled_at"], row["not_after"], row["approved_by"], row["revoked_at"], row["enrollment_id"])


def credential_from_row(row: sqlite3.Row) -> Credential:
    return Credential(bytes(row["id"]), row["user_id"], row["device_id"], bytes(row["public_key"]), row["alg"],
                      row["sign_count"], row["created_at"], row["suspect"], row["revoked_at"])


def session_from_row(row: sqlite3.Row) -> Session:
    return Session(row["id"], row["user_id"], row["device_id"], bytes(row["credential_id"]),
                   bytes(row["cert_sha256"]), tuple(json.loads(row["amr_json"])), row["auth_time"],
                   row["created_at"], row["expires_at"], row["last_seen"], row["revoked_at"], row["revoke_reason"])


def invite_from_row(row: sqlite3.Row) -> Invite:
    return Invite(row["id"], row["user_id"], row["name"], row["email"], groups_from_json(row["groups_json"]),
                  bool(row["admin"]), bool(row["bootstrap"]), row["created_by"], row["created_at"],
                  row["expires_at"], row["used_at"], row["manager"])


def enrollment_from_row(row: sqlite3.Row) -> Enrollment:
    return Enrollment(row["id"], bytes(row["nonce"]), bytes(row["challenge"]), bytes(row["spki_sha256"]),
                      row["csr_pem"], row["device_name"], row["invite_id"], row["user_id"], row["name"],
                      row["email"], groups_from_json(row["groups_json"]), bool(row["admin"]), bool(row["bootstrap"]),
                      row["status"], row["device_id"], row["created_at"], row["expires_at"], row["source"])


def renewal_from_row(row: sqlite3.Row) -> Renewal:
    return Renewal(row["id"], row["device_id"], row["user_id"], row["csr_pem"], bytes(row["spki_sha256"]),
                   row["status"], row["created_at"], row["expires_at"], row["cert_pem"], row["not_after"])


def token_from_row(row: sqlite3.Row) -> Token:
    return Token(row["id"], row["name"], bytes(row["hash"]), tuple(json.loads(row["scopes_json"])),
                 row["created_by"], row["created_at"], row["expires_at"], row["revoked_at"])


class SQLiteCore(Settling):
    """One SQLite file: the connection, its thread, transactions and the ledger append every change uses."""

    def __init__(self, path: Path, *, ledger_key: ec.EllipticCurvePrivateKey | None,
                 clock: Callable[[], float] | None = None) -> None:
        self.path = Path(path)
        self._ledger_key = ledger_key
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idwall-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._clock = clock or time.time

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
        """Open the file (creating and migrating it when new), and write out what a kill left pending when its
        process died (see :mod:`idwall.store.settle`; a store without the ledger key leaves that to writers)."""
        await self._run(self._connect)
        if self._ledger_key is not None:
            await self._settle_pending()

    async def close(self) -> None:
        """Write out what this process's kills left pending, close the connection and stop the store thread."""
        if self._conn is not None:
            await self._settle_before_close()
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
