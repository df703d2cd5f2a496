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
import gc
import itertools
import time
from typing import Any, Iterable, Iterator

from .assertion import PreparedClaims
from .model import Resolved

SCOPES = ("session", "device", "user", "group", "all")
#: what a connection does that outlives a request, so it is cut when its session ends or expires
LONG_LIVED = frozenset({"websocket", "stream", "tunnel"})


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
        #: http | stream | websocket | tunnel: what it is doing now, for the console and the session expiry cut
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


#: how long :meth:`Registry.cut` holds the connections of a large kill before it lets go of them (seconds), and
#: how many it lets go of per loop turn after that (see :meth:`Registry._bury`)
BURY_AFTER, BURY_CHUNK = 0.5, 250

#: an index entry holds a list while it names few connections (a device, a session: 64 bytes instead of a
#: set's 216 per idle connection) and a set beyond, where removal must stay cheap (a group, a busy user)
_LIST_MAX = 8

Members = list[Conn] | set[Conn]


def _put(index: dict[Any, Members], key: Any, conn: Conn) -> None:
    members = index.get(key)
    if members is None:
        index[key] = [conn]
    elif isinstance(members, list):
        if conn not in members:
            members.append(conn)
            if len(members) > _LIST_MAX:
                index[key] = set(members)
    else:
        members.add(conn)


def _drop(index: dict[Any, Members], key: Any, conn: Conn) -> None:
    members = index.get(key)
    if members is None:
        return
    if isinstance(members, list):
        if conn in members:
            members.remove(conn)
    else:
        members.discard(conn)
    if not members:
        del index[key]


class Registry:
    """Live connections, indexed by what they resolved to.

    One index per scope, keyed by the id itself; what a connection is indexed under is always derived
    from ``conn.resolved`` (and its certificate), so nothing per connection records its keys.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_id: dict[int, Conn] = {}
        self._index = self._empty_index()
        #: incremented by every kill, so a resolution that raced a kill is done again
        self.epoch = 0
        # connections cut by a large kill, held a little longer (see _bury), and whether the cyclic collector
        # waits for them
        self._dying: list[Conn] = []
        self._gc_paused = False

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
            _put(self._index["cert"], cert_sha256, conn)
        return conn

    @staticmethod
    def _empty_index() -> dict[str, dict[Any, Members]]:
        return {"cert": {}, "device": {}, "user": {}, "group": {}, "session": {}}

    def get(self, conn_id: int) -> Conn | None:
        return self._by_id.get(conn_id)

    def remove(self, conn: Conn) -> None:
        if self._by_id.pop(conn.id, None) is not None:
            self._unbind(conn)
            if conn.cert_sha256 is not None:
                _drop(self._index["cert"], conn.cert_sha256, conn)

    def _unbind(self, conn: Conn) -> None:
        resolved = conn.resolved
        if resolved is None:
            return
        index = self._index
        _drop(index["device"], resolved.device.id, conn)
        _drop(index["user"], resolved.user.id, conn)
        for group in resolved.user.groups:
            _drop(index["group"], group, conn)
        if resolved.session is not None:
            _drop(index["session"], resolved.session.id, conn)

    def bind(self, conn: Conn, resolved: Resolved | None) -> None:
        """Record what ``conn`` resolved to and index it by session, device, user and groups."""
        self._unbind(conn)
        conn.resolved = resolved
        conn.stale = False
        conn.grants = {}
        conn.claims = {}
        if resolved is None or conn.id not in self._by_id:
            return
        self._index_resolved(conn, resolved)

    def _index_resolved(self, conn: Conn, resolved: Resolved) -> None:
        index = self._index
        _put(index["device"], resolved.device.id, conn)
        _put(index["user"], resolved.user.id, conn)
        for group in resolved.user.groups:
            _put(index["group"], group, conn)
        if resolved.session is not None:
            _put(index["session"], resolved.session.id, conn)

    def select(self, scope: str, target: str | None) -> list[Conn]:
        """The live connections a kill of ``scope``/``target`` must cut."""
        if scope == "all":
            return [c for c in self._by_id.values() if c.cert_sha256 is not None]
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        return list(self._index[scope].get(target, ()))

    def for_ids(self, *, sessions: Iterable[str] = (), devices: Iterable[str] = (),
                users: Iterable[str] = ()) -> set[Conn]:
        """Every connection bound to any of the given sessions, devices or users."""
        found: set[Conn] = set()
        for kind, ids in (("session", sessions), ("device", devices), ("user", users)):
            index = self._index[kind]
            for ident in ids:
                found.update(index.get(ident, ()))
        return found

    def invalidate(self, conns: Iterable[Conn]) -> None:
        """Make ``conns`` resolve again on their next request (something about them changed)."""
        for conn in conns:
            conn.stale = True
            conn.epoch += 1
            conn.grants = {}

    def by_cert(self, cert_sha256: bytes) -> list[Conn]:
        return list(self._index["cert"].get(cert_sha256, ()))

    def cut(self, conns: Iterable[Conn]) -> int:
        """Abort every connection in ``conns``; return how many were still open.

        Every socket is aborted before any is taken out of the indexes, so the last abort of a large kill does
        not wait for the bookkeeping of all the others.
        """
        self.epoch += 1
        doomed = list(conns)
        large = len(doomed) > BURY_CHUNK and self._hold(doomed)
        closed = 0
        for conn in doomed:
            if not conn.killed and not conn.transport.is_closing():
                closed += 1
            conn.abort()
        if len(doomed) * 2 > len(self._by_id):
            self._keep_only_survivors({conn.id for conn in doomed})
        else:
            for conn in doomed:
                self.remove(conn)
        if large:
            self._dying.extend(doomed)
        return closed

    def _hold(self, doomed: list[Conn]) -> bool:
        """Prepare to hold ``doomed`` until :meth:`_bury` (False outside a running loop: nothing would bury)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # cut outside a loop (a test): nothing runs a teardown either
            return False
        if not self._dying:
            loop.call_later(BURY_AFTER, self._bury)
            # Each abort queues a callback, each callback is an object, and every 700 new objects start the cyclic
            # collector, which in a process holding thousands of connections walks millions of them: 40% of the
            # teardown of a kill of 5000 (py-spy). Reference counting frees what a cut leaves; the collector only
            # waits until the burial is over, a second or so.
            self._gc_paused = gc.isenabled()
            gc.disable()
        return True

    def _bury(self) -> None:
        """Let go of the next :data:`BURY_CHUNK` cut connections, and come back next loop turn for the rest.

        Freeing an mTLS connection (its TLS state, the client's certificate chain and key) costs about 30 µs,
        and each abort queues that for the next loop turn: cut 5000 at once and that turn is 150 ms in which
        nothing else runs, the kill's answer and its acknowledgement to the other nodes included. Holding the
        connections until the kill has answered (:data:`BURY_AFTER`), then freeing a chunk per turn, lets those
        through first.
        """
        del self._dying[:BURY_CHUNK]
        if self._dying:
            asyncio.get_running_loop().call_soon(self._bury)
        elif self._gc_paused:
            self._gc_paused = False
            gc.enable()

    def _keep_only_survivors(self, doomed: set[int]) -> None:
        """Index again just the connections not in ``doomed``: when most are cut (a kill of everyone), that is
        much less work than taking each cut one out of five indexes."""
        survivors = [conn for conn in self._by_id.values() if conn.id not in doomed]
        self._by_id = {conn.id: conn for conn in survivors}
        self._index = self._empty_index()
        for conn in survivors:
            if conn.cert_sha256 is not None:
                _put(self._index["cert"], conn.cert_sha256, conn)
            if conn.resolved is not None:
                self._index_resolved(conn, conn.resolved)
