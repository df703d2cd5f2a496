"""idwall.engine.edges over real sockets: what a client connection does off the steady path.

Its end (a client going away, a WebSocket client vanishing), flow control (a client that does not read),
a pooled upstream connection found closed (retried), refusals and failures (502, 504, an upstream dying
mid-answer) and every timeout (``limits.head_timeout``, ``body_timeout``, ``keepalive_timeout``), through a
real gateway in front of the app upstream of ``tests/helpers/upstream_app.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from idwall.config import Limits
from tests.helpers.gateway import start_test_gateway
from tests.helpers.http_wire import tls_context
from tests.helpers.proxy import Proxy, proxy_config
from tests.helpers.upstream_app import AppUpstream

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("fresh_upstream")]


# --- its end and flow control ---------------------------------------------------------------------


async def test_client_going_away_closes_the_upstream_stream(proxy: Proxy) -> None:
    async with proxy.client() as client:
        response = await client.get(proxy.url + "/stream")
        assert await asyncio.wait_for(response.content.readany(), 5) == b"first"
        response.close()  # drops the connection, as a kill does
    await asyncio.wait_for(proxy.upstream.stream_cancelled.wait(), 5)


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


# --- failures and refusals ------------------------------------------------------------------------


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


async def test_websocket_upstream_down_is_502(proxy: Proxy) -> None:
    async with proxy.client() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(proxy.url + "/closed/ws")
    assert info.value.status == 502


# --- timeouts -------------------------------------------------------------------------------------


async def test_stalled_upload_is_cut_after_the_body_timeout(proxy: Proxy) -> None:
    started = time.monotonic()
    answer = await proxy.raw(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nonly this",
                             wait_close=True, timeout=6)
    assert answer.status == 408 and answer.closed
    assert 1.9 < time.monotonic() - started < 4.0


async def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path,
                                                                                 app_upstream: AppUpstream) -> None:
    gateway = await start_test_gateway(tmp_path, None, edit=proxy_config(app_upstream.url,
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


# --- unauthenticated resource use (security review) -----------------------------------------------


@pytest.mark.asyncio(loop_scope="function")  # the conftest echo upstream runs on the test's own loop
async def test_connection_that_never_finishes_a_request_is_closed(tmp_path: Path, upstream) -> None:
    """aiohttp 3.14 kept an idle or slowly dribbling connection for 3630 s by default (slowloris)."""
    assert Limits().head_timeout <= 60 and Limits().keepalive_timeout <= 75
    gut = await start_test_gateway(tmp_path, upstream.url,
                                   edit=lambda text: text.replace("head_timeout: 30s", "head_timeout: 1s"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gut.port, ssl=gut.ssl(),
                                                       server_hostname="localhost")
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        await writer.drain()
        try:
            rest = await asyncio.wait_for(reader.read(), 4)
        except (ConnectionError, ssl.SSLError):
            rest = b""
        assert time.monotonic() - started < 2.5
        assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:100]
        writer.close()
    finally:
        await gut.running.stop(drain=1)


@pytest.mark.asyncio(loop_scope="function")  # the conftest echo upstream runs on the test's own loop
async def test_keepalive_timeout_does_not_cut_a_quiet_websocket(tmp_path: Path, upstream) -> None:
    gut = await start_test_gateway(tmp_path, upstream.url, edit=lambda text: text.replace(
        "keepalive_timeout: 75s", "keepalive_timeout: 1s").replace("upstream_timeout: 30s", "upstream_timeout: 1s"))
    try:
        device = await gut.device("alice")
        async with gut.session(device) as client:
            async with client.ws_connect(gut.url.replace("https", "wss") + "/ws") as ws:
                await ws.receive(timeout=5)
                await asyncio.sleep(1.6)
                await ws.send_str("still here")
                msg = await ws.receive(timeout=5)
                assert msg.data == "echo:still here"
    finally:
        await gut.running.stop(drain=1)
