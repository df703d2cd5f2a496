"""Proxy benchmark: CPU per request, latency and memory of IDWall beside nginx, over mTLS keep-alive connections.

Parts (bench/proxy/README.md has the method and what every column means):

  throughput  closed-loop load through each scenario of ``--only``, for each workload: GET with a 1 KiB
              and a 1 MiB response (``--sizes``), and with ``--upload`` a 1 MiB POST. The figure is the
              front server's CPU per request (utime + stime from /proc over the window), beside nginx's.
  latency     (``--latency``) open-loop load at half of each front's saturation throughput (1 KiB GET):
              p50/p90/p99/max, and the p99 added over the upstream reached directly at the same rate.
  memory      (``--idle-sessions N``) N idle keep-alive connections, each its own device with a live
              session that has made one proxied request: the front's RSS (and PSS) per session.

Scenarios (``--only`` takes a comma-separated list of the keys, or ``none``):

  a   the upstream directly, plain HTTP: the floor, and the check that the client is not the bottleneck
  t   nginx terminating mTLS and answering itself: the TLS floor of this client
  b   nginx terminating mTLS (same server certificate, ``ssl_verify_client on`` against the device CA),
      ``proxy_pass`` to the upstream over a keep-alive pool with a fixed identity header; 1 worker
  b2  the same nginx with 2 worker processes
  c   IDWall, ``bind_request: true`` (a fresh ES256 assertion per request)
  d   IDWall, ``bind_request: false`` (the cached assertion)
  e   IDWall ``serve --workers 2``, ``bind_request: true``

The upstream is nginx with one worker (so it is never the bottleneck). The client runs in
``--client-procs`` processes (uvloop), each holding ``--connections`` keep-alive connections with one
request in flight per connection; every connection presents its own device certificate.

Usage: python bench/proxy/run.py [--duration 10] [--only a,b,c] [--sizes 1k,1m] [--upload] [--latency]
                                 [--idle-sessions 10000] [--full] [--json out.json] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.proxy.client import ClientSpec, client_main  # noqa: E402
from bench.proxy.devices import BenchDevice, register_devices  # noqa: E402
from bench.proxy.profiling import start_profiler, summarise_profile  # noqa: E402
from bench.proxy.servers import (  # noqa: E402
    NGINX,
    answer_locations,
    connections_per_process,
    cpu_seconds,
    io_syscalls,
    memory_kib,
    mtls_server_block,
    nginx_conf,
    process_tree,
    proxy_locations,
    start_idwall,
    start_nginx,
    stop,
    upstream_pool,
    upstream_server_block,
    wait_listening,
)
from idwall.assertion import KeySet, build_claims, canonical_htu  # noqa: E402
from idwall.config import Config, ConfigError, load_config  # noqa: E402
from idwall.encoding import b64url_encode  # noqa: E402
from idwall.testing.fixtures import free_port, init_gateway_dir  # noqa: E402

SMALL_BODY = ("idwall-bench " * 80)[:1023] + "\n"  # 1 KiB; no '$' or '"', it goes into nginx.conf verbatim
LARGE_SIZE = 1 << 20
UPLOADED = b"uploaded\n"  # the upstream's answer to an upload
SCENARIOS: dict[str, str] = {
    "a": "upstream direct, plain HTTP",
    "t": "nginx mTLS, answers itself (TLS floor)",
    "b": "nginx mTLS -> upstream, 1 worker",
    "b2": "nginx mTLS -> upstream, 2 workers",
    "c": "IDWall, bind_request: true",
    "d": "IDWall, bind_request: false",
    "e": "IDWall --workers 2, bind_request: true",
}
NGINX_FRONTS = ("t", "b", "b2")
IDWALL_FRONTS = ("c", "d", "e")
#: scenarios whose requests go to the gateway's bind_request: false route
CACHED_ROUTE = ("d",)


@dataclass(frozen=True)
class Workload:
    """What each request of a measurement is: the method, the path's last segment (which selects what
    the upstream answers, see ``servers.answer_locations``) and whether it carries the 1 MiB body."""

    key: str
    name: str
    method: str
    segment: str
    upload: bool = False


WORKLOADS = {
    "1k": Workload("1k", "GET, 1 KiB response", "GET", "1k"),
    "1m": Workload("1m", "GET, 1 MiB response", "GET", "1m"),
    "up": Workload("up", "POST 1 MiB body, 9-byte response", "POST", "upload", upload=True),
}


# --- the gateway directory, the devices, the upstream's content --------------------------------------


@dataclass(frozen=True)
class Setup:
    work: Path
    config_path: str
    config: Config
    ca_pem: str
    device_ca_pem: str
    gw_port: int
    up_port: int
    static: Path
    large: bytes  # the 1 MiB the upstream serves at .../1m, and the body of every upload
    devices: tuple[BenchDevice, ...]
    nginx_header: str


def prepare(work: Path, devices: int, max_body: str) -> Setup:
    """``idwall init``, a bind_request: false route, ``devices`` devices with a live session each.

    ``max_body`` (unless ``off``) goes on both routes: the new request engine refuses bodies over its
    per-route limit (1 MiB by default, like nginx's ``client_max_body_size``).
    """
    gw_port, up_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    cached_route = (f"  - name: cached\n    match:\n      path: /cached\n    upstream: {upstream}\n"
                    f"    bind_request: false\n")
    info = init_gateway_dir(work / "gw", port=gw_port, upstream=upstream, extra_yaml=cached_route)
    path = Path(info["config"])
    # idle connections are kept as long as nginx keeps them here (keepalive_timeout 300s in servers.py), so
    # 10,000 sessions are all still open when the memory part reads the RSS
    path.write_text(path.read_text().replace("keepalive_timeout: 75s", "keepalive_timeout: 300s"))
    if max_body != "off":
        line = f"    upstream: {upstream}\n"
        path.write_text(path.read_text().replace(line, f"{line}    max_body: {max_body}\n"))
    try:
        config = load_config(info["config"])
    except ConfigError as exc:
        hint = " (a gateway without per-route max_body: run with --max-body off)" if "max_body" in str(exc) else ""
        raise SystemExit(f"the benchmark's gateway config was refused: {exc}{hint}") from None
    static = work / "static"
    static.mkdir()
    large = os.urandom(LARGE_SIZE)
    (static / "1m.bin").write_bytes(large)
    made = register_devices(config, devices, work / "devices")
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
        cert_sha256=first.cert_sha256, method="GET", url=canonical_htu("https", f"localhost:{gw_port}", "/bound/1k"),
        now=time.time(), ttl=config.assertion.ttl, bind_request=True)
    return Setup(work, info["config"], config, info["ca_pem"], info["device_ca_pem"], gw_port, up_port, static,
                 large, tuple(made), keys.sign(claims))


def request_bytes(workload: Workload, key: str, port: int, setup: Setup) -> bytes:
    """The whole request (head and body) that every connection of scenario ``key`` sends for ``workload``."""
    path = f"{'/cached' if key in CACHED_ROUTE else '/bound'}/{workload.segment}"
    head = (f"{workload.method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: idwall-proxy-bench\r\n"
            f"Accept: */*\r\n")
    if not workload.upload:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(setup.large)}\r\n\r\n"
    return head.encode() + setup.large


def expected_body(workload: Workload, setup: Setup) -> bytes:
    return {"1k": SMALL_BODY.encode(), "1m": setup.large, "up": UPLOADED}[workload.key]


# --- servers and client processes --------------------------------------------------------------------


@dataclass(frozen=True)
class Front:
    """What the client talks to in one scenario: its port, and the server process (None for ``a``)."""

    key: str
    port: int
    proc: subprocess.Popen[bytes] | None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc is not None else []


@contextmanager
def running_front(key: str, setup: Setup, *, connections: int = 4096) -> Iterator[Front]:
    """Start the front server of scenario ``key`` (nothing for ``a``), and stop it afterwards."""
    proc: subprocess.Popen[bytes] | None = None
    port = setup.up_port
    if key in NGINX_FRONTS:
        port = free_port()
        directory = setup.work / f"nginx-{key}"
        if key == "t":
            server = mtls_server_block(port, setup.config, setup.device_ca_pem,
                                       answer_locations(setup.static, SMALL_BODY))
        else:
            server = upstream_pool(setup.up_port) + mtls_server_block(
                port, setup.config, setup.device_ca_pem,
                proxy_locations(setup.config.assertion.header, setup.nginx_header))
        proc = start_nginx(directory, nginx_conf(directory, workers=2 if key == "b2" else 1, server=server,
                                                 connections=connections))
    elif key in IDWALL_FRONTS:
        port = setup.gw_port
        proc = start_idwall(setup.config_path, setup.work, 2 if key == "e" else 1, ROOT)
    try:
        if proc is not None:
            wait_listening(port, proc)
        yield Front(key, port, proc)
    finally:
        if proc is not None:
            stop(proc)


@dataclass
class ClientProcess:
    process: Any  # multiprocessing's SpawnProcess
    pipe: multiprocessing.connection.Connection

    def expect(self, kind: str, timeout: float) -> Any:
        """The client's next message, which must be ``kind``; its detail."""
        deadline = time.monotonic() + timeout
        while not self.pipe.poll(0.2):
            if not self.process.is_alive() and not self.pipe.poll(0):
                raise RuntimeError(f"client process {self.process.pid} died (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"client process {self.process.pid} silent for {timeout:g} s (expected {kind})")
        got, detail = self.pipe.recv()
        if got != kind:
            raise RuntimeError(f"client process {self.process.pid}: {detail}")
        return detail


@contextmanager
def client_processes(specs: list[ClientSpec]) -> Iterator[list[ClientProcess]]:
    """One client process per spec; joined (killed after 5 s) on the way out."""
    mp = multiprocessing.get_context("spawn")
    clients: list[ClientProcess] = []
    try:
        for spec in specs:
            parent_end, child_end = mp.Pipe()
            process = mp.Process(target=client_main, args=(spec, child_end), daemon=True)
            process.start()
            clients.append(ClientProcess(process, parent_end))
        yield clients
    finally:
        for client in clients:
            client.process.join(5)
            if client.process.is_alive():
                client.process.kill()
                client.process.join(5)


# --- load measurements (throughput and latency) ------------------------------------------------------


@dataclass
class Result:
    """One window of load through one front: closed-loop (saturation) or open-loop at ``target_rps``."""

    key: str
    name: str
    workload: str
    mode: str
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
    target_rps: float | None = None
    queued: int = 0
    profile: list[str] | None = None

    @property
    def server_us_per_req(self) -> float:
        return 1e6 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def client_us_per_req(self) -> float:
        return 1e6 * self.client_cpu_s / self.requests if self.requests else float("nan")

    def as_json(self) -> dict[str, Any]:
        return dict(asdict(self), split={str(k): v for k, v in self.split.items()},
                    server_us_per_req=self.server_us_per_req, client_us_per_req=self.client_us_per_req)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def measure(front: Front, workload: Workload, setup: Setup, args: argparse.Namespace, upstream_pids: list[int],
            *, mode: str = "closed", rate: float = 0.0) -> Result:
    """Run ``--client-procs`` clients against ``front`` for one window and read /proc at both ends of it."""
    request = request_bytes(workload, front.key, front.port, setup)
    per = args.connections
    specs = [ClientSpec(front.port, front.key != "a", setup.ca_pem,
                        tuple(str(d.pem_path) for d in setup.devices[i * per:(i + 1) * per]), request,
                        expected_body(workload, setup), mode, rate=rate / args.client_procs, seed=i)
             for i in range(args.client_procs)]
    profiler: subprocess.Popen[bytes] | None = None
    profile_name = f"{front.key}-{workload.key}"
    with client_processes(specs) as clients:
        try:
            for client in clients:
                client.expect("ready", 60)
            server_pids = front.pids()  # after the warm-up: `serve --workers` has forked its workers by now
            client_pids = [client.process.pid for client in clients]
            start = time.monotonic() + args.warmup
            end = start + args.duration
            for client in clients:
                client.pipe.send((start, end))
            time.sleep(max(0.0, start - time.monotonic()))
            before = (cpu_seconds(server_pids), cpu_seconds(upstream_pids), cpu_seconds(client_pids))
            syscalls_before = io_syscalls(server_pids)
            split = connections_per_process(server_pids, front.port)
            if args.profile and front.proc is not None and front.key in IDWALL_FRONTS and mode == "closed":
                profiler = start_profiler(Path(args.profile), profile_name, front.proc.pid, min(5.0, args.duration),
                                          args.profile_native, subprocesses=front.key == "e")
            time.sleep(max(0.0, end - time.monotonic()))
            after = (cpu_seconds(server_pids), cpu_seconds(upstream_pids), cpu_seconds(client_pids))
            syscalls = io_syscalls(server_pids) - syscalls_before
            latencies: list[float] = []
            errors: Counter[str] = Counter()
            queued = 0
            for client in clients:
                report = client.expect("done", 40)
                latencies.extend(array("d", report["latencies"]))
                errors.update(report["errors"])
                queued += report["queued"]
            profile = None
            if profiler is not None:
                profiler.wait(30)
                stacks = Path(args.profile) / f"{profile_name}.txt"
                if not stacks.exists():
                    log = (Path(args.profile) / f"{profile_name}.log").read_text().strip()
                    raise RuntimeError(f"py-spy wrote no profile for {profile_name}: {log[-300:]}")
                profile = summarise_profile(stacks)
        finally:
            if profiler is not None and profiler.poll() is None:
                profiler.kill()
                profiler.wait(5)
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return Result(front.key, SCENARIOS[front.key], workload.key, mode, per * args.client_procs, len(ms),
                  len(ms) / args.duration, percentile(ms, 0.5), percentile(ms, 0.9), percentile(ms, 0.99),
                  ms[-1] if ms else float("nan"), dict(errors), after[0] - before[0], syscalls,
                  after[1] - before[1], after[2] - before[2], args.duration, split,
                  rate if mode == "open" else None, queued, profile)


@dataclass
class LatencyResult:
    """A front at half of its saturation throughput, and the upstream reached directly at the same rate."""

    key: str
    saturation_rps: float
    front: Result
    direct: Result

    @property
    def added_p99_ms(self) -> float:
        return self.front.p99_ms - self.direct.p99_ms

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "saturation_rps": self.saturation_rps, "added_p99_ms": self.added_p99_ms,
                "front": self.front.as_json(), "direct": self.direct.as_json()}


# --- memory per idle live session --------------------------------------------------------------------


@dataclass
class MemoryResult:
    """The front's resident memory before and after ``sessions`` idle live sessions were opened."""

    key: str
    name: str
    sessions: int
    connect_s: float
    open_cpu_s: float
    rss_before_kib: int
    rss_after_kib: int
    pss_before_kib: int | None
    pss_after_kib: int | None
    established: int
    client_open: int
    errors: dict[str, int]

    @property
    def rss_per_session_kib(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.sessions

    @property
    def pss_per_session_kib(self) -> float | None:
        if self.pss_before_kib is None or self.pss_after_kib is None:
            return None
        return (self.pss_after_kib - self.pss_before_kib) / self.sessions

    def as_json(self) -> dict[str, Any]:
        return dict(asdict(self), rss_per_session_kib=self.rss_per_session_kib,
                    pss_per_session_kib=self.pss_per_session_kib)


def measure_memory(key: str, setup: Setup, args: argparse.Namespace) -> MemoryResult:
    """Open ``--idle-sessions`` connections through ``key``, one proxied request each, and read its memory."""
    sessions = args.idle_sessions
    workload = WORKLOADS["1k"]
    with running_front(key, setup, connections=sessions + 1024) as front:
        request = request_bytes(workload, key, front.port, setup)
        expect = expected_body(workload, setup)

        def spec(devices: tuple[BenchDevice, ...]) -> ClientSpec:
            return ClientSpec(front.port, True, setup.ca_pem, tuple(str(d.pem_path) for d in devices), request,
                              expect, "idle", connect_timeout=60 + sessions / 50)

        # One proxied request on one connection, closed again, so that "before" already holds whatever any
        # first request loads (modules, the upstream pool, caches), not only the bare process.
        with client_processes([spec(setup.devices[sessions:sessions + 1])]) as (warm,):
            warm.expect("ready", 60)
            warm.pipe.send("close")
            warm.expect("done", 30)
        pids = front.pids()  # after a request was answered: nginx has forked its worker by now
        time.sleep(1.0)
        rss_before, pss_before = memory_kib(pids)
        cpu_before = cpu_seconds(pids)
        procs = min(args.idle_procs, sessions)
        shares = [setup.devices[i:sessions:procs] for i in range(procs)]
        with client_processes([spec(share) for share in shares]) as clients:
            connect_s = max(client.expect("ready", 90 + sessions / 50)["connect_s"] for client in clients)
            open_cpu = cpu_seconds(pids) - cpu_before
            time.sleep(args.idle_settle)
            rss_after, pss_after = memory_kib(pids)
            established = sum(connections_per_process(pids, front.port).values())
            client_open = 0
            for client in clients:
                client.pipe.send("count")
                client_open += client.expect("count", 30)
            errors: Counter[str] = Counter()
            for client in clients:
                client.pipe.send("close")
                report = client.expect("done", 60)
                errors.update(report["errors"])
    return MemoryResult(key, SCENARIOS[key], sessions, connect_s, open_cpu, rss_before, rss_after, pss_before,
                        pss_after, established, client_open, dict(errors))


# --- tables ------------------------------------------------------------------------------------------


def ratio(value: float, baseline: float | None, digits: int = 2) -> str:
    return f"{value / baseline:.{digits}f}x" if baseline else "-"


def print_throughput(results: list[Result], workloads: list[str]) -> None:
    """One table per workload: absolute figures, and relative to nginx proxying with one worker (b)."""
    for wkey in workloads:
        rows = [r for r in results if r.workload == wkey]
        if not rows:
            continue
        base = next((r for r in rows if r.key == "b" and r.requests), None)
        print(f"\nthroughput, {WORKLOADS[wkey].name} (closed loop)")
        print(f"{'scenario':<44} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
              f"{'srv cores':>9} {'srv µs/req':>10} {'srv sys/req':>11} {'cli cores':>9} {'up µs/req':>9} "
              f"{'errors':>6} {'req/s vs b':>10} {'µs/req vs b':>11}")
        for r in rows:
            served = r.key != "a" and r.requests
            relative = base is not None and r.key not in ("a", "t") and r.requests
            print(f"{r.key + ' ' + r.name:<44} {r.connections:>5} {r.rps:>7.0f} {r.p50_ms:>7.2f} {r.p90_ms:>7.2f} "
                  f"{r.p99_ms:>7.2f} {f'{r.server_cpu_s / r.window_s:.2f}' if served else '-':>9} "
                  f"{f'{r.server_us_per_req:.0f}' if served else '-':>10} "
                  f"{f'{r.server_syscalls / r.requests:.1f}' if served else '-':>11} "
                  f"{r.client_cpu_s / r.window_s:>9.2f} "
                  f"{f'{1e6 * r.upstream_cpu_s / r.requests:.0f}' if r.requests else '-':>9} "
                  f"{sum(r.errors.values()):>6} {ratio(r.rps, base.rps if relative and base else None, 3):>10} "
                  f"{ratio(r.server_us_per_req, base.server_us_per_req if relative and base else None, 1):>11}")
        print_notes(rows)


def print_notes(rows: list[Result]) -> None:
    for r in rows:
        if len(r.split) > 1:
            print(f"  {r.key}: connections per server process {sorted(r.split.values(), reverse=True)}")
        for reason, count in r.errors.items():
            print(f"  {r.key}: {count} x {reason}")
        if r.profile:
            print(f"  profile of {r.key} {r.workload} ({r.profile[0]}):")
            for line in r.profile[1:]:
                print(f"    {line}")


def print_latency(rows: list[LatencyResult]) -> None:
    if not rows:
        return
    print("\nlatency at half of saturation (open loop, Poisson arrivals, GET 1 KiB)")
    print(f"{'front':<44} {'sat req/s':>9} {'target':>7} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'queued':>6} {'srv µs/req':>10} {'direct p99':>10} {'added p99':>9} {'errors':>6}")
    for row in rows:
        f, d = row.front, row.direct
        print(f"{f.key + ' ' + f.name:<44} {row.saturation_rps:>9.0f} {f.target_rps or 0:>7.0f} {f.rps:>7.0f} "
              f"{f.p50_ms:>7.2f} {f.p90_ms:>7.2f} {f.p99_ms:>7.2f} {f.max_ms:>7.2f} {f.queued:>6} "
              f"{f.server_us_per_req:>10.0f} {d.p99_ms:>10.2f} {row.added_p99_ms:>9.2f} "
              f"{sum(f.errors.values()) + sum(d.errors.values()):>6}")
    print_notes([r for row in rows for r in (row.front, row.direct)])


def print_memory(rows: list[MemoryResult]) -> None:
    if not rows:
        return
    base = next((r for r in rows if r.key == "b"), None)
    print("\nmemory per idle live session (one proxied request each, then idle)")
    print(f"{'front':<44} {'sessions':>8} {'open s':>6} {'µs CPU/open':>11} {'RSS before MiB':>14} "
          f"{'RSS after MiB':>13} {'KiB/session':>11} {'PSS KiB/sess':>12} {'vs b':>6} {'open at end':>11}")
    for r in rows:
        pss = r.pss_per_session_kib
        print(f"{r.key + ' ' + r.name:<44} {r.sessions:>8} {r.connect_s:>6.1f} "
              f"{1e6 * r.open_cpu_s / r.sessions:>11.0f} {r.rss_before_kib / 1024:>14.1f} "
              f"{r.rss_after_kib / 1024:>13.1f} {r.rss_per_session_kib:>11.1f} "
              f"{f'{pss:.1f}' if pss is not None else '-':>12} "
              f"{ratio(r.rss_per_session_kib, base.rss_per_session_kib if base and r is not base else None, 1):>6} "
              f"{f'{r.established}/{r.client_open}':>11}")
    for r in rows:
        if r.established < r.sessions or r.client_open < r.sessions:
            print(f"  {r.key}: only {r.established} connections established at the server and {r.client_open} "
                  f"open at the client of {r.sessions}: the figure per session is not valid")
        for reason, count in r.errors.items():
            print(f"  {r.key}: {count} x {reason}")


def goals(results: list[Result], latency: list[LatencyResult], memory: list[MemoryResult]) -> list[dict[str, Any]]:
    """The issue's targets, for every figure this run measured."""
    out: list[dict[str, Any]] = []

    def cpu(key: str, wkey: str) -> float | None:
        row = next((r for r in results if r.key == key and r.workload == wkey and r.requests), None)
        base = next((r for r in results if r.key == "b" and r.workload == wkey and r.requests), None)
        return row.server_us_per_req / base.server_us_per_req if row and base else None

    for key, wkey, limit in (("c", "1k", 4.0), ("d", "1k", 2.0), ("c", "1m", 1.0), ("d", "1m", 1.0),
                             ("c", "up", 1.0), ("d", "up", 1.0)):
        value = cpu(key, wkey)
        if value is not None:
            out.append({"goal": f"CPU/request vs nginx b, {key}, {WORKLOADS[wkey].name}", "value": value,
                        "limit": limit, "unit": "x", "met": value <= limit})
    for row in latency:
        if row.key in IDWALL_FRONTS:
            out.append({"goal": f"p99 added at half of saturation, {row.key}", "value": row.added_p99_ms,
                        "limit": 2.0, "unit": "ms", "met": row.added_p99_ms <= 2.0})
    for mem in memory:
        if mem.key in IDWALL_FRONTS:
            valid = mem.established >= mem.sessions and mem.client_open >= mem.sessions
            out.append({"goal": f"RSS per idle live session at {mem.sessions}, {mem.key}",
                        "value": mem.rss_per_session_kib, "limit": 40.0, "unit": "KiB",
                        "met": valid and mem.rss_per_session_kib <= 40.0})
    return out


def print_goals(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\ngoals")
    for row in rows:
        print(f"  {row['goal']:<62} {row['value']:>8.2f} {row['unit']:<3} (at most {row['limit']:g} {row['unit']}): "
              f"{'met' if row['met'] else 'NOT met'}")


# --- the whole run -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per window (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="connections per client process (default 16)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"throughput scenarios, in this order, or 'none' (default {','.join(SCENARIOS)})")
    parser.add_argument("--sizes", default="1k,1m", help="GET response sizes for the throughput part: 1k, 1m "
                        "(default 1k,1m)")
    parser.add_argument("--upload", action="store_true", help="throughput part: also POST 1 MiB request bodies")
    parser.add_argument("--latency", action="store_true", help="latency at half of saturation for --latency-fronts")
    parser.add_argument("--latency-fronts", default="b,c,d", help="fronts for --latency (default b,c,d)")
    parser.add_argument("--idle-sessions", type=int, default=0, metavar="N",
                        help="memory part: N idle live sessions per front of --idle-fronts (default 0: skipped)")
    parser.add_argument("--idle-fronts", default="b,c", help="fronts for --idle-sessions (default b,c)")
    parser.add_argument("--idle-procs", type=int, default=2, help="client processes holding the idle sessions "
                        "(default 2)")
    parser.add_argument("--idle-settle", type=float, default=5.0, help="seconds between the last session opened "
                        "and the memory reading (default 5)")
    parser.add_argument("--full", action="store_true", help="everything the issue asks for: --sizes 1k,1m --upload "
                        "--latency --idle-sessions 10000 (unless given otherwise)")
    parser.add_argument("--max-body", default="8m", help="max_body on the gateway's routes, or 'off' for a "
                        "gateway that does not know the key (default 8m)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the gateway for 5 s of each c, d, e window "
                        "(raw stacks in DIR/<scenario>-<workload>.txt, a summary in the output)")
    parser.add_argument("--profile-native", action="store_true", help="with --profile: C frames too "
                        "(py-spy then pauses the gateway for each sample: throughput of that run is lower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = parser.parse_args()
    if args.full:
        args.upload = args.latency = True
        args.idle_sessions = args.idle_sessions or 10_000
    def listed(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip() and item.strip() != "none"]

    args.keys = listed(args.only)
    sizes = listed(args.sizes)
    args.workloads = sizes + (["up"] if args.upload else [])
    args.latency_keys = listed(args.latency_fronts) if args.latency else []
    args.idle_keys = listed(args.idle_fronts) if args.idle_sessions else []
    fronts = ("b", "b2", "c", "d", "e")
    for option, given, allowed in (("--only", args.keys, tuple(SCENARIOS)), ("--sizes", sizes, ("1k", "1m")),
                                   ("--latency-fronts", args.latency_keys, fronts),
                                   ("--idle-fronts", args.idle_keys, fronts)):
        unknown = [k for k in given if k not in allowed]
        if unknown:
            parser.error(f"{option}: unknown {unknown}; expected some of {list(allowed)}")
    if not (args.keys or args.latency_keys or args.idle_keys):
        parser.error("nothing to measure: --only none without --latency or --idle-sessions")
    if args.duration <= 0 or args.connections < 1 or args.client_procs < 1 or args.idle_procs < 1 \
            or args.idle_sessions < 0:
        parser.error("--duration, --connections, --client-procs and --idle-procs must be positive")
    if not os.access(NGINX, os.X_OK):
        parser.error(f"nginx not found at {NGINX}")
    return args


def run_fronts(setup: Setup, args: argparse.Namespace,
               upstream_pids: list[int]) -> tuple[list[Result], list[LatencyResult]]:
    """The throughput part for ``--only``, and the latency part, front by front (each started once)."""
    results: list[Result] = []
    latency: list[LatencyResult] = []
    order = args.keys + [k for k in args.latency_keys if k not in args.keys]
    for key in order:
        at_half: Result | None = None
        with running_front(key, setup) as front:
            for wkey in args.workloads if key in args.keys else []:
                print(f"{key}: {SCENARIOS[key]}, {WORKLOADS[wkey].name}...", flush=True)
                result = measure(front, WORKLOADS[wkey], setup, args, upstream_pids)
                print(f"   {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                      f"server {result.server_us_per_req:.0f} µs CPU/req, {sum(result.errors.values())} errors",
                      flush=True)
                results.append(result)
            if key in args.latency_keys:
                saturation = next((r for r in results if r.key == key and r.workload == "1k"), None)
                if saturation is None:
                    print(f"{key}: saturation, {WORKLOADS['1k'].name}...", flush=True)
                    saturation = measure(front, WORKLOADS["1k"], setup, args, upstream_pids)
                print(f"{key}: open loop at {saturation.rps / 2:.0f} req/s (half of {saturation.rps:.0f})...",
                      flush=True)
                at_half = measure(front, WORKLOADS["1k"], setup, args, upstream_pids, mode="open",
                                  rate=saturation.rps / 2)
        if at_half is None:
            continue
        # right after the front, at the same rate: the same client, the same upstream, no front
        print(f"a: upstream direct at the same {at_half.target_rps:.0f} req/s...", flush=True)
        with running_front("a", setup) as direct_front:
            direct = measure(direct_front, WORKLOADS["1k"], setup, args, upstream_pids, mode="open",
                             rate=saturation.rps / 2)
        row = LatencyResult(key, saturation.rps, at_half, direct)
        print(f"   p99 {at_half.p99_ms:.2f} ms, direct p99 {direct.p99_ms:.2f} ms: added {row.added_p99_ms:.2f} ms",
              flush=True)
        latency.append(row)
    return results, latency


def main() -> None:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="idwall-proxybench-"))
    # nginx workers run as `nobody` when started by root: they must be able to reach their temp paths
    work.chmod(0o755)
    results: list[Result] = []
    latency: list[LatencyResult] = []
    memory: list[MemoryResult] = []
    upstream: subprocess.Popen[bytes] | None = None
    try:
        total = max(args.connections * args.client_procs, args.idle_sessions + 1)
        print(f"work directory {work}; registering {total} devices...", flush=True)
        started = time.monotonic()
        setup = prepare(work, total, args.max_body)
        print(f"   {time.monotonic() - started:.1f} s. {os.cpu_count()} CPUs shared by client, servers and upstream; "
              f"{args.client_procs} client processes x {args.connections} connections, {args.duration:g} s per "
              f"window after {args.warmup:g} s warm-up", flush=True)
        up_dir = work / "nginx-upstream"
        server = upstream_server_block(setup.up_port, setup.static, SMALL_BODY)
        upstream = start_nginx(up_dir, nginx_conf(up_dir, workers=1, connections=16384, server=server))
        wait_listening(setup.up_port, upstream)
        upstream_pids = process_tree(upstream.pid)
        results, latency = run_fronts(setup, args, upstream_pids)
        for key in args.idle_keys:
            print(f"{key}: {args.idle_sessions} idle live sessions...", flush=True)
            mem = measure_memory(key, setup, args)
            print(f"   opened in {mem.connect_s:.1f} s, {mem.rss_per_session_kib:.1f} KiB RSS per session, "
                  f"{mem.established} established at the end", flush=True)
            memory.append(mem)
    finally:
        if upstream is not None:
            stop(upstream)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_throughput(results, args.workloads)
    print_latency(latency)
    print_memory(memory)
    targets = goals(results, latency, memory)
    print_goals(targets)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cpus": os.cpu_count(), "args": vars(args), "results": [r.as_json() for r in results],
             "latency": [row.as_json() for row in latency], "memory": [m.as_json() for m in memory],
             "goals": targets}, indent=2))


if __name__ == "__main__":
    main()
