"""whoami: a backend service that trusts IDWall's identity assertion and nothing else.

Run it behind the gateway (route ``upstream: http://127.0.0.1:9001``, ``audience: whoami``)::

    python examples/whoami_upstream.py --port 9001 \\
        --jwks https://localhost:8443/.well-known/idwall/jwks.json \\
        --issuer https://localhost:8443 --audience whoami --ca demo/certs/ca.pem

``GET /`` answers the verified identity as HTML or JSON (by ``Accept``);
``/ws`` is a WebSocket echo that greets the user by id. Requests without a
valid assertion get 401 problem+json; if the JWKS cannot be fetched, 503.
"""

from __future__ import annotations

import argparse
import html
import json
import ssl
from typing import Any

from aiohttp import web

from idwall.errors import IDWallError
from idwall.upstream import AssertionVerifier, JWKSCache, VerifiedIdentity, identity_from_request

VERIFIER = web.AppKey("verifier", AssertionVerifier)
PUBLIC_URL_BASE = web.AppKey("public_url_base", str)


def _problem(error: IDWallError) -> web.Response:
    return web.json_response(error.problem(), status=error.status, content_type="application/problem+json")


async def _identity(request: web.Request) -> VerifiedIdentity:
    base = request.app.get(PUBLIC_URL_BASE)
    return await identity_from_request(request.app[VERIFIER], request, public_url_base=base or None)


def _as_json(identity: VerifiedIdentity) -> dict[str, Any]:
    return {
        "sub": identity.sub,
        "email": identity.email,
        "name": identity.name,
        "groups": list(identity.groups),
        "sid": identity.sid,
        "amr": list(identity.amr),
        "auth_time": identity.auth_time,
        "device": identity.device,
        "cnf_x5t": identity.cnf_x5t,
        "claims": identity.claims,
    }


def _as_html(identity: VerifiedIdentity) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td><code>{html.escape(json.dumps(value))}</code></td></tr>"
        for key, value in sorted(identity.claims.items())
    )
    # Claims hold long unbroken tokens (ids, thumbprints): let them wrap anywhere so the page fits 320-400 px.
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'><title>whoami</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1rem auto;padding:0 1rem;max-width:48rem;"
        "line-height:1.4}h1,p{overflow-wrap:anywhere}table{border-collapse:collapse;width:100%}"
        "th,td{text-align:left;vertical-align:top;padding:.2rem .75rem .2rem 0}"
        "td code{white-space:pre-wrap;overflow-wrap:anywhere}</style></head><body>"
        f"<h1>Hello, {html.escape(identity.name or identity.sub)}</h1>"
        f"<p>Verified identity assertion for <strong>{html.escape(identity.sub)}</strong> "
        f"on device <strong>{html.escape(str(identity.device.get('name', '?')))}</strong>.</p>"
        f"<table>{rows}</table></body></html>"
    )


async def whoami(request: web.Request) -> web.StreamResponse:
    """The verified identity, as HTML for browsers and JSON for everything else."""
    try:
        identity = await _identity(request)
    except IDWallError as error:
        return _problem(error)
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=_as_html(identity), content_type="text/html")
    return web.json_response(_as_json(identity))


async def websocket(request: web.Request) -> web.StreamResponse:
    """Echo every text message back after a greeting that names the verified user."""
    try:
        identity = await _identity(request)
    except IDWallError as error:
        return _problem(error)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"hello": identity.sub, "sid": identity.sid})
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == web.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def make_app(verifier: AssertionVerifier, *, public_url_base: str | None = None) -> web.Application:
    """The whoami application around ``verifier`` (reused by tests and ``idwall demo``)."""
    app = web.Application()
    app[VERIFIER] = verifier
    app[PUBLIC_URL_BASE] = public_url_base or ""
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", whoami)
    return app


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--jwks", required=True, help="URL of the gateway's /.well-known/idwall/jwks.json")
    parser.add_argument("--issuer", required=True, help="the gateway's public_url, exactly")
    parser.add_argument("--audience", required=True, help="the route's name or configured audience")
    parser.add_argument("--ca", help="CA certificate that signed the gateway's server certificate")
    parser.add_argument("--public-url", help="scheme://host[:port] clients use (default: X-Forwarded-* headers)")
    args = parser.parse_args(argv)
    ssl_context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    verifier = AssertionVerifier(keys=JWKSCache(args.jwks, ssl_context=ssl_context),
                                 issuer=args.issuer, audience=args.audience)
    web.run_app(make_app(verifier, public_url_base=args.public_url), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
