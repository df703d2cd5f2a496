"""The TLS listener: context, app start-up, connection tracking, graceful drain.

Python's ``ssl`` defaults are not what a gateway wants, so the context is
built explicitly: TLS 1.2 minimum, no renegotiation, forward-secret AEAD
ciphers only, client certificates optional at the handshake (enrollment needs
none) but accepted only from the device CA. Revocation cannot be checked in
the handshake (no verify callback in ``ssl``), so it is checked when the
connection is resolved against the store.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..assertion import KeySet
from ..config import Config
from ..encoding import sha256
from ..logs import event
from ..pki import load_cert, load_private_key
from ..proxy import Forwarder
from ..cluster import register
from ..node import Node, background_tasks
from ..store import StoreError, open_store
from .app import build_app
from .gateway import FORWARDER

# ECDHE only (forward secrecy), AEAD only; TLS 1.3 suites are fixed by OpenSSL and all qualify.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: seconds a connection may sit without a complete request (idle keep-alive, or headers dribbled in slowly)
#: before it is closed; aiohttp 3.14's default is 3630 s, which lets anyone hold sockets without a
#: certificate for an hour each (slowloris). 75 s is nginx's keep-alive default.
KEEPALIVE_TIMEOUT = 75.0


def server_ssl_context(config: Config) -> ssl.SSLContext:
    """The listener's TLS context (see the module docstring for why each setting)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.load_cert_chain(config.tls.cert, config.tls.key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(config.device_ca.cert))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _gateway_ca_pem(config: Config) -> str:
    """The PEM clients trust for our server certificate: ``ca.pem`` beside the server cert, else the cert."""
    candidate = config.tls.cert.parent / "ca.pem"
    return (candidate if candidate.exists() else config.tls.cert).read_text()


async def make_node(config: Config) -> Node:
    """Open the store and load every key the gateway needs."""
    ledger_key = load_private_key(config.ledger.key)
    store = await open_store(config.store, ledger_key=ledger_key)  # type: ignore[arg-type]
    keys = KeySet.load(config.assertion.key, now=time.time(), overlap=config.assertion.overlap)
    return Node(config=config, store=store, keys=keys, ledger_key=ledger_key,  # type: ignore[arg-type]
                   device_ca_cert=load_cert(config.device_ca.cert),
                   device_ca_key=load_private_key(config.device_ca.key), ca_pem=_gateway_ca_pem(config))


def _track_connections(server: web.Server, node: Node) -> None:
    """Register each TLS connection in the gateway's registry when it is made, and drop it when lost."""
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        node.registry.add(transport, cert_der=der, cert_sha256=sha256(der) if der else None,
                        remote=peer[0] if peer else "")
        node.metrics.connections.set(len(node.registry))

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        # aiohttp tells the server before it drops handler.transport, so the registry key is still there
        if handler.transport is not None:
            node.registry.remove(handler.transport)
        node.metrics.connections.set(len(node.registry))
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


@dataclass
class RunningGateway:
    """A started gateway (for ``serve`` and for tests): its URL, state and how to stop it."""

    node: Node
    runner: web.AppRunner
    port: int
    forwarder: Forwarder
    _tasks: list[asyncio.Task[None]]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def stop(self, drain: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish for up to ``drain`` seconds, then close."""
        node = self.node
        for site in list(self.runner.sites):
            await site.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if node.worker is not None:
            # Not listening and no poller any more: a kill from now on must not wait for this process.
            try:
                await node.store.remove_worker(node.worker.id)
            except StoreError as exc:  # then its heartbeat goes stale within STALE_AFTER instead
                event("worker.deregister_failed", worker=node.worker.id, error=str(exc))
        self.runner._shutdown_timeout = float(drain if drain is not None else node.config.limits.drain_timeout)
        await self.runner.cleanup()
        try:
            await node.flush_last_seen()
        finally:
            await self.forwarder.close()
            await node.store.close()


async def start_gateway(config: Config, *, port: int | None = None, node: Node | None = None) -> RunningGateway:
    """Start the gateway on ``config.listen`` (or ``port``; 0 picks a free one) and return at once.

    As one of several workers (``node.worker`` set) it shares the port with the others (SO_REUSEPORT)
    and registers itself before it listens, so a kill waits for it as soon as it can hold a connection.
    """
    node = node or await make_node(config)
    # Read before registering and listening: every kill committed later is applied by our poller, and every
    # connection accepted later resolves against the revocations committed before.
    node.event_cursor = await node.store.last_event_id()
    if node.worker is not None:
        await register(node.store, node.worker, now=node.clock())
    forwarder = Forwarder(timeout_default=float(config.limits.upstream_timeout))
    await forwarder.start()
    app = build_app(node)
    app[FORWARDER] = forwarder
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True,
                           max_line_size=config.limits.header_size, max_field_size=config.limits.header_size,
                           keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    _track_connections(runner.server, node)
    site = web.TCPSite(runner, config.listen.host, config.listen.port if port is None else port,
                       ssl_context=server_ssl_context(config), backlog=2048, reuse_address=True,
                       reuse_port=node.worker is not None)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    bound = server.sockets[0].getsockname()[1]
    tasks = [asyncio.create_task(background_tasks(node), name="idwall-background")]
    event("gateway.started", url=f"https://{config.listen.host}:{bound}", routes=len(config.routes))
    return RunningGateway(node, runner, bound, forwarder, tasks)


def ca_bundle_path(config: Config) -> Path:
    """Where clients find the certificate to trust for this gateway."""
    candidate = config.tls.cert.parent / "ca.pem"
    return candidate if candidate.exists() else config.tls.cert


__all__ = ["RunningGateway", "ca_bundle_path", "make_node", "server_ssl_context", "start_gateway"]
