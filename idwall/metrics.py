"""Prometheus metrics, on a registry of the gateway's own (several gateways can share a process in tests)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

KILL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The gateway's metrics: connections, sessions, kills, requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("idwall_live_connections", "Live client connections", registry=self.registry)
        self.sessions = Gauge("idwall_live_sessions", "Sessions with at least one live connection",
                              registry=self.registry)
        self.kills = Counter("idwall_kills", "Kills by scope", ["scope"], registry=self.registry)
        self.store_connected = Gauge("idwall_store_connected",
                                     "1 while this process hears the store's trust events, 0 while it does not",
                                     registry=self.registry)
        self.event_lag = Gauge("idwall_event_lag_seconds",
                               "Seconds since this process last read the store's trust events", registry=self.registry)
        self.kill_latency = Histogram("idwall_kill_latency_seconds",
                                      "Time from the durable revocation commit to the last connection closed",
                                      buckets=KILL_BUCKETS, registry=self.registry)
        self.kill_apply = Histogram("idwall_kill_apply_seconds",
                                    "For a kill committed by another process or node: time from the kill's event to "
                                    "this process's last connection closed", buckets=KILL_BUCKETS,
                                    registry=self.registry)
        #: answered requests by (route, status): a plain tally the engine bumps per request (a labelled
        #: Counter takes a lock on every increment), turned into idwall_requests_total when scraped
        self.requests: Tally[tuple[str, int]] = Tally()
        self.registry.register(_RequestsCollector(self.requests))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RequestsCollector(Collector):
    def __init__(self, tally: Tally[tuple[str, int]]) -> None:
        self._tally = tally

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("idwall_requests", "Answered requests by route and status (route 'idwall': "
                                     "the gateway's own endpoints)", labels=["route", "status"])
        for (route, status), count in sorted(self._tally.items()):
            family.add_metric([route, str(status)], count)
        yield family
