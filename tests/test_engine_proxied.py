"""idwall.engine.proxied: the client address from a trusted balancer's PROXY v2 header, and from nobody else.

Over real sockets on loopback: 127.0.0.2 plays the load balancer (the only trusted address), 127.0.0.1 a
client that reaches the gateway directly. Each attack tries to make the gateway believe a forged address.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idwall import proxy_protocol
from idwall.engine.proxied import read_proxy_header
from idwall.proxy_protocol import ProxyHeaderError
from tests.helpers.balancer import raw_socket, refused, sessions_seen
from tests.helpers.gateway import GatewayUnderTest, echo_upstream, start_test_gateway

BALANCER = "127.0.0.2"
CLIENT = ("198.51.100.7", 50123)


def _trusting(text: str) -> str:
    return (text.replace("listen:\n  host: 127.0.0.1\n", "listen:\n  host: 127.0.0.1\n"
                         f"  proxy_protocol: {{trusted: [{BALANCER}/32]}}\n", 1)
            .replace("  handshake_timeout: 10s\n", "  handshake_timeout: 1s\n", 1))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    async with echo_upstream() as upstream:
        gut = await start_test_gateway(tmp_path, upstream.url, edit=_trusting)
        try:
            yield gut
        finally:
            await gut.running.stop(drain=0.5)


def _header(source: tuple[str, int] = CLIENT, port: int = 8443) -> bytes:
    return proxy_protocol.build(source, ("127.0.0.1", port))


def _remotes(gateway: GatewayUnderTest) -> set[str]:
    return {conn.remote for conn in gateway.running.node.registry}


# --------------------------------------------------------------------------- the header off a socket


@pytest.mark.parametrize("follows", [b"", b"\x16\x03\x01 a TLS hello"])
async def test_exactly_the_header_is_read_and_the_tls_bytes_stay(follows: bytes) -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    header = proxy_protocol.build(CLIENT, ("10.0.0.1", 443), {0xE0: b"x" * 300})
    right.sendall(header + follows)
    parsed = await read_proxy_header(asyncio.get_running_loop(), left)
    assert parsed.source == CLIENT and parsed.tlvs == {0xE0: b"x" * 300}
    right.close()
    left.setblocking(True)
    assert left.recv(1000) == follows
    left.close()


@pytest.mark.parametrize(("sent", "problem"), [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, "does not start with the PROXY protocol v2 signature"),
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\n", "does not start with the PROXY protocol v2 signature"),
    (proxy_protocol.SIGNATURE + b"\x21\x11\x00", "closed after 15 of the header's bytes"),
    (proxy_protocol.SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12, "version 1; only 2 is accepted"),
    (proxy_protocol.SIGNATURE + b"\x21\x11\xff\xff", "more than the"),
    (_header()[:20], "closed after 4 of the header's bytes"),
])
async def test_what_is_not_one_whole_header_is_refused(sent: bytes, problem: str) -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.sendall(sent)
    right.close()
    with pytest.raises(ProxyHeaderError, match=problem):
        await read_proxy_header(asyncio.get_running_loop(), left)
    left.close()


# --------------------------------------------------------------------------- over the wire


async def test_the_balancer_names_the_client_and_the_console_shows_it(gateway: GatewayUnderTest) -> None:
    device = await gateway.device("alice")
    sock = await raw_socket(gateway.port, BALANCER)
    sock.sendall(_header(port=gateway.port))
    sessions = await sessions_seen(gateway, sock, device)
    assert [s["remote"] for s in sessions if s["user"] == "alice"] == [CLIENT[0]]


async def test_a_direct_client_is_served_with_its_own_address(gateway: GatewayUnderTest) -> None:
    device = await gateway.device("alice")
    sock = await raw_socket(gateway.port, "127.0.0.1")
    sessions = await sessions_seen(gateway, sock, device)
    assert [s["remote"] for s in sessions if s["user"] == "alice"] == ["127.0.0.1"]


async def test_an_untrusted_client_cannot_claim_an_address(gateway: GatewayUnderTest) -> None:
    device = await gateway.device("alice")
    sock = await raw_socket(gateway.port, "127.0.0.1")
    sock.sendall(_header(("203.0.113.66", 1), gateway.port))
    await refused(gateway, sock, device)
    assert "203.0.113.66" not in _remotes(gateway)


async def test_the_balancer_without_a_header_is_refused(gateway: GatewayUnderTest) -> None:
    """Else every client behind a misconfigured balancer would share the balancer's address."""
    device = await gateway.device("alice")
    await refused(gateway, await raw_socket(gateway.port, BALANCER), device)
    assert BALANCER not in _remotes(gateway)


async def test_a_balancer_that_stalls_inside_the_header_is_dropped_after_the_handshake_timeout(
        gateway: GatewayUnderTest) -> None:
    sock = await raw_socket(gateway.port, BALANCER)
    sock.sendall(_header(port=gateway.port)[:10])
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(sock, 1), 5) == b""  # closed by the gateway, not by us
    sock.close()


async def test_a_health_check_local_header_is_served_as_the_balancer(gateway: GatewayUnderTest) -> None:
    device = await gateway.device("alice")
    sock = await raw_socket(gateway.port, BALANCER)
    sock.sendall(proxy_protocol.SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00]))  # v2 LOCAL, no addresses
    sessions = await sessions_seen(gateway, sock, device)
    assert [s["remote"] for s in sessions if s["user"] == "alice"] == [BALANCER]
