"""idwall.relay: the verifying relay beside a TCP workload, over real sockets with real ES256 assertions.

A connection is relayed only from an allowed address, with one strict PROXY v2 header whose assertion
verifies (signature, audience, expiry, htm/htu, a jti not seen before); every other connection is closed
with no byte reaching the workload, and the refusal is logged with its reason."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idwall import pki, proxy_protocol
from idwall.assertion import KeySet, build_claims
from idwall.relay import Relay, RelaySettings, Replayed, ReplayGuard, allowed
from idwall.upstream import AssertionVerifier, JWKSCache
from tests.helpers.tcp import Service, closed_within, tcp_service

ISSUER = "https://gw.example"


def _keys(path: Path) -> KeySet:
    pki.write_private_key(path, pki.generate_p256_key())
    return KeySet.load(path, now=time.time(), overlap=3600)


def _token(keys: KeySet, htu: str, *, aud: str = "db", now: float | None = None, bind: bool = True) -> bytes:
    claims = build_claims(
        iss=ISSUER, aud=aud, user={"id": "alice", "email": "a@example.com", "name": "Alice", "groups": ["dba"]},
        session={"id": "ses-1", "auth_time": int(time.time()), "amr": ["hwk", "user"]},
        device={"id": "dev-1", "name": "laptop", "credential_id": "cred", "enrolled_at": 1, "approved_by": None},
        cert_sha256=bytes(32), method="TCP", url=htu, now=time.time() if now is None else now, ttl=60,
        bind_request=bind)
    return keys.sign(claims).encode()


def _header(token: bytes | None, *, command: int = proxy_protocol.PROXY) -> bytes:
    header = proxy_protocol.build(("192.0.2.7", 50000), ("127.0.0.1", 6432),
                                  {proxy_protocol.TLV_ASSERTION: token} if token is not None else {})
    return header[:12] + bytes((0x20 | command,)) + header[13:]


class RelayUnderTest:
    def __init__(self, relay: Relay, port: int, keys: KeySet, workload: Service) -> None:
        self.relay, self.port, self.keys, self.workload = relay, port, keys, workload
        self.htu = relay.settings.htu

    def token(self, **kwargs: Any) -> bytes:
        return _token(self.keys, self.htu, **kwargs)

    async def send(self, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        return reader, writer


async def _start(tmp_path: Path, workload: Service, **settings: Any) -> RelayUnderTest:
    keys = _keys(tmp_path / "assertion-key.pem")
    listen = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # a free port for the htu
    port = listen.sockets[0].getsockname()[1]
    listen.close()
    await listen.wait_closed()
    options: dict[str, Any] = {"listen_host": "127.0.0.1", "listen_port": port, "upstream_host": "127.0.0.1",
                               "upstream_port": workload.port, "htu": f"tcp://127.0.0.1:{port}"}
    options.update(settings)
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks(keys.jwks()), issuer=ISSUER, audience="db")
    relay = Relay(RelaySettings(**options), verifier)
    await relay.start()
    return RelayUnderTest(relay, port, keys, workload)


@pytest.fixture
async def workload() -> AsyncIterator[Service]:
    async with tcp_service() as up:
        yield up


@pytest.fixture
async def relay(tmp_path: Path, workload: Service) -> AsyncIterator[RelayUnderTest]:
    rut = await _start(tmp_path, workload)
    yield rut
    await rut.relay.close()


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "fields")["reason"] for r in caplog.records if r.getMessage() == "relay.refused"]


# --------------------------------------------------------------------------- accepted


async def test_a_verified_connection_reaches_the_workload_without_the_header(
        relay: RelayUnderTest, workload: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="idwall")
    token = relay.token()
    reader, writer = await relay.send(_header(token) + b"select 1;")
    assert await asyncio.wait_for(reader.readexactly(9), 5) == b"select 1;"
    assert bytes(workload.received[0]) == b"select 1;"
    (opened,) = [r.fields for r in caplog.records if r.getMessage() == "relay.open"]  # type: ignore[attr-defined]
    assert (opened["user"], opened["device"], opened["session"], opened["client"]) == (
        "alice", "dev-1", "ses-1", "192.0.2.7")
    logged = " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert token.split(b".")[2].decode() not in logged  # the assertion itself is never logged
    writer.close()  # the gateway side ends: the workload's connection ends with it
    await asyncio.wait_for(workload.closed[0].wait(), 5)


async def test_the_workload_closing_closes_the_gateway_side(relay: RelayUnderTest, workload: Service) -> None:
    reader, _ = await relay.send(_header(relay.token()) + b"x")
    await workload.connections(1)
    await asyncio.sleep(0.05)
    workload.writers[0].transport.abort()
    assert await closed_within(reader, 5)


# --------------------------------------------------------------------------- refused


async def _refused(relay: RelayUnderTest, data: bytes, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    caplog.set_level(logging.INFO, logger="idwall")
    reader, _ = await relay.send(data)
    assert await closed_within(reader, 5)
    assert relay.workload.received == []
    assert any(reason in r for r in _refusals(caplog)), _refusals(caplog)


async def test_a_connection_without_a_proxy_header_is_refused(relay: RelayUnderTest,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    startup = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # what psql sends first: a client that bypassed the gateway
    await _refused(relay, startup, caplog, "signature")


async def test_a_v1_text_header_is_refused(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, b"PROXY TCP4 192.0.2.7 127.0.0.1 50000 6432\r\n", caplog, "signature")


async def test_a_header_without_an_assertion_is_refused(relay: RelayUnderTest,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, _header(None) + b"x", caplog, "no identity assertion")


async def test_a_local_header_is_refused(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, _header(relay.token(), command=proxy_protocol.LOCAL), caplog, "LOCAL")


async def test_a_forged_assertion_is_refused(tmp_path: Path, relay: RelayUnderTest,
                                             caplog: pytest.LogCaptureFixture) -> None:
    real = relay.token().split(b".")
    other = _token(_keys(tmp_path / "attacker-key.pem"), relay.htu).split(b".")
    forged = b".".join((real[0], other[1], other[2]))  # the gateway's kid, another key's signature
    await _refused(relay, _header(forged), caplog, "does not verify")


async def test_an_expired_assertion_is_refused(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, _header(relay.token(now=time.time() - 120)), caplog, "expired")


async def test_an_assertion_for_another_audience_is_refused(relay: RelayUnderTest,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, _header(relay.token(aud="wiki")), caplog, "expected audience 'db'")


async def test_an_assertion_for_another_address_is_refused(relay: RelayUnderTest,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    token = _token(relay.keys, "tcp://10.0.0.9:5432")
    await _refused(relay, _header(token), caplog, "tcp://10.0.0.9:5432")


async def test_an_unbound_assertion_is_refused(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    await _refused(relay, _header(relay.token(bind=False)), caplog, "not bound")


async def test_a_replayed_header_is_refused(relay: RelayUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    header = _header(relay.token())
    reader, _ = await relay.send(header + b"a")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
    caplog.set_level(logging.INFO, logger="idwall")
    again, _ = await relay.send(header + b"b")
    assert await closed_within(again, 5)
    assert bytes(relay.workload.received[0]) == b"a" and len(relay.workload.received) == 1
    assert any("already used" in r for r in _refusals(caplog))


async def test_a_header_that_never_completes_is_refused(tmp_path: Path, workload: Service,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rut = await _start(tmp_path, workload, header_timeout=0.5)
    try:
        await _refused(rut, _header(rut.token())[:20], caplog, "no complete PROXY v2 header")
    finally:
        await rut.relay.close()


async def test_a_connection_from_an_address_not_allowed_is_refused(tmp_path: Path, workload: Service,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    rut = await _start(tmp_path, workload, allow_from=(ipaddress.ip_network("10.0.0.10/32"),))
    try:
        await _refused(rut, _header(rut.token()) + b"x", caplog, "configured gateway address")
    finally:
        await rut.relay.close()


async def test_a_workload_that_is_down_closes_the_connection(tmp_path: Path, workload: Service) -> None:
    rut = await _start(tmp_path, workload, upstream_port=1)
    try:
        reader, _ = await rut.send(_header(rut.token()) + b"x")
        assert await closed_within(reader, 5)
    finally:
        await rut.relay.close()


# --------------------------------------------------------------------------- pure parts


def test_replay_guard_refuses_a_jti_until_it_expires() -> None:
    guard = ReplayGuard()
    guard.use("j1", expires=100, now=10)
    with pytest.raises(Replayed):
        guard.use("j1", expires=100, now=50)
    guard.use("j1", expires=200, now=101)  # expired: a verifier refuses the assertion on its own by then


@pytest.mark.parametrize("address, result", [
    ("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("::1", True), ("10.0.0.10", False), ("not-an-ip", False),
])
def test_allowed_addresses(address: str, result: bool) -> None:
    assert allowed(address, RelaySettings("h", 1, "h", 2, "tcp://h:1").allow_from) is result
