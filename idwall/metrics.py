"""Prometheus metrics, on a registry of the gateway's own (several gateways can share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

KILL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The gateway's metrics: connections, sessions, kills, requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("idwall_live_connections", "Live client connections", registry=self.registry)
        self.sessions = Gauge("idwall_live_sessions", "Sessions with at least one live connection",
                              registry=self.registry)
        self.kills = Counter("idwall_kills", "Kills by scope", ["scope"], registry=self.registry)
        self.kill_latency = Histogram("idwall_kill_latency_seconds",
                                      "Time from the durable revocation commit to the last connection closed",
                                      buckets=KILL_BUCKETS, registry=self.registry)
        self.requests = Counter("idwall_requests", "Proxied requests by route and status", ["route", "status"],
                                registry=self.registry)

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
