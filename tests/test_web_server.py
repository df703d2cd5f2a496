"""idwall.web.server: starting and stopping one gateway process (the node, the engine, the gateway's own app).

Every test starts a real gateway from ``idwall init`` (real TLS, real SQLite) with :func:`start_gateway` itself:
the port it picks, the private unix socket its own app listens on (and what that app does with a request
that did not come through the engine), what ``stop`` leaves written, a worker's registration, and a start
that fails half-way.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import aiohttp
import pytest

from idwall.cluster import Worker
from idwall.config import Config, load_config
from idwall.engine.io import INTERNAL_HEADER
from idwall.pki import load_private_key
from idwall.store import sqlite_path
from idwall.store.sqlite import SQLiteStore
from idwall.testing.fixtures import client_ssl_context, free_port, init_gateway_dir, register_device_directly
from idwall.web.server import ca_bundle_path, make_node, start_gateway


@pytest.fixture
def config(tmp_path: Path) -> Config:
    info = init_gateway_dir(tmp_path / "gw", port=free_port())
    return load_config(info["config"])


async def _healthz(port: int, config: Config) -> int:
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(str(ca_bundle_path(config))))
    async with aiohttp.ClientSession(connector=connector) as client:
        async with client.get(f"https://localhost:{port}/idwall/healthz") as resp:
            return resp.status


def test_clients_trust_the_ca_beside_the_server_certificate_or_else_the_certificate(config: Config) -> None:
    assert ca_bundle_path(config) == config.tls.cert.parent / "ca.pem"
    (config.tls.cert.parent / "ca.pem").unlink()
    assert ca_bundle_path(config) == config.tls.cert, "a self-signed server certificate is its own trust anchor"


async def test_port_0_picks_a_free_port_and_the_gateway_answers_there(config: Config) -> None:
    running = await start_gateway(config, port=0)
    try:
        assert running.port not in (0, config.listen.port) and running.url == f"https://localhost:{running.port}"
        assert await _healthz(running.port, config) == 200
        assert running.node.ca_pem == ca_bundle_path(config).read_text()
    finally:
        await running.stop(drain=1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=1).close()


async def test_the_own_app_listens_only_on_a_private_socket_and_answers_only_the_engine(config: Config) -> None:
    running = await start_gateway(config, port=0)
    path = Path(running.engine.internal.unix)
    try:
        directory = path.parent.stat()
        assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.getuid()
        assert stat.S_ISSOCK(path.stat().st_mode)
        victim = await register_device_directly(
            running.node.store, device_ca_cert=running.node.device_ca_cert, device_ca_key=running.node.device_ca_key,
            out_dir=config.source.parent / "devices", user_id="alice")
        # another local user's process cannot reach the socket (0700); our own, talking to it directly rather
        # than through the engine, names no live connection: a forged one is not answered at all
        kill = {"scope": "all", "reason": "forged", "revoke_devices": True}
        # what the engine sends for a live client connection is answered (so the refusals below are refusals):
        # this one has no certificate and no token, so the answer is a 403 problem
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                ssl=client_ssl_context(str(ca_bundle_path(config))), limit=1)) as client:
            async with client.get(f"https://localhost:{running.port}/idwall/healthz") as resp:
                assert resp.status == 200
            [conn] = list(running.node.registry)
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as direct:
                genuine = f"{running.engine.internal_secret.decode()}.{conn.id}"
                async with direct.post("http://gateway/idwall/api/admin/kill", json=kill,
                                       headers={INTERNAL_HEADER.decode(): genuine}) as resp:
                    assert resp.status == 403 and resp.content_type == "application/problem+json"
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as direct:
            for forged in (None, "00" * 16 + ".1", running.engine.internal_secret.decode() + ".999"):
                headers = {INTERNAL_HEADER.decode(): forged} if forged else {}
                with pytest.raises(aiohttp.ClientError):
                    async with direct.post("http://gateway/idwall/api/admin/kill", headers=headers, json=kill):
                        pass
        assert (await running.node.store.get_device(victim.device_id)).status == "active"
        assert len(await running.node.store.live_sessions(now=time.time())) == 1
    finally:
        await running.stop(drain=1)
    assert not path.parent.exists(), "the private socket's directory outlived the gateway"


async def test_stop_writes_the_last_seen_times_it_kept_in_memory(config: Config) -> None:
    running = await start_gateway(config, port=0)
    try:
        node = running.node
        device = await register_device_directly(node.store, device_ca_cert=node.device_ca_cert,
                                                device_ca_key=node.device_ca_key,
                                                out_dir=config.source.parent / "devices", user_id="alice")
        registered = (await node.store.get_session(device.session_id)).last_seen
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(str(ca_bundle_path(config)), device.cert_path,
                                                                device.key_path))
        async with aiohttp.ClientSession(connector=connector) as client:
            async with client.get(f"https://localhost:{running.port}/idwall/healthz") as resp:
                assert resp.status == 200
            async with client.get(f"https://localhost:{running.port}/app") as resp:
                assert resp.status in (200, 502)  # served (the example upstream is not running): the session was used
        seen = node.last_seen[device.session_id]
        assert seen > registered
    finally:
        await running.stop(drain=1)
    store = SQLiteStore(sqlite_path(config.store), ledger_key=load_private_key(config.ledger.key))
    await store.open()
    try:
        assert (await store.get_session(device.session_id)).last_seen == pytest.approx(seen)
    finally:
        await store.close()


async def test_workers_share_the_port_and_are_registered_only_while_they_run(config: Config) -> None:
    port = free_port()
    nodes = [await make_node(config) for _ in range(2)]
    for index, node in enumerate(nodes):
        node.worker = Worker(index, pid=1_000_000 + index)  # two workers of one process need ids of their own
    running = []
    try:
        for node in nodes:
            running.append(await start_gateway(config, port=port, node=node))  # SO_REUSEPORT: both bind it
        live = {row.id for row in await nodes[0].store.live_workers(since=0)}
        assert live == {nodes[0].worker.id, nodes[1].worker.id}
        assert await _healthz(port, config) == 200
        await running.pop().stop(drain=1)
        assert {row.id for row in await nodes[0].store.live_workers(since=0)} == {nodes[0].worker.id}, \
            "a stopped worker must not be waited for by the next kill"
    finally:
        for gateway in running:
            await gateway.stop(drain=1)


async def test_a_start_that_fails_closes_what_it_opened(config: Config) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        node = await make_node(config)
        with pytest.raises(OSError):
            await start_gateway(config, port=taken.getsockname()[1], node=node)
        with pytest.raises(RuntimeError):  # its store thread was stopped: nothing is left running
            await node.store.last_event_id()
    finally:
        taken.close()
    running = await start_gateway(config, port=0)  # and nothing was left holding the files
    try:
        assert await _healthz(running.port, config) == 200
    finally:
        await running.stop(drain=1)
