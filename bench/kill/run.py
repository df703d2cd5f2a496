"""Kill-switch benchmark: N live mTLS sessions, then kill one user (repeatedly) and kill everyone.

Four processes, so the measuring client does not share a CPU-bound event loop
with what it measures: the gateway (``idwall serve``), a slow upstream (this
file with ``--upstream``), the client (this file), and the admin's client that
sends each kill and times its answer (this file with ``--admin``). Every session is its own
device with its own certificate and its own TLS connection; a fraction of them
hold a streaming download, a fraction a WebSocket, the rest an idle keep-alive.

What is timed, on the client: from just before the kill request is written to
the moment the last of the victims' sockets is seen closed (EOF or reset). The
gateway's own figure (durable commit -> last abort) is read from
``idwall_kill_latency_seconds`` on /idwall/metrics.

With ``--nodes 2`` the gateway is two ``idwall serve`` processes on one PostgreSQL database; every kill is
sent to the first, and each user's devices are spread over both, so the second cuts its share when it hears
the kill's event. Figures are then per node: the client's "sent -> last socket closed" for that node's
sockets, and the node's own commit -> last abort (the first node's ``kill`` log line; the other's
``idwall_kill_apply_seconds``).

Usage: python bench/kill/run.py --sessions 2000 [--repeats 10] [--all-repeats 3] [--nodes 2] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idwall import tokens  # noqa: E402
from idwall.config import load_config  # noqa: E402
from idwall.pki import load_cert, load_private_key  # noqa: E402
from idwall.model import LedgerDraft, Session  # noqa: E402
from idwall.store import Store, open_store  # noqa: E402
from idwall.testing.fixtures import (  # noqa: E402
    DeviceFiles,
    client_ssl_context,
    free_port,
    init_gateway_dir,
    register_device_directly,
)


# --- the upstream (run in its own process) -------------------------------------------------------


def run_upstream(port: int, interval: float) -> None:
    """A slow streaming route, a WebSocket echo, and a small JSON answer for everything else."""

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for i in range(1_000_000):
            await response.write(b"#%08d#\n" % i)
            await asyncio.sleep(interval)
        return response

    async def other(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str("hello")
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws
        return web.json_response({"ok": True})

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", other)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# --- the client side -----------------------------------------------------------------------------


@dataclass
class Live:
    """One live client connection and the task that notices when it is cut."""

    device: DeviceFiles
    kind: str  # idle | stream | ws
    #: the index of the node this connection goes to
    node: int = 0
    watcher: asyncio.Task[float] | None = None
    received: int = 0
    closers: list[Any] = field(default_factory=list)


async def _until_closed(reader: asyncio.StreamReader, live: Live) -> float:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            live.received += len(data)
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return time.monotonic()


async def _ws_until_closed(ws: aiohttp.ClientWebSocketResponse) -> float:
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                break
    except (ConnectionError, aiohttp.ClientError):
        pass
    return time.monotonic()


async def connect(live: Live, *, port: int, ca: str) -> None:
    """Open ``live``'s connection, make it resolve (one request), and start watching for its close."""
    ctx = client_ssl_context(ca, live.device.cert_path, live.device.key_path)
    if live.kind == "ws":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1))
        ws = await session.ws_connect(f"wss://localhost:{port}/ws", heartbeat=None)
        if await ws.receive_str(timeout=30) != "hello":
            raise RuntimeError("WebSocket did not greet")
        live.closers = [session]
        live.watcher = asyncio.create_task(_ws_until_closed(ws))
        return
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    path = "/slow" if live.kind == "stream" else "/ka"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{live.kind} connection got {head[:40]!r}")
    if live.kind == "idle":
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
    live.closers = [writer]
    live.watcher = asyncio.create_task(_until_closed(reader, live))


async def close_all(lives: list[Live]) -> None:
    for live in lives:
        if live.watcher is not None:
            live.watcher.cancel()
        for closer in live.closers:
            if isinstance(closer, aiohttp.ClientSession):
                await closer.close()
            else:
                closer.close()
        live.closers, live.watcher = [], None


async def connect_all(lives: list[Live], *, ports: list[int], ca: str, parallel: int = 64) -> float:
    gate = asyncio.Semaphore(parallel)
    started = time.perf_counter()

    async def one(live: Live) -> None:
        async with gate:
            await connect(live, port=ports[live.node], ca=ca)

    await asyncio.gather(*(one(live) for live in lives))
    return time.perf_counter() - started


async def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout}s") from None
            await asyncio.sleep(0.05)


async def kill(client: aiohttp.ClientSession, url: str, secret: str, body: dict[str, Any]) -> tuple[dict, float, float]:
    sent = time.monotonic()
    async with client.post(url + "/idwall/api/admin/kill", json=body,
                           headers={"Authorization": f"Bearer {secret}"}) as resp:
        answer = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"kill refused: {answer}")
    return answer, sent, time.monotonic()


def run_admin(url: str, ca: str, secret: str) -> None:
    """The admin's side of every kill, in a process of its own: the client process holds every victim's socket,
    and when thousands close at once its event loop would see the kill's answer only after all of them. Reads
    one kill request (JSON) per line on stdin, writes ``{answer, sent, answered}`` (``time.monotonic``, the same
    clock in every process) per line on stdout."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        lines = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(ca), limit=1)
        async with aiohttp.ClientSession(connector=connector) as client:
            async with client.get(url + "/idwall/healthz") as resp:  # the kills reuse this TLS connection
                await resp.read()
            while line := await lines.readline():
                answer, sent, answered = await kill(client, url, secret, json.loads(line))
                print(json.dumps({"answer": answer, "sent": sent, "answered": answered}), flush=True)

    asyncio.run(serve())


class Admin:
    """The :func:`run_admin` process, driven from the client."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, ca: str, secret: str) -> "Admin":
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--admin", url, "--admin-ca", ca, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, IDWALL_BENCH_SECRET=secret))
        return cls(process)

    async def kill(self, body: dict[str, Any]) -> tuple[dict, float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(body).encode() + b"\n")
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the admin client exited (its error is above)")
        got = json.loads(line)
        return got["answer"], got["sent"], got["answered"]

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await self.process.wait()


async def wait_closed(lives: list[Live], timeout: float = 30.0) -> list[float]:
    tasks = [live.watcher for live in lives if live.watcher is not None]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        raise RuntimeError(f"{len(pending)} victim connections still open after {timeout}s")
    return [t.result() for t in tasks]


async def probe(url: str, ca: str, device: DeviceFiles) -> int:
    """A new connection for ``device``: 200 while its session lives."""
    ctx = client_ssl_context(ca, device.cert_path, device.key_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as client:
        async with client.get(url + "/probe") as resp:
            await resp.read()
            return resp.status


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    line = {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": pct(ms, 0.99), "max_ms": max(ms),
            "all_ms": [round(v, 3) for v in ms]}
    print(f"  {name}: median {line['median_ms']:.2f} ms, p99 {line['p99_ms']:.2f} ms, max {line['max_ms']:.2f} ms "
          f"over {len(ms)} kills")
    return line


async def metrics(client: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with client.get(url + "/idwall/metrics") as resp:
        text = await resp.text()
    found = {}
    for name in (KILL_SUM, "idwall_kill_latency_seconds_count", APPLY_SUM, "idwall_live_connections"):
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        found[name] = float(match.group(1)) if match else float("nan")
    return found


@dataclass
class Node:
    """One gateway process of the run: its port, its config and its log."""

    name: str
    port: int
    config: str
    log: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def kill_lines(self, after: int) -> list[dict[str, Any]]:
        """This node's ``kill`` log events from line ``after`` on."""
        lines = self.log.read_text().splitlines()[after:]
        return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("event") == "kill"]

    def log_length(self) -> int:
        return len(self.log.read_text().splitlines())


KILL_SUM, APPLY_SUM = "idwall_kill_latency_seconds_sum", "idwall_kill_apply_seconds_sum"
#: what the gateway's own figure is on the node the kill is sent to, and on the others
SERVER = ("commit -> last abort", "kill began -> last abort (the transaction included)")


async def snapshot(client: aiohttp.ClientSession, nodes: list[Node]) -> list[tuple[dict[str, float], int]]:
    """Each node's kill metrics and the length of its log, before a kill."""
    return [(await metrics(client, node.url), node.log_length()) for node in nodes]


def server_side(nodes: list[Node], before: list[tuple[dict[str, float], int]],
                after: list[dict[str, float]]) -> tuple[list[float], float]:
    """Per node, the gateway's own commit -> last abort of one kill sent to the first node; and how long the
    kill's transaction took there (kill began -> commit returned: ``commit_seconds``).

    On the node the kill was sent to: its ``kill`` log line's ``cut_seconds`` (commit -> its own last abort; the
    ``idwall_kill_latency_seconds`` histogram also waits for the other nodes' acknowledgements). On every other
    node: ``idwall_kill_apply_seconds``, from the kill's event time (taken as the first node began the transaction)
    to that node's last abort: the transaction's own time is in it, so it is an upper bound of commit -> last
    abort. (Less the first node's ``commit_seconds`` it can come out below zero: the other node hears the commit
    before the first node's process has resumed from it; so both figures are reported as they are.)
    """
    line = nodes[0].kill_lines(before[0][1])[-1]
    figures = [line["cut_seconds"]]
    for (was, _), now in zip(before[1:], after[1:]):
        figures.append(now[APPLY_SUM] - was[APPLY_SUM])
    return figures, line["commit_seconds"]


def report(prefix: str, nodes: list[Node], *, answer: list[float], transaction: list[float],
           closed: list[list[float]], server: list[list[float]], closed_what: str) -> dict[str, Any]:
    """Print and return the figures of one kind of kill: the answer, node a's transaction, and per node the
    client's and the gateway's figures (for the other nodes also commit -> last abort, less node a's transaction)."""
    results = {f"{prefix}_answer": summary("client: sent -> answer received", answer),
               f"{prefix}_transaction": summary("node a: the kill's transaction (began -> committed)", transaction)}
    for index, node in enumerate(nodes):
        results[f"{prefix}_{node.name}"] = summary(f"node {node.name}: client: sent -> {closed_what}", closed[index])
        results[f"{prefix}_server_{node.name}"] = summary(f"node {node.name}: gateway: {SERVER[index > 0]}",
                                                          server[index])
        if index:
            results[f"{prefix}_commit_{node.name}"] = summary(
                f"node {node.name}: gateway: commit -> last abort (the above less node a's transaction)",
                [began - tx for began, tx in zip(server[index], transaction)])
    return results


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="idwall-killbench-"))
    ports, up_port = [free_port() for _ in range(args.nodes)], free_port()
    async with database(args) as store_url:
        return await _bench(args, work, ports, up_port, store_url)


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database on ``--postgres`` for several nodes (dropped at the end); None for one node."""
    if args.nodes == 1:
        yield None
        return
    name = f"idwall_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{args.postgres}/postgres", timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f"CREATE DATABASE {name}")
    try:
        yield f"{args.postgres}/{name}"
    finally:
        await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def vacuum(store_url: str | None) -> None:
    """Before a kill of everyone: what autovacuum would soon do after 10,000 new sessions and their ledger entries
    and events, done now, so that it does not run in the middle of the kill (it did in later repeats, and took
    the CPU the kill is timed on). Nothing for SQLite."""
    if store_url is None:
        return
    conn = await asyncpg.connect(store_url, timeout=10)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


def node_dirs(work: Path, ports: list[int], up_port: int, store_url: str | None) -> tuple[dict[str, Any], list[Node]]:
    """``idwall init`` once, then a copy of that directory per further node on a port of its own."""
    info = init_gateway_dir(work / "gw-a", port=ports[0], upstream=f"http://127.0.0.1:{up_port}", store=store_url)
    config = Path(info["config"])
    # opening 10,000 connections takes longer than the default 75 s keep-alive timeout: the first ones would be
    # closed as idle before the first kill and taken for connections a kill cut by mistake
    config.write_text(config.read_text().replace("keepalive_timeout: 75s", "keepalive_timeout: 1h"))
    nodes = [Node("a", ports[0], info["config"], work / "gateway-a.log")]
    for index, port in enumerate(ports[1:], start=1):
        name = "abcdefgh"[index]
        shutil.copytree(work / "gw-a", work / f"gw-{name}")
        path = work / f"gw-{name}" / "idwall.yaml"
        path.write_text(path.read_text().replace(f"localhost:{ports[0]}", f"localhost:{port}")
                        .replace(f"port: {ports[0]}", f"port: {port}"))
        nodes.append(Node(name, port, str(path), work / f"gateway-{name}.log"))
    return info, nodes


async def _bench(args: argparse.Namespace, work: Path, ports: list[int], up_port: int,
                 store_url: str | None) -> dict[str, Any]:
    info, nodes = node_dirs(work, ports, up_port, store_url)
    config = load_config(info["config"])
    ca = info["ca_pem"]
    url = nodes[0].url  # every kill is sent to the first node

    store = await open_store(store_url or f"sqlite:///{_db_path(config)}", ledger_key=load_private_key(config.ledger.key))
    ca_cert, ca_key = load_cert(config.device_ca.cert), load_private_key(config.device_ca.key)
    users = max(1, args.sessions // args.sessions_per_user)
    print(f"registering {args.sessions} devices with a live session each ({users} users, "
          f"{args.sessions_per_user} devices per user, over {args.nodes} node(s))...", flush=True)
    t = time.perf_counter()
    async def register(i: int) -> Live:
        user = f"user{i % users:05d}"
        device = await register_device_directly(store, device_ca_cert=ca_cert, device_ca_key=ca_key,
                                                out_dir=work / "devices", user_id=user,
                                                groups=(f"team{(i % users) % 10}",), cert_ttl=86400)
        # devices i and i + users belong to the same user, so the first indices spread over the users, and
        # each user's devices over the nodes
        kind = "stream" if i < args.streams else "ws" if i < args.streams + args.websockets else "idle"
        return Live(device, kind, node=(i // users) % args.nodes)

    # a few at a time: each registration is three transactions, and PostgreSQL's round trips overlap
    lives: list[Live] = []
    for start in range(0, args.sessions, 16):
        lives += await asyncio.gather(*(register(i) for i in range(start, min(start + 16, args.sessions))))
    issued = tokens.new_token(name="bench", scopes=["kill", "read"], ttl=86400, created_by="bench", now=time.time())
    rec = issued.record
    await store.create_token(rec, LedgerDraft("token.create", "bench", rec.id, {
        "token_id": rec.id, "name": rec.name, "scopes": list(rec.scopes), "expires_at": int(rec.expires_at)}))
    print(f"  done in {time.perf_counter() - t:.1f}s", flush=True)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port),
                               "--stream-interval", str(args.stream_interval)], env=env,
                              stderr=open(work / "upstream.log", "w"))]
    procs += [subprocess.Popen([sys.executable, "-m", "idwall", "serve", "--config", node.config], env=env,
                               stdout=open(work / f"gateway-{node.name}.out", "w"), stderr=open(node.log, "w"))
              for node in nodes]
    results: dict[str, Any] = {"sessions": args.sessions, "users": users, "nodes": args.nodes,
                               "client_nice": args.client_nice, "mix": {
        "stream": sum(lv.kind == "stream" for lv in lives), "ws": sum(lv.kind == "ws" for lv in lives),
        "idle": sum(lv.kind == "idle" for lv in lives)}}
    admin = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl_context(ca), limit=1))
    killer: Admin | None = None
    try:
        await wait_listening(up_port)
        for node in nodes:
            await wait_listening(node.port)
        killer = await Admin.start(url, ca, issued.secret)
        if args.client_nice:
            # Real clients are on other machines. Here one process plays all of them on the same two cores, and
            # when a kill closes 10,000 of its sockets at once their teardown (half a second of CPU) competes with
            # the gateways, the database and the admin's client for the very CPU the kill is timed on. Lower its
            # priority (the gateways, the admin and the upstream keep theirs, started above): its own "last socket
            # closed" figures then grow, and are upper bounds of when the gateway closed them.
            os.nice(args.client_nice)
        print(f"connecting {args.sessions} mTLS sessions ({results['mix']})...", flush=True)
        took = await connect_all(lives, ports=ports, ca=ca)
        print(f"  done in {took:.1f}s", flush=True)
        await asyncio.sleep(1.0)

        # kill one user at a time: exactly that user's connections go, on every node, everyone else stays
        by_user: dict[str, list[Live]] = {}
        for live in lives:
            by_user.setdefault(live.device.user_id, []).append(live)
        victims = list(by_user)[:: max(1, len(by_user) // args.repeats)][: args.repeats]
        user_lat: list[list[float]] = [[] for _ in nodes]
        user_server: list[list[float]] = [[] for _ in nodes]
        user_answer: list[float] = []
        user_tx: list[float] = []
        killed_users: set[str] = set()
        for user in victims:
            killed_users.add(user)
            survivors = [lv for lv in lives if lv.device.user_id not in killed_users]
            before = await snapshot(admin, nodes)
            flowing = [(lv, lv.received) for lv in survivors if lv.kind == "stream"]
            answer, sent, answered = await killer.kill({
                "scope": "user", "target": user, "reason": "bench", "revoke_devices": False})
            user_answer.append(answered - sent)
            closed = await wait_closed(by_user[user])
            for index, _ in enumerate(nodes):
                mine = [c for c, lv in zip(closed, by_user[user]) if lv.node == index]
                if mine:
                    user_lat[index].append(max(mine) - sent)
            after = [await metrics(admin, node.url) for node in nodes]
            figures, tx = server_side(nodes, before, after)
            for index, figure in enumerate(figures):
                user_server[index].append(figure)
            user_tx.append(tx)
            check_answer(answer, len(by_user[user]), args.nodes)
            await asyncio.sleep(max(0.3, 2 * args.stream_interval))
            cut = [lv for lv in survivors if lv.watcher is not None and lv.watcher.done()]
            if cut:
                raise RuntimeError(f"{len(cut)} connections of other users were cut by a kill of {user}")
            stalled = [lv for lv, received in flowing if lv.received == received]
            if stalled:
                raise RuntimeError(f"{len(stalled)} downloads of other users stopped flowing")
            sample = survivors[:: max(1, len(survivors) // 20)]
            statuses = await asyncio.gather(*(probe(nodes[lv.node].url, ca, lv.device) for lv in sample))
            if set(statuses) != {200}:
                raise RuntimeError(f"untouched sessions were refused: {statuses}")
        print(f"kill one user ({args.sessions_per_user} connections each, over {args.nodes} node(s)), "
              f"{len(victims)} repeats, sent to node a, others untouched (sockets open, downloads flowing, "
              "new requests 200):")
        results.update(report("kill_user", nodes, answer=user_answer, transaction=user_tx, closed=user_lat,
                              server=user_server, closed_what="last victim socket closed"))

        # kill everyone, then log everyone in again and reconnect, a few times
        all_lat: list[list[float]] = [[] for _ in nodes]
        all_server: list[list[float]] = [[] for _ in nodes]
        all_answer: list[float] = []
        all_tx: list[float] = []
        alive = [lv for lv in lives if lv.device.user_id not in killed_users]
        if args.profile:  # the kills of everyone only: py-spy --native slows a node too much for the set-up
            profilers = [subprocess.Popen(["py-spy", "record", "--native", "--pid", str(proc.pid), "--rate", "1000",
                                           "--format", "speedscope", "--output",
                                           str(work / f"profile-{node.name}.json")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for node, proc in zip(nodes, procs[1:])]
            await asyncio.sleep(2.0)  # py-spy attaches
        for repeat in range(args.all_repeats):
            if repeat:
                await close_all(lives)
                await relogin(store, lives)
                alive = lives
                await connect_all(alive, ports=ports, ca=ca)
            await vacuum(store_url)
            await asyncio.sleep(1.0)
            before = await snapshot(admin, nodes)
            answer, sent, answered = await killer.kill({"scope": "all", "target": None, "reason": "bench",
                                                 "revoke_devices": False})
            closed = await wait_closed(alive)
            for index, _ in enumerate(nodes):
                all_lat[index].append(max(c for c, lv in zip(closed, alive) if lv.node == index) - sent)
            after = [await metrics(admin, node.url) for node in nodes]
            figures, tx = server_side(nodes, before, after)
            for index, figure in enumerate(figures):
                all_server[index].append(figure)
            all_tx.append(tx)
            all_answer.append(answered - sent)
            check_answer(answer, len(alive), args.nodes)
        print(f"kill all ({len(alive)} connections over {args.nodes} node(s)), {args.all_repeats} repeats, "
              "sent to node a:")
        results.update(report("kill_all", nodes, answer=all_answer, transaction=all_tx, closed=all_lat,
                              server=all_server, closed_what="last socket closed"))
        if args.profile:
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
            print(f"profiles (speedscope): {work}/profile-*.json")
    finally:
        await admin.close()
        if killer is not None:
            await killer.close()
        await close_all(lives)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        await store.close()
    return results


def check_answer(answer: dict[str, Any], expected: int, nodes: int) -> None:
    """The kill's answer counts every connection cut, on every node, and names no node that did not answer."""
    if answer["connections_closed"] != expected:
        raise RuntimeError(f"expected {expected} connections cut, answer {answer}")
    if answer["workers"] != {"reached": nodes, "unreached": []}:
        raise RuntimeError(f"not every node acknowledged the kill: {answer}")


def _db_path(config: Any) -> Path:
    url = config.store
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite://"):])
    return config.source.parent / url[len("sqlite:"):]


async def relogin(store: Store, lives: list[Live]) -> None:
    """A new session for every device, as a passkey login would write it (the counter moves on)."""
    now = time.time()
    for index, live in enumerate(lives):
        device = live.device
        cred = next(c for c in await store.user_credentials(device.user_id) if c.device_id == device.device_id)
        session_id = "ses-" + secrets.token_hex(8)
        await store.create_session(
            Session(session_id, device.user_id, device.device_id, cred.id, device.cert_sha256, ("hwk",), now, now,
                    now + 3600, now),
            expected_sign_count=cred.sign_count, new_sign_count=cred.sign_count + 1,
            draft=LedgerDraft("session.login", device.user_id, session_id, {"bench": True}))
        lives[index] = Live(DeviceFiles(device.device_id, device.user_id, device.cert_path, device.key_path,
                                        device.cert_sha256, session_id), live.kind, node=live.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10000, help="live mTLS sessions, one device and one "
                        "connection each (default 10000; 2000 is what fits a shared 2-core box)")
    parser.add_argument("--sessions-per-user", type=int, default=10, help="devices per user (default 10)")
    # The gateway's upstream pool (idwall.proxy.Forwarder) holds at most 200 connections per upstream;
    # downloads and WebSockets each keep one open, so together they stay under that.
    parser.add_argument("--streams", type=int, default=100, help="sessions holding a download (default 100)")
    parser.add_argument("--websockets", type=int, default=90, help="sessions holding a WebSocket (default 90)")
    parser.add_argument("--stream-interval", type=float, default=0.25,
                        help="seconds between chunks of each download (default 0.25)")
    parser.add_argument("--repeats", type=int, default=10, help="kill-one-user repeats (default 10)")
    parser.add_argument("--all-repeats", type=int, default=3, help="kill-all repeats (default 3)")
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 2), help="gateway nodes (default 1, on SQLite);"
                        " 2: two `idwall serve` processes on one PostgreSQL database, kills sent to the first, each "
                        "user's devices spread over both")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="the PostgreSQL server for --nodes 2 (a fresh database is made on it and dropped)")
    parser.add_argument("--client-nice", type=int, default=10, help="niceness of the process holding every victim's"
                        " connection, after the gateways and the admin's client started (default 10; 0 keeps it)")
    parser.add_argument("--profile", action="store_true", help="py-spy record every node while the kills run")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin", help=argparse.SUPPRESS)
    parser.add_argument("--admin-ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.upstream:
        run_upstream(args.upstream, args.stream_interval)
        return
    if args.admin:
        run_admin(args.admin, args.admin_ca, os.environ["IDWALL_BENCH_SECRET"])
        return
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    results = runner(bench(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
