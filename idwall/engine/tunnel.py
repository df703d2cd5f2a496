"""TCP tunnels over a device's mTLS connection (DESIGN.md "TCP services").

A device opens one with ``GET /idwall/tunnel/<route>`` (HTTP/1.1, ``Upgrade: idwall-tcp``, ``Connection:
upgrade``, no body) on its mTLS connection to the gateway. The route must be a ``tcp://`` route; the same
access decision as for HTTP (:func:`idwall.access.route_verdict`) decides; then the gateway connects to the
upstream (within the route's ``timeout``, else 504; refused, 502), writes the PROXY v2 header with the
signed assertion when the route says ``proxy_protocol: v2``, answers ``101`` and splices bytes both ways
with the engine's splice (the one WebSockets use), flow control included: a side that does not read pauses
reading from the other.

The tunnel is the client connection itself, registered as kind ``tunnel``: every kill scope cuts it as it
cuts any connection, the end of its session (logout, expiry) cuts it as it cuts a WebSocket, and the SOC
console lists it. Traffic through it counts as the session's activity; a tunnel that carries nothing for
``session.idle_timeout`` is closed, as its session would have idled out by then.

:func:`handshake_problem` and :func:`route_name` are pure; the rest is the socket side.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from .. import access, proxy_protocol
from ..config import Route
from ..errors import BadRequest, IDWallError, NotFound, Unavailable, UpstreamError, UpstreamTimeout
from ..logs import event
from . import answers
from .edges import NONE
from .h1 import RequestHead, Upgrade

__all__ = ["PREFIX", "SWITCHED", "TunnelUpstream", "UPGRADE", "handshake_problem", "route_name", "start"]

PREFIX = "/idwall/tunnel/"
UPGRADE = b"idwall-tcp"
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: idwall-tcp\r\nConnection: Upgrade\r\n\r\n"
#: bytes an upstream may send before the 101 is written (an SSH banner) before reading from it pauses
EARLY_LIMIT = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

log = logging.getLogger("idwall.engine")


def route_name(path: str) -> str | None:
    """The route a tunnel path names (``/idwall/tunnel/db`` -> ``db``), or None if it names none."""
    name = path[len(PREFIX):] if path.startswith(PREFIX) else ""
    return name if _NAME.match(name) else None


def handshake_problem(head: RequestHead) -> str | None:
    """Why ``head`` is not a tunnel request for a TCP route, or None when it is one."""
    if head.upgrade != UPGRADE or not head.connection_upgrade:
        return ("this is a TCP route: open a tunnel with 'Upgrade: idwall-tcp' and 'Connection: upgrade' "
                "(idwall connect does)")
    if head.version != b"1.1":
        return "a tunnel needs HTTP/1.1 (HTTP/1.0 has no protocol upgrade)"
    if head.method != b"GET" or head.has_body:
        return "a tunnel request is a GET without a body"
    return None


def start(client: Any, head: RequestHead, path: str) -> None:
    """Handle a request for ``/idwall/tunnel/...`` on ``client`` (an :class:`~idwall.engine.io.ClientProtocol`)."""
    name = route_name(path)
    route = next((r for r in client.engine.config.routes if r.name == name), None)
    if route is None:
        shown = path[len(PREFIX):][:64] if path.startswith(PREFIX) else path[:64]
        client._answer_error(NotFound(f"no TCP route named {shown!r}"), head, close=True)
        return
    if not route.is_tcp:
        client._answer_error(BadRequest(f"route {route.name} is an HTTP route; it is reached by its URL, not by a "
                                        "tunnel"), head, close=True, route=route)
        return
    problem = handshake_problem(head)
    if problem is not None:
        client._answer_error(answers.status_error(400, problem), head, close=True, route=route)
        return
    client.blocked = True
    client.pause_reading("tunnel")  # nothing the device sends is read (or lost) until the splice is up
    client._wait(NONE, 0)  # the connect below has its own bound
    asyncio.ensure_future(_guarded(client, head, route))


def _refuse(client: Any, head: RequestHead, error: IDWallError, route: Route) -> None:
    client.blocked = False
    client.resume_reading("tunnel")
    if not client.closed:
        client._answer_error(error, head, close=True, route=route)


async def _guarded(client: Any, head: RequestHead, route: Route) -> None:
    try:
        await _open(client, head, route)
    except Exception as exc:  # a bug must not leave the connection blocked without a deadline: answer, loudly
        log.exception("opening a tunnel failed")
        if client.splice is None:
            _refuse(client, head, IDWallError("the tunnel could not be opened", log_detail=repr(exc)), route)


async def _open(client: Any, head: RequestHead, route: Route) -> None:
    node, conn = client.node, client.conn
    if conn.stale and conn.cert_sha256 is not None:
        try:
            await node.resolve(conn)
        except ConnectionResetError:
            client.transport.abort()
            return
        except IDWallError as exc:
            _refuse(client, head, exc, route)
            return
        except Exception as exc:  # the store failed in a way it does not name: fail closed, loudly
            log.exception("resolving a connection failed")
            _refuse(client, head, Unavailable("the gateway cannot check this device right now",
                                              log_detail=repr(exc)), route)
            return
    if client.closed:
        return
    now = node.clock()
    verdict = access.route_verdict(conn, route, head, now=now, cfg=node.access, seen=node.last_seen)
    if verdict is not access.ALLOWED:
        assert verdict.error is not None
        if verdict.kind == access.DENY:
            event("policy.deny", user=conn.user_id, device=conn.device_id, session=conn.session_id, route=route.name)
        _refuse(client, head, verdict.error, route)
        return
    node.last_seen[conn.session_id] = now
    header = b""
    if route.proxy_protocol == "v2":
        token = node.prepared_claims(conn, route).token(node.keys, node.assertion_cache, method=b"TCP",
                                                        htu=route.upstream.encode(), now=now)
        header = proxy_protocol.build(_address(client.transport, "peername"), _address(client.transport, "sockname"),
                                      {proxy_protocol.TLV_ASSERTION: token})
    parts = urlsplit(route.upstream)
    timeout = float(route.timeout or client.engine.config.limits.upstream_timeout)
    try:
        async with asyncio.timeout(timeout):
            _, upstream = await client.engine.loop.create_connection(
                lambda: TunnelUpstream(), parts.hostname, parts.port)
    except TimeoutError:
        _fail(client, route, UpstreamTimeout(f"the upstream of {route.name} did not accept a connection within "
                                             f"{timeout:g}s"), head)
        return
    except OSError as exc:
        _fail(client, route, UpstreamError(f"the upstream of {route.name} refused the connection",
                                           log_detail=f"{route.name}: {exc!r}"), head)
        return
    if client.closed:  # cut (a kill) or gone while connecting
        upstream.transport.abort()
        return
    _splice(client, head, route, upstream, header)


def _fail(client: Any, route: Route, error: IDWallError, head: RequestHead) -> None:
    event("upstream.failed", level=logging.WARNING, status=error.status, route=route.name,
          detail=error.log_detail or error.detail, user=client.conn.user_id, device=client.conn.device_id,
          session=client.conn.session_id)
    _refuse(client, head, error, route)


def _address(transport: Any, which: str) -> tuple[str, int]:
    address = transport.get_extra_info(which)
    return str(address[0]), int(address[1])


def _splice(client: Any, head: RequestHead, route: Route, upstream: TunnelUpstream, header: bytes) -> None:
    conn = client.conn
    if header:
        upstream.transport.write(header)
    rest = b"".join(ev.rest for ev in client.pending if type(ev) is Upgrade)
    client.pending.clear()
    if client.h1 is not None:
        client.h1.close()
        client.h1 = None
    conn.kind = "tunnel"
    client.splice = upstream
    client.transport.write(SWITCHED)
    upstream.attach(client)
    if rest:
        conn.bytes_in += len(rest)
        upstream.transport.write(rest)
    client.blocked = False
    client.resume_reading("tunnel")
    client.engine.count(route.name, 101)
    event("tunnel.open", route=route.name, upstream=route.upstream, user=conn.user_id, device=conn.device_id,
          session=conn.session_id, remote=conn.remote, proxy_protocol=route.proxy_protocol)
    _IdleWatch(client, client.engine.config.session.idle_timeout).arm()


class TunnelUpstream(asyncio.Protocol):
    """The upstream side of one tunnel: raw TCP, spliced to its client connection once the 101 is written.

    Bytes it sends before that (a server that speaks first, as SSH does) are held, up to :data:`EARLY_LIMIT`
    before reading from it pauses, and written right after the 101.
    """

    __slots__ = ("transport", "splice_to", "early", "lost")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.splice_to: Any = None
        self.early: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, client: Any) -> None:
        """Splice to ``client`` (after its 101): what the upstream said early goes first."""
        self.splice_to = client
        if self.early:
            data, self.early = b"".join(self.early), []
            client.conn.bytes_out += len(data)
            client.transport.write(data)
            self.transport.resume_reading()
        if self.lost:
            self.splice_to = None
            client.upstream_lost(self)

    def data_received(self, data: bytes) -> None:
        peer = self.splice_to
        if peer is not None:
            peer.conn.bytes_out += len(data)
            peer.transport.write(data)
            return
        self.early.append(data)
        if sum(map(len, self.early)) > EARLY_LIMIT:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # the upstream is done: the tunnel closes (the client transport flushes what it holds)

    def connection_lost(self, exc: Exception | None) -> None:
        peer, self.splice_to = self.splice_to, None
        self.lost = True
        if peer is not None:
            peer.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.splice_to is not None:
            self.splice_to.pause_reading("upstream")

    def resume_writing(self) -> None:
        if self.splice_to is not None:
            self.splice_to.resume_reading("upstream")


class _IdleWatch:
    """One timer per tunnel: traffic keeps its session alive; none for ``idle`` seconds closes the tunnel."""

    __slots__ = ("client", "idle", "every", "last_bytes", "last_active")

    def __init__(self, client: Any, idle: int) -> None:
        self.client = client
        self.idle = idle
        self.every = max(1.0, min(60.0, idle / 4))
        self.last_bytes = client.conn.bytes_in + client.conn.bytes_out
        self.last_active = client.node.clock()

    def arm(self) -> None:
        self.client.engine.loop.call_later(self.every, self.check)

    def check(self) -> None:
        client = self.client
        if client.closed or client.splice is None:
            return
        conn, now = client.conn, client.node.clock()
        moved = conn.bytes_in + conn.bytes_out
        if moved != self.last_bytes:
            self.last_bytes, self.last_active = moved, now
            if conn.session_id is not None:
                client.node.last_seen[conn.session_id] = now
        elif now - self.last_active >= self.idle:
            event("tunnel.idle", user=conn.user_id, device=conn.device_id, session=conn.session_id,
                  idle=int(now - self.last_active))
            client.closed = True
            client.transport.close()
            return
        self.arm()
