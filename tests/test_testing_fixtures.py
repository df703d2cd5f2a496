"""idwall.testing.fixtures: the building blocks integrators' tests (and ours) stand a real gateway on.

It promises a port that can be bound, a gateway directory made by ``idwall init`` with its route pointed where
the caller says, TLS client contexts that verify the gateway and present a device, a device written straight
into the store that the running gateway then accepts as signed in, and a raw TLS exchange. Each is checked
against the real thing: a bound socket, the config loader, a running gateway (conftest's ``gateway``) over
real TLS, and its SQLite store.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization

from idwall import pki
from idwall.config import load_config
from idwall.testing.fixtures import (
    DeviceFiles,
    client_ssl_context,
    free_port,
    init_gateway_dir,
    problem,
    raw_https,
    register_device_directly,
)


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if the port were taken


def test_init_gateway_dir_answers_what_init_made_and_points_the_route(tmp_path: Path) -> None:
    info = init_gateway_dir(tmp_path / "gw", port=9555, upstream="http://127.0.0.1:4321",
                            extra_yaml="  - name: extra\n    match: {path: /extra}\n    upstream: http://127.0.0.1:4322\n")
    assert set(info) == {"config", "bootstrap_code", "ca_pem", "device_ca_pem", "public_url"}
    config = load_config(info["config"])
    assert config.public_url == info["public_url"] == "https://localhost:9555"
    # the template's route now goes to the given upstream; the extra YAML (appended after routes:) was read
    assert [(route.name, route.upstream) for route in config.routes] == [
        ("whoami", "http://127.0.0.1:4321"), ("extra", "http://127.0.0.1:4322")]
    assert Path(info["ca_pem"]).is_file() and Path(info["device_ca_pem"]).is_file()
    assert info["bootstrap_code"] and info["bootstrap_code"] not in Path(info["config"]).read_text()


def test_init_gateway_dir_without_upstream_keeps_the_template_route(tmp_path: Path) -> None:
    info = init_gateway_dir(tmp_path / "gw", port=9556)
    assert [route.upstream for route in load_config(info["config"]).routes] == ["http://127.0.0.1:9001"]


async def test_init_gateway_dir_with_a_store_url_claims_that_database(tmp_path: Path, pg_url: str) -> None:
    info = await asyncio.to_thread(init_gateway_dir, tmp_path / "gw", port=9557, store=pg_url)
    assert load_config(info["config"]).store == pg_url
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:  # init migrated it and wrote the first administrator's invite there, not into a SQLite file
        assert await conn.fetchval("SELECT COUNT(*) FROM invites") == 1
    finally:
        await conn.close()
    assert not (tmp_path / "gw" / "idwall.db").exists()


async def test_client_context_verifies_the_gateway_against_the_given_ca(gateway) -> None:  # type: ignore[no-untyped-def]
    good = client_ssl_context(gateway.init["ca_pem"])
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, ssl=good,
                                                                 server_hostname="localhost")
    writer.close()
    # the device CA is not the gateway's CA: trusting it alone must fail the handshake
    wrong = client_ssl_context(gateway.init["device_ca_pem"])
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", gateway.port, ssl=wrong, server_hostname="localhost")


async def test_registered_device_is_signed_in_at_the_running_gateway(gateway) -> None:  # type: ignore[no-untyped-def]
    node = gateway.running.node
    device = await register_device_directly(
        node.store, device_ca_cert=node.device_ca_cert, device_ca_key=node.device_ca_key,
        out_dir=gateway.dir / "direct", user_id="alice", groups=("eng",), email="alice@example.com")
    assert isinstance(device, DeviceFiles) and device.session_id is not None
    # the certificate on disk is the one the store knows, issued by the device CA for this device
    cert = pki.load_cert(device.cert_path)
    assert pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER)) == device.cert_sha256
    assert cert.issuer == node.device_ca_cert.subject
    resolved = await node.store.resolve_certificate(device.cert_sha256, now=time.time())
    assert resolved is not None and resolved.device.status == "active"
    assert (resolved.user.id, resolved.user.groups) == ("alice", ("eng",))
    assert resolved.session is not None and resolved.session.id == device.session_id
    # and the gateway proxies its requests as alice (client_ssl_context presenting the device)
    ctx = client_ssl_context(gateway.init["ca_pem"], device.cert_path, device.key_path)
    answer = await raw_https("127.0.0.1", gateway.port, ctx,
                             b"GET /seen HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"path": "/seen"' in answer and b"x-idwall-assertion" in answer.lower()


async def test_registered_device_without_session_is_asked_to_log_in(gateway) -> None:  # type: ignore[no-untyped-def]
    node = gateway.running.node
    device = await register_device_directly(
        node.store, device_ca_cert=node.device_ca_cert, device_ca_key=node.device_ca_key,
        out_dir=gateway.dir / "direct", user_id="bob", with_session=False)
    assert device.session_id is None
    resolved = await node.store.resolve_certificate(device.cert_sha256, now=time.time())
    assert resolved is not None and resolved.session is None
    ctx = client_ssl_context(gateway.init["ca_pem"], device.cert_path, device.key_path)
    answer = await raw_https("127.0.0.1", gateway.port, ctx,
                             b"GET /seen HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
                             b"Connection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert problem(body)["status"] == 401


async def test_raw_https_returns_what_was_read_when_the_server_goes_quiet(gateway) -> None:  # type: ignore[no-untyped-def]
    ctx = client_ssl_context(gateway.init["ca_pem"])
    started = time.monotonic()
    # a request left unfinished: the gateway waits for the rest, raw_https gives up after read_timeout
    answer = await raw_https("127.0.0.1", gateway.port, ctx, b"GET / HTTP/1.1\r\nHost: localhost\r\n",
                             read_timeout=0.5)
    assert answer == b""
    assert time.monotonic() - started < 5


def test_problem_parses_text_and_bytes() -> None:
    body = '{"type": "https://idwall.dev/problems/x", "status": 400}'
    assert problem(body) == problem(body.encode()) == {"type": "https://idwall.dev/problems/x", "status": 400}
