"""The TLS listener of one gateway process: accepting, the deadline sweep, and the drain on shutdown.

One sweep every :data:`SWEEP_EVERY` seconds checks every client connection's deadline (instead of a timer per
request) and compacts the ones idle for :data:`~idwall.engine.io.COMPACT_AFTER`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time

from ..node import Node
from . import tls
from .edges import IDLE
from .io import COMPACT_AFTER, ClientProtocol, Engine
from .proxied import ProxiedListener

#: how often deadlines are checked (seconds): the resolution of every timeout
SWEEP_EVERY = 0.25

log = logging.getLogger("idwall.engine")


class Listener:
    """Accepts TLS connections into an :class:`~idwall.engine.io.Engine` and keeps their deadlines."""

    def __init__(self, node: Node, *, internal_socket: str) -> None:
        self.engine = Engine(node, internal_socket=internal_socket)
        self._server: asyncio.Server | None = None
        self._proxied: ProxiedListener | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int, *, reuse_port: bool) -> int:
        """Start accepting TLS connections (after a PROXY v2 header from trusted balancers); return the port."""
        limits = self.engine.config.limits
        trusted = self.engine.config.listen.proxy_trusted
        if trusted:
            engine = self.engine
            self._proxied = ProxiedListener(engine.loop, lambda remote: ClientProtocol(engine, remote),
                                            tls.server_context(engine.config), trusted=trusted,
                                            handshake_timeout=float(limits.handshake_timeout))
            bound = self._proxied.listen(host, port, reuse_port=reuse_port)
            self._sweeper = asyncio.ensure_future(self._sweep())
            return bound
        self._server = await self.engine.loop.create_server(
            lambda: ClientProtocol(self.engine), host, port, ssl=tls.server_context(self.engine.config), backlog=2048,
            reuse_address=True, reuse_port=reuse_port, ssl_handshake_timeout=float(limits.handshake_timeout))
        self._sweeper = asyncio.ensure_future(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            # here, not in the event poller: a poller stuck on a dead database connection must still go stale
            self.engine.node.check_staleness(time.monotonic())
            now = self.engine.loop.time()
            for client in list(self.engine.clients):
                if client.deadline and now > client.deadline:
                    try:
                        client.timed_out()
                    except Exception:  # one connection's failure must not stop the sweep for the others
                        log.exception("timing out a connection failed")
                        client.transport.abort()
                elif client.h1 is not None and client.waiting == IDLE and now - client.idle_since > COMPACT_AFTER:
                    client.compact()
            self.engine.pool.sweep(now)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let exchanges finish for up to ``timeout``, then cut."""
        engine = self.engine
        engine.draining = True
        if self._server is not None:
            self._server.close()
        if self._proxied is not None:
            self._proxied.close()
        deadline = self.engine.loop.time() + timeout
        while True:
            for client in list(self.engine.clients):
                if client.ex is None and client.splice is None and not client.blocked:
                    client.closed = True
                    client.transport.close()
            # a closed TLS connection stays registered until the peer answers close_notify, which an idle client
            # may never do: once every exchange has ended, the rest are cut now instead of at the deadline
            if all(c.closed for c in self.engine.clients) or self.engine.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for client in list(self.engine.clients):
            client.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        self.engine.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._proxied is not None:
            await self._proxied.wait_closed()


def private_socket_path() -> str:
    """A path for the gateway's own app's unix socket, in a new directory only this user can enter."""
    directory = tempfile.mkdtemp(prefix="idwall-")
    os.chmod(directory, 0o700)
    return os.path.join(directory, "app.sock")


__all__ = ["Listener", "SWEEP_EVERY", "private_socket_path"]
