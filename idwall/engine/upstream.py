"""The upstream side of the engine: where a route's requests go, the pool of idle connections, and the
protocol of one upstream connection (TCP, TLS, or the gateway's own app on its private unix socket).

An upstream connection carries one exchange at a time for one client connection (:class:`UpstreamClient`);
after a validated ``101`` it is spliced to that client connection byte for byte.
"""

from __future__ import annotations

import asyncio
from ssl import SSLContext
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..config import Route
from . import h1_upstream, tls

#: idle upstream connections kept per destination, and how long each may sit idle (seconds)
POOL_PER_DESTINATION = 256
POOL_IDLE = 30.0


class UpstreamClient(Protocol):
    """What an upstream connection needs of the client connection it serves (``ClientProtocol`` is one)."""

    conn: Any
    transport: Any
    closed: bool
    ex: Any

    def upstream_events(self, upstream: UpstreamProtocol, events: list[object]) -> None: ...
    def upstream_lost(self, upstream: UpstreamProtocol) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def resume_reading(self, reason: str) -> None: ...


@dataclass(frozen=True, eq=False)
class Destination:
    """Where a route's requests go; pooled connections are keyed by this object."""

    name: str
    host: str = ""
    port: int = 0
    unix: str | None = None
    ssl: SSLContext | None = None
    base_path: bytes = b""
    timeout: float = 30.0
    #: connections open at once (None: no cap); requests beyond it wait for one to come free
    max_connections: int | None = None



class Pool:
    """Idle upstream connections per destination (LIFO: the warmest connection is reused first).

    A destination with ``max_connections`` (the gateway's own app) never has more open at once: requests
    beyond it wait for a connection to come free, instead of overrunning its listen backlog.
    """

    def __init__(self) -> None:
        self._idle: dict[Destination, list[UpstreamProtocol]] = {}
        self._open: dict[Destination, int] = {}
        self._closed = False
        self._waiting: dict[Destination, deque[tuple[Any, Any]]] = {}

    def acquire(self, dest: Destination) -> UpstreamProtocol | None:
        idle = self._idle.get(dest)
        while idle:
            upstream = idle.pop()
            if not upstream.transport.is_closing():
                return upstream
        return None

    def may_open(self, dest: Destination) -> bool:
        return dest.max_connections is None or self._open.get(dest, 0) < dest.max_connections

    def wait(self, client: Any, ex: Any) -> None:
        self._waiting.setdefault(ex.dest, deque()).append((client, ex))

    def opened(self, dest: Destination) -> None:
        self._open[dest] = self._open.get(dest, 0) + 1

    def closed(self, dest: Destination) -> None:
        self._open[dest] = self._open.get(dest, 1) - 1
        waiter = self._next_waiter(dest)
        if waiter is not None:
            client, ex = waiter
            ex.task = asyncio.ensure_future(client._connect(ex))

    def _next_waiter(self, dest: Destination) -> tuple[Any, Any] | None:
        waiting = self._waiting.get(dest)
        while waiting:
            client, ex = waiting.popleft()
            if not client.closed and client.ex is ex:
                return client, ex
        return None

    def release(self, upstream: UpstreamProtocol, now: float) -> None:
        if self._closed:
            upstream.transport.close()  # the gateway is draining: nothing is pooled any more
            return
        waiter = self._next_waiter(upstream.dest)
        if waiter is not None:
            client, ex = waiter
            ex.reused = True
            client._attach(ex, upstream)
            client._flush_up(ex)
            return
        idle = self._idle.setdefault(upstream.dest, [])
        if len(idle) >= POOL_PER_DESTINATION:
            upstream.transport.close()
            return
        upstream.client = None
        upstream.idle_since = now
        idle.append(upstream)

    def discard(self, upstream: UpstreamProtocol) -> None:
        idle = self._idle.get(upstream.dest)
        if idle and upstream in idle:
            idle.remove(upstream)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than :data:`POOL_IDLE`."""
        for idle in self._idle.values():
            while idle and now - idle[0].idle_since > POOL_IDLE:
                idle.pop(0).transport.close()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for upstream in idle:
                upstream.transport.close()
            idle.clear()


class UpstreamProtocol(asyncio.Protocol):
    """One connection to an upstream; carries one exchange at a time for one client connection."""

    def __init__(self, engine: Any, dest: Destination) -> None:
        self.engine = engine
        self.dest = dest
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.h1 = h1_upstream.UpstreamConnection(engine.head_limits)
        #: what the next answer answers (method, upgrade): told to the parser when that answer starts
        self.expecting: tuple[bytes, bool] | None = None
        self.client: UpstreamClient | None = None
        self.splice_to: UpstreamClient | None = None
        self.idle_since = 0.0
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.engine.pool.opened(self.dest)

    def data_received(self, data: bytes) -> None:
        peer = self.splice_to
        if peer is not None:
            peer.conn.bytes_out += len(data)
            peer.transport.write(data)
            return
        client = self.client
        if client is None:
            self.transport.close()  # an idle upstream must not speak; never reuse it
            return
        self.got_bytes = True
        client.upstream_events(self, self.parser().receive_data(data))

    def parser(self) -> h1_upstream.UpstreamConnection:
        """The answer parser, told what the answer it is about to read answers (on the answer's path, so a
        request never waits for it)."""
        if self.expecting is not None:
            method, upgrade = self.expecting
            self.expecting = None
            self.h1.expect(method=method, upgrade=upgrade)
        return self.h1

    def eof_received(self) -> bool:
        if self.splice_to is None and self.client is not None:
            self.client.upstream_events(self, self.parser().eof())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.pool.discard(self)
        self.engine.pool.closed(self.dest)
        peer = self.splice_to or self.client
        self.splice_to = self.client = None
        if peer is not None:
            peer.upstream_lost(self)  # may still read the parser's end of a close-delimited body
        self.h1.close()

    def pause_writing(self) -> None:
        if self.client is not None or self.splice_to is not None:
            (self.client or self.splice_to).pause_reading("upstream")  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        if self.client is not None or self.splice_to is not None:
            (self.client or self.splice_to).resume_reading("upstream")  # type: ignore[union-attr]


def destination(route: Route, default_timeout: int) -> Destination:
    parts = urlsplit(route.upstream)
    https = parts.scheme == "https"
    return Destination(
        name=route.name, host=parts.hostname or "", port=parts.port or (443 if https else 80),
        ssl=tls.route_context(route.upstream_tls) if https else None,
        base_path=parts.path.rstrip("/").encode(), timeout=float(route.timeout or default_timeout))


__all__ = ["Destination", "POOL_IDLE", "POOL_PER_DESTINATION", "Pool", "UpstreamClient", "UpstreamProtocol", "destination"]
