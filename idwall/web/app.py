"""Wiring of the gateway's own aiohttp application (everything under ``/idwall/`` and ``/.well-known/idwall/``)."""

from __future__ import annotations

import ipaddress
import time

from aiohttp import web

from ..errors import NotFound, Unavailable
from . import (api_actions, api_admin, api_approvals, api_directory, api_enroll, api_incidents, api_login,
               api_recover, api_recovery, api_renew, api_sign, page_renew, pages)
from ..engine.io import Engine
from ..node import STALE_DETAIL, Node
from .context import ENGINE, NODE, conn_for
from .problems import problem_middleware

routes = web.RouteTableDef()


@routes.get("/.well-known/idwall/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """Public keys for the identity assertions (current and, during an overlap, previous)."""
    node = request.app[NODE]
    node.reload_keys_if_needed()
    return web.json_response(node.keys.jwks(), headers={"Cache-Control": "public, max-age=60"})


@routes.get("/idwall/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers and its store can be read."""
    node = request.app[NODE]
    if node.stale:
        raise Unavailable(STALE_DETAIL)
    await node.store.last_event_id()
    return web.json_response({"status": "ok", "time": int(time.time()), "connections": len(node.registry)})


def _is_local(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(conn_for(request).remote).is_loopback
    except ValueError:
        return False


@routes.get("/idwall/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: from the local machine, or for an admin session."""
    node = request.app[NODE]
    if not _is_local(request):
        await api_admin.require_admin(request, scope="read")
    live = {c.session_id for c in node.registry if c.session_id}
    node.metrics.sessions.set(len(live))
    node.metrics.connections.set(len(node.registry))
    return web.Response(body=node.metrics.render(), content_type="text/plain", charset="utf-8")


async def _reserved_fallback(request: web.Request) -> web.Response:
    raise NotFound(f"no IDWall endpoint {request.method} {request.path}")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers for what the gateway itself serves (proxied answers keep the upstream's)."""
    if request.path.startswith(("/idwall/", "/.well-known/idwall/")):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.path.startswith("/idwall/api/"):
            response.headers.setdefault("Cache-Control", "no-store")


def build_app(node: Node, engine: Engine) -> web.Application:
    """The gateway's own endpoints: JWKS, health, metrics, the API and the pages (the engine proxies the rest)."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=node.config.limits.api_body)
    app[NODE] = node
    app[ENGINE] = engine
    app.on_response_prepare.append(_security_headers)
    app.add_routes(routes)
    for module in (api_enroll, api_recover, api_login, api_actions, api_admin, api_directory, api_approvals, api_sign,
                   api_renew, api_incidents, api_recovery, pages, page_renew):
        app.add_routes(module.routes)
    app.router.add_route("*", "/idwall/{tail:.*}", _reserved_fallback)
    app.router.add_route("*", "/.well-known/idwall/{tail:.*}", _reserved_fallback)
    return app


__all__ = ["build_app"]
