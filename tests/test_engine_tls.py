"""idwall.engine.tls: the listener's context and the contexts towards https upstreams, over real TLS.

Towards upstreams: verification against the route's CA (or the system store) and the gateway's client
certificate for mutual TLS, and the inputs a context is built from. The listener: a certificate from
another CA fails the handshake, and a resumed TLS session (no certificate checked in that handshake) of a
device revoked since is not served.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from idwall import killswitch, pki
from idwall.engine import tls as engine_tls
from idwall.testing.fixtures import client_ssl_context
from tests.helpers.gateway import start_test_gateway
from tests.helpers.http_wire import status_of
from tests.helpers.upstream_app import AppUpstream, serve_app, upstream_app


# --- https upstreams ------------------------------------------------------------------------------


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


# --- the listener ---------------------------------------------------------------------------------


async def test_certificate_from_another_ca_fails_the_handshake(gateway, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    rogue_key = pki.generate_p256_key()
    rogue_ca = pki.make_ca("rogue", rogue_key, now=now, days=1)
    key = pki.generate_p256_key()
    cert = pki.issue_device_cert(ca_cert=rogue_ca, ca_key=rogue_key, csr=pki.check_csr(pki.make_csr(key, "x")),
                                 device_id="dev-rogue", now=now, ttl=3600)
    pki.write_cert(tmp_path / "rogue.pem", cert)
    pki.write_private_key(tmp_path / "rogue-key.pem", key)
    ctx = client_ssl_context(gateway.init["ca_pem"], tmp_path / "rogue.pem", tmp_path / "rogue-key.pem")
    with pytest.raises((ssl.SSLError, aiohttp.ClientError, ConnectionError)):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as client:
            async with client.get(gateway.url + "/x") as resp:
                await resp.read()


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
    assert status_of(first) == 200
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
    assert status_of(answer) == 403, answer[:300]
