"""idwall.engine.tunnel: TCP tunnels over the device's mTLS connection, against a real gateway and real TCP
services. The handshake rules are pure; everything else is over real sockets: bytes both ways (flow control
included), the PROXY v2 header with a verifiable assertion, the console listing, every kill scope and the
session's end cutting the tunnel, and each refusal (nothing reaches the service)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from idwall.engine.h1 import RequestHead
from idwall.engine.tunnel import handshake_problem, route_name
from idwall.testing.fixtures import free_port
from idwall.upstream import AssertionVerifier, JWKSCache
from tests.helpers.api import call
from tests.helpers.gateway import GatewayUnderTest, running_gateway
from tests.helpers.http_wire import exchange
from tests.helpers.tcp import Service, closed_within, open_tunnel, tcp_routes, tcp_service

# --------------------------------------------------------------------------- pure rules


def _head(**values: object) -> RequestHead:
    head = RequestHead()
    head.method, head.version, head.upgrade, head.connection_upgrade = b"GET", b"1.1", b"idwall-tcp", True
    for name, value in values.items():
        setattr(head, name, value)
    return head


def test_a_well_formed_tunnel_request_passes() -> None:
    assert handshake_problem(_head()) is None


@pytest.mark.parametrize("values, words", [
    ({"upgrade": None, "connection_upgrade": False}, "this is a TCP route"),
    ({"upgrade": b"websocket"}, "Upgrade: idwall-tcp"),
    ({"connection_upgrade": False}, "Connection: upgrade"),
    ({"version": b"1.0"}, "needs HTTP/1.1"),
    ({"method": b"POST"}, "GET without a body"),
    ({"content_length": 5}, "GET without a body"),
])
def test_anything_else_is_refused_with_the_reason(values: dict[str, object], words: str) -> None:
    problem = handshake_problem(_head(**values))
    assert problem is not None and words in problem


@pytest.mark.parametrize("path, name", [
    ("/idwall/tunnel/db", "db"), ("/idwall/tunnel/db.prod-1", "db.prod-1"), ("/idwall/tunnel/", None),
    ("/idwall/tunnel/db/x", None), ("/idwall/tunnel/-db", None), ("/idwall/tunnelx", None),
])
def test_route_name(path: str, name: str | None) -> None:
    assert route_name(path) == name


# --------------------------------------------------------------------------- over real sockets


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: a connection attempt to it neither completes nor fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        server.close()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with tcp_service() as up:
        yield up


@pytest.fixture
async def proxied() -> AsyncIterator[Service]:
    async with tcp_service(proxy=True) as up:
        yield up


@pytest.fixture
async def gw(tmp_path: Path, upstream: object, service: Service, proxied: Service) -> AsyncIterator[GatewayUnderTest]:
    with blackhole() as slow:
        edit = tcp_routes(
            f"{{name: db, upstream: 'tcp://127.0.0.1:{service.port}'}}",
            f"{{name: pp, upstream: 'tcp://127.0.0.1:{proxied.port}', proxy_protocol: v2}}",
            f"{{name: dba, upstream: 'tcp://127.0.0.1:{service.port}', allow: {{groups: [dba]}}}}",
            f"{{name: refusing, upstream: 'tcp://127.0.0.1:{free_port()}'}}",
            f"{{name: slow, upstream: 'tcp://127.0.0.1:{slow}', timeout: 1s}}",
        )
        async with running_gateway(tmp_path, upstream.url, edit=edit) as gut:  # type: ignore[attr-defined]
            yield gut


async def test_bytes_flow_both_ways_through_the_tunnel(gw: GatewayUnderTest, service: Service) -> None:
    alice = await gw.device("alice")
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "db")
    assert tunnel.status == 101 and b"upgrade: idwall-tcp" in tunnel.head.lower()
    payload = bytes(range(256)) * 16384  # 4 MiB, more than any buffer on the way
    tunnel.writer.write(payload)
    echoed = await asyncio.wait_for(tunnel.reader.readexactly(len(payload)), 30)
    assert echoed == payload and bytes(service.received[0]) == payload
    tunnel.writer.close()
    await asyncio.wait_for(service.closed[0].wait(), 5)  # the device closing ends the service's connection


async def test_the_service_gets_a_proxy_header_with_a_verifiable_assertion(gw: GatewayUnderTest,
                                                                           proxied: Service) -> None:
    alice = await gw.device("alice", groups=("eng",))
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "pp")
    assert tunnel.status == 101
    tunnel.writer.write(b"hello")
    assert await asyncio.wait_for(tunnel.reader.readexactly(5), 5) == b"hello"
    header = proxied.headers[0]
    local = tunnel.writer.get_extra_info("sockname")
    assert header.source == ("127.0.0.1", local[1]) and header.destination == ("127.0.0.1", gw.port)
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks(gw.running.node.keys.jwks()), issuer=gw.url, audience="pp")
    identity = await verifier.verify(header.assertion.decode(), method="TCP",  # type: ignore[union-attr]
                                     url=f"tcp://127.0.0.1:{proxied.port}")
    assert (identity.sub, identity.sid, identity.device["id"], identity.groups) == (
        "alice", alice.session_id, alice.device_id, ("eng",))
    assert identity.claims["htm"] == "TCP" and identity.claims["htu"] == f"tcp://127.0.0.1:{proxied.port}"
    assert bytes(proxied.received[0]) == b"hello"  # the header was not relayed as payload


async def test_a_service_that_speaks_first_is_heard_after_the_101(tmp_path: Path, upstream: object) -> None:
    async with tcp_service(banner=b"SSH-2.0-test\r\n") as ssh:
        edit = tcp_routes(f"{{name: ssh, upstream: 'tcp://127.0.0.1:{ssh.port}'}}")
        async with running_gateway(tmp_path, upstream.url, edit=edit) as gut:  # type: ignore[attr-defined]
            tunnel = await open_tunnel(gut.port, gut.ssl(await gut.device("alice")), "ssh")
            assert tunnel.status == 101
            assert await asyncio.wait_for(tunnel.reader.readexactly(14), 5) == b"SSH-2.0-test\r\n"


async def test_a_service_that_does_not_read_pauses_the_device(tmp_path: Path, upstream: object) -> None:
    async with tcp_service(read=False) as stuck:
        edit = tcp_routes(f"{{name: stuck, upstream: 'tcp://127.0.0.1:{stuck.port}'}}")
        async with running_gateway(tmp_path, upstream.url, edit=edit) as gut:  # type: ignore[attr-defined]
            tunnel = await open_tunnel(gut.port, gut.ssl(await gut.device("alice")), "stuck")
            assert tunnel.status == 101
            sent = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    while True:  # until the device's own writes block: the gateway stopped reading from it
                        tunnel.writer.write(bytes(1 << 20))
                        sent += 1 << 20
                        await tunnel.writer.drain()
            (client,) = [c for c in gut.running.engine.clients if c.splice is not None]
            assert client.pauses == {"upstream"}
            held = client.splice.transport.get_write_buffer_size()
            assert held < 16 << 20 and sent < 64 << 20, (held, sent)  # bounded, not all of it buffered


async def test_tunnels_are_listed_as_live_connections(gw: GatewayUnderTest) -> None:
    admin, alice = await gw.device("root", admin=True), await gw.device("alice")
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "db")
    assert tunnel.status == 101
    async with gw.session(admin) as client:
        status, body = await call(client, "GET", gw.url + "/idwall/api/admin/sessions?user=alice")
    assert status == 200
    (row,) = body["sessions"]
    assert row["session_id"] == alice.session_id and row["activity"] == ["tunnel"] and row["connections"] == 1


@pytest.mark.parametrize("scope", ["session", "device", "user", "group", "all"])
async def test_every_kill_scope_cuts_the_tunnel_and_its_upstream(gw: GatewayUnderTest, service: Service,
                                                                 scope: str) -> None:
    admin, alice = await gw.device("root", admin=True), await gw.device("alice", groups=("eng",))
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "db")
    tunnel.writer.write(b"ping")
    assert await asyncio.wait_for(tunnel.reader.readexactly(4), 5) == b"ping"
    target = {"session": alice.session_id, "device": alice.device_id, "user": "alice", "group": "eng",
              "all": None}[scope]
    async with gw.session(admin) as client:
        status, body = await call(client, "POST", gw.url + "/idwall/api/admin/kill",
                                  {"scope": scope, "target": target, "reason": "test", "revoke_devices": False})
    assert status == 200 and body["connections_closed"] >= 1, body
    assert await closed_within(tunnel.reader, 1.0)
    await asyncio.wait_for(service.closed[0].wait(), 1.0)
    again = await open_tunnel(gw.port, gw.ssl(alice), "db")
    assert again.status == 401 and "login_url" in again.problem  # no new tunnel without a fresh login
    assert len(service.received) == 1


async def test_logging_out_cuts_the_tunnel(gw: GatewayUnderTest) -> None:
    alice = await gw.device("alice")
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "db")
    assert tunnel.status == 101
    async with gw.session(alice) as client:
        status, _ = await call(client, "POST", gw.url + "/idwall/api/logout", {})
    assert status == 200
    assert await closed_within(tunnel.reader, 10)


async def test_an_idle_tunnel_closes_after_the_session_idle_timeout(tmp_path: Path, upstream: object,
                                                                    service: Service) -> None:
    def edit(text: str) -> str:
        text = tcp_routes(f"{{name: db, upstream: 'tcp://127.0.0.1:{service.port}'}}")(text)
        return text.replace("  idle_timeout: 1h\n", "  idle_timeout: 2s\n", 1)
    async with running_gateway(tmp_path, upstream.url, edit=edit) as gut:  # type: ignore[attr-defined]
        tunnel = await open_tunnel(gut.port, gut.ssl(await gut.device("alice")), "db")
        assert tunnel.status == 101
        assert not await closed_within(tunnel.reader, 1.0)
        assert await closed_within(tunnel.reader, 6.0)


# --------------------------------------------------------------------------- refusals, as attacks


async def test_an_unknown_route_is_404(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "nosuch")
    assert tunnel.status == 404 and "no TCP route named 'nosuch'" in tunnel.problem["detail"]
    assert service.received == []


async def test_a_tunnel_to_an_http_route_is_refused(gw: GatewayUnderTest, upstream: object) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "whoami")
    assert tunnel.status == 400 and "is an HTTP route" in tunnel.problem["detail"]


async def test_a_tunnel_upgrade_on_an_http_route_never_reaches_its_upstream(gw: GatewayUnderTest) -> None:
    request = (b"GET /page HTTP/1.1\r\nHost: localhost:%d\r\nUpgrade: idwall-tcp\r\nConnection: upgrade\r\n\r\n"
               % gw.port)
    answer = await exchange(gw.port, gw.ssl(await gw.device("alice")), request)
    assert answer.status in (400, 403) and b"WebSocket" in answer.body, answer.describe()


async def test_a_plain_http_request_to_a_tcp_route_is_refused(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "db", fields=b"")
    assert tunnel.status == 400 and "this is a TCP route" in tunnel.problem["detail"]
    assert service.received == []


async def test_a_user_the_route_does_not_allow_is_403(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice", groups=("eng",))), "dba")
    assert tunnel.status == 403 and "not allowed to use dba" in tunnel.problem["detail"]
    assert (await open_tunnel(gw.port, gw.ssl(await gw.device("bob", groups=("dba",))), "dba")).status == 101
    await service.connections(1)
    assert len(service.received) == 1


async def test_no_session_is_401_with_the_login_page(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice", with_session=False)), "db")
    assert tunnel.status == 401 and tunnel.problem["login_url"].startswith(gw.url + "/idwall/login?next=")
    assert service.received == []


async def test_no_client_certificate_is_403(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(), "db")
    assert tunnel.status == 403 and "enroll" in tunnel.problem["detail"]
    assert service.received == []


async def test_an_http_1_0_upgrade_is_refused(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "db", version=b"1.0")
    assert tunnel.status == 400 and "HTTP/1.1" in tunnel.problem["detail"]
    assert service.received == []


async def test_a_body_on_the_upgrade_is_refused(gw: GatewayUnderTest, service: Service) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "db",
                               fields=b"Upgrade: idwall-tcp\r\nConnection: upgrade\r\nContent-Length: 5\r\n",
                               body=b"hello")
    assert tunnel.status == 400 and "without a body" in tunnel.problem["detail"]
    assert service.received == []


async def test_an_upstream_that_refuses_is_502(gw: GatewayUnderTest) -> None:
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "refusing")
    assert tunnel.status == 502 and "refused the connection" in tunnel.problem["detail"]
    assert await closed_within(tunnel.reader, 2)


async def test_an_upstream_that_does_not_accept_in_time_is_504(gw: GatewayUnderTest) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    tunnel = await open_tunnel(gw.port, gw.ssl(await gw.device("alice")), "slow")
    assert tunnel.status == 504 and "within 1s" in tunnel.problem["detail"]
    assert 0.9 < loop.time() - started < 5


async def test_a_kill_while_the_tunnel_is_connecting_leaves_nothing_open(gw: GatewayUnderTest) -> None:
    admin, alice = await gw.device("root", admin=True), await gw.device("alice")
    opening = asyncio.ensure_future(open_tunnel(gw.port, gw.ssl(alice), "slow"))
    await asyncio.sleep(0.3)  # the gateway is waiting for the upstream to accept
    async with gw.session(admin) as client:
        status, body = await call(client, "POST", gw.url + "/idwall/api/admin/kill",
                                  {"scope": "user", "target": "alice", "reason": "test", "revoke_devices": False})
    assert status == 200 and body["connections_closed"] == 1, body
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(opening, 5)  # cut before any answer: neither a 101 nor a 504 comes
    await asyncio.sleep(1.2)  # past the route's connect timeout: the late failure answers no one
    assert not [c for c in gw.running.engine.clients if c.conn.user_id == "alice"]


async def test_a_tunnel_outliving_its_session_is_cut(gw: GatewayUnderTest, service: Service) -> None:
    alice = await gw.device("alice")  # a session of one hour
    tunnel = await open_tunnel(gw.port, gw.ssl(alice), "db")
    assert tunnel.status == 101
    node = gw.running.node
    assert node.cut_expired_streams() == 0
    node.clock = lambda: time.time() + 3700  # type: ignore[method-assign]
    assert node.cut_expired_streams() == 1
    assert await closed_within(tunnel.reader, 2)
    await asyncio.wait_for(service.closed[0].wait(), 2)
