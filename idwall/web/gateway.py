"""The proxied request path on aiohttp: connection -> identity -> policy -> upstream."""

from __future__ import annotations

from aiohttp import web

from .. import httpnorm, policy
from ..errors import Forbidden, NoClientCertificate, NotFound, Unauthenticated
from ..logs import event
from ..node import certificate_expired
from ..proxy import Forwarder
from .context import NODE, conn_for

FORWARDER: web.AppKey[Forwarder] = web.AppKey("forwarder", Forwarder)


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    """Everything outside ``/idwall/`` and ``/.well-known/idwall/``: policy, then the upstream."""
    node = request.app[NODE]
    conn = conn_for(request)
    raw_path = request.raw_path.split("?", 1)[0]
    path = httpnorm.normalise_path(raw_path)
    if httpnorm.is_reserved(path):
        raise NotFound("no such IDWall endpoint")
    route = httpnorm.match_route(node.config.routes, request.host, path)
    if route is None:
        raise NotFound(f"no route for {httpnorm.host_without_port(request.host)}{path}")
    if conn.cert_sha256 is None:
        if policy.wants_html(request.headers.get("Accept")) and request.method in ("GET", "HEAD"):
            # a person in a browser: the login page explains the missing certificate (403) and links to enrollment
            raise web.HTTPSeeOther(location=policy.login_redirect(request.raw_path))
        raise NoClientCertificate(
            "this app needs an enrolled device: connect with your IDWall device certificate, "
            "or enroll this device first", enroll_url=node.enroll_url())
    resolved = await node.resolve(conn)
    if resolved is None:
        raise Forbidden("this device certificate is not enrolled (or was removed); enroll the device again",
                        enroll_url=node.enroll_url())
    if resolved.device.status != "active":
        raise Forbidden(f"this device is {resolved.device.status.replace('_', ' ')}; "
                        + ("enroll it again" if resolved.device.status == "revoked" else "wait for approval"),
                        enroll_url=node.enroll_url())
    now = node.clock()
    if certificate_expired(resolved, now=now):
        raise Forbidden("this device certificate has expired; enroll the device again", enroll_url=node.enroll_url())
    session = node.live_session(resolved, now=now)
    identity = None
    if session is not None:
        identity = policy.Identity(resolved.user.id, resolved.user.groups, resolved.user.admin, session.auth_time)
    decision = policy.decide(identity=identity, allow_users=route.allow_users, allow_groups=route.allow_groups,
                             fresh_auth=route.fresh_auth, now=now)
    target = request.raw_path
    if decision.outcome in (policy.LOGIN, policy.STEP_UP):
        node.metrics.request(route.name, 401)
        if policy.wants_html(request.headers.get("Accept")) and request.method in ("GET", "HEAD"):
            location = policy.login_redirect(target)
            if decision.outcome == policy.LOGIN and await node.store.had_session(resolved.device.id, conn.cert_sha256):
                location += "&reason=expired"  # the login page then says the session ended (expiry, logout, kill)
            raise web.HTTPSeeOther(location=location)
        raise Unauthenticated(
            "log in with your passkey" if decision.outcome == policy.LOGIN
            else "this route needs a fresh passkey login (step-up)",
            login_url=node.login_url(target), step_up=decision.outcome == policy.STEP_UP)
    if decision.outcome == policy.DENY:
        node.metrics.request(route.name, 403)
        event("policy.deny", user=resolved.user.id, device=resolved.device.id, session=session.id if session else None,
              route=route.name)
        raise Forbidden(f"user {resolved.user.id} is not allowed to use {route.name}")
    assert session is not None
    node.touch(session, now)
    token = node.assertion_for(method=request.method, host=request.host, route=route, resolved=resolved, session=session, path=path, now=now)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    headers = httpnorm.clean_request_headers(
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        client_ip=peer[0] if peer else "", proto="https", host=request.host,
        identity_headers={node.config.assertion.header: token})
    forwarder = request.app[FORWARDER]
    is_ws = request.headers.get("Upgrade", "").strip().lower() == "websocket"
    if is_ws:
        if not route.websockets:
            raise Forbidden(f"route {route.name} does not allow WebSockets")
        conn.kind = "websocket"
        node.metrics.request(route.name, 101)
        try:
            return await forwarder.forward_websocket(request, route=route, path=path, headers=headers)
        finally:
            conn.kind = "http"

    def count(n: int) -> None:
        conn.bytes_out += n

    # "stream" from the start: a long-poll whose upstream has not sent a byte yet must be cut at expiry too
    conn.kind = "stream"
    try:
        response = await forwarder.forward(request, route=route, path=path, headers=headers, on_chunk=count)
    finally:
        conn.kind = "http"
    node.metrics.request(route.name, response.status)
    return response


