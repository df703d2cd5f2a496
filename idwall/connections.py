"""The registry of live client connections.

Every TLS connection is registered when it is made and removed when it is lost.
Once resolved (certificate -> device -> user -> session) it is indexed by
session, device, user, group and certificate, so a kill finds exactly the
connections it must cut without scanning, and so a change (login, logout,
revocation) marks exactly the connections that must be resolved again.

Cutting is ``transport.abort()``: the socket is closed at once, without
flushing, so no byte of a response is written after the kill, even by a
request that was already streaming.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from .store.base import Resolved

SCOPES = ("session", "device", "user", "group", "all")


@dataclass(eq=False)
class Conn:
    """One live client connection and what it resolved to."""

    id: int
    transport: asyncio.BaseTransport
    remote: str
    cert_der: bytes | None
    cert_sha256: bytes | None
    since: float
    last_seen: float
    user_agent: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    resolved: Resolved | None = None
    stale: bool = True
    killed: bool = False
    kind: str = "http"  # http | stream | websocket (what it is doing now, for the console)
    #: incremented by every invalidation, so a resolution in flight when one arrives is done again
    epoch: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def session_id(self) -> str | None:
        return self.resolved.session.id if self.resolved and self.resolved.session else None

    @property
    def device_id(self) -> str | None:
        return self.resolved.device.id if self.resolved else None

    @property
    def user_id(self) -> str | None:
        return self.resolved.user.id if self.resolved else None

    @property
    def groups(self) -> tuple[str, ...]:
        return self.resolved.user.groups if self.resolved else ()

    def abort(self) -> None:
        """Cut the connection now; nothing more is read or written on it."""
        self.killed = True
        self.transport.abort()


class Registry:
    """Live connections, indexed by what they resolved to."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_transport: dict[asyncio.BaseTransport, Conn] = {}
        self._index: dict[tuple[str, Any], set[Conn]] = defaultdict(set)
        self._keys: dict[Conn, list[tuple[str, Any]]] = {}
        #: incremented by every kill, so a resolution that raced a kill is done again
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._by_transport)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_transport.values()))

    def add(self, transport: asyncio.BaseTransport, *, cert_der: bytes | None, cert_sha256: bytes | None,
            remote: str, now: float | None = None) -> Conn:
        """Register a new connection (called when the TLS handshake is done)."""
        now = time.time() if now is None else now
        conn = Conn(next(self._ids), transport, remote, cert_der, cert_sha256, now, now)
        self._by_transport[transport] = conn
        if cert_sha256 is not None:
            self._put(conn, ("cert", cert_sha256))
        return conn

    def get(self, transport: asyncio.BaseTransport | None) -> Conn | None:
        return self._by_transport.get(transport) if transport is not None else None

    def remove(self, transport: asyncio.BaseTransport) -> None:
        conn = self._by_transport.pop(transport, None)
        if conn is not None:
            self._drop_keys(conn)

    def _put(self, conn: Conn, key: tuple[str, Any]) -> None:
        self._index[key].add(conn)
        self._keys.setdefault(conn, []).append(key)

    def _drop_keys(self, conn: Conn, *, keep_cert: bool = False) -> None:
        kept = []
        for key in self._keys.pop(conn, []):
            if keep_cert and key[0] == "cert":
                kept.append(key)
                continue
            members = self._index.get(key)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self._index[key]
        if kept:
            self._keys[conn] = kept

    def bind(self, conn: Conn, resolved: Resolved | None) -> None:
        """Record what ``conn`` resolved to and index it by session, device, user and groups."""
        self._drop_keys(conn, keep_cert=True)
        conn.resolved = resolved
        conn.stale = False
        if resolved is None or conn.transport not in self._by_transport:
            return
        self._put(conn, ("device", resolved.device.id))
        self._put(conn, ("user", resolved.user.id))
        for group in resolved.user.groups:
            self._put(conn, ("group", group))
        if resolved.session is not None:
            self._put(conn, ("session", resolved.session.id))

    def select(self, scope: str, target: str | None) -> list[Conn]:
        """The live connections a kill of ``scope``/``target`` must cut."""
        if scope == "all":
            return [c for c in self._by_transport.values() if c.cert_sha256 is not None]
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        return list(self._index.get((scope, target), ()))

    def for_ids(self, *, sessions: Iterable[str] = (), devices: Iterable[str] = (),
                users: Iterable[str] = ()) -> set[Conn]:
        """Every connection bound to any of the given sessions, devices or users."""
        found: set[Conn] = set()
        for kind, ids in (("session", sessions), ("device", devices), ("user", users)):
            for ident in ids:
                found |= self._index.get((kind, ident), set())
        return found

    def invalidate(self, conns: Iterable[Conn]) -> None:
        """Make ``conns`` resolve again on their next request (something about them changed)."""
        for conn in conns:
            conn.stale = True
            conn.epoch += 1

    def by_cert(self, cert_sha256: bytes) -> list[Conn]:
        return list(self._index.get(("cert", cert_sha256), ()))

    def cut(self, conns: Iterable[Conn]) -> int:
        """Abort every connection in ``conns``; return how many were still open."""
        self.epoch += 1
        closed = 0
        for conn in conns:
            if not conn.killed and not conn.transport.is_closing():
                closed += 1
            conn.abort()
            self.remove(conn.transport)
        return closed
