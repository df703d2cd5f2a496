"""Starting and stopping one gateway process: the node, the engine on the TLS port, and the gateway's own app.

    client ──TLS──▶ engine (idwall.engine.io) ──▶ upstreams (proxied routes)
                          └──unix socket──▶ this package's aiohttp app (/idwall/, /.well-known/idwall/)

The app listens only on a unix socket in a new directory that only this user can enter; the engine is its
one client, and names the client connection of every request it forwards (see :mod:`idwall.web.context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from ..assertion import KeySet
from ..cluster import nudge, register
from ..config import Config
from ..engine.io import Engine
from ..engine.server import Listener, private_socket_path
from ..logs import event
from ..node import Node, background_tasks
from ..pki import load_cert, load_private_key
from ..store import StoreError, open_store
from .app import build_app

#: how long the gateway's own app may take to finish a request once the engine has drained (seconds)
APP_SHUTDOWN = 1.0


def _gateway_ca_pem(config: Config) -> str:
    """The PEM clients trust for our server certificate: ``ca.pem`` beside the server cert, else the cert."""
    return ca_bundle_path(config).read_text()


def ca_bundle_path(config: Config) -> Path:
    """Where clients find the certificate to trust for this gateway."""
    candidate = config.tls.cert.parent / "ca.pem"
    return candidate if candidate.exists() else config.tls.cert


async def make_node(config: Config) -> Node:
    """Open the store and load every key the gateway needs."""
    ledger_key = load_private_key(config.ledger.key)
    store = await open_store(config.store, ledger_key=ledger_key,  # type: ignore[arg-type]
                             pool_size=config.cluster.pool_size)
    keys = KeySet.load(config.assertion.key, now=time.time(), overlap=config.assertion.overlap)
    return Node(config=config, store=store, keys=keys, ledger_key=ledger_key,  # type: ignore[arg-type]
                device_ca_cert=load_cert(config.device_ca.cert),
                device_ca_key=load_private_key(config.device_ca.key), ca_pem=_gateway_ca_pem(config))


@dataclass
class RunningGateway:
    """A started gateway (for ``serve`` and for tests): its URL, state and how to stop it."""

    node: Node
    listener: Listener
    port: int
    _stack: contextlib.AsyncExitStack

    @property
    def engine(self) -> Engine:
        return self.listener.engine

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def stop(self, drain: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish for up to ``drain`` seconds, then close everything."""
        timeout = float(drain if drain is not None else self.node.config.limits.drain_timeout)
        await self.listener.drain(timeout)
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def _own_app(node: Node, engine: Engine, socket_path: str) -> AsyncIterator[None]:
    """The gateway's own aiohttp app on its private unix socket, for as long as the context lasts."""
    runner = web.AppRunner(build_app(node, engine), access_log=None, handle_signals=False,
                           handler_cancellation=True, shutdown_timeout=APP_SHUTDOWN)
    await runner.setup()
    try:
        await web.UnixSite(runner, socket_path, backlog=1024).start()
        yield
    finally:
        await runner.cleanup()
        shutil.rmtree(Path(socket_path).parent, ignore_errors=True)


@contextlib.asynccontextmanager
async def _background(node: Node) -> AsyncIterator[None]:
    task = asyncio.create_task(background_tasks(node), name="idwall-background")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if node.worker is not None:
            # Not listening and no poller any more: a kill from now on must not wait for this process.
            try:
                await node.store.remove_worker(node.worker.id)
            except StoreError as exc:  # then its heartbeat goes stale within STALE_AFTER instead
                event("worker.deregister_failed", worker=node.worker.id, error=str(exc))


@contextlib.asynccontextmanager
async def _store_of(node: Node) -> AsyncIterator[None]:
    try:
        yield
    finally:
        try:
            await node.flush_last_seen()
        finally:
            await node.store.close()


async def start_gateway(config: Config, *, port: int | None = None, node: Node | None = None) -> RunningGateway:
    """Start the gateway on ``config.listen`` (or ``port``; 0 picks a free one) and return at once.

    As one of several workers (``node.worker`` set) it shares the port with the others (SO_REUSEPORT)
    and registers itself before it listens, so a kill waits for it as soon as it can hold a connection.
    """
    node = node or await make_node(config)
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(_store_of(node))
        # Read before registering and listening: every kill committed later is applied by our poller, and every
        # connection accepted later resolves against the revocations committed before.
        node.event_cursor = await node.store.last_event_id()
        if node.worker is not None:
            await register(node.store, node.worker, now=node.clock())
        await stack.enter_async_context(_background(node))
        if node.worker is not None and hasattr(node.store, "listening"):
            # PostgreSQL: a commit on any node wakes this worker's poller at once (LISTEN/NOTIFY), as a local
            # nudge would; after every reconnect too, so the poller replays what it could not hear
            await stack.enter_async_context(node.store.listening(partial(nudge, [node.worker.nudge_address])))
        await stack.enter_async_context(node.webhooks)
        socket_path = private_socket_path()
        listener = Listener(node, internal_socket=socket_path)
        await stack.enter_async_context(_own_app(node, listener.engine, socket_path))
        bound = await listener.listen(config.listen.host, config.listen.port if port is None else port,
                                      reuse_port=node.worker is not None)
    except BaseException:
        await stack.aclose()
        raise
    event("gateway.started", url=f"https://{config.listen.host}:{bound}", routes=len(config.routes))
    return RunningGateway(node, listener, bound, stack)


__all__ = ["RunningGateway", "ca_bundle_path", "make_node", "start_gateway"]
