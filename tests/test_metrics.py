"""idwall.metrics: the gateway's Prometheus metrics, on a registry of its own, and that they move.

The exposition ``render()`` writes (what ``/idwall/metrics`` serves) is read back with prometheus_client's own
text parser, as a scraper would; the wire tests read it from a real gateway after real requests and a kill.
"""

from __future__ import annotations

import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from idwall.metrics import KILL_BUCKETS, Metrics
from tests.helpers.api import call_fresh
from tests.helpers.gateway import GatewayUnderTest
from tests.helpers.kill import KillBed, Victim


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_of(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, str], float]:
    """The ``idwall_requests_total`` samples as (route, status) -> count."""
    return {(dict(labels)["route"], dict(labels)["status"]): value
            for (name, labels), value in found.items() if name == "idwall_requests_total"}


def test_a_new_gateway_reports_nothing_live_and_nothing_counted() -> None:
    found = samples(Metrics().render())
    assert found[("idwall_live_connections", ())] == 0 and found[("idwall_live_sessions", ())] == 0
    assert found[("idwall_kill_latency_seconds_count", ())] == 0
    assert found[("idwall_kill_apply_seconds_count", ())] == 0
    assert requests_of(found) == {}
    assert not [key for key in found if key[0] == "idwall_kills_total"], "no scope is reported before a kill"


def test_each_gateway_counts_on_a_registry_of_its_own() -> None:
    one, other = Metrics(), Metrics()
    one.kills.labels(scope="user").inc()
    one.connections.set(3)
    assert samples(one.render())[("idwall_kills_total", (("scope", "user"),))] == 1
    assert samples(other.render())[("idwall_live_connections", ())] == 0
    assert not [key for key in samples(other.render()) if key[0] == "idwall_kills_total"]


def test_requests_are_counted_by_route_and_status_when_scraped() -> None:
    metrics = Metrics()
    for key in [("app", 200), ("app", 200), ("app", 502), ("idwall", 404)]:
        metrics.requests[key] += 1
    assert requests_of(samples(metrics.render())) == {("app", "200"): 2, ("app", "502"): 1, ("idwall", "404"): 1}
    metrics.requests[("app", 200)] += 1  # the tally is read at each scrape, not copied once
    assert requests_of(samples(metrics.render()))[("app", "200")] == 3


def test_kill_latency_falls_in_its_bucket() -> None:
    metrics = Metrics()
    metrics.kill_latency.observe(0.003)
    found = samples(metrics.render())
    buckets = {dict(labels)["le"]: value for (name, labels), value in found.items()
               if name == "idwall_kill_latency_seconds_bucket"}
    assert len(buckets) == len(KILL_BUCKETS) + 1  # and +Inf
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1 and buckets["+Inf"] == 1
    assert found[("idwall_kill_latency_seconds_sum", ())] == 0.003


# --- over the wire, after requests -----------------------------------------------------------------


async def test_requests_through_the_gateway_move_their_counters(gateway: GatewayUnderTest) -> None:
    before = requests_of(samples((await call_fresh(gateway, "GET", "/idwall/metrics"))[1]))
    alice = await gateway.device("alice")
    async with gateway.session(alice) as client:
        for path, status in (("/page", 200), ("/page", 200), ("/idwall/nothing-here", 404)):
            async with client.get(gateway.url + path) as resp:
                assert resp.status == status
    async with gateway.session() as anonymous, anonymous.get(gateway.url + "/page") as resp:
        assert resp.status == 403  # no client certificate
    after = requests_of(samples((await call_fresh(gateway, "GET", "/idwall/metrics"))[1]))
    moved = {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}
    assert moved == {("whoami", "200"): 2, ("idwall", "404"): 1, ("whoami", "403"): 1,
                     ("idwall", "200"): 1}, moved  # the last one: the first scrape


# --- over the wire, after a kill ------------------------------------------------------------------


async def test_metrics_count_kills_and_their_latency(bed: KillBed) -> None:
    killer = await bed.token(["kill"])
    victim = await Victim.connect(bed, "heidi")
    try:
        status, _, _, _ = await bed.kill(killer, {"scope": "user", "target": "heidi", "reason": "m",
                                                  "revoke_devices": False})
        assert status == 200
        await victim.closed_times()
    finally:
        await victim.close()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=bed.gw.ssl())) as client:
        async with client.get(bed.gw.url + "/idwall/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert re.search(r'^idwall_kills_total\{scope="user"\} 1\.0$', text, re.M), text
    assert re.search(r"^idwall_kill_latency_seconds_count 1\.0$", text, re.M)
    assert re.search(r'^idwall_kill_latency_seconds_bucket\{le="0\.05"\} 1\.0$', text, re.M), \
        "the cut took longer than 50 ms inside the gateway"
