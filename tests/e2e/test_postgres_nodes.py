"""Two gateway nodes on one PostgreSQL database, end to end over real mTLS.

``idwall init --store postgresql://…`` makes one directory; each node runs from a copy of it on a port of its
own (both origins are WebAuthn origins, as both sit behind one load balancer in production). The administrator
enrolls through node A and logs in through both; a kill sent to node A cuts the keep-alive connection the same
user holds on node B (B follows the shared database's events) and leaves every session of that user dead on
both nodes; signed actions made at once on both nodes leave one ledger chain that the independent verifier,
``idwall audit verify`` included, accepts. A worker process of a node hears another node's kill through
PostgreSQL ``LISTEN/NOTIFY`` alone: with its poll slowed to a minute and no nudge from the killer (the kill is
committed straight into the database, as another host would), it still cuts the connection at once. A node
that loses its database resolves no new connection (503 problem+json, fail closed) and serves again once the
database is back. Nodes run as ``idwall serve`` processes, each a worker in the shared table, so a kill on one
is acknowledged by the other, and a node that cannot write its acknowledgement is named in the kill's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest

from idwall import cli, killswitch, node as node_module
from idwall.audit import verify_ledger
from idwall.bootstrap import init_directory
from idwall.cluster import Worker
from idwall.config import load_config
from idwall.testing.fixtures import free_port
from idwall.model import LedgerDraft
from idwall.web.server import make_node, start_gateway
from tests.helpers.api import Enrolled, bootstrap, call, enroll, invite, login, sign
from tests.helpers.gateway import GatewayUnderTest, Upstream
from tests.helpers.store import Relay, new_schema, opened


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, upstream: Upstream, store: str, *, b_store: str | None = None,
                    a_worker: Worker | None = None, b_worker: Worker | None = None,
                    start_b: bool = True, extra_yaml: str = "") -> AsyncIterator[tuple[Any, ...]]:
    """Nodes A and B: copies of one ``init --store`` directory, on two ports, started in this process (as the
    worker processes ``a_worker`` and ``b_worker`` when given; B reaching the database at ``b_store`` when
    given; ``extra_yaml`` appended to both configs). Without ``start_b``, B's config is yielded in its place, for a
    process of its own."""
    ports = free_port(), free_port()
    origins = ", ".join(f'"https://localhost:{p}"' for p in ports)
    made = await asyncio.to_thread(init_directory, tmp_path / "a", admin="admin", port=ports[0], force=False,
                                   now=datetime.now(timezone.utc), store=store)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same certificates and keys on every node
    nodes = []
    async with contextlib.AsyncExitStack() as stack:
        for name, port in zip("ab", ports):
            path = tmp_path / name / "idwall.yaml"
            text = path.read_text().replace("http://127.0.0.1:9001", upstream.url)
            text = text.replace(f"https://localhost:{ports[0]}", f"https://localhost:{port}")
            text = text.replace(f"port: {ports[0]}", f"port: {port}")
            if name == "b" and b_store is not None:
                text = text.replace(json.dumps(store), json.dumps(b_store))
            path.write_text(text.replace(f'origins: ["https://localhost:{port}"]', f"origins: [{origins}]") + extra_yaml)
            config = load_config(path)
            if name == "b" and not start_b:
                nodes.append(config)
                continue
            node = await make_node(config)
            node.worker = a_worker if name == "a" else b_worker
            running = await start_gateway(config, node=node)
            stack.push_async_callback(running.stop, 1)
            info = {"config": str(path), "bootstrap_code": made.bootstrap_code, "ca_pem": str(made.ca_pem),
                    "public_url": config.public_url}
            nodes.append(GatewayUnderTest(tmp_path / name, info, config, running))
        yield tuple(nodes)


async def _connected(node: GatewayUnderTest, device: Enrolled) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive mTLS connection of ``device`` to ``node`` that has been served once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port, ssl=node.ssl(device),  # type: ignore[arg-type]
                                                   server_hostname="localhost")
    writer.write(b"GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    return reader, writer


async def test_a_kill_on_one_node_cuts_the_user_on_the_other(tmp_path: Path, upstream: Upstream,
                                                              postgres_url: str) -> None:
    async with two_nodes(tmp_path, upstream, await new_schema(postgres_url)) as (a, b):
        admin = await bootstrap(a)
        for node in (a, b):  # the ceremony begun on a node finishes there; the passkey works on both
            status, answer = await login(node, admin)
            assert status == 200, answer
        reader, writer = await _connected(b, admin)
        try:
            async with a.session(admin) as client:
                status, answer = await call(client, "POST", a.url + "/idwall/api/admin/kill", {
                    "scope": "user", "target": "admin", "reason": "drill", "revoke_devices": False})
            assert status == 200, answer
            assert answer["sessions_revoked"] == 2  # both nodes' sessions, in one transaction
            cut_at = time.monotonic()
            assert await asyncio.wait_for(reader.read(65536), 10) == b""  # node B closed it
            assert time.monotonic() - cut_at < 10
        finally:
            writer.close()
        for node in (a, b):
            async with node.session(admin) as client:
                async with client.get(node.url + "/after", headers={"Accept": "application/json"}) as resp:
                    assert resp.status == 401  # dead on both nodes


async def test_signed_actions_on_both_nodes_at_once_leave_one_chain_that_verifies(
        tmp_path: Path, upstream: Upstream, postgres_url: str) -> None:
    async with two_nodes(tmp_path, upstream, await new_schema(postgres_url)) as (a, b):
        admin = await bootstrap(a)
        assert (await login(a, admin))[0] == 200
        async with a.session(admin) as on_a:
            code = await invite(a, admin, on_a, "ops", is_admin=True)
            ops = await enroll(b, code)  # a second administrator, enrolled through the other node
            assert (await login(b, ops))[0] == 200
            async with b.session(ops) as on_b:

                async def invites(node: GatewayUnderTest, signer: Enrolled, client: object) -> list[int]:
                    return [(await sign(node, signer, client, {
                        "type": "invite.create", "user": f"{node.dir.name}-{i}", "name": "N", "email": "n@example.com",
                        "groups": [], "admin": False}))[0] for i in range(8)]

                done = await asyncio.gather(invites(a, admin, on_a), invites(b, ops, on_b))
        assert done == [[200] * 8, [200] * 8]
        entries = await b.store.ledger_entries()
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert sum(e["type"] == "invite.create" for e in entries) == 1 + 16
        assert verify_ledger(entries).ok
    assert await asyncio.to_thread(cli.main, ["audit", "verify", "--config", str(tmp_path / "b" / "idwall.yaml")]) == 0


async def test_a_worker_hears_a_kill_committed_elsewhere_through_listen_notify(
        tmp_path: Path, upstream: Upstream, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await new_schema(postgres_url)
    worker = Worker(0, host="node-b")
    worker.listen()
    try:
        async with two_nodes(tmp_path, upstream, store, b_worker=worker) as (a, b):
            admin = await bootstrap(a)
            assert (await login(b, admin))[0] == 200
            reader, writer = await _connected(b, admin)
            monkeypatch.setattr(node_module, "EVENT_POLL", 60.0)  # B's poller now waits for a wake-up
            await asyncio.sleep(0.2)  # let the poller's current wait end and the long one begin
            try:
                async with opened(store) as elsewhere:  # another host: it nudges no worker here
                    await elsewhere.kill(scope="user", target="admin", revoke_devices=False, now=time.time(),
                                         draft=LedgerDraft("kill", "admin", "admin", {
                                             "scope": "user", "target": "admin", "reason": "drill",
                                             "revoke_devices": False}))
                assert await asyncio.wait_for(reader.read(65536), 10) == b""  # cut long before a 60 s poll
            finally:
                writer.close()
    finally:
        worker.close()


async def test_a_node_cut_off_from_the_database_resolves_no_new_connection(tmp_path: Path, upstream: Upstream,
                                                                            postgres_url: str) -> None:
    store, relay = await new_schema(postgres_url), Relay()
    await relay.start()
    async with two_nodes(tmp_path, upstream, store, b_store=relay.url(store)) as (a, b):
        admin = await bootstrap(a)
        assert (await login(b, admin))[0] == 200
        await relay.cut()
        async with b.session(admin) as client:
            async with client.get(b.url + "/new", headers={"Accept": "application/json"}) as resp:
                assert resp.status == 503  # a new connection is not resolved from what B cannot read
                problem = json.loads(await resp.text())
                assert (resp.content_type, problem["status"]) == ("application/problem+json", 503), problem
                assert problem["detail"] == "the store is unavailable; nothing was changed"
                assert "postgres" not in json.dumps(problem).lower()  # no driver words, no URL
        await relay.start()
        async with b.session(admin) as client:
            async with client.get(b.url + "/again", headers={"Accept": "application/json"}) as resp:
                assert resp.status == 200  # the pool reconnected by itself


async def test_past_max_staleness_a_node_serves_nothing_and_says_so_until_it_has_caught_up(
        tmp_path: Path, upstream: Upstream, postgres_url: str) -> None:
    """B cannot hear the database (the relay to it is cut): it cannot know it has not missed a kill, so past
    cluster.max_staleness it cuts its WebSocket, refuses requests on connections it had resolved, and its
    health and metrics say so; once the database is back it catches up and serves again."""
    store, relay = await new_schema(postgres_url), Relay()
    await relay.start()
    async with two_nodes(tmp_path, upstream, store, b_store=relay.url(store),
                         extra_yaml="cluster:\n  max_staleness: 2s\n") as (a, b):
        admin = await bootstrap(a)
        assert (await login(b, admin))[0] == 200
        reader, writer = await _connected(b, admin)
        async with b.session(admin) as client:
            async with client.ws_connect(b.url.replace("https", "wss") + "/ws") as ws:
                await ws.receive(timeout=5)
                await relay.cut()
                cut_at = time.monotonic()
                msg = await ws.receive(timeout=15)
                went_stale = time.monotonic() - cut_at
                assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        print(f"\nWebSocket cut {went_stale:.2f}s after the database went away (max_staleness 2s)")
        assert went_stale >= 2.0
        writer.write(b"GET /after HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 503"), head  # a connection resolved before is served nothing
        writer.close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=b.ssl())) as client:
            async with client.get(b.url + "/idwall/healthz") as resp:
                health = json.loads(await resp.text())
                assert resp.status == 503 and "cluster.max_staleness" in health["detail"], health
            async with client.get(b.url + "/idwall/metrics") as resp:
                metrics = await resp.text()
                assert re.search(r"^idwall_store_connected 0\.0$", metrics, re.M), metrics
                assert float(re.search(r"^idwall_event_lag_seconds (\S+)$", metrics, re.M).group(1)) > 2  # type: ignore[union-attr]
            await relay.start()
            for _ in range(200):  # the pool reconnects and the poller reads every event it missed
                async with client.get(b.url + "/idwall/healthz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 200
        async with b.session(admin) as client:
            async with client.get(b.url + "/again", headers={"Accept": "application/json"}) as resp:
                assert resp.status == 200  # caught up: served again, the session intact


async def test_the_kill_answer_counts_what_a_worker_of_the_other_node_cut(tmp_path: Path, upstream: Upstream,
                                                                          postgres_url: str) -> None:
    workers = Worker(0, host="node-a"), Worker(0, host="node-b")  # two hosts: no nudge crosses between them
    for worker in workers:
        worker.listen()
    try:
        async with two_nodes(tmp_path, upstream, await new_schema(postgres_url), a_worker=workers[0],
                             b_worker=workers[1]) as (a, b):
            admin = await bootstrap(a)
            assert (await login(a, admin))[0] == 200 and (await login(b, admin))[0] == 200
            reader, writer = await _connected(b, admin)
            try:
                async with a.session(admin) as client:
                    status, answer = await call(client, "POST", a.url + "/idwall/api/admin/kill", {
                        "scope": "user", "target": "admin", "reason": "drill", "revoke_devices": False})
                assert status == 200, answer
                assert answer["workers"] == {"reached": 2, "unreached": []}  # A's worker, and B's acknowledged
                assert answer["connections_closed"] == 2  # the request's own (closed after the answer) and B's
                assert await asyncio.wait_for(reader.read(65536), 10) == b""
            finally:
                writer.close()
    finally:
        for worker in workers:
            worker.close()


async def test_a_node_that_cannot_acknowledge_is_named_in_the_kill_answer(
        tmp_path: Path, upstream: Upstream, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, relay = await new_schema(postgres_url), Relay()
    await relay.start()
    workers = Worker(0, host="node-a"), Worker(0, host="node-b")
    for worker in workers:
        worker.listen()
    monkeypatch.setattr(killswitch, "STALE_AFTER", 600.0)  # B's last heartbeat stays fresh: A must wait for it
    try:
        async with two_nodes(tmp_path, upstream, store, b_store=relay.url(store), a_worker=workers[0],
                             b_worker=workers[1]) as (a, b):
            admin = await bootstrap(a)
            assert (await login(a, admin))[0] == 200
            await relay.cut()  # B hears nothing and can write nothing
            async with a.session(admin) as client:
                status, answer = await call(client, "POST", a.url + "/idwall/api/admin/kill", {
                    "scope": "user", "target": "admin", "reason": "drill", "revoke_devices": False})
            assert status == 200, answer
            assert answer["workers"] == {"reached": 1, "unreached": [workers[1].id]}  # named, never hidden
            await relay.start()
    finally:
        for worker in workers:
            worker.close()


@dataclass
class ServeProcess:
    """Node B as ``idwall serve`` in a process of its own: what the API helpers need to talk to it."""

    url: str
    port: int
    ssl: Callable[..., Any]
    process: subprocess.Popen[bytes]
    logs: list[dict[str, Any]] = field(default_factory=list)

    def session(self, device: Any = None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl(device), limit=1))

    def read_logs(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with contextlib.suppress(ValueError):
                self.logs.append(json.loads(raw))


async def test_two_serve_processes_on_one_database_acknowledge_each_others_kills(
        tmp_path: Path, upstream: Upstream, postgres_url: str) -> None:
    store = await new_schema(postgres_url)
    worker = Worker(0, host="node-a")
    worker.listen()
    try:
        async with two_nodes(tmp_path, upstream, store, a_worker=worker, start_b=False) as (a, b_config):
            command = [sys.executable, "-m", "idwall", "serve", "--config", str(b_config.source)]
            process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=tmp_path,
                                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])))
            b = ServeProcess(b_config.public_url, b_config.listen.port, a.ssl, process)
            threading.Thread(target=b.read_logs, daemon=True).start()
            try:
                deadline = time.monotonic() + 30
                while not any(line.get("event") == "gateway.started" for line in b.logs):
                    assert process.poll() is None and time.monotonic() < deadline, b.logs
                    await asyncio.sleep(0.05)
                admin = await bootstrap(a)
                assert (await login(a, admin))[0] == 200 and (await login(b, admin))[0] == 200
                reader, writer = await _connected(b, admin)  # type: ignore[arg-type]
                try:
                    async with a.session(admin) as client:
                        status, answer = await call(client, "POST", a.url + "/idwall/api/admin/kill", {
                            "scope": "user", "target": "admin", "reason": "drill", "revoke_devices": False})
                    assert status == 200, answer
                    assert answer["workers"] == {"reached": 2, "unreached": []}  # node B's process acknowledged
                    assert answer["connections_closed"] == 2  # the request's own and B's
                    assert await asyncio.wait_for(reader.read(65536), 10) == b""
                finally:
                    writer.close()
            finally:
                process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 15) == 0
            assert [w.id for w in await a.store.live_workers(since=0)] == [worker.id]  # B deregistered on exit
    finally:
        worker.close()
