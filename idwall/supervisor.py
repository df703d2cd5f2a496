"""``idwall serve --workers N``: the supervising parent and the entry point of each worker process.

The parent binds the port once with ``SO_REUSEPORT``, migrates the store and starts N workers with
``python -m idwall.supervisor``; how a kill then reaches every worker is :mod:`idwall.cluster`.
SIGTERM or SIGINT to the parent is forwarded as SIGTERM to every worker, which drains like a
single-process gateway; the parent exits 0 when all of them exited 0. A worker that dies is logged,
forgotten in the ``workers`` table and restarted; more than :data:`RESTART_LIMIT` deaths within
:data:`RESTART_WINDOW` seconds stop the whole gateway with exit code 1 rather than crash-looping quietly.
A worker whose parent disappears drains and exits on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from .cluster import HEARTBEAT_EVERY, Worker
from .config import Config, load_config
from .logs import event, setup_logging
from .store import is_postgres, open_store
from .web.server import make_node, start_gateway

#: how long the parent waits for a new worker to listen before giving up on it (seconds)
READY_TIMEOUT = 30.0
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0


# -- the worker process -------------------------------------------------------------------------------


async def _run_worker(config: Config, index: int, port: int, parent_pid: int, ready_fd: int) -> int:
    worker = Worker(index)
    worker.listen()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    node = await make_node(config)
    node.worker = worker
    running = await start_gateway(config, port=port, node=node)
    _settle()
    with os.fdopen(ready_fd, "w") as ready:
        ready.write(json.dumps({"worker": worker.id, "pid": worker.pid, "index": index}) + "\n")
    while not stop.is_set():
        if os.getppid() != parent_pid:
            event("worker.orphaned", level=logging.WARNING, worker=worker.id)
            break
        try:
            await asyncio.wait_for(stop.wait(), HEARTBEAT_EVERY)
        except asyncio.TimeoutError:
            pass
    event("worker.stopping", worker=worker.id, drain_timeout=config.limits.drain_timeout)
    await running.stop()
    worker.close()
    event("worker.stopped", worker=worker.id)
    return 0


def worker_cli(argv: list[str]) -> int:
    """Entry point of one worker process (``python -m idwall.supervisor``; started by :func:`supervise`)."""
    parser = argparse.ArgumentParser(prog="idwall-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # The parent owns Ctrl-C: a terminal sends SIGINT to the whole group, and the parent turns it into
    # one orderly SIGTERM per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging()
    config = load_config(args.config)
    main = _run_worker(config, args.index, args.port, args.parent, args.ready_fd)
    return uvloop.run(main)


# -- the parent -----------------------------------------------------------------------------------------


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    worker_id: str = ""


def _reserve_port(config: Config) -> socket.socket:
    """Bind (not listen) the configured address with SO_REUSEPORT: fails early if taken, resolves port 0."""
    infos = socket.getaddrinfo(config.listen.host, config.listen.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"idwall: error: cannot listen on {config.listen.host}:{config.listen.port}: "
                         f"{exc.strerror}") from None
    return sock


async def _prepare_store(config: Config) -> None:
    """Open (and so migrate) the store once, before the workers race to do it."""
    store = await open_store(config.store, ledger_key=None)
    await store.close()


async def _forget(config: Config, worker_id: str) -> None:
    store = await open_store(config.store, ledger_key=None)
    try:
        await store.remove_worker(worker_id)
    finally:
        await store.close()


@dataclass
class _Starting:
    child: _Child
    ready: int


def _start(config: Config, index: int, port: int) -> _Starting:
    """Start worker ``index``; it writes one JSON line to the ready pipe once it listens."""
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "idwall.supervisor", "--config", str(config.source), "--index", str(index),
           "--port", str(port), "--parent", str(os.getpid()), "--ready-fd", str(write_fd)]
    # The same code as this process, whatever the working directory or path hooks would pick.
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(cmd, pass_fds=(write_fd,), env=env)
    os.close(write_fd)
    return _Starting(_Child(index, process), read_fd)


def _await_ready(starting: _Starting, deadline: float) -> _Child:
    """Wait for a started worker to listen; kill it and raise RuntimeError when it does not."""
    child, line = starting.child, b""
    with os.fdopen(starting.ready, "rb") as ready:
        while not line.endswith(b"\n"):
            readable, _, _ = select.select([ready], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(ready.fileno(), 4096) if readable else b""
            if not chunk:
                break
            line += chunk
    if not line.endswith(b"\n"):
        child.process.kill()
        child.process.wait()
        raise RuntimeError(f"worker {child.index} did not start (exit code {child.process.returncode})")
    child.worker_id = json.loads(line)["worker"]
    event("worker.started", worker=child.worker_id, index=child.index, pid=child.process.pid)
    return child


def _spawn_all(config: Config, indexes: list[int], port: int, children: dict[int, _Child]) -> None:
    """Start the workers in parallel and wait until all listen; the ones that started are in ``children``."""
    starting = [_start(config, index, port) for index in indexes]
    deadline = time.monotonic() + READY_TIMEOUT
    failure: RuntimeError | None = None
    for item in starting:
        try:
            children[item.child.index] = _await_ready(item, deadline)
        except RuntimeError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _stop_all(children: dict[int, _Child], drain_timeout: float) -> bool:
    """SIGTERM every worker, wait for their drain; kill stragglers. True when all exited 0."""
    for child in children.values():
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain_timeout + 5.0
    clean = True
    for child in children.values():
        try:
            code = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            event("worker.killed", level=logging.ERROR, worker=child.worker_id, reason="drain took too long")
            child.process.kill()
            code = child.process.wait()
        clean = clean and code == 0
    return clean


def supervise(config: Config, workers: int) -> int:
    """Run ``workers`` gateway processes on one port until SIGTERM/SIGINT; return the exit code."""
    reserved = _reserve_port(config)
    port = reserved.getsockname()[1]
    asyncio.run(_prepare_store(config))
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    previous_fd = signal.set_wakeup_fd(wake_w.fileno())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, lambda *_: None)  # delivery goes through the wakeup fd
    children: dict[int, _Child] = {}
    deaths: list[float] = []
    code = 0
    try:
        try:
            _spawn_all(config, list(range(workers)), port, children)
        except RuntimeError as exc:
            event("workers.failed", level=logging.ERROR, error=str(exc))
            _stop_all(children, config.limits.drain_timeout)
            return 1
        event("workers.ready", url=f"https://{config.listen.host}:{port}", port=port,
              workers=[c.worker_id for c in children.values()], pids=[c.process.pid for c in children.values()])
        while True:
            select.select([wake_r], [], [], 1.0)
            try:
                signals = wake_r.recv(256)
            except BlockingIOError:
                signals = b""
            if signal.SIGTERM in signals or signal.SIGINT in signals:
                break
            for index, child in list(children.items()):
                exit_code = child.process.poll()
                if exit_code is None:
                    continue
                event("worker.died", level=logging.ERROR, worker=child.worker_id, exit_code=exit_code)
                del children[index]
                try:
                    asyncio.run(_forget(config, child.worker_id))
                except Exception as exc:  # its heartbeat goes stale within STALE_AFTER anyway
                    event("worker.forget_failed", level=logging.WARNING, worker=child.worker_id, error=str(exc))
                now = time.monotonic()
                deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
                if len(deaths) > RESTART_LIMIT:
                    event("workers.crash_loop", level=logging.ERROR, deaths=len(deaths), window=RESTART_WINDOW)
                    code = 1
                    break
                try:
                    _spawn_all(config, [index], port, children)
                    event("worker.restarted", worker=children[index].worker_id, index=index,
                          pid=children[index].process.pid)
                except RuntimeError as exc:
                    event("workers.failed", level=logging.ERROR, error=str(exc))
                    code = 1
                    break
            if code:
                break
        event("gateway.stopping", drain_timeout=config.limits.drain_timeout, workers=len(children))
        clean = _stop_all(children, config.limits.drain_timeout)
        event("gateway.stopped")
        return code or (0 if clean else 1)
    finally:
        signal.set_wakeup_fd(previous_fd)
        wake_r.close()
        wake_w.close()
        reserved.close()


async def _serve(config: Config) -> int:
    # handlers first: a SIGTERM that arrives while the gateway starts still means "drain and exit 0"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = await make_node(config)
    if is_postgres(config.store):
        # one of several nodes: a worker in the shared table, so a kill on any node waits for this one's cut
        # and names it when it does not answer
        node.worker = Worker(0)
        node.worker.listen()
    running = await start_gateway(config, node=node)
    _settle()
    await stop.wait()
    event("gateway.stopping", drain_timeout=config.limits.drain_timeout)
    await running.stop()
    if node.worker is not None:
        node.worker.close()
    event("gateway.stopped")
    return 0


def _settle() -> None:
    """Keep the cyclic garbage collector off what lives as long as the process.

    Everything alive once the gateway listens (modules, config, keys, routes, the app) stays until exit, yet
    every full collection would walk it again: frozen, it is never scanned, which takes about 5% of the CPU
    per request off and shortens the pauses that make up the latency tail (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()


def run_server(config: Config, *, workers: int = 1) -> int:
    """Run the gateway until SIGTERM/SIGINT, drain, and return the exit code.

    Always on uvloop: the standard loop's TLS keeps a 256 KiB buffer per connection (NOTES.md), eight times
    what an idle session costs under uvloop.

    ``workers`` > 1 runs that many gateway processes on the port under a supervising parent
    (:func:`supervise`); 1 runs the gateway in this process, as before.
    """
    if workers < 1:
        raise SystemExit(f"idwall: error: --workers must be at least 1, got {workers}")
    if workers > 1:
        return supervise(config, workers)
    return uvloop.run(_serve(config))


if __name__ == "__main__":
    # Import the package's module rather than running this file's copy, so every class has one identity.
    from idwall.supervisor import worker_cli as _worker_cli

    raise SystemExit(_worker_cli(sys.argv[1:]))
