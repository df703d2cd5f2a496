"""``idwall serve --workers 2`` as real processes: a kill answers only once every live worker has cut.

The gateway runs as ``python -m idwall serve --workers 2`` in front of a threaded echo upstream. Clients
are plain blocking TLS sockets (no event loop touches them), so "closed" means what the kernel says:
right after the kill's answer arrives, every victim socket must already be readable with EOF or reset.
Which worker holds which connection is read from ``/proc`` (socket inode -> process fd), so the test
checks the spread itself instead of trusting the gateway's word.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from idwall.cluster import FANOUT_TIMEOUT
from idwall.testing.fixtures import DeviceFiles
from tests.helpers.process import Cluster, gateway_process


# The tests tell which worker holds which socket from /proc; the gateway's CI is Linux, so fail rather than skip.
assert Path("/proc/net/tcp").exists(), "tests/test_workers.py needs Linux /proc"


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


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cluster(tmp_path: Path, upstream: str) -> Iterator[Cluster]:
    with gateway_process(tmp_path, upstream, workers=2) as c:
        yield c


# -- clients -----------------------------------------------------------------------------------------


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


# -- tests -------------------------------------------------------------------------------------------


def test_kills_answer_after_every_worker_cut(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    victims_devices = cluster.devices("mallory", 3)
    bystander_devices = cluster.devices("bob", 2)
    token = cluster.kill_token()
    victims = spread(cluster, victims_devices, per_worker=2)
    bystanders = spread(cluster, bystander_devices, per_worker=1)
    first, second = cluster.pids
    killer = kill_client_on(cluster, first)
    all_victims = [c for cs in victims.values() for c in cs]

    sent = time.perf_counter()
    status, answer = killer.post("/idwall/api/admin/kill", {"scope": "user", "target": "mallory",
                                                            "reason": "cross-worker", "revoke_devices": False}, token)
    answered = time.perf_counter()
    still_open = [owner_pid for owner_pid, cs in victims.items() for c in cs if not c.closed_now()]
    assert status == 200, answer
    assert not still_open, f"victim connections still open on workers {still_open} when the answer arrived"
    assert answer["connections_closed"] == len(all_victims), (answer, {k: len(v) for k, v in victims.items()})
    assert answer["sessions_revoked"] == 3
    assert answer["workers"] == {"reached": 2, "unreached": []}
    assert set(answer) >= {"sessions_revoked", "devices_revoked", "connections_closed", "audit_seq"}
    for cs in bystanders.values():
        for c in cs:
            assert c.get() == 200, "a bystander on either worker lost service"
    user_ms = (answered - sent) * 1000

    # Everyone: both workers cut every certificate connection; the SOAR's own connection is untouched.
    everyone = [c for cs in bystanders.values() for c in cs]
    sent = time.perf_counter()
    status, answer = killer.post("/idwall/api/admin/kill", {"scope": "all", "reason": "breach",
                                                            "revoke_devices": False}, token)
    all_ms = (time.perf_counter() - sent) * 1000
    assert status == 200, answer
    assert [c for c in everyone if not c.closed_now()] == []
    assert answer["connections_closed"] == len(everyone) and answer["workers"] == {"reached": 2, "unreached": []}
    assert killer.get("/idwall/healthz") == 200
    with capsys.disabled():
        print(f"\n2 workers: kill user ({len(all_victims)} conns, {len(victims[second])} on the other worker) "
              f"answered in {user_ms:.1f} ms; kill all ({len(everyone)} conns) in {all_ms:.1f} ms")


def test_a_stopped_worker_is_reported_and_a_dead_one_is_not_waited_for(cluster: Cluster) -> None:
    devices = cluster.devices("eve", 2)
    token = cluster.kill_token()
    victims = spread(cluster, devices, per_worker=1)
    alive, stopped = cluster.pids
    killer = kill_client_on(cluster, alive)
    os.kill(stopped, signal.SIGSTOP)  # heartbeat still fresh, but its poller cannot run: unreachable
    try:
        sent = time.perf_counter()
        status, answer = killer.post("/idwall/api/admin/kill", {"scope": "user", "target": "eve",
                                                                "reason": "hung worker", "revoke_devices": False},
                                     token)
        took = time.perf_counter() - sent
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert status == 200, answer
    assert answer["workers"] == {"reached": 1, "unreached": [worker_id(cluster, stopped)]}, answer
    assert answer["connections_closed"] == len(victims[alive]), "only what was really cut is counted"
    assert FANOUT_TIMEOUT <= took < FANOUT_TIMEOUT + 1.5, f"the kill waited {took:.2f} s"
    assert all(c.closed_now() for c in victims[alive])
    # Resumed, the worker applies the kill from the store on its next poll.
    deadline = time.monotonic() + 2
    while not all(c.closed_now() for c in victims[stopped]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(c.closed_now() for c in victims[stopped]), "the resumed worker never cut its connections"
    mark = len(cluster.logs)
    assert cluster.wait_log("kill.unreached")["workers"] == [worker_id(cluster, stopped)]

    # SIGKILL: its sockets die with it; the parent logs it, forgets it and starts a new worker.
    os.kill(stopped, signal.SIGKILL)
    died = cluster.wait_log("worker.died", after=mark)
    assert died["worker"] == worker_id(cluster, stopped) and died["exit_code"] == -signal.SIGKILL
    restarted = cluster.wait_log("worker.restarted", after=mark)
    cluster.pids[cluster.pids.index(stopped)] = restarted["pid"]
    cluster.worker_ids[cluster.worker_ids.index(died["worker"])] = restarted["worker"]
    more = spread(cluster, cluster.devices("trent", 2), per_worker=1)
    sent = time.perf_counter()
    status, answer = killer.post("/idwall/api/admin/kill", {"scope": "user", "target": "trent",
                                                            "reason": "after restart", "revoke_devices": False}, token)
    assert status == 200 and time.perf_counter() - sent < FANOUT_TIMEOUT, answer
    assert answer["workers"] == {"reached": 2, "unreached": []}
    assert answer["connections_closed"] == sum(len(v) for v in more.values())
    assert all(c.closed_now() for cs in more.values() for c in cs)


def test_sigterm_drains_every_worker_and_exits_0(cluster: Cluster) -> None:
    device = cluster.devices("carol", 1)[0]
    client = Client(cluster, device)
    assert client.get() == 200
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(15) == 0
    for pid in cluster.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = {line["worker"] for line in cluster.logs if line.get("event") == "worker.stopped"}
    assert stopped == set(cluster.worker_ids)
    left = cluster.store_call(lambda store: store.live_workers(since=0))
    assert left == [], "a drained worker is removed from the workers table"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.port), timeout=1).close()
