"""This process's live state (the node): connections, what they resolved to, keys, caches, metrics.

A connection is resolved once (certificate -> device -> user -> session) and then served from
memory: the store is consulted again only when an event marks the connection stale (login,
logout, kill, a change to the user). Nothing here knows HTTP: the engine and the web layer above
both read and change the node, and the kill switch below it takes only the narrow view it needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from . import access
from .access import certificate_expired
from .assertion import AssertionCache, KeySet, PreparedClaims
from .cluster import HEARTBEAT_EVERY, Worker
from .config import Config, Route
from .connections import LONG_LIVED, Conn, Registry
from .encoding import b64url_encode
from .incident.delivery import Webhooks
from .killswitch import apply_event
from .logs import event
from .metrics import Metrics
from .model import Resolved, Session
from .store.base import Store

@dataclass
class Node:
    """This process's live state: config, store, keys, live connections, caches, metrics."""

    config: Config
    store: Store
    keys: KeySet
    ledger_key: ec.EllipticCurvePrivateKey
    device_ca_cert: x509.Certificate
    device_ca_key: Any
    ca_pem: str
    registry: Registry = field(default_factory=Registry)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    assertion_cache: AssertionCache = field(default_factory=AssertionCache)
    #: last request time per session, kept in memory and flushed to the store in batches
    last_seen: dict[str, float] = field(default_factory=dict)
    #: what the last flush wrote of ``last_seen`` (a time not changed since is not written again)
    flushed_seen: dict[str, float] = field(default_factory=dict)
    event_cursor: int = 0
    #: audit seqs of kills this process already applied itself
    local_kills: set[int] = field(default_factory=set)
    #: this process's identity when it is one of several workers (``serve --workers N``); None when alone
    worker: "Worker | None" = None
    #: what the access decisions need from the config, prepared once
    access: access.AccessConfig = field(init=False)
    #: the incident webhooks: kills and incident stages are announced here, never waited for
    webhooks: Webhooks = field(init=False)
    #: when (time.monotonic) this process last read the trust events; past cluster.max_staleness it is stale
    heard_at: float = field(default_factory=time.monotonic)
    #: True while this process cannot know it has heard every kill: it serves nothing until it has caught up
    stale: bool = False

    def __post_init__(self) -> None:
        self.access = access.AccessConfig.from_config(self.config)
        self.webhooks = Webhooks(self.config.incident.webhooks, clock=self.clock)

    # -- connections ------------------------------------------------------------------------------

    async def resolve(self, conn: Conn) -> Resolved | None:
        """What ``conn``'s certificate maps to now; reads the store only when the connection is stale."""
        if conn.cert_sha256 is None:
            return None
        if not conn.stale:
            return conn.resolved
        async with conn.lock:
            while conn.stale:
                epoch, generation = self.registry.epoch, conn.epoch
                resolved = await self.store.resolve_certificate(conn.cert_sha256, now=self.clock())
                if conn.killed:
                    raise ConnectionResetError("connection was killed")
                if epoch != self.registry.epoch or generation != conn.epoch:
                    # a kill, or a change to this connection (logout, demotion), landed while we read:
                    # read again so we never bind what it revoked
                    continue
                self.registry.bind(conn, resolved)
                if resolved and resolved.session:
                    self.last_seen.setdefault(resolved.session.id, resolved.session.last_seen)
        return conn.resolved

    def heard(self, now: float) -> None:
        """The trust events were just read up to the newest (``now`` is ``time.monotonic()``)."""
        self.heard_at = now
        self.metrics.store_connected.set(1)
        if self.stale:
            self.stale = False
            event("store.caught_up", level=logging.WARNING)

    def check_staleness(self, now: float) -> None:
        """Past ``cluster.max_staleness`` without hearing the store: refuse everything, cut what never re-resolves.

        A WebSocket, a download or a tunnel is not resolved again per request, so a kill this process has not
        heard would not end it: they are cut here. Requests are refused (503) by the engine while stale.
        """
        lag = now - self.heard_at
        self.metrics.event_lag.set(lag)
        if lag > HEAR_WITHIN:
            self.metrics.store_connected.set(0)
        if self.stale or lag <= self.config.cluster.max_staleness:
            return
        self.stale = True
        doomed = [conn for conn in self.registry if conn.kind in LONG_LIVED]
        cut = self.registry.cut(doomed)
        event("store.stale", level=logging.ERROR, seconds=round(lag, 1),
              max_staleness=self.config.cluster.max_staleness, connections_cut=cut)

    def live_session(self, conn: Conn, *, now: float) -> Session | None:
        """The session on ``conn`` if it is still within ``max_age`` and ``idle_timeout``."""
        return access.live_session(conn.resolved, now=now, seen=self.last_seen,
                                   idle_timeout=self.config.session.idle_timeout)

    def cut_expired_streams(self) -> int:
        """Cut WebSockets and streams whose session has passed ``max_age`` or been revoked, or whose device
        certificate has expired.

        A request on an idle connection is checked when it arrives, but a WebSocket or a download can
        outlive its session; it must not. Idle keep-alive connections are left open: the person signs in
        again over them.
        """
        now = self.clock()
        doomed = [conn for conn in self.registry
                  if conn.kind in LONG_LIVED and conn.resolved is not None
                  and conn.resolved.session is not None
                  and (conn.resolved.session.expires_at <= now or conn.resolved.session.revoked_at is not None
                       or certificate_expired(conn.resolved, now=now))]
        if doomed:
            event("session.expired.cut", connections=len(doomed),
                  sessions=sorted({c.session_id for c in doomed if c.session_id}))
        return self.registry.cut(doomed)

    def touch(self, session: Session, now: float) -> None:
        self.last_seen[session.id] = now

    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """Drop what is cached about sessions that ended (their assertions and last-seen times)."""
        session_ids = list(session_ids)
        self.assertion_cache.drop_sessions(session_ids)
        for session_id in session_ids:
            self.last_seen.pop(session_id, None)
            self.flushed_seen.pop(session_id, None)

    async def flush_last_seen(self) -> None:
        """Write the last-seen times that changed since the last flush (called periodically, off the request path).

        Only those: 10,000 sessions on keep-alive were 10,000 row updates every flush, on every node, times that
        had not moved. Times older than ``session.max_age`` belong to sessions that have ended either way; they
        are written once more if they changed and then forgotten, so the maps do not grow with every session ever
        seen.
        """
        flushed = self.flushed_seen
        batch = {sid: seen for sid, seen in self.last_seen.items() if flushed.get(sid) != seen}
        await self.store.touch_sessions(batch)
        flushed.update(batch)
        horizon = self.clock() - self.config.session.max_age
        for sid, seen in list(self.last_seen.items()):
            if seen < horizon and flushed.get(sid) == seen:
                del self.last_seen[sid]
                del flushed[sid]

    # -- assertions -------------------------------------------------------------------------------

    def prepared_claims(self, conn: Conn, route: Route) -> PreparedClaims:
        """The assertion claims of ``conn`` on ``route`` that do not change per request (built once per binding)."""
        prepared = conn.claims.get(route.name)
        if prepared is not None:
            return prepared
        resolved = conn.resolved
        assert resolved is not None and resolved.session is not None
        session = resolved.session
        credential = next((c for c in resolved.credentials if c.id == session.credential_id), None)
        prepared = PreparedClaims(
            iss=self.config.public_url, aud=route.audience or route.name,
            user={"id": resolved.user.id, "email": resolved.user.email or None, "name": resolved.user.name or None,
                  "groups": resolved.user.groups},
            session={"id": session.id, "auth_time": int(session.auth_time), "amr": session.amr},
            device={"id": resolved.device.id, "name": resolved.device.name,
                    "credential_id": b64url_encode(credential.id if credential else session.credential_id),
                    "enrolled_at": int(resolved.device.enrolled_at), "approved_by": resolved.device.approved_by},
            cert_sha256=session.cert_sha256, ttl=self.config.assertion.ttl, bind_request=route.bind_request)
        conn.claims[route.name] = prepared
        return prepared

    def reload_keys_if_needed(self) -> None:
        now = self.clock()
        if self.keys.needs_reload(now=now):
            self.keys = KeySet.load(self.config.assertion.key, now=now, overlap=self.config.assertion.overlap)
            event("keys.reloaded", kid=self.keys.current_kid)




#: how often the event poller looks for trust events committed by other processes (seconds): one indexed
#: SELECT on the store thread per tick. Workers are woken at once by a nudge (see idwall.workers), so this
#: is the fallback bound. Measured idle cost per process: 0.7% of a core at 100 ms, 1.6% at 50 ms, 2.7% at
#: 20 ms (docs/benchmarks.md).
EVENT_POLL = 0.05
#: a process that read the trust events less than this long ago (seconds) hears the store
HEAR_WITHIN = 2.0
#: what a stale process answers (503) to every request but health and metrics
STALE_DETAIL = ("this gateway node has not heard its store for longer than cluster.max_staleness, so it cannot know "
                "it has not missed a kill; it serves nothing until it has caught up")
KEYS_EVERY = 1.0
#: how often batched last-seen times are written (seconds)
FLUSH_EVERY = 5.0


async def background_tasks(node: Node) -> None:
    """Periodic work: follow trust events from other processes, heartbeat, flush last-seen times.

    ``node.event_cursor`` is set by whoever starts the gateway, before it listens (see idwall.web.server). As a
    worker, every kill event applied here is acknowledged with the number of connections it cut, and the
    heartbeat is written from this same loop, so "alive" means "this poller is running".
    """
    loop = asyncio.get_running_loop()
    last_flush = last_beat = last_keys = loop.time()
    while True:
        if node.worker is not None:
            await node.worker.wait(EVENT_POLL)
        else:
            await asyncio.sleep(EVENT_POLL)
        try:
            acks: list[tuple[int, int]] = []
            for ev in await node.store.events_after(node.event_cursor):
                node.event_cursor = ev.id
                closed = apply_event(node, ev)
                if closed is not None:
                    acks.append((ev.id, closed))
            node.heard(time.monotonic())
            now = loop.time()
            if node.worker is not None:
                if acks:
                    await node.store.ack_events(node.worker.id, acks, now=node.clock())
                if now - last_beat >= HEARTBEAT_EVERY:
                    await node.store.heartbeat_worker(node.worker.id, node.clock())
                    last_beat = now
            if now - last_keys >= KEYS_EVERY:
                node.reload_keys_if_needed()  # picks up `idwall keys rotate` without a stat on every request
                node.cut_expired_streams()
                last_keys = now
            if now - last_flush >= FLUSH_EVERY:
                await node.flush_last_seen()
                last_flush = now
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep following events; the store may come back
            event("background.error", level=logging.WARNING, error=str(exc))
