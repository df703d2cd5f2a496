"""What every handler of the gateway's own API and pages shares: the node, and the connection a request came on."""

from __future__ import annotations

from aiohttp import web

from ..connections import Conn
from ..node import Node

NODE: web.AppKey[Node] = web.AppKey("node", Node)


def conn_for(request: web.Request) -> Conn:
    """The registry entry of the client connection ``request`` arrived on."""
    node = request.app[NODE]
    conn = node.registry.get(request.transport)
    if conn is None:
        raise ConnectionResetError("connection is no longer registered")
    if conn.killed:
        raise ConnectionResetError("connection was killed")
    conn.last_seen = node.clock()
    if not conn.user_agent:
        conn.user_agent = request.headers.get("User-Agent", "")[:200]
    return conn
