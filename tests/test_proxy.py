"""idwall.proxy end to end: a real upstream and a small front app on 127.0.0.1:0.

The front app does what the gateway does around the forwarder (normalise the
path, match the route, clean the headers, forward), so every test goes through
real sockets, real HTTP parsers and, for the mTLS upstream, real TLS.

What aiohttp 3.14's server parser does with smuggling-style input (checked here
over raw sockets, with the C and the pure-Python parser alike): Transfer-Encoding
together with Content-Length, duplicate Content-Length (even equal values),
``Content-Length: 5, 5``, ``+5``, obs-fold, whitespace before the colon, bare CR,
bare LF line endings, LF in a chunk extension, a repeated Transfer-Encoding and an
unknown coding are all answered 400 and never reach the handler.
``Transfer-Encoding: identity, chunked`` is read as chunked (chunked is last, which
RFC 9112 §6.3 allows) and ``Transfer_Encoding`` is an ordinary header (the message
is framed by its Content-Length): both are forwarded re-framed, with the body the
gateway parsed. HTTP/1.0 with Transfer-Encoding is read as chunked with the
connection closing after it, and bytes pipelined behind it are a 400 ("Data after
Connection: close"). The invariant checked for every row: the upstream receives
exactly the requests the gateway's handler saw, never one hidden in a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from idwall import pki
from idwall.config import Route, UpstreamTLS
from idwall.errors import IDWallError, NotFound
from idwall.httpnorm import clean_request_headers, match_route, normalise_path
from idwall.proxy import COALESCE_MAX, Forwarder, upstream_ssl_context, upstream_url

def _key(name: str) -> str:
    """Header comparison written out here, independent of the module under test."""
    return name.strip().lower().replace("_", "-")


ASSERTION = "gateway.signed.jwt"
FORWARDER = web.AppKey("forwarder", Forwarder)
ROUTES = web.AppKey("routes", list)
CHUNKS = web.AppKey("chunks", list)
HANDLED = web.AppKey("handled", list)
#: per forwarded response: True when forward() had already sent the head (streamed), False when it
#: returned the whole small body for aiohttp to send with the head in one write
STREAMED = web.AppKey("streamed", list)


# --- the upstream --------------------------------------------------------------


@dataclass
class Upstream:
    """A real aiohttp upstream that records what reached it."""

    url: str = ""
    seen: list[dict] = field(default_factory=list)
    release_stream: asyncio.Event = field(default_factory=asyncio.Event)
    first_upload_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    ws_closed_with: asyncio.Future | None = None
    tls_peer: str | None = None


def _record(up: Upstream, request: web.Request, body: bytes = b"") -> dict:
    entry = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        "body": body,
    }
    up.seen.append(entry)
    return entry


def _upstream_app(up: Upstream) -> web.Application:
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
            msg = await sock.receive()
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

    app = web.Application()
    app.router.add_route("*", "/base/stream", stream)
    app.router.add_route("*", "/base/upload", upload)
    app.router.add_route("*", "/base/hop", hop)
    app.router.add_route("*", "/base/slow", slow)
    app.router.add_route("*", "/base/slow-body", slow_body)
    app.router.add_route("*", "/base/dies", dies)
    app.router.add_route("*", "/base/sized", sized)
    app.router.add_route("*", "/base/trickle", trickle)
    app.router.add_route("GET", "/base/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    # Short shutdown: the slow upstream handlers are not worth waiting for at teardown.
    # handler_cancellation as the gateway runs it: a client that goes away cancels the forward.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    runner, port = await _serve(_upstream_app(up))
    up.url = f"http://127.0.0.1:{port}/base"
    yield up
    await runner.cleanup()


# --- the front app (what the gateway wraps around the forwarder) ---------------


async def _front_handler(request: web.Request) -> web.StreamResponse:
    forwarder = request.app[FORWARDER]
    request.app[HANDLED].append(request.raw_path)
    try:
        path = normalise_path(request.raw_path.partition("?")[0])
        route = match_route(request.app[ROUTES], request.host, path)
        if route is None:
            raise NotFound(f"no route for {path}")
        headers = clean_request_headers(
            list(request.headers.items()),
            client_ip=request.remote or "",
            proto=request.scheme,
            host=request.host,
            identity_headers={"X-IDWall-Assertion": ASSERTION},
        )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await forwarder.forward_websocket(request, route=route, path=path, headers=headers)
        response = await forwarder.forward(request, route=route, path=path, headers=headers,
                                           on_chunk=request.app[CHUNKS].append)
        request.app[STREAMED].append(response.prepared)
        return response
    except IDWallError as exc:
        return web.json_response(exc.problem(), status=exc.status, content_type="application/problem+json")


Front = Callable[..., Awaitable[str]]
ChunkLog = dict[str, list[int]]
HandledLog = dict[str, list[str]]
StreamedLog = dict[str, list[bool]]


@pytest.fixture
def chunk_log() -> ChunkLog:
    """Sizes passed to on_chunk, per front app base URL."""
    return {}


@pytest.fixture
def handled_log() -> HandledLog:
    """Raw request targets the front app's handler saw, per front app base URL."""
    return {}


@pytest.fixture
def streamed_log() -> StreamedLog:
    """Per forwarded response, whether forward() streamed it (see STREAMED), per front app base URL."""
    return {}


@pytest.fixture
async def front(chunk_log: ChunkLog, handled_log: HandledLog, streamed_log: StreamedLog) -> AsyncIterator[Front]:
    """A factory: front(routes, timeout_default=...) -> base URL of a running front app."""
    runners: list[web.AppRunner] = []
    forwarders: list[Forwarder] = []

    async def make(routes: list[Route], *, timeout_default: float = 5.0) -> str:
        forwarder = Forwarder(timeout_default=timeout_default)
        await forwarder.start()
        forwarders.append(forwarder)
        app = web.Application()
        app[FORWARDER], app[ROUTES], app[CHUNKS], app[HANDLED], app[STREAMED] = forwarder, routes, [], [], []
        app.router.add_route("*", "/{tail:.*}", _front_handler)
        runner, port = await _serve(app)
        runners.append(runner)
        base = f"http://127.0.0.1:{port}"
        chunk_log[base], handled_log[base], streamed_log[base] = app[CHUNKS], app[HANDLED], app[STREAMED]
        return base

    yield make
    for runner in runners:
        await runner.cleanup()
    for forwarder in forwarders:
        await forwarder.close()


def _route(upstream: str, **kwargs: object) -> Route:
    return Route(name="app", host=None, path="/", upstream=upstream, **kwargs)  # type: ignore[arg-type]


async def _raw(base: str, request: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes to the front app and read until it closes the connection."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    chunks = []
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


def _json_body(raw: bytes) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def _values(headers: list[list[str]] | list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if _key(k) == _key(name)]


# --- streaming -----------------------------------------------------------------


async def test_response_streams_before_upstream_finishes(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/stream") as response:
            assert response.status == 200
            first = await asyncio.wait_for(response.content.readany(), 5)
            assert first == b"first"
            upstream.release_stream.set()
            assert first + await response.content.read() == b"firstsecond"


async def test_client_going_away_closes_the_upstream_stream(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        response = await client.get(base + "/stream")
        assert await asyncio.wait_for(response.content.readany(), 5) == b"first"
        response.close()  # drops the connection, as a kill does
    await asyncio.wait_for(upstream.stream_cancelled.wait(), 5)


@pytest.mark.parametrize(("size", "streamed"), [(0, False), (100, False), (COALESCE_MAX, False),
                                               (COALESCE_MAX + 1, True)])
async def test_small_whole_bodies_leave_with_the_head(
    upstream: Upstream, front: Front, chunk_log: ChunkLog, streamed_log: StreamedLog, size: int, streamed: bool,
) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{base}/sized?n={size}") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            assert "Transfer-Encoding" not in response.headers
            assert await response.read() == b"z" * size
    if not streamed:
        assert streamed_log[base] == [False]  # one write of head and body, not prepare() then write()
    else:
        # Above the limit the body may not be whole yet: it goes out as it comes, as before.
        assert streamed_log[base] == [True]
    assert sum(chunk_log[base]) == size


async def test_small_body_still_arriving_is_streamed_not_awaited(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/trickle") as response:
            assert response.headers["Content-Length"] == "20"
            # The upstream sends the rest only after this: a proxy waiting for the whole body deadlocks.
            first = await asyncio.wait_for(response.content.readany(), 5)
            assert first == b"a" * 10
            upstream.release_stream.set()
            assert first + await response.content.read() == b"a" * 10 + b"b" * 10


async def test_client_going_away_mid_small_body_closes_the_upstream(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        response = await client.get(base + "/trickle")
        assert await asyncio.wait_for(response.content.readany(), 5) == b"a" * 10
        response.close()  # as a kill does: the stream is cut, not finished in a buffer
    await asyncio.wait_for(upstream.stream_cancelled.wait(), 5)


async def test_request_body_streams_without_buffering(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    piece = bytes(range(256)) * 4096  # 1 MiB
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for index in range(20):
            sent.update(piece)
            yield piece
            if index == 2:
                # A proxy that buffered the whole body would never let this chunk through.
                await asyncio.wait_for(upstream.first_upload_chunk.wait(), 5)

    async with aiohttp.ClientSession() as client:
        async with client.post(base + "/upload", data=body()) as response:
            result = await response.json()
    assert result == {"total": 20 * len(piece), "sha256": sent.hexdigest()}


async def test_path_and_query_reach_upstream_as_normalised(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(base, b"GET //x/%7Ey/a%2cb?q=%20&a=b%2F HTTP/1.1\r\nHost: wiki\r\nConnection: close\r\n\r\n")
    assert _json_body(raw)["raw_path"] == "/base/x/~y/a%2Cb?q=%20&a=b%2F"


@pytest.mark.parametrize("path", [b"/a/../admin", b"/a/%2e%2e/admin", b"/a%2fb", b"/a%00", b"/a\\b", b"/%252e"])
async def test_ambiguous_paths_never_reach_upstream(upstream: Upstream, front: Front, path: bytes) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(base, b"GET " + path + b" HTTP/1.1\r\nHost: wiki\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    assert b"ambiguous-path" in raw
    assert upstream.seen == []


async def test_head_keeps_content_length(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/hop") as get, client.head(base + "/hop") as head:
            assert await get.read() == b"hop"
            assert head.status == 200
            assert head.headers["Content-Length"] == "3"


async def test_on_chunk_counts_response_bytes(upstream: Upstream, front: Front, chunk_log: ChunkLog) -> None:
    base = await front([_route(upstream.url)])
    upstream.release_stream.set()
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/stream") as response:
            assert await response.read() == b"firstsecond"
    assert sum(chunk_log[base]) == len(b"firstsecond")


# --- header hygiene over the wire --------------------------------------------------

SPOOFS = [
    b"X-IDWall-Assertion: forged",
    b"x-idwall-assertion: forged",
    b"X_IDWall_Assertion: forged",
    b"x_idwall_ASSERTION: forged",
    b"X-IDWALL-USER: admin",
    b"X_IDWALL_GROUPS: admins",
    b"Connection: X-IDWall-Assertion\r\nX-IDWall-Assertion: forged",
]


@pytest.mark.parametrize("spoof", SPOOFS, ids=[s.decode().split(":")[0] for s in SPOOFS])
async def test_spoofed_identity_headers_never_reach_upstream(upstream: Upstream, front: Front, spoof: bytes) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(base, b"GET /who HTTP/1.1\r\nHost: wiki\r\n" + spoof + b"\r\nConnection: close\r\n\r\n")
    headers = _json_body(raw)["headers"]
    idwall = [[k, v] for k, v in headers if _key(k).startswith("x-idwall-")]
    assert idwall == [["X-IDWall-Assertion", ASSERTION]]


async def test_forwarding_headers_are_overwritten(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(
        base,
        b"GET /who HTTP/1.1\r\nHost: wiki.example:8443\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX_Forwarded_For: 8.8.8.8\r\n"
        b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: admin\r\n"
        b"X-Forwarded-Proto: https\r\nX-Original-URL: /admin\r\nConnection: close, X-Forwarded-For\r\n\r\n",
    )
    headers = _json_body(raw)["headers"]
    assert _values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert _values(headers, "X-Forwarded-Proto") == ["http"]
    assert _values(headers, "X-Forwarded-Host") == ["wiki.example:8443"]
    assert _values(headers, "Host") == ["wiki.example:8443"]
    for name in ("Forwarded", "X-Real-IP", "X-Original-URL"):
        assert _values(headers, name) == []


async def test_hop_by_hop_request_headers_removed(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(
        base,
        b"POST /who HTTP/1.1\r\nHost: wiki\r\nConnection: close, keep-alive, X-Secret, x_other\r\n"
        b"X-Secret: 1\r\nX_Secret: 2\r\nX-Other: 3\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic YTpi\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    seen = upstream.seen[-1]
    assert seen["body"] == b"hello"
    names = {_key(k) for k, _ in seen["headers"]}
    assert not names & {"x-secret", "x-other", "keep-alive", "te", "proxy-authorization"}
    assert _values(seen["headers"], "X-Kept") == ["yes"]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["body_len"] == 5


async def test_h2c_upgrade_is_not_forwarded(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(
        base,
        b"GET /who HTTP/1.1\r\nHost: wiki\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        b"Connection: Upgrade, HTTP2-Settings, close\r\n\r\n",
    )
    headers = _json_body(raw)["headers"]
    assert _values(headers, "Upgrade") == [] and _values(headers, "HTTP2-Settings") == []


async def test_hop_by_hop_response_headers_removed(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/hop") as response:
            assert await response.text() == "hop"
            names = {_key(k) for k in response.headers}
            assert not names & {"x-up-secret", "keep-alive", "proxy-authenticate", "x-idwall-assertion",
                                "x-idwall-user"}
            assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_client_auto_headers_are_not_invented(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(base, b"POST /who HTTP/1.1\r\nHost: wiki\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    headers = _json_body(raw)["headers"]
    for name in ("User-Agent", "Accept", "Accept-Encoding", "Content-Type", "Transfer-Encoding"):
        assert _values(headers, name) == [], name
    assert _values(headers, "Content-Length") == ["2"]


# --- upstream failures -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_502_when_upstream_port_is_closed(front: Front) -> None:
    base = await front([_route(f"http://127.0.0.1:{_closed_port()}")])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/x") as response:
            assert response.status == 502
            assert response.content_type == "application/problem+json"
            problem = await response.json()
    assert problem["type"].endswith("/bad-gateway")
    assert "127.0.0.1" not in problem["detail"]


async def test_504_when_upstream_is_slow(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)], timeout_default=0.3)
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/slow") as response:
            assert response.status == 504
            assert (await response.json())["type"].endswith("/gateway-timeout")


async def test_route_timeout_overrides_default(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url, timeout=1)], timeout_default=60)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/slow") as response:
            assert response.status == 504
    assert loop.time() - started < 2.5


async def test_slow_body_aborts_client(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)], timeout_default=0.3)
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/slow-body") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_upstream_dying_mid_body_truncates_client(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/dies") as response:
            assert response.status == 200 and response.headers["Content-Length"] == "1000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_no_redirects_followed_and_no_cookies_kept(upstream: Upstream, front: Front) -> None:
    async def redirect(request: web.Request) -> web.Response:
        _record(upstream, request)
        response = web.Response(status=302, headers={"Location": "/elsewhere"})
        response.set_cookie("sid", "upstream")
        return response

    app = web.Application()
    app.router.add_get("/r", redirect)
    runner, port = await _serve(app)
    try:
        base = await front([_route(f"http://127.0.0.1:{port}")])
        for _ in range(2):
            raw = await _raw(base, b"GET /r HTTP/1.1\r\nHost: wiki\r\nConnection: close\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 302") and b"Location: /elsewhere" in raw
            assert b"Set-Cookie: sid=upstream" in raw
        assert [entry["raw_path"] for entry in upstream.seen] == ["/r", "/r"]
        # A cookie jar in the pool would have sent the upstream's cookie back on its own.
        assert _values(upstream.seen[1]["headers"], "Cookie") == []
    finally:
        await runner.cleanup()


# --- request smuggling ---------------------------------------------------------------

SMUGGLING = [
    # (id, raw request, RFC section attacked)
    ("te-and-cl", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §6.3 rule 3"),
    ("duplicate-cl", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n"
     b"helloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §6.3 rule 5"),
    ("cl-list", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 40\r\n\r\n"
     b"helloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9110 §8.6"),
    ("obs-fold-te", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 38\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §5.2 obs-fold"),
    ("obs-fold-header", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n X-IDWall-Assertion: forged\r\n\r\n"
     b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §5.2 obs-fold"),
    ("space-before-colon", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 38\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §5.1"),
    ("te-unknown-coding", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §6.1"),
    ("te-chunked-not-last", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §6.3 rule 4"),
    ("te-identity-chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "RFC 9112 §6.3 rule 4"),
    ("http10-te", b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §6.1"),
    ("bare-lf", b"GET /a HTTP/1.1\nHost: x\n\nGET /smuggled HTTP/1.1\nHost: x\n\n", "RFC 9112 §2.2"),
    ("bare-cr", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rGET /smuggled HTTP/1.1\r\n\r\n", "RFC 9112 §2.2"),
    ("chunk-ext-lf", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5;a\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "RFC 9112 §7.1.1"),
    ("underscore-te", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "RFC 3875 §4.1.18"),
    ("duplicate-host", b"GET /a HTTP/1.1\r\nHost: x\r\nHost: admin\r\n\r\n", "RFC 9112 §3.2"),
]


# aiohttp accepts these (see the module docstring); everything else in SMUGGLING is a 400.
ACCEPTED_BY_AIOHTTP = {"te-identity-chunked": b"", "underscore-te": b"0\r\n\r\n"}


@pytest.mark.parametrize(("case", "payload", "rfc"), SMUGGLING, ids=[row[0] for row in SMUGGLING])
async def test_smuggling_never_desyncs_the_upstream(
    upstream: Upstream, front: Front, handled_log: HandledLog, case: str, payload: bytes, rfc: str
) -> None:
    base = await front([_route(upstream.url)])
    raw = await _raw(base, payload, wait=1.5)
    # The invariant: the upstream sees exactly the requests the gateway parsed, no more.
    assert [entry["raw_path"] for entry in upstream.seen] == ["/base" + p for p in handled_log[base]], rfc
    for entry in upstream.seen:
        assert not (_values(entry["headers"], "Transfer-Encoding") and _values(entry["headers"], "Content-Length"))
        assert _values(entry["headers"], "Transfer-Encoding") in ([], ["chunked"])
    if case in ACCEPTED_BY_AIOHTTP:
        assert raw.startswith(b"HTTP/1.1 200") or raw.startswith(b"HTTP/1.0 200")
        assert upstream.seen[0]["raw_path"] == "/base/a"
        assert upstream.seen[0]["body"] == ACCEPTED_BY_AIOHTTP[case]
    else:
        assert raw.startswith(b"HTTP/1.0 400") or raw.startswith(b"HTTP/1.1 400"), raw[:80]
        assert upstream.seen == [] and handled_log[base] == []


# --- WebSockets --------------------------------------------------------------------


async def test_websocket_relay_with_close_codes(upstream: Upstream, front: Front) -> None:
    upstream.ws_closed_with = asyncio.get_running_loop().create_future()
    base = await front([_route(upstream.url, websockets=True)])
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(
            base + "/ws?room=1", protocols=("chat.v2", "chat.v1"),
            headers={"X_IDWall_Assertion": "forged", "X-IDWall-User": "admin"},
        ) as ws:
            assert ws.protocol == "chat.v1"
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert hello["raw_path"] == "/base/ws?room=1"
            assert [[k, v] for k, v in hello["headers"] if _key(k).startswith("x-idwall-")] == [
                ["X-IDWall-Assertion", ASSERTION]
            ]
            assert _values(hello["headers"], "Sec-WebSocket-Key") and len(_values(hello["headers"], "Sec-WebSocket-Key")) == 1
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
            await ws.send_bytes(b"\x00\x01")
            assert (await ws.receive(timeout=5)).data == b"echo:\x00\x01"
            await ws.send_str("close:4001")
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.data == 4001 and msg.extra == "bye"
        async with client.ws_connect(base + "/ws", protocols=("chat.v1",)) as ws:
            await ws.receive(timeout=5)
            await ws.close(code=4002, message=b"client done")
    assert await asyncio.wait_for(upstream.ws_closed_with, 5) == (aiohttp.WSMsgType.CLOSE, 4002, "client done")


async def test_websocket_client_vanishing_closes_upstream_going_away(upstream: Upstream, front: Front) -> None:
    upstream.ws_closed_with = asyncio.get_running_loop().create_future()
    base = await front([_route(upstream.url, websockets=True)])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: wiki\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
    await asyncio.wait_for(reader.read(1), 5)  # the upstream's first frame came through
    writer.transport.abort()  # no close frame: what a kill or a dead client looks like
    assert await asyncio.wait_for(upstream.ws_closed_with, 5) == (aiohttp.WSMsgType.CLOSE, 1001, "")


async def test_websocket_refused_when_route_disallows(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url, websockets=False)])
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(base + "/ws")
    assert info.value.status == 403
    assert upstream.seen == []


async def test_websocket_upstream_down_is_502(front: Front) -> None:
    base = await front([_route(f"http://127.0.0.1:{_closed_port()}", websockets=True)])
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(base + "/ws")
    assert info.value.status == 502


async def test_websocket_upstream_refusing_handshake_is_502(upstream: Upstream, front: Front) -> None:
    base = await front([_route(upstream.url, websockets=True)])
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(base + "/not-a-websocket")
    assert info.value.status == 502


# --- https upstream with mutual TLS ----------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    other_ca: Path
    server_context: ssl.SSLContext
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("upstream-pki")
    now = datetime.now(timezone.utc)
    ca_key = pki.generate_p256_key()
    ca = pki.make_ca("upstream test CA", ca_key, now=now, days=1)
    other_key = pki.generate_p256_key()
    other_ca = pki.make_ca("someone else's CA", other_key, now=now, days=1)
    server_key = pki.generate_p256_key()
    server = pki.make_server_cert(ca, ca_key, server_key, hosts=["127.0.0.1"], now=now, days=1)
    client_key = pki.generate_p256_key()
    csr = pki.check_csr(pki.make_csr(client_key, "gateway"))
    client = pki.issue_device_cert(ca_cert=ca, ca_key=ca_key, csr=csr, device_id="idwall-gateway", now=now, ttl=3600)
    for name, cert in (("ca.pem", ca), ("other-ca.pem", other_ca), ("server.pem", server), ("client.pem", client)):
        pki.write_cert(directory / name, cert)
    pki.write_private_key(directory / "server-key.pem", server_key)
    pki.write_private_key(directory / "client-key.pem", client_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(directory / "ca.pem"))
    context.load_cert_chain(str(directory / "server.pem"), str(directory / "server-key.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    return Certs(directory / "ca.pem", directory / "other-ca.pem", context, directory / "client.pem",
                 directory / "client-key.pem")


@pytest.fixture
async def tls_upstream(certs: Certs) -> AsyncIterator[Upstream]:
    up = Upstream()
    app = _upstream_app(up)

    @web.middleware
    async def peer(request: web.Request, handler: Callable) -> web.StreamResponse:
        assert request.transport is not None
        cert = request.transport.get_extra_info("peercert")
        up.tls_peer = dict(item[0] for item in cert["subject"])["commonName"] if cert else None
        return await handler(request)

    app.middlewares.append(peer)
    runner, port = await _serve(app, certs.server_context)
    up.url = f"https://127.0.0.1:{port}/base"
    yield up
    await runner.cleanup()


async def test_https_upstream_with_mutual_tls(tls_upstream: Upstream, front: Front, certs: Certs) -> None:
    tls = UpstreamTLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    base = await front([_route(tls_upstream.url, upstream_tls=tls)])
    async with aiohttp.ClientSession() as client:
        for _ in range(2):  # the second request reuses the pooled TLS connection
            async with client.get(base + "/who") as response:
                assert response.status == 200
                body = await response.json()
    assert body["peer"] == "idwall-gateway"
    assert body["raw_path"] == "/base/who"


@pytest.mark.parametrize("which", ["no-client-cert", "wrong-ca", "system-trust"])
async def test_https_upstream_failures_are_502(tls_upstream: Upstream, front: Front, certs: Certs, which: str) -> None:
    tls = {
        "no-client-cert": UpstreamTLS(ca=certs.ca),
        "wrong-ca": UpstreamTLS(ca=certs.other_ca, cert=certs.client_cert, key=certs.client_key),
        "system-trust": None,
    }[which]
    base = await front([_route(tls_upstream.url, upstream_tls=tls)])
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/who") as response:
            assert response.status == 502
    assert tls_upstream.seen == []


def test_upstream_ssl_context_checks_inputs(certs: Certs) -> None:
    context = upstream_ssl_context(certs.ca, certs.client_cert, certs.client_key)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="without a client certificate"):
        upstream_ssl_context(certs.ca, None, certs.client_key)
    with pytest.raises(ssl.SSLError):
        upstream_ssl_context(certs.ca, certs.client_cert, certs.ca)


@pytest.mark.parametrize(
    ("upstream", "path", "query", "expected"),
    [("http://x:9001", "/a", "", "http://x:9001/a"),
     ("http://x:9001/base", "/a", "", "http://x:9001/base/a"),
     ("http://x:9001/base/", "/a/", "q=1", "http://x:9001/base/a/?q=1"),
     ("https://x", "/a%2Cb", "a=%20%2F", "https://x/a%2Cb?a=%20%2F")],
)
def test_upstream_url(upstream: str, path: str, query: str, expected: str) -> None:
    assert str(upstream_url(upstream, path, query)) == expected


@pytest.mark.parametrize("bad", ["ftp://x/", "x:9001", "http:///a"])
def test_upstream_url_refuses_non_http(bad: str) -> None:
    with pytest.raises(ValueError):
        upstream_url(bad, "/", "")
