"""End to end: a real ``psql`` reaches the PostgreSQL on this machine through ``idwall connect`` → gateway →
``idwall relay`` → PostgreSQL, with a device enrolled and logged in by passkey through the real API.

Shown here: the query runs; the relay's log names the user and device the assertion vouched for; killing
the user cuts the running psql within 50 ms, and a new psql waits (``idwall connect`` printing the login
page) until a fresh passkey login, then gets through; a psql that bypasses the gateway, and PROXY headers
with a forged or an expired assertion, are refused by the relay without reaching PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idwall import pki, proxy_protocol
from idwall.assertion import KeySet, build_claims
from idwall.testing.fixtures import free_port
from tests.helpers.api import Enrolled, bootstrap, call, enroll, invite, login
from tests.helpers.cli import Spawned, spawn_cli
from tests.helpers.gateway import GatewayUnderTest, running_gateway
from tests.helpers.tcp import closed_within, tcp_routes

PSQL = "/usr/bin/psql"
POSTGRES = ("127.0.0.1", 5432)


@dataclass
class Setup:
    gw: GatewayUnderTest
    admin: Enrolled
    alice: Enrolled
    relay: Spawned
    relay_port: int
    connect: Spawned
    local_port: int


async def psql(port: int, sql: str) -> asyncio.subprocess.Process:
    """``psql`` on ``port`` running ``sql`` against database ``test``, unaligned output."""
    return await asyncio.create_subprocess_exec(
        PSQL, "-h", "127.0.0.1", "-p", str(port), "-d", "test", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        env={"PGCONNECT_TIMEOUT": "30", "PATH": "/usr/bin:/bin"})


async def finished(process: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    assert Path(PSQL).is_file(), "psql is needed for this test"
    relay_port, local_port = free_port(), free_port()
    edit = tcp_routes(f"{{name: db, upstream: 'tcp://127.0.0.1:{relay_port}', proxy_protocol: v2, "
                      "allow: {users: [alice]}}")
    async with running_gateway(tmp_path, None, edit=edit) as gw:
        admin = await bootstrap(gw)
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            code = await invite(gw, admin, client, "alice", groups=["dba"])
        alice = await enroll(gw, code, device_name="alice-laptop")
        device_dir = tmp_path / "alice-device"
        device_dir.mkdir()
        shutil.copy(alice.cert_path, device_dir / "device.pem")
        shutil.copy(alice.key_path, device_dir / "device-key.pem")
        shutil.copy(gw.init["ca_pem"], device_dir / "ca.pem")
        relay = await spawn_cli(
            "relay", "--listen", f"127.0.0.1:{relay_port}", "--upstream", "tcp://%s:%d" % POSTGRES,
            "--jwks", f"{gw.url}/.well-known/idwall/jwks.json", "--audience", "db", "--ca", gw.init["ca_pem"],
            output=tmp_path / "relay.log")
        connect = await spawn_cli("connect", "db", "--gateway", gw.url, "--listen", f"127.0.0.1:{local_port}",
                                  "--dir", str(device_dir), output=tmp_path / "connect.log")
        try:
            await relay.wait_for('"relay.listening"')
            await connect.wait_for("listening on")
            yield Setup(gw, admin, alice, relay, relay_port, connect, local_port)
        finally:
            await connect.stop()
            await relay.stop()


async def test_psql_through_connect_gateway_and_relay_and_a_kill(setup: Setup) -> None:
    s = setup
    assert (await login(s.gw, s.alice))[0] == 200  # a real passkey login over the device's mTLS connection

    code, out, err = await finished(await psql(s.local_port, "select 1"))
    assert (code, out.strip()) == (0, "1"), err
    (opened,) = s.relay.json_lines("relay.open")
    assert (opened["user"], opened["device"], opened["device_name"]) == ("alice", s.alice.device_id, "alice-laptop")

    # a psql waiting on a long query; the kill must cut it at once
    running = await psql(s.local_port, "select pg_sleep(30)")
    await s.relay.wait_for('"relay.open"', count=2)
    await asyncio.sleep(0.3)  # the query is on its way to PostgreSQL
    async with s.gw.session(s.admin) as client:
        assert (await login(s.gw, s.admin, client))[0] == 200  # the kill API wants a fresh admin login
        started = time.perf_counter()
        status, body = await call(client, "POST", s.gw.url + "/idwall/api/admin/kill",
                                  {"scope": "user", "target": "alice", "reason": "e2e", "revoke_devices": False})
        answered = time.perf_counter()
        code, out, err = await finished(running, 10)
        cut = time.perf_counter()
    assert status == 200 and body["connections_closed"] >= 1, body
    print(f"\nkill: answer after {(answered - started) * 1000:.1f} ms; psql ended "
          f"{(cut - started) * 1000:.1f} ms after the kill was sent")
    assert code != 0 and "closed the connection" in err, err
    assert cut - started < 0.05, f"psql was cut {(cut - started) * 1000:.1f} ms after the kill"
    await s.relay.wait_for('"relay.closed"', count=2)

    # a new connection waits for a fresh passkey login, and nothing reaches the relay meanwhile
    waiting = await psql(s.local_port, "select 2")
    await s.connect.wait_for("log in with your passkey")
    assert f"{s.gw.url}/idwall/login?next=" in s.connect.output.read_text()
    await asyncio.sleep(1.5)
    assert waiting.returncode is None and len(s.relay.json_lines("relay.open")) == 2
    assert (await login(s.gw, s.alice))[0] == 200
    code, out, err = await finished(waiting)
    assert (code, out.strip()) == (0, "2"), err
    await s.connect.wait_for("logged in, tunnel open")


async def test_the_relay_refuses_what_did_not_come_through_the_gateway(setup: Setup, tmp_path: Path) -> None:
    s = setup
    code, _, err = await finished(await psql(s.relay_port, "select 1"))  # straight to the relay
    assert code != 0, err
    await s.relay.wait_for('"relay.refused"')
    assert "signature" in s.relay.json_lines("relay.refused")[0]["reason"]

    node = s.gw.running.node
    htu = f"tcp://127.0.0.1:{s.relay_port}"

    def claims(now: float) -> dict[str, object]:
        return build_claims(iss=s.gw.url, aud="db", user={"id": "alice", "email": None, "name": None, "groups": []},
                            session={"id": "ses-x", "auth_time": int(now), "amr": ["hwk"]},
                            device={"id": s.alice.device_id, "name": "x", "credential_id": "x", "enrolled_at": 1,
                                    "approved_by": None},
                            cert_sha256=s.alice.cert_sha256, method="TCP", url=htu, now=now, ttl=60,
                            bind_request=True)

    pki.write_private_key(tmp_path / "attacker.pem", pki.generate_p256_key())
    attacker = KeySet.load(tmp_path / "attacker.pem", now=time.time(), overlap=3600)
    real = node.keys.sign(claims(time.time())).split(".")
    other = attacker.sign(claims(time.time())).split(".")
    forged = ".".join((real[0], other[1], other[2]))  # the gateway's kid over an attacker's signature
    expired = node.keys.sign(claims(time.time() - 300))  # genuinely signed by the gateway, long expired
    for token, reason in ((forged, "does not verify"), (expired, "expired")):
        reader, writer = await asyncio.open_connection("127.0.0.1", s.relay_port)
        writer.write(proxy_protocol.build(("127.0.0.1", 1), ("127.0.0.1", s.relay_port),
                                          {proxy_protocol.TLV_ASSERTION: token.encode()})
                     + b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert await closed_within(reader, 5)
        await s.relay.wait_for(reason)
    assert s.relay.json_lines("relay.open") == []
