"""The kill switch: durable revocation first, then every matching live connection cut, then the answer.

A kill in this process cuts its connections directly; the ``kill`` event it
commits with the revocation reaches every other process (and, with PostgreSQL,
every node), which cut theirs when they read it. Cutting is idempotent, so a
process that sees its own event again does nothing more.

With several workers (``serve --workers N``, see :mod:`idwall.cluster`) the
answer waits, bounded by :data:`~idwall.cluster.FANOUT_TIMEOUT`, until every
other live worker has acknowledged the event with what it cut; the ones that
did not are named in the answer rather than hidden.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol

from .cluster import ACK_POLL, FANOUT_TIMEOUT, STALE_AFTER, Worker, nudge
from .connections import LONG_LIVED, SCOPES, Conn, Registry
from .encoding import b64url_decode
from .errors import BadRequest
from .logs import event
from .metrics import Metrics
from .model import Event, KillResult, LedgerDraft, WorkerRow


class KillStore(Protocol):
    """The part of the store a kill uses: the durable revocation, and the workers' acknowledgements."""

    async def kill(self, *, scope: str, target: str | None, revoke_devices: bool, now: float,
                   draft: LedgerDraft) -> KillResult: ...
    async def live_workers(self, *, since: float) -> list[WorkerRow]: ...
    async def kill_event_id(self, audit_seq: int) -> int | None: ...
    async def event_acks(self, event_id: int) -> dict[str, int]: ...


class Announcer(Protocol):
    """Where a kill is announced (the incident webhooks); ``announce`` must return at once."""

    def announce(self, event_type: str, data: Mapping[str, Any]) -> None: ...


class KillContext(Protocol):
    """What a kill needs from the node it runs on (:class:`idwall.node.Node` is one)."""

    @property
    def store(self) -> KillStore: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def worker(self) -> Worker | None: ...
    @property
    def local_kills(self) -> set[int]: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def webhooks(self) -> Announcer: ...
    def clock(self) -> float: ...
    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """Drop what is cached about these sessions (assertions, last-seen times)."""


@dataclass(frozen=True)
class FanOut:
    """Which worker processes cut their connections before the answer (this one included)."""

    reached: int = 1
    unreached: tuple[str, ...] = ()
    #: connections the other workers cut, by their acknowledgements
    connections_closed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"reached": self.reached, "unreached": list(self.unreached)}


@dataclass(frozen=True)
class KillOutcome:
    """The answer of ``POST /idwall/api/admin/kill``."""

    sessions_revoked: int
    devices_revoked: int
    connections_closed: int
    audit_seq: int
    latency: float
    #: the ``spare`` connection matched the kill: the caller must close it once the answer is written
    spared: bool = False
    workers: FanOut = field(default_factory=FanOut)

    def as_json(self) -> dict[str, Any]:
        return {"sessions_revoked": self.sessions_revoked, "devices_revoked": self.devices_revoked,
                "connections_closed": self.connections_closed, "audit_seq": self.audit_seq,
                "workers": self.workers.as_json()}


MAX_TARGET = 200


def check_request(scope: object, target: object, reason: object, revoke_devices: object) -> tuple[str, str | None]:
    """Validate a kill request's fields; return ``(scope, target)``."""
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}; got {scope!r:.60}")
    if scope == "all":
        if target not in (None, "", "*"):
            raise BadRequest("scope 'all' takes no target")
        target = None
    elif not isinstance(target, str) or not target:
        raise BadRequest(f"scope {scope!r} needs a non-empty string target")
    elif len(target) > MAX_TARGET or not target.isprintable():
        # every id a kill can name is short and printable; anything else would only pad the ledger
        raise BadRequest(f"target must be 1-{MAX_TARGET} printable characters (a session, device, user or "
                         f"group id), got {len(target)} characters")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason is required: say why, it goes into the audit ledger")
    if len(reason) > 500:
        raise BadRequest("reason is longer than 500 characters")
    if not isinstance(revoke_devices, bool):
        raise BadRequest("revoke_devices must be true or false")
    return str(scope), target


def _matching(node: KillContext, scope: str, target: str | None, sessions: tuple[str, ...],
              devices: tuple[str, ...], users: tuple[str, ...]) -> set[Conn]:
    found = set(node.registry.select(scope, target))
    if scope == "all":
        return found  # every connection with a certificate: no id can add one
    found |= node.registry.for_ids(sessions=sessions, devices=devices)
    if scope in ("user", "group", "all") or devices:
        # connections whose certificate belongs to a revoked device but never resolved a session
        found |= node.registry.for_ids(devices=devices)
    return found


async def kill(node: KillContext, *, scope: str, target: str | None, reason: str, revoke_devices: bool,
               actor: str, spare: Conn | None = None) -> KillOutcome:
    """Revoke durably, cut every matching connection on this node, and say what was cut.

    ``spare`` is the connection the kill request itself arrived on: when it matches (an admin killing
    everyone, themselves included) it is not aborted before the answer is written; the caller closes it
    right after, and its session is already revoked, so nothing more is served on it.
    """
    draft = LedgerDraft(type="kill", actor=actor, subject=target or "*",
                        data={"scope": scope, "target": target, "reason": reason, "revoke_devices": revoke_devices})
    began = time.perf_counter()
    result = await node.store.kill(scope=scope, target=target, revoke_devices=revoke_devices, now=node.clock(),
                                 draft=draft)
    committed = time.perf_counter()
    node.local_kills.add(result.audit_seq)
    # who must acknowledge, asked before the cut: the question is on the wire before this loop turns to the
    # teardown of every connection the cut aborts
    peers = asyncio.ensure_future(_peers(node, result.audit_seq)) if node.worker is not None else None
    conns = _matching(node, scope, target, result.sessions, result.devices, result.users)
    spared = spare is not None and spare in conns
    conns.discard(spare)  # type: ignore[arg-type]
    closed = node.registry.cut(conns) + int(spared)
    cut = time.perf_counter() - committed
    node.forget_sessions(result.sessions)
    fanout = await fan_out(node, *await peers) if peers is not None else FanOut()
    closed += fanout.connections_closed
    latency = time.perf_counter() - committed
    node.metrics.kills.labels(scope=scope).inc()
    node.metrics.kill_latency.observe(latency)
    event("kill", actor=actor, scope=scope, target=target, sessions=len(result.sessions),
          devices=len(result.devices), connections=closed, audit_seq=result.audit_seq,
          commit_seconds=round(committed - began, 6), cut_seconds=round(cut, 6),
          workers_reached=fanout.reached, workers_unreached=list(fanout.unreached))
    if fanout.unreached:
        event("kill.unreached", level=logging.ERROR, audit_seq=result.audit_seq, workers=list(fanout.unreached))
    node.webhooks.announce("kill", {"actor": actor, "scope": scope, "target": target, "reason": reason,
                                    "revoke_devices": revoke_devices, "sessions_revoked": len(result.sessions),
                                    "devices_revoked": len(result.devices), "connections_closed": closed,
                                    "audit_seq": result.audit_seq, "workers_unreached": list(fanout.unreached)})
    return KillOutcome(len(result.sessions), len(result.devices), closed, result.audit_seq, latency, spared,
                       fanout)


async def _peers(node: KillContext, audit_seq: int) -> tuple[list[WorkerRow], int | None]:
    """The other live workers, and the id of the event of kill ``audit_seq`` they acknowledge."""
    assert node.worker is not None
    me = node.worker
    peers = [w for w in await node.store.live_workers(since=node.clock() - STALE_AFTER) if w.id != me.id]
    if not peers:
        return [], None
    nudge(w.nudge for w in peers if w.nudge and w.host == me.host)
    return peers, await node.store.kill_event_id(audit_seq)


async def fan_out(node: KillContext, peers: list[WorkerRow], event_id: int | None, *,
                  timeout: float = FANOUT_TIMEOUT) -> FanOut:
    """Wait (at most ``timeout``) until each of ``peers`` acknowledged event ``event_id`` (a kill).

    Called after this process committed the kill and cut its own connections. Workers registered after the
    commit are not waited for: they started listening after the revocation was durable, so every connection
    they hold resolved against it.
    """
    if not peers:
        return FanOut()
    wanted = {w.id for w in peers}
    acks: dict[str, int] = {}
    deadline = time.perf_counter() + timeout
    while event_id is not None:
        acks = await node.store.event_acks(event_id)
        if wanted <= acks.keys() or time.perf_counter() >= deadline:
            break
        await asyncio.sleep(ACK_POLL)
    reached = wanted & acks.keys()
    return FanOut(1 + len(reached), tuple(sorted(wanted - reached)), sum(acks[w] for w in reached))


def apply_event(node: KillContext, ev: Event) -> int | None:
    """React to a trust event committed by any process (this one included).

    For a kill committed by another process, return how many connections this one cut (the poller
    acknowledges it with that number); None for everything else.
    """
    payload = ev.payload
    if ev.kind == "kill":
        if payload.get("audit_seq") in node.local_kills:
            node.local_kills.discard(payload["audit_seq"])
            return None
        # The same selection as the committing process made, so every worker counts the same way. An event of a
        # scope the registry indexes carries no ids (see idwall.store): the connections found are what it cut here.
        conns = _matching(node, payload.get("scope", ""), payload.get("target"), tuple(payload.get("sessions", ())),
                          tuple(payload.get("devices", ())), ())
        ended = payload.get("sessions") or {conn.session_id for conn in conns if conn.session_id}
        closed = node.registry.cut(conns)
        node.forget_sessions(ended)
        # the event's time is the committing process's clock as the kill began: an upper bound from its commit
        node.metrics.kill_apply.observe(max(0.0, node.clock() - ev.time))
        return closed
    elif ev.kind == "session.end":
        ended = node.registry.for_ids(sessions=[payload["session"]])
        node.registry.invalidate(ended)
        node.forget_sessions([payload["session"]])
        # A WebSocket or download in flight never resolves again: it ends with its session (a logout).
        node.registry.cut({conn for conn in ended if conn.kind in LONG_LIVED})
    elif ev.kind == "session.login":
        node.registry.invalidate(node.registry.for_ids(devices=[payload["device"]]))
    elif ev.kind in ("user.changed", "device.changed"):
        node.registry.invalidate(node.registry.for_ids(users=[payload.get("user", "")],
                                                   devices=[payload.get("device", "")]))
        if payload.get("retired_cert"):
            # A renewed device's old certificate: requests on it no longer resolve (invalidated above), and
            # what never comes back to be resolved (a WebSocket, a download, a tunnel) ends here.
            retired = node.registry.by_cert(b64url_decode(payload["retired_cert"]))
            node.registry.cut({conn for conn in retired if conn.kind in LONG_LIVED})
    return None
