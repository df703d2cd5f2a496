"""Kill-switch benchmark: N live mTLS sessions, then kill one user (repeatedly) and kill everyone.

Three processes, so the measuring client does not share a CPU-bound event loop
with what it measures: the gateway (``idwall serve``), a slow upstream (this
file with ``--upstream``) and the client (this file). Every session is its own
device with its own certificate and its own TLS connection; a fraction of them
hold a streaming download, a fraction a WebSocket, the rest an idle keep-alive.

What is timed, on the client: from just before the kill request is written to
the moment the last of the victims' sockets is seen closed (EOF or reset). The
gateway's own figure (durable commit -> last abort) is read from
``idwall_kill_latency_seconds`` on /idwall/metrics.

Usage: python bench/kill/run.py --sessions 2000 [--repeats 10] [--all-repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idwall import tokens  # noqa: E402
from idwall.config import load_config  # noqa: E402
from idwall.pki import load_cert, load_private_key  # noqa: E402
from idwall.model import LedgerDraft
from idwall.store.base import Session  # noqa: E402
from idwall.store.sqlite import SQLiteStore  # noqa: E402
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
    return time.perf_counter()


async def _ws_until_closed(ws: aiohttp.ClientWebSocketResponse) -> float:
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                break
    except (ConnectionError, aiohttp.ClientError):
        pass
    return time.perf_counter()


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


async def connect_all(lives: list[Live], *, port: int, ca: str, parallel: int = 64) -> float:
    gate = asyncio.Semaphore(parallel)
    started = time.perf_counter()

    async def one(live: Live) -> None:
        async with gate:
            await connect(live, port=port, ca=ca)

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
    sent = time.perf_counter()
    async with client.post(url + "/idwall/api/admin/kill", json=body,
                           headers={"Authorization": f"Bearer {secret}"}) as resp:
        answer = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"kill refused: {answer}")
    return answer, sent, time.perf_counter()


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


def summary(name: str, values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    line = {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": pct(ms, 0.99), "max_ms": max(ms)}
    print(f"  {name}: median {line['median_ms']:.2f} ms, p99 {line['p99_ms']:.2f} ms, max {line['max_ms']:.2f} ms "
          f"over {len(ms)} kills")
    return line


async def metrics(client: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with client.get(url + "/idwall/metrics") as resp:
        text = await resp.text()
    found = {}
    for name in ("idwall_kill_latency_seconds_sum", "idwall_kill_latency_seconds_count", "idwall_live_connections"):
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        found[name] = float(match.group(1)) if match else float("nan")
    return found


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="idwall-killbench-"))
    port, up_port = free_port(), free_port()
    info = init_gateway_dir(work / "gw", port=port, upstream=f"http://127.0.0.1:{up_port}")
    config = load_config(info["config"])
    ca = info["ca_pem"]
    url = f"https://localhost:{port}"

    store = SQLiteStore(_db_path(config), ledger_key=load_private_key(config.ledger.key))
    await store.open()
    ca_cert, ca_key = load_cert(config.device_ca.cert), load_private_key(config.device_ca.key)
    users = max(1, args.sessions // args.sessions_per_user)
    print(f"registering {args.sessions} devices with a live session each ({users} users, "
          f"{args.sessions_per_user} devices per user)...", flush=True)
    t = time.perf_counter()
    lives: list[Live] = []
    for i in range(args.sessions):
        user = f"user{i % users:05d}"
        device = await register_device_directly(store, device_ca_cert=ca_cert, device_ca_key=ca_key,
                                                out_dir=work / "devices", user_id=user,
                                                groups=(f"team{(i % users) % 10}",), cert_ttl=86400)
        # devices i and i + users belong to the same user, so the first indices spread over the users
        kind = "stream" if i < args.streams else "ws" if i < args.streams + args.websockets else "idle"
        lives.append(Live(device, kind))
    issued = tokens.new_token(name="bench", scopes=["kill", "read"], ttl=86400, created_by="bench", now=time.time())
    rec = issued.record
    await store.create_token(rec, LedgerDraft("token.create", "bench", rec.id, {
        "token_id": rec.id, "name": rec.name, "scopes": list(rec.scopes), "expires_at": int(rec.expires_at)}))
    print(f"  done in {time.perf_counter() - t:.1f}s", flush=True)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port),
                               "--stream-interval", str(args.stream_interval)], env=env,
                              stderr=open(work / "upstream.log", "w")),
             subprocess.Popen([sys.executable, "-m", "idwall", "serve", "--config", info["config"]], env=env,
                              stdout=open(work / "gateway.out", "w"), stderr=open(work / "gateway.log", "w"))]
    results: dict[str, Any] = {"sessions": args.sessions, "users": users, "mix": {
        "stream": sum(lv.kind == "stream" for lv in lives), "ws": sum(lv.kind == "ws" for lv in lives),
        "idle": sum(lv.kind == "idle" for lv in lives)}}
    admin = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl_context(ca), limit=1))
    try:
        await wait_listening(up_port)
        await wait_listening(port)
        print(f"connecting {args.sessions} mTLS sessions ({results['mix']})...", flush=True)
        took = await connect_all(lives, port=port, ca=ca)
        print(f"  done in {took:.1f}s", flush=True)
        await asyncio.sleep(1.0)

        # kill one user at a time: exactly that user's connections go, everyone else stays
        by_user: dict[str, list[Live]] = {}
        for live in lives:
            by_user.setdefault(live.device.user_id, []).append(live)
        victims = list(by_user)[:: max(1, len(by_user) // args.repeats)][: args.repeats]
        user_lat, user_server = [], []
        killed_users: set[str] = set()
        for user in victims:
            killed_users.add(user)
            survivors = [lv for lv in lives if lv.device.user_id not in killed_users]
            before = await metrics(admin, url)
            flowing = [(lv, lv.received) for lv in survivors if lv.kind == "stream"]
            answer, sent, _ = await kill(admin, url, issued.secret, {"scope": "user", "target": user,
                                                                     "reason": "bench", "revoke_devices": False})
            closed = await wait_closed(by_user[user])
            user_lat.append(max(closed) - sent)
            after = await metrics(admin, url)
            user_server.append(after["idwall_kill_latency_seconds_sum"] - before["idwall_kill_latency_seconds_sum"])
            if answer["connections_closed"] != len(by_user[user]):
                raise RuntimeError(f"expected {len(by_user[user])} connections cut, answer {answer}")
            await asyncio.sleep(max(0.3, 2 * args.stream_interval))
            cut = [lv for lv in survivors if lv.watcher is not None and lv.watcher.done()]
            if cut:
                raise RuntimeError(f"{len(cut)} connections of other users were cut by a kill of {user}")
            stalled = [lv for lv, received in flowing if lv.received == received]
            if stalled:
                raise RuntimeError(f"{len(stalled)} downloads of other users stopped flowing")
            sample = survivors[:: max(1, len(survivors) // 20)]
            statuses = await asyncio.gather(*(probe(url, ca, lv.device) for lv in sample))
            if set(statuses) != {200}:
                raise RuntimeError(f"untouched sessions were refused: {statuses}")
        print(f"kill one user ({args.sessions_per_user} connections each), {len(victims)} repeats, "
              f"others untouched (sockets open, downloads flowing, new requests 200):")
        results["kill_user"] = summary("client: sent -> last victim socket closed", user_lat)
        results["kill_user_server"] = summary("gateway: commit -> last abort", user_server)

        # kill everyone, then log everyone in again and reconnect, a few times
        all_lat, all_server, all_answer = [], [], []
        alive = [lv for lv in lives if lv.device.user_id not in killed_users]
        for repeat in range(args.all_repeats):
            if repeat:
                await close_all(lives)
                await relogin(store, lives)
                alive = lives
                await connect_all(alive, port=port, ca=ca)
                await asyncio.sleep(1.0)
            before = await metrics(admin, url)
            answer, sent, answered = await kill(admin, url, issued.secret,
                                                {"scope": "all", "target": None, "reason": "bench",
                                                 "revoke_devices": False})
            closed = await wait_closed(alive)
            all_lat.append(max(closed) - sent)
            after = await metrics(admin, url)
            all_server.append(after["idwall_kill_latency_seconds_sum"] - before["idwall_kill_latency_seconds_sum"])
            all_answer.append(answered - sent)
            if answer["connections_closed"] != len(alive):
                raise RuntimeError(f"expected {len(alive)} connections cut, answer {answer}")
        print(f"kill all ({len(alive)} connections), {args.all_repeats} repeats:")
        results["kill_all"] = summary("client: sent -> last socket closed", all_lat)
        results["kill_all_answer"] = summary("client: sent -> answer received", all_answer)
        results["kill_all_server"] = summary("gateway: commit -> last abort", all_server)
    finally:
        await admin.close()
        await close_all(lives)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        await store.close()
    return results


def _db_path(config: Any) -> Path:
    url = config.store
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite://"):])
    return config.source.parent / url[len("sqlite:"):]


async def relogin(store: SQLiteStore, lives: list[Live]) -> None:
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
                                        device.cert_sha256, session_id), live.kind)


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
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.upstream:
        run_upstream(args.upstream, args.stream_interval)
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
