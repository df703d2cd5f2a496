"""Adversarial review of the gateway's request path, TLS set-up and kill switch.

Each test tries to get something past the gateway that it must refuse: a certificate that expired while
its connection (or its TLS session ticket) lived on, an invalidation lost to a resolution in flight, a
connection held open without ever sending a request, hostile Host headers and request targets, and a TLS
session resumed after its device was revoked.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from idwall import killswitch
from idwall.store.base import LedgerDraft
from idwall.testing.fixtures import raw_https
from idwall.config import Limits

from tests.helpers.gateway import start_test_gateway

pytestmark = pytest.mark.asyncio


def _status(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.") else 0


# -- certificate expiry ------------------------------------------------------------------------------


async def test_device_certificate_that_expired_since_the_handshake_is_not_served(gateway) -> None:
    """TLS checks validity only at the handshake (and not at all on resumption): the gateway must too."""
    device = await gateway.device("alice", cert_ttl=60)
    gw = gateway.running.node
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 200
        # the session (1 h) outlives the certificate (60 s); the same keep-alive connection asks again
        gw.clock = lambda: time.time() + 120
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 403, await resp.text()
            body = await resp.json()
    assert "expired" in body["detail"]
    assert "/idwall/enroll" in body["enroll_url"]


async def test_websocket_outliving_its_device_certificate_is_cut(gateway) -> None:
    device = await gateway.device("alice", cert_ttl=60)
    gw = gateway.running.node
    async with gateway.session(device) as client:
        async with client.ws_connect(gateway.url.replace("https", "wss") + "/ws") as ws:
            hello = await ws.receive(timeout=5)
            assert json.loads(hello.data) == {"hello": True}
            assert gw.cut_expired_streams() == 0
            gw.clock = lambda: time.time() + 120
            assert gw.cut_expired_streams() == 1
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)


# -- resolution races --------------------------------------------------------------------------------


async def test_invalidation_arriving_during_a_resolution_forces_another_read(gateway) -> None:
    """A logout, admin demotion or device change that lands while a resolution reads the store must not be
    overwritten by that (older) read: the connection is read again before it is bound."""
    device = await gateway.device("alice")
    gw = gateway.running.node
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 200
        (conn,) = gw.registry.by_cert(device.cert_sha256)
        gw.registry.invalidate([conn])
        loop = asyncio.get_running_loop()
        reads: list[float] = []

        def clock() -> float:
            # called once per store read; the first time, an invalidation arrives while that read is in flight
            if not reads:
                loop.call_soon(gw.registry.invalidate, [conn])
            reads.append(time.time())
            return reads[-1]

        gw.clock = clock
        await gw.resolve(conn)
    assert len(reads) == 2, "the invalidation that arrived during the read was lost"
    assert not conn.stale


# -- unauthenticated resource use --------------------------------------------------------------------


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


@pytest.mark.parametrize("host", [
    b"[::1", b"localhost:99999", b"localhost:-1", b"local host", b"localhost:abc", b"a/b", b"@", b"",
    b"[::1]x", b"\xff\xfe", b"localhost:" + b"9" * 50,
])
async def test_hostile_host_headers_get_4xx_never_5xx(gateway, host: bytes) -> None:
    device = await gateway.device("alice")
    request = b"GET /app HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    answer = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device), request, read_timeout=3)
    status = _status(answer)
    assert 0 < status < 500 or status == 0, answer[:300]
    assert b"Traceback" not in answer


@pytest.mark.parametrize("target", [
    b"https://localhost/app", b"https://other.example/app", b"http://localhost/idwall/api/admin/sessions",
    b"*", b"//other.example/app",
])
async def test_other_request_target_forms_never_reach_the_upstream_unchecked(gateway, target: bytes) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    answer = await raw_https("127.0.0.1", gateway.port, gateway.ssl(), request, read_timeout=3)
    assert _status(answer) in (0, 400, 403, 404), answer[:300]
    assert b'"raw_path"' not in answer  # the echo upstream never answered


# -- TLS session resumption across a kill ------------------------------------------------------------


async def test_resumed_tls_session_of_a_revoked_device_is_refused(gateway) -> None:
    device = await gateway.device("alice")
    gw = gateway.running.node
    ctx = gateway.ssl(device)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session object is available right after the handshake
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, ssl=ctx, server_hostname="localhost")
    tls_session = writer.get_extra_info("ssl_object").session
    writer.write(b"GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    first = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(first) == 200
    await killswitch.kill(gw, scope="device", target=device.device_id, reason="review", revoke_devices=True,
                          actor="test")
    # a new connection that resumes the TLS session: no certificate is verified in this handshake
    raw = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gateway.port), timeout=5),
                          server_hostname="localhost", session=tls_session, do_handshake_on_connect=False)
    await asyncio.to_thread(raw.do_handshake)
    assert raw.session_reused, "the gateway did not resume the session; this test proves nothing then"
    await asyncio.to_thread(raw.sendall, b"GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    answer = b""
    while True:
        chunk = await asyncio.to_thread(raw.recv, 65536)
        if not chunk:
            break
        answer += chunk
    raw.close()
    assert _status(answer) == 403, answer[:300]


# -- streams and their session -----------------------------------------------------------------------


async def test_websocket_ends_with_its_session_on_logout(gateway) -> None:
    """A logout (on any connection, any process) ends the session; a WebSocket riding on it must not go on
    until max_age: it never comes back to be resolved again."""
    device = await gateway.device("alice")
    assert device.session_id is not None
    async with gateway.session(device) as client:
        async with client.ws_connect(gateway.url.replace("https", "wss") + "/ws") as ws:
            await ws.receive(timeout=5)
            await gateway.store.end_session(device.session_id, now=time.time(), reason="logout",
                                            draft=LedgerDraft("session.logout", "alice", device.session_id, {}))
            msg = await ws.receive(timeout=3)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)


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


# -- header hygiene on the wire ----------------------------------------------------------------------


@pytest.mark.parametrize("smuggle", [
    b"X-IDWall-Assertion : forged\r\n",
    b"X-IDWall-Assertion\t: forged\r\n",
    b"X-Other: a\r\n X-IDWall-Assertion: forged\r\n",
    b"X-Other: a\r\n\tX-IDWall-Assertion: forged\r\n",
    b"X_IDWall_Assertion: forged\r\n",
    b"x-idwall-assertion: forged\r\nX-IDWALL-ASSERTION: forged\r\n",
    b"Connection: X-Other\r\nX-Other: forged\r\n",
    b"Host: other.example\r\n",
])
async def test_spoofed_identity_headers_never_reach_the_upstream(gateway, smuggle: bytes) -> None:
    device = await gateway.device("alice")
    request = (b"GET /app HTTP/1.1\r\nHost: localhost\r\n" + smuggle + b"Connection: close\r\n\r\n")
    answer = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device), request, read_timeout=3)
    status = _status(answer)
    assert status in (200, 400), answer[:300]
    if status == 400:
        assert b'"raw_path"' not in answer  # refused by the parser: the upstream never saw it
    else:
        assert b"forged" not in answer
    assert b"Traceback" not in answer


async def test_identity_header_in_chunked_trailers_never_reaches_the_upstream(gateway) -> None:
    device = await gateway.device("alice")
    request = (b"POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTrailer: X-IDWall-Assertion\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-IDWall-Assertion: forged\r\n\r\n")
    answer = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device), request, read_timeout=3)
    assert _status(answer) in (200, 400), answer[:300]
    assert b"forged" not in answer


async def test_login_begin_refuses_a_device_whose_certificate_has_expired(gateway) -> None:
    device = await gateway.device("olga", with_session=False, cert_ttl=60)
    gw = gateway.running.node
    async with gateway.session(device) as client:
        gw.clock = lambda: time.time() + 120
        try:
            async with client.post(gateway.url + "/idwall/api/login/begin", json={}) as resp:
                assert resp.status == 403
                body = await resp.json()
        finally:
            gw.clock = time.time
    assert "expired" in body["detail"] and body["enroll_url"].endswith("/idwall/enroll")
