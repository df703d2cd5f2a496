"""The PostgreSQL backend's plumbing: a pool of asyncpg connections, serialised write transactions, migrations
under a lock, the ledger append.

Several gateway nodes share one database, so nothing here may rely on being the only process: every trust
write takes one transaction-scoped advisory lock (:data:`WRITE_LOCK`) before it reads anything, as SQLite's
``BEGIN IMMEDIATE`` takes its write lock. Writers are therefore serialised *in the database*: two nodes cannot
both read the ledger head and fork the chain, event ids commit in id order (a reader that has seen event N
never misses one below it), and a check made inside a write (the last admin, a sign count) cannot be raced.
Liveness writes (heartbeats, acknowledgements, ``last_seen``) skip the lock: they are not trust state.

Every database failure (server down, connection lost, a constraint) becomes a :class:`StoreError` that tells
the client nothing changed (503, fail closed) and keeps the driver's words for the log; the URL, which may
carry a password, appears in neither.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from importlib import resources
import json
import time
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec

from ... import audit
from ...encoding import b64url_decode
from ...model import LedgerDraft
from ..base import StoreError
from ..settle import Settling
from ..sqlite.core import migration_files

T = TypeVar("T")
# the events one write (one task) has made so far, so it can release exactly those when it returns
_WRITE_EVENTS: ContextVar[list[int]] = ContextVar("idwall_pg_write_events")
Conn = asyncpg.Connection

# Advisory lock keys (any bigint; these spell "IDWL" + a purpose). Transaction-scoped: released at commit or
# rollback, and by the server when a connection dies, so a crashed node never leaves the lock held.
WRITE_LOCK = 0x4944574C_00000001
MIGRATE_LOCK = 0x4944574C_00000002

CONNECT_TIMEOUT = 10.0  # seconds to open a connection (the pool's, or a new one after an outage)
COMMAND_TIMEOUT = 30.0  # seconds any statement may take; a hung server fails the call instead of the request
DEFAULT_POOL_SIZE = 10
#: the channel every trust event is notified on at commit (see idwall.store.postgres.listen)
EVENTS_CHANNEL = "idwall_events"
UNAVAILABLE = "the store is unavailable; nothing was changed"
# What a failing call can raise from below: the server's errors, the driver's, the network's, a timeout.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def migrations(folder: Any = None) -> list[tuple[int, str]]:
    """The PostgreSQL migrations, ``(version, sql)`` in order; versions mean what SQLite's of that number do.

    Read as SQLite's are: two files claiming one version are refused (a :class:`StoreError` naming both), since
    one of them would silently never run.
    """
    return migration_files(folder if folder is not None
                           else resources.files("idwall.store") / "migrations" / "postgres")


async def migrate(conn: Conn) -> int:
    """Apply every migration newer than the database's version; return the version reached.

    Each migration is one transaction that first takes :data:`MIGRATE_LOCK` and then re-reads the version, so
    two nodes starting at once apply each migration exactly once: the second waits, then finds it done.
    """
    current = 0
    for version, sql in migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            # inside the lock: two concurrent CREATE TABLE IF NOT EXISTS can both try to create it
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            if version <= current:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            current = version
    return current


def rowcount(status: str) -> int:
    """The number of rows an ``UPDATE``/``DELETE``/``INSERT`` touched, from asyncpg's status string."""
    return int(status.rsplit(" ", 1)[-1])


def log_detail(exc: BaseException, secrets: frozenset[str]) -> str:
    """The driver's words for the log, with the URL's password (should a message ever quote it) blotted out."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return f"postgresql: {text}"


def url_secrets(url: str) -> frozenset[str]:
    """Every spelling of the password a URL carries: in ``user:password@`` or as ``?password=`` (asyncpg takes
    both), raw and percent-decoded."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:  # an unparseable port: asyncpg refuses the URL too, and the caller shows none of it
        return frozenset()
    found += [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "password"]
    found += [part.partition("=")[2] for part in parts.query.split("&") if part.startswith("password=")]
    return frozenset(spelling for secret in found if secret for spelling in (secret, unquote(secret)) if spelling)


def shown_url(url: str) -> str:
    """``url`` as it may be printed: its password, in ``user:password@`` or ``?password=``, shown as ``***``."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "a postgresql:// URL that cannot be parsed"
    netloc = parts.netloc
    if has_password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join("password=***" if p.startswith("password=") else p for p in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


async def _keep_session(conn: Conn) -> None:
    """What a connection needs before it goes back to the pool: nothing (asyncpg itself rolls back a transaction
    left open). No statement of this backend leaves session state behind (advisory locks are transaction-scoped,
    LISTEN has a connection of its own, nothing SETs), so asyncpg's default reset (``RESET ALL``, ``UNLISTEN``,
    ...) would only cost one more round trip on every call."""


class PostgresCore(Settling):
    """One PostgreSQL database: the pool, transactions, and the ledger append every change uses."""

    def __init__(self, url: str, *, ledger_key: ec.EllipticCurvePrivateKey | None,
                 clock: Callable[[], float] | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._url = url  # private: it may hold a password, so it is never shown (not even in repr)
        self._secrets = url_secrets(url)
        self._ledger_key = ledger_key
        self._clock = clock or time.time
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._in_flight: set[int] = set()  # events written by this process's writes that have not returned yet

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pool_size={self._pool_size}>"

    async def open(self) -> None:
        """Connect the pool and bring the schema up to date (under the migration lock)."""
        try:
            pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size,
                                             timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                             reset=_keep_session)
        except DB_ERRORS as exc:
            raise StoreError(UNAVAILABLE, log_detail=log_detail(exc, self._secrets)) from None
        except ValueError as exc:  # a DSN asyncpg cannot parse; its message may quote the DSN, so drop it
            raise StoreError("the postgresql store URL cannot be parsed; write postgresql://user@host:port/db",
                             log_detail=f"postgresql: {type(exc).__name__}") from None
        self._pool = pool
        try:
            await self._run(migrate)
            if self._ledger_key is not None:  # what a node that died left pending (a reader leaves it to writers)
                await self._settle_pending()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Settle what this process's kills left, then close every connection of the pool (waiting at most a few
        seconds for calls in flight)."""
        if self._pool is not None:
            await self._settle_before_close()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except (asyncio.TimeoutError, *DB_ERRORS):
                pool.terminate()

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; database failures become a StoreError, ours pass through."""
        if self._pool is None:
            raise StoreError(UNAVAILABLE, log_detail="postgresql: the store is not open")
        pool = self._pool
        try:
            # asyncio.timeout, not acquire(timeout=): that wraps the wait in a task of its own, so even a free
            # connection is handed over one loop turn later (behind whatever else is ready, such as the teardown
            # of thousands of connections a kill just cut), and the caller's query goes out that much later
            async with asyncio.timeout(CONNECT_TIMEOUT):
                conn = await pool.acquire()
            try:
                return await fn(conn)
            finally:
                await pool.release(conn)
        except DB_ERRORS as exc:
            raise StoreError(UNAVAILABLE, log_detail=log_detail(exc, self._secrets)) from None

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` (reads only) on a pooled connection."""
        return await self._run(fn)

    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction holding :data:`WRITE_LOCK`; roll back on any exception."""

        async def tx(conn: Conn) -> T:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                return await fn(conn)

        made: list[int] = []
        token = _WRITE_EVENTS.set(made)
        try:
            return await self._run(tx)
        finally:  # committed or rolled back, and back with the caller: pollers of this process may see them
            _WRITE_EVENTS.reset(token)
            self._in_flight.difference_update(made)

    async def write_volatile(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """A write of liveness state (heartbeats, acks): one transaction, without the trust write lock."""

        async def tx(conn: Conn) -> T:
            async with conn.transaction():
                return await fn(conn)

        return await self._run(tx)

    async def _append(self, conn: Conn, draft: LedgerDraft) -> int:
        """Seal ``draft`` onto the head of the chain; must run inside :meth:`write` (the lock orders appends)."""
        if self._ledger_key is None:
            raise StoreError("this store was opened without the ledger key; it cannot record trust changes")
        row = await conn.fetchrow("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        seq, prev = (row["seq"] + 1, bytes(row["hash"])) if row else (1, audit.GENESIS_PREV)
        entry = audit.new_entry(seq=seq, time=self._clock(), type=draft.type, actor=draft.actor,
                                subject=draft.subject, data=draft.data, approval=draft.approval)
        sealed = audit.seal(entry, prev=prev, key=self._ledger_key)
        await conn.execute("INSERT INTO ledger (seq, hash, entry) VALUES ($1, $2, $3)",
                           seq, b64url_decode(sealed["hash"]), json.dumps(sealed, sort_keys=True))
        return seq

    async def _event(self, conn: Conn, kind: str, payload: dict[str, Any], now: float) -> None:
        """Record a trust event and notify every node at commit; must run inside :meth:`write`, so ids commit
        in order. The notification only wakes the nodes (they read the table), so it carries just the id."""
        event_id = await conn.fetchval(
            "WITH made AS (INSERT INTO events (kind, payload, time) VALUES ($1, $2, $3) RETURNING id)"
            " SELECT pg_notify($4, id::text), id FROM made", kind, json.dumps(payload, sort_keys=True), now,
            EVENTS_CHANNEL, column=1)
        _WRITE_EVENTS.get().append(event_id)
        self._in_flight.add(event_id)

    def _visible(self, event_ids: list[int]) -> int:
        """How many of ``event_ids`` (ascending) this process may apply now: those below the first event a write
        of this process has committed but not yet returned to its caller. The writer acts on its own change
        first (a kill cuts this process's connections and marks the kill its own); a poller that applied it
        before would take it for another process's and cut the connection the kill's answer is still due on."""
        if not self._in_flight:
            return len(event_ids)
        first = min(self._in_flight)
        return next((i for i, event_id in enumerate(event_ids) if event_id >= first), len(event_ids))

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._run(lambda conn: conn.fetchrow(sql, *args))

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._run(lambda conn: conn.fetch(sql, *args))
