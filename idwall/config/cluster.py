"""The ``cluster`` section: how each process of a node uses the PostgreSQL database several nodes share.

``max_staleness`` is how long a process may go without hearing the store's trust events (a kill on another node
is one) before it refuses every request and cuts its WebSockets, streams and tunnels, until it has caught up:
past that bound it cannot know it has not missed a kill.

``pool_size`` bounds the connections one process opens to the database (each gateway worker process has a pool
of its own, so a node holds ``workers × pool_size``; keep that under the server's ``max_connections`` divided
by the number of nodes).
"""

from __future__ import annotations

from typing import Any

from .checks import Ctx
from .model import ClusterConfig

__all__ = ["MAX_POOL_SIZE", "cluster_section"]

#: a process serving requests needs few connections at once; more only crowds the server's connection slots
MAX_POOL_SIZE = 200


def cluster_section(ctx: Ctx, value: Any) -> ClusterConfig:
    """``cluster: {pool_size: N, max_staleness: 30s}``, each key optional."""
    m = ctx.mapping(value, ("cluster",), ("pool_size", "max_staleness"))
    return ClusterConfig(pool_size=ctx.integer(m, ("cluster",), "pool_size", ClusterConfig.pool_size, low=1,
                                               high=MAX_POOL_SIZE, unit=" (connections per process)"),
                         max_staleness=ctx.duration(m, ("cluster",), "max_staleness", ClusterConfig.max_staleness,
                                                    minimum=1))
