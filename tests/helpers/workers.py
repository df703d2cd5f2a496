"""Clients of ``idwall serve --workers N`` on plain blocking TLS sockets, and which worker holds which.

Which worker holds a connection is read from ``/proc`` (socket inode -> process fd), so a test checks the
spread itself instead of trusting the gateway's word; "closed" means what the kernel says (readable with EOF
or reset, without waiting). The upstream is a threaded echo server, so no event loop is involved.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from idwall.testing.fixtures import DeviceFiles

from .process import Cluster

__all__ = ["Client", "kill_client_on", "owner", "spread", "threaded_echo_upstream", "worker_id"]

# Which worker holds which socket is read from /proc; the gateway's CI is Linux, so fail rather than skip.
assert Path("/proc/net/tcp").exists(), "tests/helpers/workers.py needs Linux /proc"


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Client:
    """One keep-alive HTTPS connection on a blocking socket."""

    def __init__(self, cluster: Cluster, device: DeviceFiles | None = None) -> None:
        self.http = http.client.HTTPSConnection("localhost", cluster.port, context=cluster.ssl(device), timeout=5)
        self.http.connect()
        self.device = device

    @property
    def sock(self) -> ssl.SSLSocket:
        return self.http.sock  # type: ignore[no-any-return]

    def get(self, path: str = "/ka") -> int:
        self.http.request("GET", path, headers={"Accept": "application/json"})
        response = self.http.getresponse()
        response.read()
        return response.status

    def post(self, path: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
        self.http.request("POST", path, body=json.dumps(body),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = self.http.getresponse()
        return response.status, json.loads(response.read())

    def closed_now(self) -> bool:
        """Whether the server has closed or reset this connection already (no waiting)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        self.http.close()


def _inode(gateway_port: int, client_port: int) -> str:
    """The inode of the gateway-side socket of the connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, remote = parts[1].rsplit(":", 1), parts[2].rsplit(":", 1)
                if int(local[1], 16) == gateway_port and int(remote[1], 16) == client_port:
                    return parts[9]
    raise AssertionError(f"no gateway socket for client port {client_port}")


def owner(cluster: Cluster, client: Client) -> int:
    """The pid of the worker that holds ``client``'s connection."""
    wanted = f"socket:[{_inode(cluster.port, client.sock.getsockname()[1])}]"
    for pid in cluster.pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) == wanted:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker of {cluster.pids} holds {wanted}")


def spread(cluster: Cluster, devices: list[DeviceFiles], *, per_worker: int) -> dict[int, list[Client]]:
    """Open served connections round the devices until every worker holds at least ``per_worker``."""
    held: dict[int, list[Client]] = {pid: [] for pid in cluster.pids}
    for i in range(60):
        client = Client(cluster, devices[i % len(devices)])
        assert client.get() == 200
        held[owner(cluster, client)].append(client)
        if all(len(v) >= per_worker for v in held.values()):
            return held
    raise AssertionError(f"SO_REUSEPORT left a worker without connections: { {k: len(v) for k, v in held.items()} }")


def kill_client_on(cluster: Cluster, pid: int) -> Client:
    """A connection without a client certificate (the SOAR's) that landed on worker ``pid``."""
    for _ in range(60):
        client = Client(cluster)
        assert client.get("/idwall/healthz") == 200
        if owner(cluster, client) == pid:
            return client
        client.close()
    raise AssertionError(f"no connection landed on worker {pid}")


def worker_id(cluster: Cluster, pid: int) -> str:
    return cluster.worker_ids[cluster.pids.index(pid)]


@contextlib.contextmanager
def threaded_echo_upstream() -> Iterator[str]:
    """An HTTP/1.1 upstream on its own threads that answers every GET with its path as JSON; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
