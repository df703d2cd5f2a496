"""idwall.cluster over real processes (``idwall serve --workers 2``): a kill answers only once every live worker
has cut, and a worker that cannot hear the nudge is named in the answer, not waited for.

The gateway runs as ``python -m idwall serve --workers 2`` in front of a threaded echo upstream. Clients
are plain blocking TLS sockets (no event loop touches them), so "closed" means what the kernel says:
right after the kill's answer arrives, every victim socket must already be readable with EOF or reset.
Which worker holds which connection is read from ``/proc`` (``tests/helpers/workers.py``), so the test
checks the spread itself instead of trusting the gateway's word.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from idwall.cluster import FANOUT_TIMEOUT
from tests.helpers.process import Cluster
from tests.helpers.workers import kill_client_on, spread, worker_id


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
