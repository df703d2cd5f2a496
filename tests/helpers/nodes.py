"""Two gateway nodes as production runs them: ``idwall serve`` processes on one PostgreSQL database, behind
Debian's HAProxy in TCP mode (TLS passes through, mTLS ends at IDWall) with PROXY protocol v2.

HAProxy has one backend, ``gateways``, with both nodes as servers (roundrobin), and one frontend with three
ports: the shared port balances over both nodes; each node also has a port of its own, which HAProxy routes to
that server only (``use-server … if { dst_port … }``). A test that must know which node a connection landed on
uses a node's own port: that is decided by the balancer's configuration, not by the order in which connections
happen to arrive (roundrobin shifts with every connection any client opens, health checks and retries included),
and every byte still passes through the same HAProxy process, the same backend and its PROXY v2 header. HAProxy
connects to the nodes from :data:`BALANCER`, the one address both nodes trust to send a PROXY header.

Each node runs from a copy of one ``idwall init --store postgresql://…`` directory (the same keys and
certificates on every node), with every frontend URL among its WebAuthn origins and its own port's URL as its
``public_url``. A missing ``haproxy`` binary fails the test (CI installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from idwall.bootstrap import init_directory
from idwall.config import Config, load_config
from idwall.pki import load_private_key
from idwall.store import open_store
from idwall.testing.fixtures import client_ssl_context, free_port

from .process import stop_process

__all__ = ["BALANCER", "Nodes", "NodeProcess", "nodes_behind_haproxy"]

ROOT = Path(__file__).resolve().parent.parent.parent
#: the address HAProxy connects to the nodes from, and the one they trust to send a PROXY v2 header
BALANCER = "127.0.0.2"

HAPROXY_CFG = """\
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend idwall
    bind 127.0.0.1:{shared}
    bind 127.0.0.1:{via_a}
    bind 127.0.0.1:{via_b}
    default_backend gateways
backend gateways
    balance roundrobin
    use-server a if {{ dst_port {via_a} }}
    use-server b if {{ dst_port {via_b} }}
    server a 127.0.0.1:{a} send-proxy-v2 source {balancer}
    server b 127.0.0.1:{b} send-proxy-v2 source {balancer}
"""


@dataclass
class NodeProcess:
    """One node: ``idwall serve`` on its own port, reached through HAProxy at :attr:`url` (its own frontend port).

    It has what the API helpers (tests/helpers/api.py) and :class:`~tests.helpers.kill.RawConn` need of a
    gateway: ``url``, ``port``, ``ssl``, ``session``, ``dir``, ``init`` and ``store`` (the test's own store on
    the shared database).
    """

    name: str
    dir: Path
    init: dict[str, Any]
    config: Config
    #: this node's own port on HAProxy
    port: int
    store: Any
    process: subprocess.Popen[bytes] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def ssl(self, device: Any = None) -> SSLContext:
        """A client TLS context trusting the gateway CA, presenting ``device``'s certificate when given."""
        if device is None:
            return client_ssl_context(self.init["ca_pem"])
        return client_ssl_context(self.init["ca_pem"], device.cert_path, device.key_path)

    def session(self, device: Any = None) -> aiohttp.ClientSession:
        """An HTTP client (one keep-alive connection, through HAProxy to this node) for ``device``."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl(device), limit=1))

    def start(self) -> None:
        """Start ``idwall serve`` and wait until it listens."""
        command = [sys.executable, "-m", "idwall", "serve", "--config", str(self.config.source)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=self.dir,
                                        env=dict(os.environ, PYTHONPATH=str(ROOT)))
        after = len(self.logs)
        threading.Thread(target=self._read_logs, args=(self.process,), daemon=True).start()
        self.wait_log("gateway.started", after=after)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 15 s) and wait for the process to end."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=15)

    def wait_log(self, name: str, *, after: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        """The first ``name`` event in this node's log after line ``after`` (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.logs[after:]:
                if line.get("event") == name:
                    return line
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} in node {self.name}'s log: {self.logs[-20:]}")

    def _read_logs(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            with contextlib.suppress(ValueError):
                self.logs.append(json.loads(raw))


@dataclass
class Nodes:
    """Nodes A and B behind one HAProxy; :attr:`shared` is the port that balances over both."""

    a: NodeProcess
    b: NodeProcess
    shared: int


def _node_config(text: str, *, port: int, url: str, origins: str, upstream: str, extra_yaml: str) -> str:
    listen = "listen:\n  host: 127.0.0.1\n"
    assert listen in text and "http://127.0.0.1:9001" in text
    text = text.replace(listen, f"{listen}  proxy_protocol: {{trusted: [{BALANCER}/32]}}\n", 1)
    text = text.replace("http://127.0.0.1:9001", upstream)
    text = text.replace(f'public_url: "https://localhost:{port}"', f'public_url: "{url}"')
    text = text.replace(f'origins: ["https://localhost:{port}"]', f"origins: [{origins}]")
    return text + extra_yaml


@contextlib.asynccontextmanager
async def nodes_behind_haproxy(tmp_path: Path, upstream: str, store: str, *, b_store: str | None = None,
                               extra_yaml: str = "") -> AsyncIterator[Nodes]:
    """Nodes A and B (``idwall serve`` processes on the store ``store``, B on ``b_store`` when given: a relay to
    the same database) behind HAProxy, while the block runs; ``extra_yaml`` is appended to both configs."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is not installed (apt-get install -y haproxy)"
    direct = {"a": free_port(), "b": free_port()}
    via = {"a": free_port(), "b": free_port()}
    shared = free_port()
    origins = ", ".join(f'"https://localhost:{p}"' for p in (shared, via["a"], via["b"]))
    made = await asyncio.to_thread(init_directory, tmp_path / "a", admin="admin", port=direct["a"], force=False,
                                   now=datetime.now(timezone.utc), store=store)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same certificates and keys on every node
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name in "ab":
            path = tmp_path / name / "idwall.yaml"
            text = path.read_text().replace(f"port: {direct['a']}", f"port: {direct[name]}")
            if name == "b" and b_store is not None:
                text = text.replace(json.dumps(store), json.dumps(b_store))
            path.write_text(_node_config(text.replace(f"https://localhost:{direct['a']}",
                                                      f"https://localhost:{direct[name]}"),
                                         port=direct[name], url=f"https://localhost:{via[name]}", origins=origins,
                                         upstream=upstream, extra_yaml=extra_yaml))
            config = load_config(path)
            own = await open_store(store, ledger_key=load_private_key(config.ledger.key), pool_size=2)
            stack.push_async_callback(own.close)
            info = {"config": str(path), "bootstrap_code": made.bootstrap_code, "ca_pem": str(made.ca_pem)}
            node = NodeProcess(name, tmp_path / name, info, config, via[name], own)
            stack.callback(node.stop)
            await asyncio.to_thread(node.start)
            nodes[name] = node
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(shared=shared, via_a=via["a"], via_b=via["b"], a=direct["a"],
                                          b=direct["b"], balancer=BALANCER))
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        haproxy = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        stack.callback(stop_process, haproxy)
        await _listening(shared)
        yield Nodes(nodes["a"], nodes["b"], shared)


async def _listening(port: int) -> None:
    for _ in range(200):  # haproxy binds within a moment of starting
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    raise AssertionError("haproxy never listened")
