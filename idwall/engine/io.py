"""The one module on the request path that does socket I/O: listener, client connections, upstreams.

    Engine            the TLS listener, the live client connections, the upstream pool, the timeout sweep
    ClientProtocol    one client connection: feeds :mod:`~idwall.engine.h1`, asks :mod:`idwall.access`,
                      forwards or answers, splices a WebSocket after a validated 101
    UpstreamProtocol  one upstream connection: TCP, TLS, or the gateway's own app on a private unix socket
    Pool              idle upstream connections per destination, most recently used first

Everything is callbacks on raw asyncio protocols (no task per request): a request on a resolved
connection is parsed, decided, signed and written to a pooled upstream connection within one
``data_received``. A task exists only where the store or a new upstream connection must be awaited.

The gateway's own API and pages (``/idwall/``, ``/.well-known/idwall/``) are an aiohttp app on a unix
socket in a private directory; they are reached like any upstream, with the id of the client connection
in ``X-IDWall-Conn`` (and a per-process secret), so a login binds to the certificate of the connection it
was made on and a kill can cut the very connection it arrived on after its answer. Clients can never send
that header: the whole ``X-IDWall-*`` namespace is dropped from what they send.

Back-pressure both ways: a peer that does not read pauses reading from the other side. Timeouts are
checked by one sweep over the connections (``SWEEP_EVERY``), not one timer per request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import access, httpnorm
from ..assertion import canonical_htu
from ..config import Config, Route
from ..connections import Conn
from ..encoding import sha256
from ..errors import IDWallError, NotFound, PayloadTooLarge, Unavailable, UpstreamError, UpstreamTimeout
from ..logs import event
from ..node import Node
from . import answers, h1, tls, websocket
from .h1 import END, Refused, RequestHead, ResponseHead, Upgrade

#: how often deadlines are checked (seconds): the resolution of every timeout
SWEEP_EVERY = 0.25
#: idle upstream connections kept per destination, and how long each may sit idle (seconds)
POOL_PER_DESTINATION = 256
POOL_IDLE = 30.0
#: seconds a keep-alive connection sits idle before it gives up what it can rebuild (ClientProtocol.compact)
COMPACT_AFTER = 2.0
#: client bytes queued while no upstream is ready yet, before reading from the client pauses
QUEUE_LIMIT = 256 * 1024
INTERNAL_HEADER = b"X-IDWall-Conn"
#: connections to the gateway's own app at once (its listen backlog is larger; requests beyond wait)
INTERNAL_CONNECTIONS = 128
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_WS_UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"

# what a client connection is waiting for, which decides what its deadline means
IDLE, HEAD, BODY, UPSTREAM, SEND, NONE = range(6)

log = logging.getLogger("idwall.engine")


@dataclass(frozen=True, eq=False)
class Destination:
    """Where a route's requests go; pooled connections are keyed by this object."""

    name: str
    host: str = ""
    port: int = 0
    unix: str | None = None
    ssl: ssl.SSLContext | None = None
    base_path: bytes = b""
    timeout: float = 30.0
    #: connections open at once (None: no cap); requests beyond it wait for one to come free
    max_connections: int | None = None


class Exchange:
    """One request being forwarded and its response (per request, on the client connection)."""

    __slots__ = ("head", "route", "dest", "upstream", "request_bytes", "out", "queued", "request_done",
                 "body_seen", "max_body", "response_started", "chunked_out", "close", "ws_rest", "status",
                 "reused", "retried", "internal", "task")

    def __init__(self, head: RequestHead, route: Route | None, dest: Destination, request_bytes: bytes,
                 max_body: int) -> None:
        self.head = head
        self.route = route
        self.dest = dest
        self.upstream: UpstreamProtocol | None = None
        self.request_bytes = request_bytes
        self.out: list[bytes] = [request_bytes]
        self.queued = len(request_bytes)
        self.request_done = not head.has_body
        self.body_seen = 0
        self.max_body = max_body
        self.response_started = False
        self.chunked_out = False
        self.close = not head.keep_alive
        self.ws_rest = b""
        self.status = 0
        self.reused = False
        self.retried = False
        self.internal = route is None
        self.task: asyncio.Task[None] | None = None


class Pool:
    """Idle upstream connections per destination (LIFO: the warmest connection is reused first).

    A destination with ``max_connections`` (the gateway's own app) never has more open at once: requests
    beyond it wait for a connection to come free, instead of overrunning its listen backlog.
    """

    def __init__(self) -> None:
        self._idle: dict[Destination, list[UpstreamProtocol]] = {}
        self._open: dict[Destination, int] = {}
        self._waiting: dict[Destination, deque[tuple[ClientProtocol, Exchange]]] = {}

    def acquire(self, dest: Destination) -> UpstreamProtocol | None:
        idle = self._idle.get(dest)
        while idle:
            upstream = idle.pop()
            if not upstream.transport.is_closing():
                return upstream
        return None

    def may_open(self, dest: Destination) -> bool:
        return dest.max_connections is None or self._open.get(dest, 0) < dest.max_connections

    def wait(self, client: ClientProtocol, ex: Exchange) -> None:
        self._waiting.setdefault(ex.dest, deque()).append((client, ex))

    def opened(self, dest: Destination) -> None:
        self._open[dest] = self._open.get(dest, 0) + 1

    def closed(self, dest: Destination) -> None:
        self._open[dest] = self._open.get(dest, 1) - 1
        waiter = self._next_waiter(dest)
        if waiter is not None:
            client, ex = waiter
            ex.task = asyncio.ensure_future(client._connect(ex))

    def _next_waiter(self, dest: Destination) -> tuple[ClientProtocol, Exchange] | None:
        waiting = self._waiting.get(dest)
        while waiting:
            client, ex = waiting.popleft()
            if not client.closed and client.ex is ex:
                return client, ex
        return None

    def release(self, upstream: UpstreamProtocol, now: float) -> None:
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
        for idle in self._idle.values():
            for upstream in idle:
                upstream.transport.close()
            idle.clear()


class UpstreamProtocol(asyncio.Protocol):
    """One connection to an upstream; carries one exchange at a time for one client connection."""

    def __init__(self, engine: Engine, dest: Destination) -> None:
        self.engine = engine
        self.dest = dest
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.h1 = h1.UpstreamConnection(engine.head_limits)
        self.client: ClientProtocol | None = None
        self.splice_to: ClientProtocol | None = None
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
        client.upstream_events(self, self.h1.receive_data(data))

    def eof_received(self) -> bool:
        if self.splice_to is None and self.client is not None:
            self.client.upstream_events(self, self.h1.eof())
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


class ClientProtocol(asyncio.Protocol):
    """One client TLS connection (see the module docstring).

    It lives as long as the connection, so it is kept small: slots, and no parser while it is idle
    (:meth:`compact`).
    """

    __slots__ = ("engine", "node", "transport", "conn", "h1", "pending", "ex", "blocked", "skipping", "splice",
                 "deadline", "waiting", "idle_since", "pauses", "anonymous", "closed", "_host", "_hostname",
                 "_authority", "_htu_base", "_forwarded")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.node = engine.node
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Conn = None  # type: ignore[assignment]
        self.h1: h1.ServerConnection | None = h1.ServerConnection(engine.head_limits)
        self.pending: list[object] = []
        self.ex: Exchange | None = None
        self.blocked = False
        self.skipping = False
        self.splice: UpstreamProtocol | None = None
        self.deadline = 0.0
        self.waiting = IDLE
        self.idle_since = 0.0
        self.pauses: set[str] | None = None
        self.anonymous: str | None = None
        self.closed = False
        # what requests to the host named last share (see _address)
        self._host: bytes | None = b"\0"
        self._hostname: str | None = None
        self._authority = access.ALLOWED
        self._htu_base = b""
        self._forwarded = b""

    # -- the connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        engine = self.engine
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        remote = peer[0] if peer else ""
        if der is None:
            count = engine.anonymous.get(remote, 0)
            if count >= engine.config.limits.connections_without_certificate:
                event("connection.refused", level=logging.WARNING, remote=remote,
                      reason="too many connections without a certificate from this address")
                self.closed = True
                transport.abort()
                return
            engine.anonymous[remote] = count + 1
            self.anonymous = remote
        self.conn = self.node.registry.add(transport, cert_sha256=sha256(der) if der else None, remote=remote,
                                           sni=tls.server_name(ssl_object))
        engine.clients.add(self)
        self._wait(IDLE, engine.config.limits.head_timeout)
        self.node.metrics.connections.set(len(self.node.registry))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.h1 is not None:
            self.h1.close()
            self.h1 = None
        engine = self.engine
        engine.clients.discard(self)
        if self.anonymous is not None:
            left = engine.anonymous.get(self.anonymous, 1) - 1
            if left > 0:
                engine.anonymous[self.anonymous] = left
            else:
                engine.anonymous.pop(self.anonymous, None)
        if self.conn is None:
            return
        self.node.registry.remove(self.conn)
        self.node.metrics.connections.set(len(self.node.registry))
        ex, self.ex = self.ex, None
        if ex is not None:
            if ex.task is not None:
                ex.task.cancel()
            if ex.upstream is not None:
                ex.upstream.client = None
                ex.upstream.transport.abort()  # never pooled: it may be mid-answer
        if self.splice is not None:
            self.splice.splice_to = None
            self.splice.transport.abort()
            self.splice = None

    def eof_received(self) -> bool:
        if self.splice is None and self.ex is None and not self.pending:
            self.transport.close()
        return False  # a half-closed client gets its answer, then the connection closes

    def pause_writing(self) -> None:
        if self.splice is not None:
            self.splice.transport.pause_reading()
        elif self.ex is not None and self.ex.upstream is not None:
            self.ex.upstream.transport.pause_reading()
            self._wait(SEND, self.engine.config.limits.body_timeout)

    def resume_writing(self) -> None:
        if self.splice is not None:
            self.splice.transport.resume_reading()
        elif self.ex is not None and self.ex.upstream is not None:
            self.ex.upstream.transport.resume_reading()
            self._wait(UPSTREAM, self.ex.dest.timeout)

    def pause_reading(self, reason: str) -> None:
        if not self.pauses and not self.closed:
            self.transport.pause_reading()
        if self.pauses is None:
            self.pauses = set()
        self.pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if self.pauses is None:
            return
        self.pauses.discard(reason)
        if not self.pauses and not self.closed:
            self.transport.resume_reading()

    def _wait(self, what: int, seconds: float) -> None:
        self.waiting = what
        now = self.engine.loop.time()
        self.deadline = now + seconds if seconds else 0.0
        if what == IDLE:
            self.idle_since = now

    def compact(self) -> None:
        """Drop what an idle connection can rebuild on its next request: its parser (about 1 KiB) and its
        prepared assertion claims."""
        if self.waiting == IDLE and not self.pending and self.ex is None and self.h1 is not None:
            self.h1.close()
            self.h1 = None
            self.conn.claims = {}

    # -- bytes from the client --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.splice is not None:
            self.conn.bytes_in += len(data)
            self.splice.transport.write(data)
            return
        self.conn.bytes_in += len(data)
        if self.waiting == IDLE:
            self._wait(HEAD, self.engine.config.limits.head_timeout)
        elif self.waiting == BODY:
            self._wait(BODY, self.engine.config.limits.body_timeout)
        parser = self.h1
        if parser is None:
            parser = self.h1 = h1.ServerConnection(self.engine.head_limits)
        events = parser.receive_data(data)
        if events:
            self.pending.extend(events)
            self._pump()

    def _pump(self) -> None:
        pending = self.pending
        while pending and not self.blocked and not self.closed:
            ev = pending[0]
            ex = self.ex
            kind = type(ev)
            if ex is None:
                del pending[0]
                if self.skipping:
                    self.skipping = ev is not END
                elif kind is RequestHead:
                    self._start(ev)  # type: ignore[arg-type]
                elif kind is Refused:
                    pending.clear()
                    self._answer(answers.problem(answers.status_error(ev.status, ev.detail), close=True),  # type: ignore[attr-defined]
                                 close=True, status=ev.status)  # type: ignore[attr-defined]
                continue
            if kind is bytes:
                del pending[0]
                self._body(ex, ev)  # type: ignore[arg-type]
            elif ev is END:
                del pending[0]
                self._end_of_request(ex)
            elif kind is Upgrade:
                del pending[0]
                ex.ws_rest = ev.rest  # type: ignore[attr-defined]
            elif kind is Refused and not ex.request_done:
                pending.clear()
                self._fail(ex, answers.status_error(ev.status, ev.detail))  # type: ignore[attr-defined]
            else:
                break  # the next request waits until this exchange has finished
        ex = self.ex
        if ex is not None and ex.out and ex.upstream is not None:
            self._flush_up(ex)
        if len(pending) > 64 or (ex is not None and ex.queued > QUEUE_LIMIT):
            self.pause_reading("queue")

    def _flush_up(self, ex: Exchange) -> None:
        out, ex.out, ex.queued = ex.out, [], 0
        assert ex.upstream is not None
        ex.upstream.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.pauses:
            self.resume_reading("queue")

    # -- a request --------------------------------------------------------------------------------------

    def _start(self, head: RequestHead) -> None:
        engine, conn = self.engine, self.conn
        if engine.draining:
            self._answer_error(Unavailable("the gateway is restarting; retry in a moment"), head, close=True)
            return
        if not conn.user_agent and head.user_agent:
            conn.user_agent = head.user_agent[:200].decode("latin-1")
        if head.host != self._host:
            self._address(head.host)
        if self._authority is not access.ALLOWED:
            self._answer_verdict(head, self._authority)
            return
        raw_path, _, query = head.target.partition(b"?")
        try:
            path = httpnorm.normalise_path(raw_path.decode("latin-1"))
        except IDWallError as exc:
            self._answer_error(exc, head, close=True)
            return
        if httpnorm.is_reserved(path):
            self._forward_internal(head)
            return
        route = engine.routes.match(self._hostname, path)
        if route is None:
            self._answer_error(NotFound(f"no route for {self._hostname}{path}"), head)
            return
        if conn.stale and conn.cert_sha256 is not None:
            self.blocked = True
            asyncio.ensure_future(self._resolve_then(head, route, path, query))
            return
        self._decide(head, route, path, query)

    def _address(self, host: bytes | None) -> None:
        """Work out, once per host a connection names, what its requests to that host share: the authority
        verdict (421 or not), the start of their ``htu``, and the forwarding header fields."""
        node = self.node
        self._host = host
        text = host.decode("latin-1") if host is not None else urlsplit(node.config.public_url).netloc
        try:
            self._htu_base = canonical_htu("https", text, "/").encode()[:-1]
            self._hostname = httpnorm.host_without_port(text) if host is not None else None
        except IDWallError as exc:
            self._authority = access.Verdict(access.MISDIRECTED, exc)
            return
        self._authority = access.authority_verdict(self._hostname, sni=self.conn.sni, cfg=node.access)
        self._forwarded = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: %s\r\n" % (
            self.conn.remote.encode(), host or b"")

    async def _resolve_then(self, head: RequestHead, route: Route, path: str, query: bytes) -> None:
        try:
            await self.node.resolve(self.conn)
        except ConnectionResetError:
            self.transport.abort()
            return
        except IDWallError as exc:
            self.blocked = False
            self._answer_error(exc, head, close=True)
            return
        except Exception as exc:  # the store failed in a way it does not name: fail closed, loudly
            log.exception("resolving a connection failed")
            self.blocked = False
            self._answer_error(Unavailable("the gateway cannot check this device right now",
                                           log_detail=repr(exc)), head, close=True)
            return
        self.blocked = False
        if self.closed:
            return
        self._decide(head, route, path, query)
        self._pump()

    def _decide(self, head: RequestHead, route: Route, path: str, query: bytes) -> None:
        node, conn = self.node, self.conn
        now = node.clock()
        verdict = access.route_verdict(conn, route, head, now=now, cfg=node.access, seen=node.last_seen)
        if verdict is not access.ALLOWED:
            self._answer_verdict(head, verdict, route=route)
            return
        max_body = route.max_body if route.max_body is not None else self.engine.config.limits.max_body
        if head.content_length is not None and head.content_length > max_body:
            self._answer_error(PayloadTooLarge(f"the body is {head.content_length} bytes; route {route.name} "
                                               f"takes at most {max_body}"), head, close=True, route=route)
            return
        ws = head.upgrade is not None and (head.connection_upgrade or head.upgrade == b"websocket")
        if ws:
            if not route.websockets:
                self._answer_error(access.Forbidden(f"route {route.name} does not allow WebSockets"), head,
                                   close=True, route=route)
                return
            problem = websocket.client_problem(head)
            if problem is not None:
                self._answer_error(answers.status_error(400, problem), head, close=True, route=route)
                return
        resolved = conn.resolved
        assert resolved is not None and resolved.session is not None
        node.last_seen[resolved.session.id] = now
        prepared = conn.claims.get(route.name) or node.prepared_claims(conn, route)
        path_bytes = path.encode()
        token = prepared.token(node.keys, node.assertion_cache, method=head.method, htu=self._htu_base + path_bytes,
                               now=now)
        engine = self.engine
        dest = engine.destinations[route.name]
        target = dest.base_path + path_bytes + (b"?" + query if query else b"")
        extra = self._forwarded + engine.assertion_header + token + b"\r\n"
        if ws:
            extra += _WS_UPGRADE
            conn.kind = "websocket"
        else:
            conn.kind = "stream"  # from the start: a long-poll that has not sent a byte yet is cut at expiry too
        self._forward(Exchange(head, route, dest, h1.request_bytes(head, target, extra), max_body))

    def _forward_internal(self, head: RequestHead) -> None:
        engine = self.engine
        limit = engine.config.limits.api_body
        if head.content_length is not None and head.content_length > limit:
            self._answer_error(PayloadTooLarge(f"the body is {head.content_length} bytes; the limit is {limit}"),
                               head, close=True)
            return
        if head.upgrade is not None:
            self._answer_error(answers.status_error(400, "the gateway's own endpoints take no upgrade"), head,
                               close=True)
            return
        extra = b"%s: %s.%d\r\n" % (INTERNAL_HEADER, engine.internal_secret, self.conn.id)
        self._forward(Exchange(head, None, engine.internal, h1.request_bytes(head, head.target, extra), limit))

    def _forward(self, ex: Exchange) -> None:
        self.ex = ex
        head = ex.head
        if head.expect_continue and head.has_body:
            self.transport.write(answers.CONTINUE)
        self._wait(BODY if head.has_body else UPSTREAM,
                   self.engine.config.limits.body_timeout if head.has_body else ex.dest.timeout)
        pool = self.engine.pool
        upstream = pool.acquire(ex.dest)
        if upstream is not None:
            ex.reused = True
            self._attach(ex, upstream)
        elif pool.may_open(ex.dest):
            ex.task = asyncio.ensure_future(self._connect(ex))
        else:
            pool.wait(self, ex)

    def _attach(self, ex: Exchange, upstream: UpstreamProtocol) -> None:
        ex.upstream = upstream
        upstream.client = self
        upstream.got_bytes = False
        upstream.h1.expect(method=ex.head.method, upgrade=self.conn.kind == "websocket" and not ex.internal)

    async def _connect(self, ex: Exchange) -> None:
        dest = ex.dest
        loop = self.engine.loop
        try:
            async with asyncio.timeout(dest.timeout):
                if dest.unix is not None:
                    _, upstream = await loop.create_unix_connection(
                        lambda: UpstreamProtocol(self.engine, dest), dest.unix)
                else:
                    _, upstream = await loop.create_connection(
                        lambda: UpstreamProtocol(self.engine, dest), dest.host, dest.port, ssl=dest.ssl,
                        server_hostname=dest.host if dest.ssl is not None else None)
        except TimeoutError:
            self._fail(ex, UpstreamTimeout(f"the upstream did not accept a connection within {dest.timeout:g}s"))
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._fail(ex, UpstreamError("the upstream refused or broke the connection",
                                         log_detail=f"{dest.name}: {exc!r}"))
            return
        ex.task = None
        if self.closed or self.ex is not ex:
            upstream.transport.close()
            return
        self._attach(ex, upstream)
        if ex.out:
            self._flush_up(ex)

    def _body(self, ex: Exchange, data: bytes) -> None:
        ex.body_seen += len(data)
        if ex.body_seen > ex.max_body:
            self._fail(ex, PayloadTooLarge(f"the body is over the limit of {ex.max_body} bytes"))
            return
        if ex.head.chunked:
            ex.out.append(h1.chunk_header(len(data)))
            ex.out.append(data)
            ex.out.append(b"\r\n")
        else:
            ex.out.append(data)
        ex.queued += len(data)

    def _end_of_request(self, ex: Exchange) -> None:
        if ex.head.chunked:
            ex.out.append(h1.LAST_CHUNK)
        ex.request_done = True
        if self.waiting == BODY:
            self._wait(UPSTREAM, ex.dest.timeout)
        if ex.status and ex.upstream is None:
            self._finish(ex)  # answered before the body ended (a failure): now the request is over

    # -- bytes from the upstream ------------------------------------------------------------------------

    def upstream_events(self, upstream: UpstreamProtocol, events: list[object]) -> None:
        ex = self.ex
        if ex is None or ex.upstream is not upstream:
            upstream.transport.abort()
            return
        out: list[bytes] = []
        done = False
        for ev in events:
            kind = type(ev)
            if kind is bytes:
                size = len(ev)  # type: ignore[arg-type]
                self.conn.bytes_out += size
                if ex.chunked_out:
                    if size:
                        out.append(h1.chunk_header(size))
                        out.append(ev)  # type: ignore[arg-type]
                        out.append(b"\r\n")
                else:
                    out.append(ev)  # type: ignore[arg-type]
            elif ev is END:
                if ex.chunked_out:
                    out.append(h1.LAST_CHUNK)
                done = ex.status != 101
            elif kind is ResponseHead:
                head_bytes = self._response_head(ex, ev)  # type: ignore[arg-type]
                if head_bytes is None:
                    return
                out.append(head_bytes)
            elif kind is Upgrade:
                if out:
                    self.transport.write(b"".join(out))
                self._splice(ex, upstream, ev.rest)  # type: ignore[attr-defined]
                return
            elif kind is Refused:
                if out:
                    self.transport.write(b"".join(out))
                self._fail(ex, UpstreamError(ev.detail), upstream_fault=True)  # type: ignore[attr-defined]
                return
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if done:
            self._finish(ex)
        elif self.waiting == UPSTREAM:
            self._wait(UPSTREAM, ex.dest.timeout)

    def _response_head(self, ex: Exchange, head: ResponseHead) -> bytes | None:
        extra = b""
        if head.status == 101:
            problem = websocket.upstream_problem(ex.head, head) if self.conn.kind == "websocket" else "no upgrade"
            if problem is not None:
                self._fail(ex, UpstreamError(problem), upstream_fault=True)
                return None
            extra = _WS_UPGRADE
        if ex.internal:
            head.lines = [line for line in head.lines if not line[:7].lower() == b"server:"]
        ex.status = head.status
        ex.response_started = True
        close = ex.close or not ex.request_done or self.conn.close_after_answer or self.engine.draining
        data, ex.chunked_out, ex.close = h1.response_bytes(head, method=ex.head.method,
                                                           client_version=ex.head.version, close=close, extra=extra)
        return data

    def _splice(self, ex: Exchange, upstream: UpstreamProtocol, rest: bytes) -> None:
        """After a validated 101: bytes both ways until either side closes (or a kill cuts the client)."""
        self.ex = None
        self._count(ex)
        upstream.client = None
        upstream.splice_to = self
        self.splice = upstream
        self.pending.clear()
        self._wait(NONE, 0)
        if rest:
            self.conn.bytes_out += len(rest)
            self.transport.write(rest)
        if ex.ws_rest:
            upstream.transport.write(ex.ws_rest)

    def upstream_lost(self, upstream: UpstreamProtocol) -> None:
        if self.splice is upstream:
            self.splice = None
            self.transport.close()
            return
        ex = self.ex
        if ex is None or ex.upstream is not upstream:
            return
        if (not upstream.got_bytes and ex.reused and not ex.retried and not ex.head.has_body
                and ex.head.method in _IDEMPOTENT):
            # a pooled connection the upstream had already closed: the request never reached it, send it again
            ex.retried, ex.reused, ex.upstream = True, False, None
            ex.out, ex.queued = [ex.request_bytes], len(ex.request_bytes)
            ex.task = asyncio.ensure_future(self._connect(ex))
            return
        events = upstream.h1.eof()
        self.upstream_events(upstream, events or [Refused(502, "the upstream closed the connection")])

    # -- answers ----------------------------------------------------------------------------------------

    def _fail(self, ex: Exchange, error: IDWallError, *, upstream_fault: bool = False) -> None:
        """The exchange cannot go on: answer ``error`` if nothing was sent yet, else cut the connection."""
        if ex.task is not None:
            ex.task.cancel()
            ex.task = None
        if ex.upstream is not None:
            ex.upstream.client = None
            ex.upstream.transport.abort()
            ex.upstream = None
        resolved = self.conn.resolved
        event("upstream.failed" if upstream_fault or error.status >= 500 else "request.refused",
              level=logging.WARNING, status=error.status, route=ex.route.name if ex.route else "idwall",
              detail=error.log_detail or error.detail, user=resolved.user.id if resolved else None,
              device=resolved.device.id if resolved else None, session=self.conn.session_id)
        if ex.response_started:
            self.ex = None
            self._count(ex)
            self.transport.abort()
            return
        ex.status = error.status
        self.ex = None
        self._count(ex)
        self._answer(answers.problem(error, close=True, head=ex.head.method == b"HEAD"), close=True,
                     status=error.status, counted=True)

    def _finish(self, ex: Exchange) -> None:
        self.ex = None
        upstream = ex.upstream
        if upstream is not None:
            upstream.client = None
            if upstream.h1.reusable and ex.request_done and not upstream.transport.is_closing():
                self.engine.pool.release(upstream, self.engine.loop.time())
            else:
                upstream.transport.close()
        self.conn.kind = "http"
        self._count(ex)
        if ex.close or not ex.request_done or self.conn.close_after_answer or self.engine.draining:
            self.closed = True
            self.transport.close()
            return
        self._wait(IDLE, self.engine.config.limits.keepalive_timeout)
        if self.pending:
            self._pump()

    def _count(self, ex: Exchange) -> None:
        self.engine.count(ex.route.name if ex.route is not None else None, ex.status)

    def _answer(self, data: bytes, *, close: bool, status: int, route: Route | None = None,
                counted: bool = False) -> None:
        if not counted:
            self.engine.count(route.name if route is not None else None, status)
        self.transport.write(data)
        if close or self.engine.draining:
            self.closed = True
            self.pending.clear()
            self.transport.close()
            return
        self.skipping = True  # the request's own body (none) and end are still queued
        self._wait(IDLE, self.engine.config.limits.keepalive_timeout)

    def _answer_error(self, error: IDWallError, head: RequestHead, *, close: bool = False,
                      route: Route | None = None) -> None:
        close = close or head.has_body or not head.keep_alive
        self._answer(answers.problem(error, close=close, head=head.method == b"HEAD"), close=close,
                     status=error.status, route=route)

    def _answer_verdict(self, head: RequestHead, verdict: access.Verdict, *, route: Route | None = None) -> None:
        assert verdict.error is not None
        if verdict.kind == access.DENY:
            resolved = self.conn.resolved
            event("policy.deny", user=resolved.user.id if resolved else None,
                  device=resolved.device.id if resolved else None, session=self.conn.session_id,
                  route=route.name if route else None)
        if verdict.location is None:
            self._answer_error(verdict.error, head, close=verdict.kind == access.MISDIRECTED, route=route)
            return
        close = head.has_body or not head.keep_alive
        if verdict.kind == access.LOGIN and self.conn.resolved is not None:
            # the login page then says the session ended (expiry, logout, kill) rather than asking afresh
            self.blocked = True
            asyncio.ensure_future(self._redirect_to_login(verdict.location, close, route))
            return
        self._answer(answers.redirect(verdict.location, close=close), close=close, status=303, route=route)

    async def _redirect_to_login(self, location: str, close: bool, route: Route | None) -> None:
        resolved, conn = self.conn.resolved, self.conn
        try:
            if resolved is not None and conn.cert_sha256 is not None and await self.node.store.had_session(
                    resolved.device.id, conn.cert_sha256):
                location += "&reason=expired"
        except IDWallError:
            pass  # the plain login page is still right
        self.blocked = False
        if not self.closed:
            self._answer(answers.redirect(location, close=close), close=close, status=303, route=route)
            self._pump()

    # -- timeouts ---------------------------------------------------------------------------------------

    def timed_out(self) -> None:
        """The deadline passed: answer what can still be answered, then close."""
        waiting, ex = self.waiting, self.ex
        self.deadline = 0.0
        if waiting in (IDLE, HEAD):
            if waiting == HEAD:
                self._answer(answers.problem(answers.status_error(408, "the request head took too long"),
                                             close=True), close=True, status=408)
            else:
                self.closed = True
                self.transport.close()
        elif ex is not None and waiting == BODY:
            self._fail(ex, answers.status_error(408, "the request body stalled (limits.body_timeout)"))
        elif ex is not None and waiting == UPSTREAM:
            self._fail(ex, UpstreamTimeout(f"the upstream did not answer within {ex.dest.timeout:g}s"),
                       upstream_fault=True)
        else:
            self.transport.abort()


class Engine:
    """The listener and everything it holds for one gateway process."""

    def __init__(self, node: Node, *, internal_socket: str) -> None:
        self.node = node
        self.config: Config = node.config
        self.loop = asyncio.get_running_loop()
        limits = self.config.limits
        self.head_limits = h1.HeadLimits(max_line=limits.header_size, max_head=limits.head_size,
                                         max_fields=limits.max_headers)
        self.routes = httpnorm.RouteTable(self.config.routes)
        self.destinations = {route.name: _destination(route, limits.upstream_timeout) for route in self.config.routes}
        self.internal_secret = secrets.token_hex(16).encode()
        self.internal = Destination("idwall", unix=internal_socket, timeout=float(limits.upstream_timeout),
                                    max_connections=INTERNAL_CONNECTIONS)
        self.assertion_header = self.config.assertion.header.encode() + b": "
        self.pool = Pool()
        self.clients: set[ClientProtocol] = set()
        self.anonymous: dict[str, int] = {}
        self.draining = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def count(self, route: str | None, status: int) -> None:
        """Count one answered request (``route`` None: the gateway's own endpoints)."""
        self.node.metrics.requests[(route or "idwall", status)] += 1

    def check_internal(self, value: str | None) -> Conn | None:
        """The client connection an internal request names (``secret.id``), or None for anything else."""
        if not value:
            return None
        secret, _, conn_id = value.partition(".")
        if not hmac.compare_digest(secret.encode(), self.internal_secret) or not conn_id.isdigit():
            return None
        return self.node.registry.get(int(conn_id))

    async def listen(self, host: str, port: int, *, reuse_port: bool) -> int:
        """Start accepting TLS connections; return the port."""
        limits = self.config.limits
        self._server = await self.loop.create_server(
            lambda: ClientProtocol(self), host, port, ssl=tls.server_context(self.config), backlog=2048,
            reuse_address=True, reuse_port=reuse_port, ssl_handshake_timeout=float(limits.handshake_timeout))
        self._sweeper = asyncio.ensure_future(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = self.loop.time()
            for client in list(self.clients):
                if client.deadline and now > client.deadline:
                    try:
                        client.timed_out()
                    except Exception:  # one connection's failure must not stop the sweep for the others
                        log.exception("timing out a connection failed")
                        client.transport.abort()
                elif client.h1 is not None and client.waiting == IDLE and now - client.idle_since > COMPACT_AFTER:
                    client.compact()
            self.pool.sweep(now)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let exchanges finish for up to ``timeout``, then cut."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + timeout
        while True:
            for client in list(self.clients):
                if client.ex is None and client.splice is None and not client.blocked:
                    client.closed = True
                    client.transport.close()
            if not self.clients or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            client.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self.pool.close()
        if self._server is not None:
            await self._server.wait_closed()


def _destination(route: Route, default_timeout: int) -> Destination:
    parts = urlsplit(route.upstream)
    https = parts.scheme == "https"
    return Destination(
        name=route.name, host=parts.hostname or "", port=parts.port or (443 if https else 80),
        ssl=tls.route_context(route.upstream_tls) if https else None,
        base_path=parts.path.rstrip("/").encode(), timeout=float(route.timeout or default_timeout))


def private_socket_path() -> str:
    """A path for the gateway's own app's unix socket, in a new directory only this user can enter."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="idwall-")
    os.chmod(directory, 0o700)
    return os.path.join(directory, "app.sock")


__all__ = ["Engine", "INTERNAL_HEADER", "private_socket_path"]
