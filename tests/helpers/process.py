"""A gateway as a real process (``python -m idwall serve``), its JSON log, and a store of the test's own on its file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from ssl import SSLContext
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idwall import tokens
from idwall.config import load_config
from idwall.pki import load_cert, load_private_key
from idwall.store import sqlite_path
from idwall.model import LedgerDraft
from idwall.store.sqlite import SQLiteStore
from idwall.testing.fixtures import DeviceFiles, client_ssl_context, free_port, init_gateway_dir, \
    register_device_directly

ROOT = Path(__file__).resolve().parent.parent.parent

__all__ = ["Cluster", "gateway_process", "stop_process"]


@dataclass
class Cluster:
    """The parent process, its workers, and a store of our own on the same SQLite file."""

    dir: Path
    info: dict[str, Any]
    port: int
    process: subprocess.Popen[bytes]
    logs: list[dict[str, Any]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    worker_ids: list[str] = field(default_factory=list)

    def _read_logs(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                self.logs.append(json.loads(raw))
            except ValueError:
                self.logs.append({"event": "raw", "line": raw.decode(errors="replace")})

    def wait_log(self, name: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.logs[after:]:
                if line.get("event") == name:
                    return line
            if self.process.poll() is not None and not any(line.get("event") == name for line in self.logs):
                break
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} in the gateway's log: {self.logs}")

    def ssl(self, device: DeviceFiles | None = None) -> SSLContext:
        if device is None:
            return client_ssl_context(self.info["ca_pem"])
        return client_ssl_context(self.info["ca_pem"], device.cert_path, device.key_path)

    def store_call(self, fn: Any) -> Any:
        """Run ``await fn(store)`` against a second store on the gateway's SQLite file."""
        config = load_config(self.info["config"])

        async def run() -> Any:
            store = SQLiteStore(sqlite_path(config.store), ledger_key=load_private_key(config.ledger.key))
            await store.open()
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def devices(self, user: str, count: int) -> list[DeviceFiles]:
        config = load_config(self.info["config"])
        ca_cert, ca_key = load_cert(config.device_ca.cert), load_private_key(config.device_ca.key)

        async def make(store: SQLiteStore) -> list[DeviceFiles]:
            return [await register_device_directly(store, device_ca_cert=ca_cert, device_ca_key=ca_key,
                                                   out_dir=self.dir / "devices", user_id=user)
                    for _ in range(count)]

        return self.store_call(make)  # type: ignore[no-any-return]

    def kill_token(self, scopes: tuple[str, ...] = ("kill",)) -> str:
        """A token (scope kill unless told otherwise) written straight into the store; its secret."""
        issued = tokens.new_token(name="playbook", scopes=list(scopes), ttl=3600, created_by="admin", now=time.time())
        r = issued.record

        async def create(store: SQLiteStore) -> None:
            await store.create_token(r, LedgerDraft("token.create", "admin", r.id, {
                "token_id": r.id, "name": r.name, "scopes": list(r.scopes), "expires_at": int(r.expires_at)}))

        self.store_call(create)
        return issued.secret


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM ``process`` if it still runs, and wait for it (SIGKILL after ``timeout`` seconds)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def gateway_process(directory: Path, upstream: str, *, workers: int = 1,
                    edit: Callable[[str], str] | None = None) -> Iterator[Cluster]:
    """``idwall serve`` (with ``workers`` processes when more than one) on a fresh gateway directory.

    Waits until it listens; on exit stops it with SIGTERM (SIGKILL after 10 s) and makes sure no worker
    outlives the test.
    """
    port = free_port()
    info = init_gateway_dir(directory / "gw", port=port, upstream=upstream)
    if edit is not None:
        path = Path(info["config"])
        path.write_text(edit(path.read_text()))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "idwall", "serve", "--config", info["config"]]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=directory)
    c = Cluster(directory, info, port, process)
    threading.Thread(target=c._read_logs, daemon=True).start()
    try:
        if workers > 1:
            ready = c.wait_log("workers.ready")
            c.pids, c.worker_ids = ready["pids"], ready["workers"]
        else:
            c.wait_log("gateway.started")
            c.pids = [process.pid]
        yield c
    finally:
        stop_process(process)
        for pid in c.pids:  # a worker stopped by a test must not outlive it
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
