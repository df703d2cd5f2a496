"""idwall.metrics: the gateway's Prometheus metrics, on a registry of its own, and that they move.

The counters and gauges are read back from ``render()`` (the exposition format ``/idwall/metrics`` serves),
as Prometheus would scrape them; the last test reads them over the wire after a real kill.
"""

from __future__ import annotations

import re

import aiohttp

from tests.helpers.kill import KillBed, Victim


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
