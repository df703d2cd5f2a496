"""A real SQLite store on a file of the test's own, for the tests of ``idwall.store``: opened with a fresh ledger
key and a clock the test moves (helpers/clock.py), the devices and sessions a test writes into it, and everything
its tables hold.

Times are numbers around :data:`~tests.helpers.records.NOW`; nothing here sleeps or reads the wall clock. A
second store on the same file (:func:`opened` twice) is another connection on another thread, which is how
two worker processes share one node's database.

The same helpers drive the PostgreSQL store (:data:`BACKENDS`): :func:`postgres_database` makes a database of
the test session's own on the server at 127.0.0.1:5432 (and drops it at the end), :func:`place` gives each test
a fresh schema in it, and :func:`opened` opens whichever store a place names. An unreachable server fails the
test: it is never skipped.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import secrets
import socket
import sqlite3
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import asyncpg
import pytest

from cryptography.hazmat.primitives.asymmetric import ec

from idwall import pki
from idwall.encoding import sha256
from idwall.model import Credential, Device, LedgerDraft, NewDevice, Session, User
from idwall.store.postgres import PostgresStore
from idwall.store.sqlite import SQLiteStore

from .clock import Clock
from .records import NOW, enrollment

__all__ = ["BACKENDS", "POSTGRES_SERVER", "AnyStore", "Relay", "closed_port", "defined_twice", "draft", "dump", "enroll",
           "login", "new_device", "new_schema", "opened", "place", "postgres_database"]

_NEW_KEY: Any = object()
BACKENDS = ("sqlite", "postgres")
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"  # the machine's server (trust auth); CI starts it
AnyStore = SQLiteStore | PostgresStore


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections while the block runs: bound (so nobody else takes it) but
    never listening, as a database server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class Relay:
    """A TCP relay on 127.0.0.1 to the PostgreSQL server: a store connected through it loses its database when the
    relay is cut (listener closed, every relayed connection aborted), without touching the shared server.
    ``upstream`` is the server's port on 127.0.0.1 (another than the shared server's for a private one)."""

    def __init__(self, upstream: int = 5432) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (again, on the same port once it has one) and relay each connection to the server."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and abort every relayed connection: to the store, the database is gone."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def url(self, database: str) -> str:
        """``database`` (a URL on the upstream server) as reached through this relay."""
        return database.replace(f"127.0.0.1:{self.upstream}", f"127.0.0.1:{self.port}", 1)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database ``idwall_test_<random>`` on :data:`POSTGRES_SERVER`; its URL; dropped at the end."""
    name = f"idwall_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres", timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def run(sql: str) -> None:
        # on a thread of its own: the first test to ask may be inside a running event loop
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, admin(sql)).result()

    run(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def place(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's store lives for backend ``request.param``: a file in ``tmp_path``, or a fresh schema in
    the session's PostgreSQL database (a URL whose ``search_path`` names it)."""
    if request.param == "sqlite":
        return tmp_path / "idwall.db"
    return await new_schema(request.getfixturevalue("postgres_url"))


async def new_schema(database: str) -> str:
    """A new, empty schema in ``database``: the URL of a store of its own (``search_path`` names the schema)."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return f"{database}?search_path={schema}"


@asynccontextmanager
async def opened(where: Path | str, *, ledger_key: ec.EllipticCurvePrivateKey | None = _NEW_KEY,
                 clock: Clock | None = None, pool_size: int = 4) -> AsyncIterator[Any]:
    """An open store on ``where`` (a SQLite file, or a PostgreSQL URL from :func:`place`), created and migrated
    when new, closed when the block ends."""
    key = pki.generate_p256_key() if ledger_key is _NEW_KEY else ledger_key
    store: AnyStore
    if isinstance(where, str):
        store = PostgresStore(where, ledger_key=key, clock=clock or Clock(), pool_size=pool_size)
    else:
        store = SQLiteStore(where, ledger_key=key, clock=clock or Clock())
    try:
        await store.open()  # inside: a file that fails to open still gets its store thread stopped
        yield store
    finally:
        await store.close()


def defined_twice(parts: tuple[type, ...]) -> list[str]:
    """The methods more than one of a store's ``parts`` (its base classes) defines, as ``name: first and later``:
    the order of the bases would resolve each silently, one definition winning."""
    seen: dict[str, str] = {}
    twice = []
    for part in parts:
        for name, value in vars(part).items():
            if callable(value) and not name.startswith("__"):
                if name in seen:
                    twice.append(f"{name}: {seen[name]} and {part.__name__}")
                seen[name] = part.__name__
    return twice


def draft(type: str = "key.rotate", subject: str = "kid-2", **data: Any) -> LedgerDraft:
    """A ledger draft the store can seal (any known entry type; the store does not check ``data``)."""
    return LedgerDraft(type, "system", subject, data or {"kind": "assertion", "kid": subject, "previous_kid": "kid-1"})


def new_device(user_id: str, device_id: str, enrollment_id: str, *, groups: tuple[str, ...] = (),
               admin: bool = False, status: str = "active", cert_sha256: bytes | None = None,
               credential_id: bytes | None = None, now: float = NOW) -> NewDevice:
    """What finishing an enrollment writes: ``user_id``, their device and its passkey.

    An active device has a certificate (a thumbprint of its own unless given); a pending one has none yet.
    """
    if cert_sha256 is None and status == "active":
        cert_sha256 = sha256(b"cert:" + device_id.encode())
    return NewDevice(
        User(user_id, user_id.title(), f"{user_id}@example.com", groups, admin, now),
        Device(device_id, user_id, "laptop", status, cert_sha256, "PEM" if cert_sha256 else None, now,
               now + 86400 if cert_sha256 else None, None, None, enrollment_id),
        Credential(credential_id or f"cred-{device_id}".encode(), user_id, device_id, b"cose", -7, 0, now))


async def enroll(store: AnyStore, user_id: str = "alice", *, device_id: str | None = None,
                 groups: tuple[str, ...] = (), admin: bool = False, status: str = "active",
                 cert_sha256: bytes | None = None, credential_id: bytes | None = None,
                 invite_id: str | None = None, now: float = NOW) -> NewDevice:
    """Begin and complete an enrollment of a device of ``user_id``; what it wrote (user, device, credential)."""
    device_id = device_id or f"dev-{user_id}-{await _next(store, 'devices')}"
    enrollment_id = f"enr-{device_id}"
    await store.create_enrollment(enrollment(enrollment_id, user_id=user_id, invite_id=invite_id, groups=groups,
                                             admin=admin, created_at=now, expires_at=now + 300))
    new = new_device(user_id, device_id, enrollment_id, groups=groups, admin=admin, status=status,
                     cert_sha256=cert_sha256, credential_id=credential_id, now=now)
    await store.complete_enrollment(enrollment_id=enrollment_id, new=new, now=now,
                                    draft=draft("device.enroll", device_id, user=user_id))
    return new


async def login(store: AnyStore, new: NewDevice, *, session_id: str | None = None, sign_count: int = 0,
                auth_time: float = NOW, expires_at: float = NOW + 3600) -> Session:
    """A session of ``new``'s device (the compare-and-set from ``sign_count`` to ``sign_count + 1``)."""
    device = new.device
    session = Session(session_id or f"ses-{device.id}-{await _next(store, 'sessions')}", device.user_id, device.id,
                      new.credential.id, device.cert_sha256 or b"", ("hwk", "user"), auth_time, auth_time, expires_at,
                      auth_time)
    await store.create_session(session, expected_sign_count=sign_count, new_sign_count=sign_count + 1,
                               draft=draft("session.login", session.id, user=device.user_id))
    return session


async def _next(store: AnyStore, table: str) -> int:
    if isinstance(store, PostgresStore):
        return int(await store.read(lambda c: c.fetchval(f"SELECT COUNT(*) FROM {table}"))) + 1
    return int(await store.read(lambda c: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])) + 1


async def dump(store: AnyStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: two dumps are equal when nothing was written in between."""
    if isinstance(store, PostgresStore):
        return await store.read(_dump_postgres)

    def read(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                            " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {name: sorted((tuple(row) for row in conn.execute(f"SELECT * FROM {name}")), key=repr) for name in names}
    return await store.read(read)


async def _dump_postgres(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    names = [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                            " ORDER BY tablename")]
    return {name: sorted((tuple(row) for row in await conn.fetch(f'SELECT * FROM "{name}"')), key=repr)
            for name in names}
