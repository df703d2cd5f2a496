"""idwall.engine.server: accepting, the deadline sweep and the drain on shutdown, over real sockets.

A thousand slow connections stay cheap, do not slow enrolled devices down and are closed by the sweep at
``limits.head_timeout``; a stopping gateway lets in-flight requests finish and accepts nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.process import gateway_process
from tests.helpers.proxy import proxy_config
from tests.helpers.upstream_app import AppUpstream

pytestmark = pytest.mark.asyncio(loop_scope="module")


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
        edit = proxy_config(app_upstream.url, limits={"connections_without_certificate": "2000", "head_timeout": "4s"})
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


# --- the drain on shutdown ------------------------------------------------------------------------


async def test_stop_drains_in_flight_requests_and_refuses_new_connections(tmp_path: Path) -> None:
    from aiohttp import web

    from tests.helpers.gateway import start_test_gateway
    from tests.helpers.upstream_app import serve_app

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="finished after the stop began")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    runner, upstream_port = await serve_app(app)
    gut = await start_test_gateway(tmp_path, f"http://127.0.0.1:{upstream_port}")
    try:
        device = await gut.device("drain")
        async with gut.session(device) as client:
            async def fetch() -> tuple[int, str]:
                async with client.get(gut.url + "/slow") as resp:
                    return resp.status, await resp.text()

            in_flight = asyncio.create_task(fetch())
            await asyncio.sleep(0.3)
            stopping = asyncio.create_task(gut.running.stop(drain=5))
            await asyncio.sleep(0.2)
            async with gut.session(device) as late:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await late.get(gut.url + "/too-late")
            assert await in_flight == (200, "finished after the stop began")
            await stopping
    finally:
        await runner.cleanup()


async def test_an_idle_keep_alive_client_that_never_answers_close_notify_does_not_hold_the_stop(
        tmp_path: Path) -> None:
    """A client idle on keep-alive that reads nothing more (so never answers the TLS close, as a blocking
    http.client connection between requests) is cut when the stop begins; the stop does not wait out the drain
    timeout for it."""
    from tests.helpers.gateway import echo_upstream, start_test_gateway

    async with echo_upstream() as upstream:
        gut = await start_test_gateway(tmp_path, upstream.url)
        device = await gut.device("idle")

        def served_once() -> ssl.SSLSocket:
            sock = gut.ssl(device).wrap_socket(socket.create_connection(("127.0.0.1", gut.port), timeout=5),
                                               server_hostname="localhost")
            sock.sendall(b"GET /once HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            return sock  # kept open, and never read again

        idle = await asyncio.to_thread(served_once)
        began = time.monotonic()
        await asyncio.wait_for(gut.running.stop(drain=30), 40)  # the drain allows 30 s; the idle client gets none
        stopped = time.monotonic() - began
        idle.close()
    assert stopped < 5, f"the stop waited {stopped:.1f} s for an idle connection"
