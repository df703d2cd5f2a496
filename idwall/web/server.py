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
import signal
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
from ..pki import cert_pem, load_cert, load_private_key
from ..proxy import Forwarder
from ..store import StoreError, open_store
from ..workers import register, supervise
from .app import build_app
from .gateway import GATEWAY, Gateway, background_tasks

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


async def make_gateway(config: Config) -> Gateway:
    """Open the store and load every key the gateway needs."""
    ledger_key = load_private_key(config.ledger.key)
    store = await open_store(config.store, ledger_key=ledger_key)  # type: ignore[arg-type]
    keys = KeySet.load(config.assertion.key, now=time.time(), overlap=config.assertion.overlap)
    return Gateway(config=config, store=store, keys=keys, ledger_key=ledger_key,  # type: ignore[arg-type]
                   device_ca_cert=load_cert(config.device_ca.cert),
                   device_ca_key=load_private_key(config.device_ca.key), ca_pem=_gateway_ca_pem(config))


def _track_connections(server: web.Server, gw: Gateway) -> None:
    """Register each TLS connection in the gateway's registry when it is made, and drop it when lost."""
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        gw.registry.add(transport, cert_der=der, cert_sha256=sha256(der) if der else None,
                        remote=peer[0] if peer else "")
        gw.metrics.connections.set(len(gw.registry))

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        # aiohttp tells the server before it drops handler.transport, so the registry key is still there
        if handler.transport is not None:
            gw.registry.remove(handler.transport)
        gw.metrics.connections.set(len(gw.registry))
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


@dataclass
class RunningGateway:
    """A started gateway (for ``serve`` and for tests): its URL, state and how to stop it."""

    gateway: Gateway
    runner: web.AppRunner
    port: int
    _tasks: list[asyncio.Task[None]]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def stop(self, drain: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish for up to ``drain`` seconds, then close."""
        gw = self.gateway
        for site in list(self.runner.sites):
            await site.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if gw.worker is not None:
            # Not listening and no poller any more: a kill from now on must not wait for this process.
            try:
                await gw.store.remove_worker(gw.worker.id)
            except StoreError as exc:  # then its heartbeat goes stale within STALE_AFTER instead
                event("worker.deregister_failed", worker=gw.worker.id, error=str(exc))
        self.runner._shutdown_timeout = float(drain if drain is not None else gw.config.limits.drain_timeout)
        await self.runner.cleanup()
        try:
            await gw.flush_last_seen()
        finally:
            if gw.forwarder is not None:
                await gw.forwarder.close()
            await gw.store.close()


async def start_gateway(config: Config, *, port: int | None = None, gateway: Gateway | None = None) -> RunningGateway:
    """Start the gateway on ``config.listen`` (or ``port``; 0 picks a free one) and return at once.

    As one of several workers (``gateway.worker`` set) it shares the port with the others (SO_REUSEPORT)
    and registers itself before it listens, so a kill waits for it as soon as it can hold a connection.
    """
    gw = gateway or await make_gateway(config)
    # Read before registering and listening: every kill committed later is applied by our poller, and every
    # connection accepted later resolves against the revocations committed before.
    gw.event_cursor = await gw.store.last_event_id()
    if gw.worker is not None:
        await register(gw.store, gw.worker, now=gw.clock())
    gw.forwarder = Forwarder(timeout_default=float(config.limits.upstream_timeout))
    await gw.forwarder.start()
    app = build_app(gw)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True,
                           max_line_size=config.limits.header_size, max_field_size=config.limits.header_size,
                           keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    _track_connections(runner.server, gw)
    site = web.TCPSite(runner, config.listen.host, config.listen.port if port is None else port,
                       ssl_context=server_ssl_context(config), backlog=2048, reuse_address=True,
                       reuse_port=gw.worker is not None)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    bound = server.sockets[0].getsockname()[1]
    tasks = [asyncio.create_task(background_tasks(gw), name="idwall-background")]
    event("gateway.started", url=f"https://{config.listen.host}:{bound}", routes=len(config.routes))
    return RunningGateway(gw, runner, bound, tasks)


async def _serve(config: Config) -> int:
    running = await start_gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    event("gateway.stopping", drain_timeout=config.limits.drain_timeout)
    await running.stop()
    event("gateway.stopped")
    return 0


def run_server(config: Config, *, workers: int = 1) -> int:
    """Run the gateway until SIGTERM/SIGINT, drain, and return the exit code (uvloop when installed).

    ``workers`` > 1 runs that many gateway processes on the port under a supervising parent
    (:func:`idwall.workers.supervise`); 1 runs the gateway in this process, as before.
    """
    if workers < 1:
        raise SystemExit(f"idwall: error: --workers must be at least 1, got {workers}")
    if workers > 1:
        return supervise(config, workers)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))


def ca_bundle_path(config: Config) -> Path:
    """Where clients find the certificate to trust for this gateway."""
    candidate = config.tls.cert.parent / "ca.pem"
    return candidate if candidate.exists() else config.tls.cert


__all__ = ["GATEWAY", "RunningGateway", "ca_bundle_path", "cert_pem", "make_gateway", "run_server",
           "server_ssl_context", "start_gateway"]
