"""idwall.supervisor over real processes: ``idwall serve --workers 2`` forwards SIGTERM to every worker, each
drains and leaves the workers table, and the parent exits 0 with the port closed.

(How a worker that dies is logged, forgotten and restarted is watched in tests/test_cluster.py, where the
kill that follows must reach the new worker.)
"""

from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.helpers.process import Cluster
from tests.helpers.workers import Client


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
