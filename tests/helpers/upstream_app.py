"""A real aiohttp upstream for the proxy tests, with one handler per behaviour a proxy must get right.

It records what reached it (method, raw path, raw headers, body) and offers streams that wait for the
test (a buffering proxy deadlocks on them), uploads it hashes as they arrive, hop-by-hop and identity
headers in its answers, slow and dying answers, and a WebSocket echo that reports how it was closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

__all__ = ["AppUpstream", "serve_app", "upstream_app"]


@dataclass
class AppUpstream:
    """What the upstream saw, and the events its handlers wait on or report through."""

    url: str = ""
    seen: list[dict] = field(default_factory=list)
    release_stream: asyncio.Event = field(default_factory=asyncio.Event)
    first_upload_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    ws_closed_with: asyncio.Future | None = None
    tls_peer: str | None = None
    #: the connections requests arrived on (a test may close them, as an upstream's idle timeout does)
    transports: set[asyncio.BaseTransport] = field(default_factory=set)


def _record(up: AppUpstream, request: web.Request, body: bytes = b"") -> dict:
    entry = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        "body": body,
        "peer_port": request.transport.get_extra_info("peername")[1] if request.transport else None,
    }
    if request.transport is not None:
        up.transports.add(request.transport)
    up.seen.append(entry)
    return entry


def upstream_app(up: AppUpstream) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        entry = _record(up, request, body)
        return web.json_response(
            {"raw_path": entry["raw_path"], "headers": entry["headers"], "body_len": len(body),
             "peer": up.tls_peer},
            headers={"X-Upstream": "yes"},
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        # Only continues once the client has seen "first": a buffering proxy deadlocks here.
        try:
            await asyncio.wait_for(up.release_stream.wait(), 10)
        except asyncio.CancelledError:
            up.stream_cancelled.set()
            raise
        await response.write(b"second")
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        _record(up, request)
        digest, total = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
            up.first_upload_chunk.set()
        return web.json_response({"total": total, "sha256": digest.hexdigest()})

    async def hop(request: web.Request) -> web.Response:
        _record(up, request)
        response = web.Response(text="hop")
        response.headers.add("Connection", "X-Up-Secret")
        response.headers.add("X-Up-Secret", "1")
        response.headers.add("Keep-Alive", "timeout=99")
        response.headers.add("Proxy-Authenticate", "Basic")
        response.headers.add("X-IDWall-Assertion", "upstream-leak")
        response.headers.add("X_IDWall_User", "upstream-leak")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    async def slow(request: web.Request) -> web.Response:
        _record(up, request)
        await asyncio.sleep(3)
        return web.Response(text="too late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        await asyncio.sleep(3)
        return response

    async def sized(request: web.Request) -> web.Response:
        _record(up, request)
        return web.Response(body=b"z" * int(request.query["n"]), content_type="application/octet-stream")

    async def trickle(request: web.Request) -> web.StreamResponse:
        # A small body with a known length that arrives in two parts: it must still stream.
        _record(up, request)
        response = web.StreamResponse()
        response.content_length = 20
        await response.prepare(request)
        await response.write(b"a" * 10)
        try:
            await asyncio.wait_for(up.release_stream.wait(), 10)
        except asyncio.CancelledError:
            up.stream_cancelled.set()
            raise
        await response.write(b"b" * 10)
        await response.write_eof()
        return response

    async def dies(request: web.Request) -> web.StreamResponse:
        _record(up, request)
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"y" * 10)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        entry = _record(up, request)
        sock = web.WebSocketResponse(protocols=("chat.v1",))
        await sock.prepare(request)
        await sock.send_str(json.dumps({"headers": entry["headers"], "raw_path": entry["raw_path"]}))
        while True:
            try:
                msg = await sock.receive()
            except asyncio.CancelledError:
                # the connection was cut without a close frame (its handler is cancelled with it)
                if up.ws_closed_with is not None and not up.ws_closed_with.done():
                    up.ws_closed_with.set_result((aiohttp.WSMsgType.CLOSED, None, None))
                raise
            if msg.type is aiohttp.WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await sock.close(code=int(msg.data[6:]), message=b"bye")
                    break
                await sock.send_str("echo:" + msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(b"echo:" + msg.data)
            else:
                if up.ws_closed_with is not None and not up.ws_closed_with.done():
                    up.ws_closed_with.set_result((msg.type, msg.data, msg.extra))
                break
        return sock

    async def redirect(request: web.Request) -> web.Response:
        _record(up, request)
        response = web.Response(status=302, headers={"Location": "/elsewhere"})
        response.set_cookie("sid", "upstream")
        return response

    async def name_itself(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "upstream"  # a test can tell the app's name from the gateway's

    app = web.Application(client_max_size=1 << 30)
    app.on_response_prepare.append(name_itself)
    handlers = {"redirect": redirect, "stream": stream, "upload": upload, "hop": hop, "slow": slow, "slow-body": slow_body, "dies": dies,
                "sized": sized, "trickle": trickle}
    for name, handler in handlers.items():
        # also under one more segment, so a route with a longer prefix (/quick/...) reaches the same handler
        app.router.add_route("*", f"/base/{name}", handler)
        app.router.add_route("*", f"/base/{{route}}/{name}", handler)
    app.router.add_route("GET", "/base/ws", ws)
    app.router.add_route("GET", "/base/{route}/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    # Short shutdown: the slow upstream handlers are not worth waiting for at teardown.
    # handler_cancellation as the gateway runs it: a client that goes away cancels the forward.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port
