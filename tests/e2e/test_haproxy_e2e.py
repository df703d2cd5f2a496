"""Behind Debian's HAProxy in TCP mode: TLS passes through (mTLS ends at IDWall), PROXY v2 names the client.

HAProxy connects to the gateway from 127.0.0.2, the one trusted address; the device connects to HAProxy
from 127.0.0.3, and that is the address the gateway must report, not HAProxy's. The same gateway refuses
a PROXY header from anyone else. A missing haproxy binary fails the test (CI installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from idwall import proxy_protocol
from idwall.testing.fixtures import free_port
from tests.helpers.balancer import raw_socket, refused, sessions_seen
from tests.helpers.gateway import GatewayUnderTest, echo_upstream, start_test_gateway
from tests.helpers.process import stop_process

BALANCER, DEVICE = "127.0.0.2", "127.0.0.3"

HAPROXY_CFG = """\
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend idwall
    bind 127.0.0.1:{listen}
    default_backend gateways
backend gateways
    server gw1 127.0.0.1:{gateway} send-proxy-v2 source {balancer}
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    def trusting(text: str) -> str:
        return text.replace("listen:\n  host: 127.0.0.1\n",
                            f"listen:\n  host: 127.0.0.1\n  proxy_protocol: {{trusted: [{BALANCER}/32]}}\n", 1)

    async with echo_upstream() as upstream:
        gut = await start_test_gateway(tmp_path, upstream.url, edit=trusting)
        try:
            yield gut
        finally:
            await gut.running.stop(drain=0.5)


@pytest.fixture
def haproxy(tmp_path: Path, gateway: GatewayUnderTest) -> Iterator[int]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is not installed (apt-get install -y haproxy)"
    listen = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(listen=listen, gateway=gateway.port, balancer=BALANCER))
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield listen
    finally:
        stop_process(process)


async def _through(listen: int) -> object:
    for _ in range(100):  # haproxy binds within a moment of starting
        try:
            return await raw_socket(listen, DEVICE)
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    raise AssertionError("haproxy never listened")


async def test_the_gateway_sees_the_device_not_the_balancer(gateway: GatewayUnderTest, haproxy: int) -> None:
    device = await gateway.device("alice")
    sessions = await sessions_seen(gateway, await _through(haproxy), device)  # type: ignore[arg-type]
    assert [s["remote"] for s in sessions if s["user"] == "alice"] == [DEVICE]


async def test_behind_the_balancer_a_forged_header_from_elsewhere_is_still_refused(
        gateway: GatewayUnderTest, haproxy: int) -> None:
    device = await gateway.device("alice")
    await _through(haproxy)  # the balancer is up and in use
    sock = await raw_socket(gateway.port, "127.0.0.1")
    sock.sendall(proxy_protocol.build(("203.0.113.66", 1), ("127.0.0.1", gateway.port)))
    await refused(gateway, sock, device)
    assert "203.0.113.66" not in {conn.remote for conn in gateway.running.node.registry}
