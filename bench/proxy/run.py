"""Proxy benchmark: requests/s and latency of small GETs over persistent mTLS keep-alive connections.

Scenarios (``--only`` takes a comma-separated list of the keys):

  a   the upstream directly, plain HTTP: the floor, and the check that the client is not the bottleneck
  t   nginx terminating mTLS and answering itself (``return 200``): the TLS floor of this client
  b   nginx terminating mTLS (same server certificate, ``ssl_verify_client on`` against the device CA),
      ``proxy_pass`` to the upstream over a keep-alive pool with a fixed identity header; 1 worker
  b2  the same nginx with 2 worker processes
  c   IDWall, ``bind_request: true`` (a fresh ES256 assertion per request)
  d   IDWall, ``bind_request: false`` (the cached assertion)
  e   IDWall ``serve --workers 2``, ``bind_request: true``

The upstream for every scenario is nginx answering ``return 200`` with a 100-byte body from one worker,
so it is never the bottleneck. The client runs in ``--client-procs`` processes (uvloop), each holding
``--connections`` keep-alive connections with one request in flight per connection (no pipelining);
every connection presents its own device certificate. After ``--warmup`` seconds the client times
every request sent within ``--duration`` seconds. Server, upstream and client CPU time over the same
window come from ``/proc``, so the cost per request can be read even when the box is shared.

Usage: python bench/proxy/run.py [--duration 10] [--connections 16] [--client-procs 2] [--only a,b,c]
                                 [--json out.json] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.proxy.devices import BenchDevice, register_devices  # noqa: E402
from idwall.assertion import KeySet, build_claims, canonical_htu  # noqa: E402
from idwall.config import Config, load_config  # noqa: E402
from idwall.encoding import b64url_encode  # noqa: E402
from idwall.testing.fixtures import free_port, init_gateway_dir  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BODY = ("idwall-bench " * 8)[:99] + "\n"  # 100 bytes
SCENARIOS: dict[str, str] = {
    "a": "upstream direct, plain HTTP",
    "t": "nginx mTLS, return 200 (TLS floor)",
    "b": "nginx mTLS -> upstream, 1 worker",
    "b2": "nginx mTLS -> upstream, 2 workers",
    "c": "IDWall, bind_request: true",
    "d": "IDWall, bind_request: false",
    "e": "IDWall --workers 2, bind_request: true",
}
#: the path each scenario requests; /cached is the bind_request: false route of the gateway config
PATHS = {"d": "/cached/item"}
DEFAULT_PATH = "/bound/item"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATUS_RE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
LENGTH_RE = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)
CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding: *chunked", re.I)


# --- HTTP/1.1 response framing (only what the servers under test send) ------------------------------


def parse_response(buf: bytes | bytearray) -> tuple[int, int, bytes] | None:
    """``(status, bytes consumed, body)`` once ``buf`` holds a whole response, else ``None``.

    Handles Content-Length and chunked bodies (the gateway may stream); anything else is an error,
    since every server here answers a GET with one of the two.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end + 2])
    status_match = STATUS_RE.match(head)
    if status_match is None:
        raise ValueError(f"expected an HTTP/1.1 status line, got {head[:40]!r}")
    status = int(status_match.group(1))
    pos = end + 4
    length = LENGTH_RE.search(head)
    if length is not None:
        size = int(length.group(1))
        if len(buf) < pos + size:
            return None
        return status, pos + size, bytes(buf[pos:pos + size])
    if CHUNKED_RE.search(head) is None:
        raise ValueError(f"expected Content-Length or chunked framing, got head {head[:200]!r}")
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)  # no trailers: "0\r\n\r\n"
            return None if trailer_end < 0 else (status, trailer_end + 4, bytes(body))
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


# --- the client (runs in --client-procs processes) --------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """What one client process connects to and with which certificates (one per connection)."""

    port: int
    tls: bool
    ca_pem: str
    #: one PEM file (device key and certificate) per connection
    pems: tuple[str, ...]
    request: bytes
    expect_body: bytes


class Window:
    """The measured interval, set by the parent once every client is connected and warm."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")


class BenchConnection(asyncio.Protocol):
    """One keep-alive connection: send, wait for the whole response, record, send again."""

    def __init__(self, spec: ClientSpec, window: Window, latencies: array, errors: Counter[str],
                 done: asyncio.Future[None]) -> None:
        self.spec, self.window, self.latencies, self.errors, self.done = spec, window, latencies, errors, done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.checked_body = False
        self.warm: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.monotonic()
        self.transport.write(self.spec.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            parsed = parse_response(self.buf)
        except ValueError as exc:
            self.fail(str(exc))
            return
        if parsed is None:
            return
        now = time.monotonic()
        status, used, body = parsed
        if used != len(self.buf):
            self.fail(f"{len(self.buf) - used} bytes after a response to a single request")
            return
        self.buf.clear()
        if status != 200:
            self.errors[f"HTTP {status}: {body[:120]!r}"] += 1
        elif not self.checked_body:
            if body != self.spec.expect_body:
                self.fail(f"expected the upstream's body, got {body[:120]!r}")
                return
            self.checked_body = True
        if self.window.start <= self.sent_at < self.window.end:
            self.latencies.append(now - self.sent_at)
        if not self.warm.done():
            self.warm.set_result(None)
        if now >= self.window.end:
            self.finish()
        else:
            self.send()

    def fail(self, reason: str) -> None:
        self.errors[reason] += 1
        if not self.warm.done():
            self.warm.set_exception(RuntimeError(reason))
        self.finish()

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.errors[f"connection lost: {exc!r}"] += 1
            if not self.warm.done():
                self.warm.set_exception(RuntimeError(f"connection lost during warm-up: {exc!r}"))
            self.done.set_result(None)


async def client_async(spec: ClientSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Connect, warm up, report ready, measure the window the parent sends, report the latencies."""
    loop = asyncio.get_running_loop()
    window, latencies, errors = Window(), array("d"), Counter[str]()
    conns: list[BenchConnection] = []
    for pem in spec.pems:
        ctx: ssl.SSLContext | None = None
        if spec.tls:
            ctx = ssl.create_default_context(cafile=spec.ca_pem)
            ctx.load_cert_chain(pem)
        done: asyncio.Future[None] = loop.create_future()
        _, conn = await asyncio.wait_for(loop.create_connection(
            lambda d=done: BenchConnection(spec, window, latencies, errors, d), "127.0.0.1", spec.port, ssl=ctx,
            server_hostname="localhost" if ctx else None), 30)
        conns.append(conn)
    await asyncio.wait_for(asyncio.gather(*(c.warm for c in conns)), 30)
    pipe.send(("ready", None))
    if not await loop.run_in_executor(None, pipe.poll, 120):
        raise RuntimeError("the parent sent no measurement window within 120 s")
    window.start, window.end = pipe.recv()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), window.end - time.monotonic() + 30)
    pipe.send(("done", {"latencies": latencies.tobytes(), "errors": dict(errors)}))


def client_main(spec: ClientSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of a client process."""
    try:
        import uvloop
        uvloop.run(client_async(spec, pipe))
    except BaseException as exc:  # the parent must hear about it rather than wait for a timeout
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


# --- servers ----------------------------------------------------------------------------------------


def nginx_conf(directory: Path, *, workers: int, server: str) -> Path:
    """An nginx.conf whose pid, logs and temp paths all live in ``directory``."""
    tmp = directory / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    text = f"""
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type text/plain;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{server}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def upstream_server_block(port: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{BODY.rstrip()}\\n"; }}
    }}"""


def mtls_server_block(port: int, config: Config, device_ca: str, location: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {config.tls.cert};
        ssl_certificate_key {config.tls.key};
        ssl_client_certificate {device_ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ {location} }}
    }}"""


def proxy_location(header_name: str, header_value: str) -> str:
    return f"""
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header {header_name} "{header_value}";"""


def upstream_pool(up_port: int) -> str:
    return f"""
    upstream bench_upstream {{
        server 127.0.0.1:{up_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}"""


def start_nginx(directory: Path, conf: Path) -> subprocess.Popen[bytes]:
    # -e: nginx opens its compiled-in error log before reading the config, which fails for non-root
    return subprocess.Popen([NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=open(directory / "stderr.log", "w"))


def start_idwall(config_path: str, work: Path, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "idwall", "serve", "--config", config_path]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=open(work / "gateway.out", "a"),
                            stderr=open(work / "gateway.log", "a"))


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx: fast shutdown; IDWall: drain), then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server (pid {proc.pid}) exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx workers, IDWall's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (processes gone since count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def io_syscalls(pids: list[int]) -> int:
    """Read-like plus write-like system calls of ``pids`` so far (``syscr`` + ``syscw`` of /proc/PID/io)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("syscr:", "syscw:")))
    return total


def connections_per_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each of ``pids`` holds (from /proc)."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            established.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        held = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in established)
        if held:
            counts[pid] = held
    return counts


# --- the gateway directory and the devices ----------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    work: Path
    config_path: str
    config: Config
    ca_pem: str
    device_ca_pem: str
    gw_port: int
    up_port: int
    devices: tuple[BenchDevice, ...]
    nginx_header: str


def prepare(work: Path, devices: int) -> Setup:
    """``idwall init``, a bind_request: false route, ``devices`` devices with a live session each."""
    gw_port, up_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    cached_route = (f"  - name: cached\n    match:\n      path: /cached\n    upstream: {upstream}\n"
                    f"    bind_request: false\n")
    info = init_gateway_dir(work / "gw", port=gw_port, upstream=upstream, extra_yaml=cached_route)
    config = load_config(info["config"])
    made = tuple(register_devices(config, devices, work / "devices"))
    # nginx sends a real assertion of the same shape and size as the gateway's, fixed once
    keys = KeySet.load(config.assertion.key, now=time.time(), overlap=config.assertion.overlap)
    first = made[0]
    claims = build_claims(
        iss=config.public_url, aud="whoami",
        user={"id": first.user_id, "email": f"{first.user_id}@example.com", "name": first.user_id,
              "groups": ("eng",)},
        session={"id": first.session_id, "auth_time": int(time.time()), "amr": ("hwk", "user", "mfa")},
        device={"id": first.device_id, "name": first.device_id, "credential_id": b64url_encode(os.urandom(16)),
                "enrolled_at": int(time.time()), "approved_by": None},
        cert_sha256=first.cert_sha256, method="GET", url=canonical_htu("https", f"localhost:{gw_port}", DEFAULT_PATH),
        now=time.time(), ttl=config.assertion.ttl, bind_request=True)
    return Setup(work, info["config"], config, info["ca_pem"], info["device_ca_pem"], gw_port, up_port, made,
                 keys.sign(claims))


# --- one scenario -----------------------------------------------------------------------------------


@dataclass
class Result:
    key: str
    name: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    server_cpu_s: float
    server_syscalls: int
    upstream_cpu_s: float
    client_cpu_s: float
    window_s: float
    split: dict[int, int]
    profile: list[str] | None = None

    @property
    def server_us_per_req(self) -> float:
        return 1e6 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def client_us_per_req(self) -> float:
        return 1e6 * self.client_cpu_s / self.requests if self.requests else float("nan")


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def start_server(key: str, setup: Setup) -> tuple[subprocess.Popen[bytes] | None, int]:
    """Start the front server of scenario ``key``; ``None`` for the direct scenario."""
    if key == "a":
        return None, setup.up_port
    if key in ("t", "b", "b2"):
        port = free_port()
        directory = setup.work / f"nginx-{key}"
        location = (f'return 200 "{BODY.rstrip()}\\n";' if key == "t"
                    else proxy_location(setup.config.assertion.header, setup.nginx_header))
        server = (upstream_pool(setup.up_port) if key != "t" else "") + mtls_server_block(
            port, setup.config, setup.device_ca_pem, location)
        conf = nginx_conf(directory, workers=2 if key == "b2" else 1, server=server)
        proc = start_nginx(directory, conf)
        return proc, port
    return start_idwall(setup.config_path, setup.work, 2 if key == "e" else 1), setup.gw_port


def run_scenario(key: str, setup: Setup, args: argparse.Namespace, upstream_pids: list[int]) -> Result:
    proc, port = start_server(key, setup)
    clients: list[tuple[Any, multiprocessing.connection.Connection]] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if proc is not None:
            wait_listening(port, proc)
        path = PATHS.get(key, DEFAULT_PATH)
        host = f"localhost:{port}"
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: idwall-proxy-bench\r\n"
                   f"Accept: */*\r\n\r\n").encode()
        mp = multiprocessing.get_context("spawn")
        per = args.connections
        for index in range(args.client_procs):
            devices = setup.devices[index * per:(index + 1) * per]
            spec = ClientSpec(port, key != "a", setup.ca_pem,
                              tuple(str(d.pem_path) for d in devices), request, BODY.encode())
            parent_end, child_end = mp.Pipe()
            process = mp.Process(target=client_main, args=(spec, child_end), daemon=True)
            process.start()
            clients.append((process, parent_end))
        for process, pipe in clients:
            kind, detail = receive(pipe, 60, process)
            if kind != "ready":
                raise RuntimeError(f"client {process.pid}: {detail}")
        server_pids = process_tree(proc.pid) if proc is not None else []
        client_pids = [process.pid for process, _ in clients]
        start = time.monotonic() + args.warmup
        end = start + args.duration
        for _, pipe in clients:
            pipe.send((start, end))
        time.sleep(max(0.0, start - time.monotonic()))
        before = (cpu_seconds(server_pids), cpu_seconds(upstream_pids), cpu_seconds(client_pids))
        syscalls_before = io_syscalls(server_pids)
        split = connections_per_process(server_pids, port)
        if args.profile and proc is not None and key in ("c", "d", "e"):
            profiler = start_profiler(Path(args.profile), key, proc.pid, min(5.0, args.duration),
                                      args.profile_native)
        time.sleep(max(0.0, end - time.monotonic()))
        after = (cpu_seconds(server_pids), cpu_seconds(upstream_pids), cpu_seconds(client_pids))
        syscalls = io_syscalls(server_pids) - syscalls_before
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        for process, pipe in clients:
            kind, detail = receive(pipe, 40, process)
            if kind != "done":
                raise RuntimeError(f"client {process.pid}: {detail}")
            latencies.extend(array("d", detail["latencies"]))
            errors.update(detail["errors"])
        profile = None
        if profiler is not None:
            profiler.wait(30)
            stacks = Path(args.profile) / f"{key}.txt"
            if not stacks.exists():
                log = (Path(args.profile) / f"{key}.log").read_text().strip()
                raise RuntimeError(f"py-spy wrote no profile for {key}: {log[-300:]}")
            profile = summarise_profile(stacks)
        latencies.sort()
        ms = [v * 1000 for v in latencies]
        return Result(key, SCENARIOS[key], per * args.client_procs, len(ms), len(ms) / args.duration,
                      percentile(ms, 0.5), percentile(ms, 0.9), percentile(ms, 0.99), ms[-1] if ms else float("nan"),
                      dict(errors), after[0] - before[0], syscalls, after[1] - before[1], after[2] - before[2],
                      args.duration, split, profile)
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
            profiler.wait(5)
        for process, _ in clients:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        if proc is not None:
            stop(proc)


def receive(pipe: multiprocessing.connection.Connection, timeout: float, process: Any) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout
    while not pipe.poll(0.2):
        if not process.is_alive() and not pipe.poll(0):
            raise RuntimeError(f"client process {process.pid} died (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"client process {process.pid} silent for {timeout}s")
    message: tuple[str, Any] = pipe.recv()
    return message


# --- profiling (py-spy, a dev tool: not a dependency of IDWall) ---------------------------------------


def start_profiler(directory: Path, key: str, pid: int, seconds: float, native: bool) -> subprocess.Popen[bytes]:
    """py-spy the gateway (and its workers for ``e``) into ``directory/<key>.txt`` (collapsed stacks).

    Without ``native`` the sampler never stops the gateway, so only Python frames are seen (time in C
    lands on the calling Python frame). ``native`` adds C frames (syscalls, OpenSSL, the ECDSA code)
    but py-spy must then pause the process for every sample, which lowers that run's throughput.
    """
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy on PATH (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
           "--format", "raw", "--output", str(directory / f"{key}.txt")]
    cmd.append("--native" if native else "--nonblocking")
    if key == "e":
        cmd.append("--subprocesses")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(directory / f"{key}.log", "w"))


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """The functions with the most samples on the stack (inclusive) and at the top (self), in %."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{total} samples"]
    lines += [f"self {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += [f"incl {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return lines


# --- the whole run ----------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    """The figures, absolute and relative to nginx proxying with one worker (scenario b)."""
    baseline = next((r for r in results if r.key == "b" and r.requests), None)
    print()
    print(f"{'scenario':<42} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'srv cores':>9} {'srv µs/req':>10} {'srv sys/req':>11} {'cli cores':>9} {'up µs/req':>9} "
          f"{'errors':>6} {'req/s vs b':>10} {'µs/req vs b':>11}")
    for r in results:
        ratio = cpu_ratio = "-"
        if baseline is not None and r.key not in ("a", "t") and r.requests:
            ratio = f"{r.rps / baseline.rps:.3f}x"
            cpu_ratio = f"{r.server_us_per_req / baseline.server_us_per_req:.1f}x"
        served = r.key != "a" and r.requests
        cores = f"{r.server_cpu_s / r.window_s:.2f}" if served else "-"
        per_req = f"{r.server_us_per_req:.0f}" if served else "-"
        sys_req = f"{r.server_syscalls / r.requests:.1f}" if served else "-"
        up = f"{1e6 * r.upstream_cpu_s / r.requests:.0f}" if r.requests else "-"
        print(f"{r.key + ' ' + r.name:<42} {r.connections:>5} {r.rps:>7.0f} {r.p50_ms:>7.2f} {r.p90_ms:>7.2f} "
              f"{r.p99_ms:>7.2f} {cores:>9} {per_req:>10} {sys_req:>11} {r.client_cpu_s / r.window_s:>9.2f} "
              f"{up:>9} {sum(r.errors.values()):>6} {ratio:>10} {cpu_ratio:>11}")
    for r in results:
        if len(r.split) > 1:
            print(f"  {r.key}: connections per server process {sorted(r.split.values(), reverse=True)}")
        for reason, count in r.errors.items():
            print(f"  {r.key}: {count} x {reason}")
        if r.profile:
            print(f"  profile of {r.key} ({r.profile[0]}):")
            for line in r.profile[1:]:
                print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="connections per client process (default 16)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios, in this order (default {','.join(SCENARIOS)})")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the gateway for 5 s of scenarios c, d, e "
                        "(raw stacks in DIR/<scenario>.txt, a summary in the output)")
    parser.add_argument("--profile-native", action="store_true", help="with --profile: C frames too "
                        "(py-spy then pauses the gateway for each sample: throughput of that run is lower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"--only: unknown scenario(s) {unknown}; expected some of {list(SCENARIOS)}")
    if args.duration <= 0 or args.connections < 1 or args.client_procs < 1:
        parser.error("--duration, --connections and --client-procs must be positive")
    if not os.access(NGINX, os.X_OK):
        parser.error(f"nginx not found at {NGINX}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = Path(tempfile.mkdtemp(prefix="idwall-proxybench-"))
    # nginx workers run as `nobody` when started by root: they must be able to reach their temp paths
    work.chmod(0o755)
    results: list[Result] = []
    upstream: subprocess.Popen[bytes] | None = None
    try:
        total = args.connections * args.client_procs
        print(f"work directory {work}; registering {total} devices...", flush=True)
        setup = prepare(work, total)
        print(f"{os.cpu_count()} CPUs shared by client, servers and upstream; {args.client_procs} client processes "
              f"x {args.connections} connections, {args.duration:g} s per scenario after {args.warmup:g} s warm-up",
              flush=True)
        up_dir = work / "nginx-upstream"
        upstream = start_nginx(up_dir, nginx_conf(up_dir, workers=1, server=upstream_server_block(setup.up_port)))
        wait_listening(setup.up_port, upstream)
        upstream_pids = process_tree(upstream.pid)
        for key in keys:
            print(f"{key}: {SCENARIOS[key]}...", flush=True)
            result = run_scenario(key, setup, args, upstream_pids)
            print(f"   {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                  f"server {result.server_us_per_req:.0f} µs CPU/req, {sum(result.errors.values())} errors",
                  flush=True)
            results.append(result)
    finally:
        if upstream is not None:
            stop(upstream)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cpus": os.cpu_count(), "args": vars(args),
             "results": [dict(asdict(r), split={str(k): v for k, v in r.split.items()},
                              server_us_per_req=r.server_us_per_req, client_us_per_req=r.client_us_per_req)
                         for r in results]}, indent=2))


if __name__ == "__main__":
    main()
