"""idwall.engine.io over real sockets: a real gateway (real TLS, real SQLite) in front of a real aiohttp upstream.

The steady path: streaming both ways, header hygiene on the wire, what the upstream answers passed through,
``max_body`` and the connections without a certificate per address, WebSocket relaying. What a connection
does off that path (its end, back-pressure, failures, timeouts) is tests/test_engine_edges.py; the pool,
tests/test_engine_upstream.py; https upstreams, tests/test_engine_tls.py. Hostile framing and headers are
the vector files' job (tests/e2e/test_http_vectors_e2e.py); the sans-IO rules are in tests/test_engine_h1.py
and tests/test_engine_h1_upstream.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from idwall.engine import tls as engine_tls
from tests.helpers.gateway import start_test_gateway
from tests.helpers.http_wire import Message, field_key
from tests.helpers.proxy import Proxy, json_ok, proxy_config, values
from tests.helpers.upstream_app import AppUpstream


pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("fresh_upstream")]


# --- streaming -----------------------------------------------------------------------------------------


async def test_response_streams_before_upstream_finishes(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/stream") as response:
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readany(), 5)
        assert first == b"first"
        proxy.upstream.release_stream.set()
        assert first + await response.content.read() == b"firstsecond"


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


async def test_path_and_query_reach_upstream_as_normalised(proxy: Proxy) -> None:
    answer = await proxy.raw(b"GET //x/%7Ey/a%2cb?q=%20&a=b%2F HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert json_ok(answer)["raw_path"] == "/base/x/~y/a%2Cb?q=%20&a=b%2F"


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


# --- header hygiene over the wire ---------------------------------------------------------------------


async def test_forwarding_headers_are_the_gateways(proxy: Proxy) -> None:
    answer = await proxy.raw(
        b"GET /who HTTP/1.1\r\nHost: localhost:%d\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX_Forwarded_For: 8.8.8.8\r\n"
        b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: admin\r\n"
        b"X-Forwarded-Proto: http\r\nX-Original-URL: /admin\r\nConnection: close, X-Forwarded-For\r\n\r\n"
        % proxy.gateway.port)
    headers = json_ok(answer)["headers"]
    assert values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(headers, "X-Forwarded-Proto") == ["https"]
    assert values(headers, "X-Forwarded-Host") == [f"localhost:{proxy.gateway.port}"]
    assert values(headers, "Host") == [f"localhost:{proxy.gateway.port}"]
    for name in ("Forwarded", "X-Real-IP", "X-Original-URL"):
        assert values(headers, name) == []


async def test_hop_by_hop_request_headers_removed_and_chunked_body_reframed(proxy: Proxy) -> None:
    answer = await proxy.raw(
        b"POST /who HTTP/1.1\r\nHost: localhost\r\nConnection: close, keep-alive, X-Secret\r\n"
        b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic YTpi\r\n"
        b"Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
    assert json_ok(answer)["body_len"] == 5
    seen = proxy.upstream.seen[-1]
    assert seen["body"] == b"hello"
    names = {field_key(k) for k, _ in seen["headers"]}
    assert not names & {"x-secret", "keep-alive", "te", "proxy-authorization"}
    assert values(seen["headers"], "X-Kept") == ["yes"]
    assert values(seen["headers"], "Transfer-Encoding") == ["chunked"]


async def test_hop_by_hop_and_identity_response_headers_removed(proxy: Proxy) -> None:
    async with proxy.client() as client, client.get(proxy.url + "/hop") as response:
        assert await response.text() == "hop"
        names = {field_key(k) for k in response.headers}
        assert not names & {"x-up-secret", "keep-alive", "proxy-authenticate", "x-idwall-assertion", "x-idwall-user"}
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_no_header_is_invented_for_the_upstream(proxy: Proxy) -> None:
    answer = await proxy.raw(b"POST /who HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    headers = json_ok(answer)["headers"]
    for name in ("User-Agent", "Accept", "Accept-Encoding", "Content-Type", "Transfer-Encoding"):
        assert values(headers, name) == [], name
    assert values(headers, "Content-Length") == ["2"]


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
    assert values(proxy.upstream.seen[-1]["headers"], "Expect") == []


async def test_http10_client_gets_a_close_delimited_answer(proxy: Proxy) -> None:
    proxy.upstream.release_stream.set()
    answer = await proxy.raw(b"GET /stream HTTP/1.0\r\nHost: localhost\r\n\r\n", wait_close=True)
    assert answer.status == 200 and answer.closed
    assert answer.head.values("Transfer-Encoding") == [] and answer.body == b"firstsecond"


# --- what the upstream answers ----------------------------------------------------------------------


async def test_redirects_and_cookies_pass_through_untouched(proxy: Proxy) -> None:
    for _ in range(2):
        answer = await proxy.raw(b"GET /redirect HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.status == 302 and answer.head.values("Location") == ["/elsewhere"]
        assert answer.head.values("Set-Cookie") == ["sid=upstream; Path=/"]
    assert [entry["raw_path"] for entry in proxy.upstream.seen] == ["/base/redirect"] * 2
    assert values(proxy.upstream.seen[1]["headers"], "Cookie") == [], "no cookie jar between the gateway and the app"


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


async def test_connections_without_a_certificate_are_limited_per_address(tmp_path: Path,
                                                                          app_upstream: AppUpstream) -> None:
    gateway = await start_test_gateway(tmp_path, None, edit=proxy_config(
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
            assert len(values(hello["headers"], "Sec-WebSocket-Key")) == 1
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


async def test_websocket_refused_when_route_disallows(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/nows/ws")
    assert info.value.status == 403 and proxy.upstream.seen == []


async def test_upstream_refusing_the_handshake_is_relayed_as_its_answer(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/not-a-websocket")
    assert info.value.status == 200  # the app said no (an ordinary answer); no 101 reached the client
