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
checked by one sweep over the connections (:mod:`idwall.engine.server`), not one timer per request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import ssl

from .. import access, httpnorm
from ..config import Config, Route
from ..connections import Conn
from ..encoding import sha256
from ..errors import IDWallError, NotFound, PayloadTooLarge, Unavailable, UpstreamError, UpstreamTimeout
from ..logs import event
from ..node import STALE_DETAIL, Node
from . import answers, h1, h1_upstream, tls, tunnel, websocket
from .edges import BODY, HEAD, IDLE, UPSTREAM, ClientEdges
from .h1 import END, Refused, RequestHead, Upgrade
from .h1_upstream import ResponseHead
from .upstream import Destination, Pool, UpstreamProtocol, destination

#: seconds a keep-alive connection sits idle before it gives up what it can rebuild (ClientProtocol.compact)
COMPACT_AFTER = 2.0
#: client bytes queued while no upstream is ready yet, before reading from the client pauses
QUEUE_LIMIT = 256 * 1024
INTERNAL_HEADER = b"X-IDWall-Conn"
#: connections to the gateway's own app at once (its listen backlog is larger; requests beyond wait)
INTERNAL_CONNECTIONS = 128
_WS_UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"


log = logging.getLogger("idwall.engine")


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


#: what a stale node (it has not heard the store's trust events for cluster.max_staleness) still answers
STALE_SERVED = frozenset(("/idwall/healthz", "/idwall/metrics"))


class ClientProtocol(ClientEdges, asyncio.Protocol):
    """One client TLS connection (see the module docstring).

    It lives as long as the connection, so it is kept small: slots, and no parser while it is idle
    (:meth:`compact`).
    """

    __slots__ = ("engine", "node", "transport", "conn", "h1", "pending", "ex", "blocked", "skipping", "splice",
                 "deadline", "waiting", "idle_since", "pauses", "anonymous", "closed", "_host", "_hostname",
                 "_authority", "_htu_base", "_forwarded", "kept", "_remote")

    def __init__(self, engine: Engine, remote: str | None = None) -> None:
        self.engine = engine
        #: the client's address when a trusted load balancer told it (PROXY v2); else the socket's peer
        self._remote = remote
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
        #: the upstream connection of this connection's last exchange, kept for its next request until the
        #: connection idles (compact) or ends, then returned to the pool
        self.kept: UpstreamProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        engine = self.engine
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        remote = self._remote or (peer[0] if peer else "")
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

    def _wait(self, what: int, seconds: float) -> None:
        self.waiting = what
        now = self.engine.loop.time()
        self.deadline = now + seconds if seconds else 0.0
        if what == IDLE:
            self.idle_since = now

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
        if self.node.stale and path not in STALE_SERVED:
            self._answer_error(Unavailable(STALE_DETAIL), head, close=True)
            return
        if httpnorm.is_reserved(path):
            if path.startswith(tunnel.PREFIX):
                tunnel.start(self, head, path)
                return
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
        kept = self.kept
        if kept is not None:
            self.kept = None
            if kept.dest is ex.dest and not kept.transport.is_closing():
                ex.reused = True
                self._attach(ex, kept)
                return
            self.engine.pool.release(kept, self.engine.loop.time())
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
        upstream.expecting = (ex.head.method, self.conn.kind == "websocket" and not ex.internal)

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
        data, ex.chunked_out, ex.close = h1_upstream.response_bytes(head, method=ex.head.method,
                                                           client_version=ex.head.version, close=close, extra=extra)
        return data

    def _finish(self, ex: Exchange) -> None:
        self.ex = None
        upstream = ex.upstream
        if upstream is not None:
            upstream.client = None
            if upstream.h1.reusable and ex.request_done and not upstream.transport.is_closing():
                if ex.dest.max_connections is None:
                    self.kept = upstream  # the next request of this connection most likely goes there too
                else:
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


class Engine:
    """What one gateway process's connections share: the node, routes and destinations, the upstream pool,
    the live client connections (the listener around it is :class:`idwall.engine.server.Listener`)."""

    def __init__(self, node: Node, *, internal_socket: str) -> None:
        self.node = node
        self.config: Config = node.config
        self.loop = asyncio.get_running_loop()
        limits = self.config.limits
        self.head_limits = h1.HeadLimits(max_line=limits.header_size, max_head=limits.head_size,
                                         max_fields=limits.max_headers)
        # TCP routes are reached by name through a tunnel (engine/tunnel.py), never by host and path
        http_routes = [route for route in self.config.routes if not route.is_tcp]
        self.routes = httpnorm.RouteTable(http_routes)
        self.destinations = {route.name: destination(route, limits.upstream_timeout) for route in http_routes}
        self.internal_secret = secrets.token_hex(16).encode()
        self.internal = Destination("idwall", unix=internal_socket, timeout=float(limits.upstream_timeout),
                                    max_connections=INTERNAL_CONNECTIONS)
        self.assertion_header = self.config.assertion.header.encode() + b": "
        self.pool = Pool()
        self.clients: set[ClientProtocol] = set()
        self.anonymous: dict[str, int] = {}
        self.draining = False

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


__all__ = ["COMPACT_AFTER", "ClientProtocol", "Engine", "Exchange", "INTERNAL_HEADER"]
