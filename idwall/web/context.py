"""What every handler of the gateway's own API and pages shares: the node, the client connection a request
came on, and the access decisions about it (made in :mod:`idwall.access`, raised here as problems).

Requests reach this app from the engine over a private unix socket; ``X-IDWall-Conn`` names the client
connection (with a per-process secret that only the engine knows), so a handler acts on the TLS
connection the person is really on: its certificate for a login, its session for an action.
"""

from __future__ import annotations

from aiohttp import web

from .. import access
from ..connections import Conn
from ..engine.io import INTERNAL_HEADER, Engine
from ..node import Node
from ..model import Resolved, Session

NODE: web.AppKey[Node] = web.AppKey("node", Node)
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
_HEADER = INTERNAL_HEADER.decode()


class NoClientConnection(ConnectionResetError):
    """The request is for no live client connection: not from the engine, or its connection was cut."""


def conn_for(request: web.Request) -> Conn:
    """The registry entry of the client connection ``request`` arrived on."""
    conn = request.app[ENGINE].check_internal(request.headers.get(_HEADER))
    if conn is None or conn.killed:
        # not from the engine, or the connection was cut while its request travelled: nothing to answer
        raise NoClientConnection("no live client connection behind this request")
    conn.last_seen = request.app[NODE].clock()
    return conn


def facts(request: web.Request) -> access.RequestFacts:
    """What the access decisions read of an aiohttp request."""
    def header(name: str) -> bytes | None:
        value = request.headers.get(name)
        return value.encode("latin-1") if value is not None else None

    fetch_site = header("Sec-Fetch-Site")
    return access.RequestFacts(
        method=request.method.encode(), target=request.raw_path.encode("latin-1"), host=header("Host"),
        origin=header("Origin"), fetch_site=fetch_site.lower() if fetch_site is not None else None,
        accept=header("Accept"), preflight="Access-Control-Request-Method" in request.headers)


def require(verdict: access.Verdict) -> None:
    """Raise the verdict's problem unless it allows the request."""
    if verdict is not access.ALLOWED:
        assert verdict.error is not None
        raise verdict.error


async def enrolled(request: web.Request) -> tuple[Conn, Resolved]:
    """This request's connection and what it resolves to, if that is an active enrolled device (login)."""
    node = request.app[NODE]
    conn = conn_for(request)
    await node.resolve(conn)
    require(access.device_verdict(conn, now=node.clock(), cfg=node.access))
    assert conn.resolved is not None
    return conn, conn.resolved


async def with_session(request: web.Request) -> tuple[Conn, Resolved, Session]:
    """As :func:`enrolled`, and the live session on it (401 with a login URL when there is none)."""
    node = request.app[NODE]
    conn = conn_for(request)
    await node.resolve(conn)
    require(access.session_verdict(conn, now=node.clock(), cfg=node.access, seen=node.last_seen))
    assert conn.resolved is not None and conn.resolved.session is not None
    return conn, conn.resolved, conn.resolved.session


def from_own_pages(request: web.Request) -> None:
    """Refuse a session-authorised write that another site's page made (the certificate is ambient)."""
    require(access.own_pages_verdict(facts(request), cfg=request.app[NODE].access))
