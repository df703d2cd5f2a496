"""The registry of live client connections.

Every TLS connection is registered when it is made and removed when it is lost.
Once resolved (certificate -> device -> user -> session) it is indexed by
session, device, user, group and certificate, so a kill finds exactly the
connections it must cut without scanning, and so a change (login, logout,
revocation) marks exactly the connections that must be resolved again.

Cutting is ``transport.abort()``: the socket is closed at once, without
flushing, so no byte of a response is written after the kill, even by a
request that was already streaming.

A connection holds one of these records for its whole life, so it keeps no more than it must:
no copy of the certificate (:meth:`Conn.certificate_der` reads it from the TLS object when a
login needs it) and no lock until a resolution needs one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import Any, Iterable, Iterator

from .assertion import PreparedClaims
from .store.base import Resolved

SCOPES = ("session", "device", "user", "group", "all")


class Conn:
    """One live client connection and what it resolved to."""

    __slots__ = ("id", "transport", "remote", "cert_sha256", "sni", "since", "last_seen", "user_agent",
                 "bytes_in", "bytes_out", "resolved", "stale", "killed", "kind", "epoch", "_lock", "grants",
                 "claims", "close_after_answer")

    def __init__(self, id: int, transport: Any, remote: str, cert_sha256: bytes | None, since: float,
                 *, sni: str | None = None) -> None:
        self.id = id
        self.transport = transport
        self.remote = remote
        self.cert_sha256 = cert_sha256
        self.sni = sni
        self.since = since
        self.last_seen = since
        self.user_agent = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.resolved: Resolved | None = None
        self.stale = True
        self.killed = False
        #: http | stream | websocket: what it is doing now, for the console and for the session expiry cut
        self.kind = "http"
        #: incremented by every invalidation, so a resolution in flight when one arrives is done again
        self.epoch = 0
        self._lock: asyncio.Lock | None = None
        #: route name -> until when the access decision allowed it (see idwall.access)
        self.grants: dict[str, float] = {}
        #: route name -> the assertion claims prepared for this connection on that route
        self.claims: dict[str, PreparedClaims] = {}
        #: set by a handler whose answer must be the last thing this connection carries (a kill of itself)
        self.close_after_answer = False

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

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

    def certificate_der(self) -> bytes | None:
        """The client certificate on this connection (DER), read from the TLS object."""
        ssl_object = self.transport.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def abort(self) -> None:
        """Cut the connection now; nothing more is read or written on it."""
        self.killed = True
        self.transport.abort()

    def __repr__(self) -> str:
        return f"Conn({self.id}, {self.remote}, user={self.user_id}, kind={self.kind})"


class Registry:
    """Live connections, indexed by what they resolved to."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_id: dict[int, Conn] = {}
        self._index: dict[tuple[str, Any], set[Conn]] = defaultdict(set)
        self._keys: dict[Conn, list[tuple[str, Any]]] = {}
        #: incremented by every kill, so a resolution that raced a kill is done again
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._by_id.values()))

    def add(self, transport: Any, *, cert_sha256: bytes | None, remote: str, sni: str | None = None,
            now: float | None = None) -> Conn:
        """Register a new connection (called when the TLS handshake is done)."""
        conn = Conn(next(self._ids), transport, remote, cert_sha256, time.time() if now is None else now, sni=sni)
        self._by_id[conn.id] = conn
        if cert_sha256 is not None:
            self._put(conn, ("cert", cert_sha256))
        return conn

    def get(self, conn_id: int) -> Conn | None:
        return self._by_id.get(conn_id)

    def remove(self, conn: Conn) -> None:
        if self._by_id.pop(conn.id, None) is not None:
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
        conn.grants = {}
        conn.claims = {}
        if resolved is None or conn.id not in self._by_id:
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
            return [c for c in self._by_id.values() if c.cert_sha256 is not None]
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
            conn.grants = {}

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
            self.remove(conn)
        return closed
