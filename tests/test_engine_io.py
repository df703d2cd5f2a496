"""idwall.engine.io over real sockets: a real gateway (real TLS, real SQLite) in front of a real aiohttp upstream.

Streaming both ways, back-pressure, the upstream pool, header hygiene on the wire, upstream failures
(502/504), limits and timeouts, WebSocket splicing, https upstreams with mutual TLS. Hostile framing
and headers are the vector files' job (tests/test_http_vectors.py); the sans-IO rules are in
tests/test_engine_h1.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from idwall import pki
from idwall.engine import tls as engine_tls
from idwall.testing.fixtures import DeviceFiles
from tests.helpers.gateway import GatewayUnderTest, start_test_gateway
from tests.helpers.http_wire import Message, exchange, field_key, tls_context
from tests.helpers.process import gateway_process
from tests.helpers.upstream_app import AppUpstream, serve_app, upstream_app

ROUTES = """routes:
  - name: app
    match: {{path: /}}
    upstream: {up}/base
    websockets: true
    max_body: 64m
  - name: quick
    match: {{path: /quick}}
    upstream: {up}/base
    timeout: 1s
  - name: nows
    match: {{path: /nows}}
    upstream: {up}/base
  - name: small
    match: {{path: /small}}
    upstream: {up}/base
  - name: closed
    match: {{path: /closed}}
    upstream: http://127.0.0.1:{closed}
    websockets: true
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    """A gateway in front of the app upstream, and a device with a live session on it."""

    gateway: GatewayUnderTest
    upstream: AppUpstream
    device: DeviceFiles

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return self.gateway.session(self.device, **kwargs)

    def context(self) -> ssl.SSLContext:
        return tls_context(self.gateway.init["ca_pem"], self.device.cert_path, self.device.key_path)

    async def raw(self, request: bytes, **kwargs: Any) -> Any:
        return await exchange(self.gateway.port, self.context(), request, **kwargs)


def _config(up: str, *, limits: dict[str, str] | None = None) -> Any:
    def edit(text: str) -> str:
        for key, value in (limits or {}).items():
            text = "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}:") else line for line in text.split("\n"))
        return text[: text.index("\nroutes:") + 1] + ROUTES.format(up=up, closed=_closed_port())
    return edit


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app_upstream() -> AsyncIterator[AppUpstream]:
    up = AppUpstream()
    runner, port = await serve_app(upstream_app(up))
    up.url = f"http://127.0.0.1:{port}"
    yield up
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory, app_upstream: AppUpstream) -> AsyncIterator[Proxy]:
    gateway = await start_test_gateway(tmp_path_factory.mktemp("engine"), None,
                                       edit=_config(app_upstream.url, limits={"body_timeout": "2s"}))
    try:
        yield Proxy(gateway, app_upstream, await gateway.device("alice"))
    finally:
        await gateway.running.stop(drain=1)


@pytest.fixture(autouse=True)
def _fresh_upstream(app_upstream: AppUpstream) -> None:
    app_upstream.seen.clear()
    app_upstream.release_stream.clear()
    app_upstream.first_upload_chunk.clear()
    app_upstream.stream_cancelled.clear()
    app_upstream.ws_closed_with = None


pytestmark = pytest.mark.asyncio(loop_scope="module")


def _values(headers: list[Any], name: str) -> list[str]:
    return [v for k, v in headers if field_key(k) == field_key(name)]


def _json(answer: Any) -> dict[str, Any]:
    assert answer.status == 200, answer.describe()
    return json.loads(answer.body)


# --- streaming -----------------------------------------------------------------------------------------


async def test_response_streams_before_upstream_finishes(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/stream") as response:
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readany(), 5)
        assert first == b"first"
        proxy.upstream.release_stream.set()
        assert first + await response.content.read() == b"firstsecond"


async def test_client_going_away_closes_the_upstream_stream(proxy: Proxy) -> None:
    async with proxy.client() as client:
        response = await client.get(proxy.url + "/stream")
        assert await asyncio.wait_for(response.content.readany(), 5) == b"first"
        response.close()  # drops the connection, as a kill does
    await asyncio.wait_for(proxy.upstream.stream_cancelled.wait(), 5)


async def test_small_body_still_arriving_is_streamed_not_awaited(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/trickle") as response:
        assert response.headers["Content-Length"] == "20"
        # the upstream sends the rest only after this: a proxy waiting for the whole body deadlocks
        first = await asyncio.wait_for(response.content.readany(), 5)
        assert first == b"a" * 10
        proxy.upstream.release_stream.set()
        assert first + await response.content.read() == b"a" * 10 + b"b" * 10


@pytest.mark.parametrize("size", [0, 100, 65536, 65537, 1 << 20])
async def test_bodies_of_every_size_arrive_whole_with_their_length(proxy: Proxy, size: int) -> None:
    async with proxy.client() as client, client.get(f"{proxy.url}/sized?n={size}") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(size) and "Transfer-Encoding" not in response.headers
        assert await response.read() == b"z" * size


async def test_request_body_streams_without_buffering(proxy: Proxy) -> None:
    piece = bytes(range(256)) * 4096  # 1 MiB
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for index in range(20):
            sent.update(piece)
            yield piece
            if index == 2:
                # a proxy that buffered the whole body would never let this chunk through
                await asyncio.wait_for(proxy.upstream.first_upload_chunk.wait(), 5)

    async with proxy.client() as client, client.post(proxy.url + "/upload", data=body()) as response:
        assert await response.json() == {"total": 20 * len(piece), "sha256": sent.hexdigest()}


async def test_a_client_that_does_not_read_stops_the_upstream(proxy: Proxy) -> None:
    """Back-pressure: the gateway reads no faster from the upstream than the client reads from it."""
    async with proxy.client(read_bufsize=65536) as client:
        response = await client.get(proxy.url + "/sized?n=" + str(256 << 20))
        await asyncio.sleep(0.8)  # the client reads nothing: every buffer on the way fills, then the upstream waits
        conn = next(c for c in proxy.gateway.running.node.registry if c.cert_sha256 == proxy.device.cert_sha256
                    and c.kind == "stream")
        stalled = conn.bytes_out
        await asyncio.sleep(0.4)
        assert conn.bytes_out == stalled, "the gateway kept reading from the upstream for a client that does not read"
        assert stalled < 64 << 20, f"{stalled} bytes buffered on the way for a client that read nothing"
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
        assert total == 256 << 20
        response.close()


async def test_path_and_query_reach_upstream_as_normalised(proxy: Proxy) -> None:
    answer = await proxy.raw(b"GET //x/%7Ey/a%2cb?q=%20&a=b%2F HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert _json(answer)["raw_path"] == "/base/x/~y/a%2Cb?q=%20&a=b%2F"


@pytest.mark.parametrize("path", [b"/a/../admin", b"/a/%2e%2e/admin", b"/a%2fb", b"/a%00", b"/a\\b", b"/%252e"])
async def test_ambiguous_paths_never_reach_upstream(proxy: Proxy, path: bytes) -> None:
    answer = await proxy.raw(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.status == 400 and b"ambiguous-path" in answer.body
    assert proxy.upstream.seen == []


async def test_head_keeps_content_length_and_the_connection(proxy: Proxy) -> None:
    async with proxy.client() as client:
        async with client.head(proxy.url + "/hop") as head:
            assert head.status == 200 and head.headers["Content-Length"] == "3"
        async with client.get(proxy.url + "/hop") as get:
            assert await get.read() == b"hop"


async def test_connection_counts_the_bytes_it_carried(proxy: Proxy) -> None:
    proxy.upstream.release_stream.set()
    async with proxy.client() as client, client.get(proxy.url + "/stream") as response:
        assert await response.read() == b"firstsecond"
        conn = next(c for c in proxy.gateway.running.node.registry if c.cert_sha256 == proxy.device.cert_sha256)
        assert conn.bytes_out >= len(b"firstsecond") and conn.bytes_in > 0


# --- the upstream pool --------------------------------------------------------------------------------


async def test_requests_share_pooled_upstream_connections(proxy: Proxy) -> None:
    async with proxy.client() as client:
        for _ in range(5):
            async with client.get(proxy.url + "/who") as response:
                assert response.status == 200
    async with proxy.client() as other:
        async with other.get(proxy.url + "/who") as response:
            assert response.status == 200
    peers = {entry["peer_port"] for entry in proxy.upstream.seen}
    assert len(proxy.upstream.seen) == 6 and len(peers) == 1, "six sequential requests, one upstream connection"


async def test_a_pooled_connection_the_upstream_closed_is_retried_for_a_get(proxy: Proxy) -> None:
    async with proxy.client() as client:
        async with client.get(proxy.url + "/who") as response:
            assert response.status == 200
        # the upstream closes its idle keep-alive connections (as any server does after its timeout)
        for transport in list(proxy.upstream.transports):
            transport.close()
        await asyncio.sleep(0.1)
        async with client.get(proxy.url + "/who") as response:
            assert response.status == 200


# --- header hygiene over the wire ---------------------------------------------------------------------


async def test_forwarding_headers_are_the_gateways(proxy: Proxy) -> None:
    answer = await proxy.raw(
        b"GET /who HTTP/1.1\r\nHost: localhost:%d\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX_Forwarded_For: 8.8.8.8\r\n"
        b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: admin\r\n"
        b"X-Forwarded-Proto: http\r\nX-Original-URL: /admin\r\nConnection: close, X-Forwarded-For\r\n\r\n"
        % proxy.gateway.port)
    headers = _json(answer)["headers"]
    assert _values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert _values(headers, "X-Forwarded-Proto") == ["https"]
    assert _values(headers, "X-Forwarded-Host") == [f"localhost:{proxy.gateway.port}"]
    assert _values(headers, "Host") == [f"localhost:{proxy.gateway.port}"]
    for name in ("Forwarded", "X-Real-IP", "X-Original-URL"):
        assert _values(headers, name) == []


async def test_hop_by_hop_request_headers_removed_and_chunked_body_reframed(proxy: Proxy) -> None:
    answer = await proxy.raw(
        b"POST /who HTTP/1.1\r\nHost: localhost\r\nConnection: close, keep-alive, X-Secret\r\n"
        b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic YTpi\r\n"
        b"Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
    assert _json(answer)["body_len"] == 5
    seen = proxy.upstream.seen[-1]
    assert seen["body"] == b"hello"
    names = {field_key(k) for k, _ in seen["headers"]}
    assert not names & {"x-secret", "keep-alive", "te", "proxy-authorization"}
    assert _values(seen["headers"], "X-Kept") == ["yes"]
    assert _values(seen["headers"], "Transfer-Encoding") == ["chunked"]


async def test_hop_by_hop_and_identity_response_headers_removed(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/hop") as response:
        assert await response.text() == "hop"
        names = {field_key(k) for k in response.headers}
        assert not names & {"x-up-secret", "keep-alive", "proxy-authenticate", "x-idwall-assertion", "x-idwall-user"}
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_no_header_is_invented_for_the_upstream(proxy: Proxy) -> None:
    answer = await proxy.raw(b"POST /who HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    headers = _json(answer)["headers"]
    for name in ("User-Agent", "Accept", "Accept-Encoding", "Content-Type", "Transfer-Encoding"):
        assert _values(headers, name) == [], name
    assert _values(headers, "Content-Length") == ["2"]


@pytest.mark.parametrize("path", ["/who", "/idwall/api/me", "/.well-known/idwall/jwks.json", "/idwall/login",
                                  "/idwall/nothing-here", "/a%2fb"])
async def test_no_answer_names_the_gateways_software(proxy: Proxy, path: str) -> None:
    answer = await proxy.raw(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
    assert answer.head is not None, answer.describe()
    assert answer.head.values("Server") == [] or answer.head.values("Server") == ["upstream"], answer.head.headers
    assert b"aiohttp" not in answer.raw and b"Python/" not in answer.raw


async def test_expect_100_continue_is_answered_by_the_gateway(proxy: Proxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.gateway.port, ssl=proxy.context(),
                                                   server_hostname="localhost")
    writer.write(b"POST /who HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    head = Message.parse((await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))[:-4])
    assert head.start.startswith("HTTP/1.1 200")
    writer.close()
    assert _values(proxy.upstream.seen[-1]["headers"], "Expect") == []


async def test_http10_client_gets_a_close_delimited_answer(proxy: Proxy) -> None:
    proxy.upstream.release_stream.set()
    answer = await proxy.raw(b"GET /stream HTTP/1.0\r\nHost: localhost\r\n\r\n", wait_close=True)
    assert answer.status == 200 and answer.closed
    assert answer.head.values("Transfer-Encoding") == [] and answer.body == b"firstsecond"


# --- upstream failures --------------------------------------------------------------------------------


async def test_502_when_upstream_port_is_closed(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/closed/x") as response:
        assert response.status == 502 and response.content_type == "application/problem+json"
        problem = await response.json()
    assert problem["type"].endswith("/bad-gateway") and "127.0.0.1" not in problem["detail"]


async def test_504_when_upstream_is_slower_than_the_route_timeout(proxy: Proxy) -> None:
    started = time.monotonic()
    async with proxy.client() as client, client.get(proxy.url + "/quick/slow") as response:
        assert response.status == 504
        assert (await response.json())["type"].endswith("/gateway-timeout")
    assert time.monotonic() - started < 2.5


async def test_slow_body_aborts_client(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/quick/slow-body") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_upstream_dying_mid_body_truncates_client(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/dies") as response:
        assert response.status == 200 and response.headers["Content-Length"] == "1000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_redirects_and_cookies_pass_through_untouched(proxy: Proxy) -> None:
    for _ in range(2):
        answer = await proxy.raw(b"GET /redirect HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.status == 302 and answer.head.values("Location") == ["/elsewhere"]
        assert answer.head.values("Set-Cookie") == ["sid=upstream; Path=/"]
    assert [entry["raw_path"] for entry in proxy.upstream.seen] == ["/base/redirect"] * 2
    assert _values(proxy.upstream.seen[1]["headers"], "Cookie") == [], "no cookie jar between the gateway and the app"


# --- limits -------------------------------------------------------------------------------------------


async def test_body_over_max_body_is_413_before_the_upstream_sees_it(proxy: Proxy) -> None:
    answer = await proxy.raw(b"POST /small/who HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                             % ((1 << 20) + 1), wait_close=True)
    assert answer.status == 413 and answer.closed
    assert proxy.upstream.seen == []


async def test_chunked_body_growing_past_max_body_is_cut(proxy: Proxy) -> None:
    chunk = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        for _ in range(32):  # 2 MiB on a route taking 1 MiB
            yield chunk

    async with proxy.client() as client:
        try:
            async with client.post(proxy.url + "/small/upload", data=body()) as response:
                status = response.status
        except aiohttp.ClientError:
            status = 0  # the gateway may close before the client finished sending
    assert status in (413, 0)
    received = sum(len(e["body"]) for e in proxy.upstream.seen)
    assert received <= 1 << 20


async def test_stalled_upload_is_cut_after_the_body_timeout(proxy: Proxy) -> None:
    started = time.monotonic()
    answer = await proxy.raw(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nonly this",
                             wait_close=True, timeout=6)
    assert answer.status == 408 and answer.closed
    assert 1.9 < time.monotonic() - started < 4.0


async def test_connections_without_a_certificate_are_limited_per_address(tmp_path: Path,
                                                                          app_upstream: AppUpstream) -> None:
    gateway = await start_test_gateway(tmp_path, None, edit=_config(
        app_upstream.url, limits={"connections_without_certificate": "2"}))
    try:
        context = engine_tls.upstream_context(Path(gateway.init["ca_pem"]), None, None)
        held = [await asyncio.open_connection("127.0.0.1", gateway.port, ssl=context, server_hostname="localhost")
                for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, ssl=context,
                                                       server_hostname="localhost")
        writer.write(b"GET /idwall/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            third = await asyncio.wait_for(reader.read(), 5)
        except (ConnectionError, ssl.SSLError):
            third = b""
        assert third == b"", "the third connection without a certificate from one address is closed at once"
        device = await gateway.device("alice")
        async with gateway.session(device) as client, client.get(gateway.url + "/who") as response:
            assert response.status == 200, "devices are not counted against the limit"
        for _, held_writer in held:
            held_writer.close()
    finally:
        await gateway.running.stop(drain=1)


async def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path,
                                                                                 app_upstream: AppUpstream) -> None:
    gateway = await start_test_gateway(tmp_path, None, edit=_config(app_upstream.url,
                                                                    limits={"keepalive_timeout": "1s"}))
    try:
        device = await gateway.device("alice")
        context = tls_context(gateway.init["ca_pem"], device.cert_path, device.key_path)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, ssl=context,
                                                       server_hostname="localhost")
        writer.write(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        started = time.monotonic()
        try:
            while await asyncio.wait_for(reader.read(65536), 5):
                pass
        except (ConnectionError, ssl.SSLError):
            pass
        assert 0.9 < time.monotonic() - started < 2.5
        writer.close()
    finally:
        await gateway.running.stop(drain=1)


# --- WebSockets ---------------------------------------------------------------------------------------


async def test_websocket_relay_with_close_codes(proxy: Proxy) -> None:
    proxy.upstream.ws_closed_with = asyncio.get_running_loop().create_future()
    async with proxy.client() as client:
        async with client.ws_connect(proxy.url + "/ws?room=1", protocols=("chat.v2", "chat.v1"),
                                     headers={"X_IDWall_Assertion": "forged", "X-IDWall-User": "admin"}) as ws:
            assert ws.protocol == "chat.v1"
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert hello["raw_path"] == "/base/ws?room=1"
            idwall = [k for k, _ in hello["headers"] if field_key(k).startswith("x-idwall-")]
            assert idwall == ["X-IDWall-Assertion"]
            assert len(_values(hello["headers"], "Sec-WebSocket-Key")) == 1
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
            await ws.send_bytes(b"\x00\x01")
            assert (await ws.receive(timeout=5)).data == b"echo:\x00\x01"
            await ws.send_str("close:4001")
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "bye"
        async with client.ws_connect(proxy.url + "/ws", protocols=("chat.v1",)) as ws:
            await ws.receive(timeout=5)
            await ws.close(code=4002, message=b"client done")
    assert await asyncio.wait_for(proxy.upstream.ws_closed_with, 5) == (aiohttp.WSMsgType.CLOSE, 4002, "client done")


async def test_websocket_client_vanishing_closes_the_upstream(proxy: Proxy) -> None:
    proxy.upstream.ws_closed_with = asyncio.get_running_loop().create_future()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.gateway.port, ssl=proxy.context(),
                                                   server_hostname="localhost")
    writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
    await asyncio.wait_for(reader.read(1), 5)  # the upstream's first frame came through
    writer.transport.abort()  # no close frame: what a kill or a dead client looks like
    kind, _, _ = await asyncio.wait_for(proxy.upstream.ws_closed_with, 5)
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def test_websocket_refused_when_route_disallows(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/nows/ws")
    assert info.value.status == 403 and proxy.upstream.seen == []


async def test_websocket_upstream_down_is_502(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/closed/ws")
    assert info.value.status == 502


async def test_upstream_refusing_the_handshake_is_relayed_as_its_answer(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/not-a-websocket")
    assert info.value.status == 200  # the app said no (an ordinary answer); no 101 reached the client


async def test_upstream_101_to_a_plain_request_is_a_502(tmp_path: Path) -> None:
    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(switch, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway = await start_test_gateway(tmp_path, f"http://127.0.0.1:{port}")
    try:
        device = await gateway.device("alice")
        answer = await exchange(gateway.port, tls_context(gateway.init["ca_pem"], device.cert_path, device.key_path),
                                b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.status == 502 and b"raw" not in answer.raw
    finally:
        await gateway.running.stop(drain=1)
        server.close()


# --- https upstream with mutual TLS --------------------------------------------------------------------


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
    other_ca = pki.make_ca("someone else's CA", pki.generate_p256_key(), now=now, days=1)
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


def _tls_route(port: int, tls: str) -> Any:
    def edit(text: str) -> str:
        return text[: text.index("\nroutes:") + 1] + (
            f"routes:\n  - name: secure\n    match: {{path: /}}\n    upstream: https://127.0.0.1:{port}/base\n{tls}")
    return edit


@pytest.mark.parametrize("which", ["mutual", "no-client-cert", "wrong-ca", "system-trust"])
async def test_https_upstream(tmp_path: Path, certs: Certs, which: str) -> None:
    up = AppUpstream()

    @web.middleware
    async def peer(request: web.Request, handler: Any) -> web.StreamResponse:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        up.tls_peer = dict(item[0] for item in cert["subject"])["commonName"] if cert else None
        return await handler(request)

    app = upstream_app(up)
    app.middlewares.append(peer)
    runner, port = await serve_app(app, certs.server_context)
    tls = {
        "mutual": f"    upstream_tls: {{ca: {certs.ca}, cert: {certs.client_cert}, key: {certs.client_key}}}\n",
        "no-client-cert": f"    upstream_tls: {{ca: {certs.ca}}}\n",
        "wrong-ca": f"    upstream_tls: {{ca: {certs.other_ca}, cert: {certs.client_cert}, key: {certs.client_key}}}\n",
        "system-trust": "",
    }[which]
    gateway = await start_test_gateway(tmp_path, None, edit=_tls_route(port, tls))
    try:
        device = await gateway.device("alice")
        async with gateway.session(device) as client:
            for _ in range(2):  # the second request reuses the pooled TLS connection
                async with client.get(gateway.url + "/who") as response:
                    status = response.status
                    body = await response.json()
        if which == "mutual":
            assert status == 200 and body["peer"] == "idwall-gateway" and body["raw_path"] == "/base/who"
            assert len({entry["peer_port"] for entry in up.seen}) == 1
        else:
            assert status == 502 and up.seen == []
    finally:
        await gateway.running.stop(drain=1)
        await runner.cleanup()


async def test_upstream_context_checks_its_inputs(certs: Certs) -> None:
    context = engine_tls.upstream_context(certs.ca, certs.client_cert, certs.client_key)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="without a client certificate"):
        engine_tls.upstream_context(certs.ca, None, certs.client_key)
    with pytest.raises(ssl.SSLError):
        engine_tls.upstream_context(certs.ca, certs.client_cert, certs.ca)


# --- many slow connections ----------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


SLOW = 1000


async def test_a_thousand_slow_connections_stay_bounded_and_devices_are_served(tmp_path: Path,
                                                                               app_upstream: AppUpstream) -> None:
    """Slowloris: connections that dribble a head and never finish it hold little memory each, do not slow
    down enrolled devices, and are closed at ``limits.head_timeout``."""

    def scenario() -> None:
        edit = _config(app_upstream.url, limits={"connections_without_certificate": "2000", "head_timeout": "4s"})
        with gateway_process(tmp_path, app_upstream.url, edit=edit) as gateway:
            device = gateway.devices("alice", 1)[0]
            pid = gateway.pids[0]
            before = _rss_kib(pid)
            context = gateway.ssl()
            slow = []
            for _ in range(SLOW):
                sock = context.wrap_socket(socket.create_connection(("127.0.0.1", gateway.port)),
                                           server_hostname="localhost")
                sock.sendall(b"GET /who HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
                slow.append(sock)
            held = _rss_kib(pid)
            per_connection = (held - before) / SLOW
            assert per_connection < 64, f"{per_connection:.1f} KiB of gateway memory per slow connection"
            started = time.monotonic()
            with contextlib.closing(http.client.HTTPSConnection("localhost", gateway.port,
                                                                context=gateway.ssl(device), timeout=5)) as user:
                for _ in range(20):
                    user.request("GET", "/who")
                    response = user.getresponse()
                    assert response.status == 200
                    response.read()
            served = time.monotonic() - started
            assert served < 2.0, "an enrolled device waited behind the slow connections"
            deadline = time.monotonic() + 8
            for sock in slow:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    answer = sock.recv(65536)
                    while answer.startswith(b"HTTP/1.1 408") and (more := sock.recv(65536)):
                        answer = more
                except (ConnectionError, ssl.SSLError):
                    answer = b""
                assert answer in (b"",) or answer.startswith(b"HTTP/1.1 408"), answer[:60]
                sock.close()
            print(f"\n{SLOW} slow connections: {per_connection:.1f} KiB of gateway RSS each "
                  f"({before} -> {held} KiB); 20 requests of an enrolled device in {served:.2f} s with them open")

    await asyncio.to_thread(scenario)
