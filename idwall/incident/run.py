"""Running a playbook on a node (I/O): plan from the store, a dry run from a snapshot, a real run stage by stage.

A dry run reads one snapshot and writes nothing at all. A real run records ``incident.start`` with its plan,
then runs the stages in order, each committed (with its ``incident.stage`` entry) before the next begins:
the kills of a stage go through :func:`idwall.killswitch.kill` per user or device, so every worker cuts its
connections and each kill has its own ledger entry, and the stage's transaction then does the rest and lists
those kills. A run cut short (process killed, node lost) leaves exactly its committed stages; :func:`resume`
continues from the first one that did not commit. Webhooks ``incident.start``, ``incident.stage`` and
``incident.end`` are announced (never waited for).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import killswitch
from ..config.model import Playbook
from ..connections import Conn
from ..errors import BadRequest, Conflict, NotFound
from ..logs import event
from ..node import Node
from ..model import Incident, IncidentSnapshot, LedgerDraft, StageWork
from .plan import Member, Plan, PlannedStage, Targets, plan_from_json, plan_json, plan_playbook
from .report import Holdings, StageResult, dry_run_results, report_json

__all__ = ["RUNNING", "Prepared", "dry_run", "end", "find_playbook", "incident_or_404", "new_incident", "prepare",
           "resume", "run_stage", "run_stages", "start", "started", "state_of", "status"]

#: incidents whose stages this process is running right now (another process's run reads as interrupted)
RUNNING: set[str] = set()
#: the steps that end the users' sessions and cut their connections (a device sent back to approval too)
_CUTTING = frozenset({"kill", "revoke_devices", "require_reapproval"})


@dataclass(frozen=True)
class Prepared:
    """A playbook's plan against the store as it is now, and the members it was made from."""

    playbook: Playbook
    plan: Plan
    members: tuple[Member, ...]
    snapshot: IncidentSnapshot


def find_playbook(node: Node, name: Any) -> Playbook:
    """The configured playbook ``name``; 404 naming the ones that exist."""
    if not isinstance(name, str) or not name:
        raise BadRequest("playbook must be the name of a configured playbook")
    for playbook in node.config.incident.playbooks:
        if playbook.name == name:
            return playbook
    known = ", ".join(p.name for p in node.config.incident.playbooks) or "none are configured"
    raise NotFound(f"no playbook {name[:64]!r} (incident.playbooks: {known})")


def _members(snapshot: IncidentSnapshot) -> tuple[Member, ...]:
    return tuple(Member(u.id, u.groups, u.admin) for u in snapshot.users)


async def prepare(node: Node, playbook: Playbook, targets: Targets) -> Prepared:
    """The plan of ``playbook`` over who exists now (BadRequest when the targets do not fit it)."""
    snapshot = await node.store.incident_snapshot(now=node.clock())
    members = _members(snapshot)
    plan = plan_playbook(playbook, members, privileged_groups=node.config.privileged.groups, tokens=snapshot.tokens,
                         targets=targets, device_owners=snapshot.device_owners)
    return Prepared(playbook, plan, members, snapshot)


def _connections_by_user(node: Node) -> dict[str, int]:
    counts: dict[str, int] = {}
    for conn in node.registry:
        if conn.user_id is not None:
            counts[conn.user_id] = counts.get(conn.user_id, 0) + 1
    return counts


def dry_run(node: Node, prepared: Prepared) -> dict[str, Any]:
    """What each stage would cut, from the snapshot and this node's live connections; nothing is written."""
    snap = prepared.snapshot
    holdings = Holdings(sessions=snap.sessions, devices=snap.devices, credentials=snap.credentials,
                        connections=_connections_by_user(node))
    report = report_json(prepared.plan, dry_run_results(prepared.plan, holdings), prepared.members, dry_run=True)
    return {**report, "trigger": prepared.playbook.trigger}


def new_incident(node: Node, prepared: Prepared, *, reason: str, targets: Targets,
                 actor: str) -> tuple[Incident, dict[str, Any]]:
    """The incident a run will record, and the ``data`` of its ``incident.start`` entry."""
    incident_id = "inc-" + secrets.token_hex(8)
    plan = prepared.plan
    data = {"incident_id": incident_id, "playbook": plan.playbook, "reason": reason,
            "targets": {"users": list(targets.users), "devices": list(targets.devices)}, "stages": len(plan.stages)}
    incident = Incident(incident_id, plan.playbook, reason, actor, node.clock(), plan_json(plan), len(plan.stages),
                        0, 0)
    return incident, data


async def started(node: Node, incident_id: str, data: dict[str, Any]) -> Incident:
    """After ``incident.start`` committed: log and announce it; the stored incident."""
    incident = await incident_or_404(node, incident_id)
    event("incident.start", incident=incident.id, playbook=incident.playbook, actor=incident.actor,
          stages=incident.stages_total, audit_seq=incident.audit_seq)
    node.webhooks.announce("incident.start", {**data, "actor": incident.actor, "audit_seq": incident.audit_seq})
    return incident


async def start(node: Node, prepared: Prepared, *, reason: str, targets: Targets, actor: str) -> Incident:
    """Record a run started by an automation token (no signature: every step only takes access away)."""
    incident, data = new_incident(node, prepared, reason=reason, targets=targets, actor=actor)
    await node.store.start_incident(incident, LedgerDraft("incident.start", actor, incident.id, data))
    return await started(node, incident.id, data)


async def _kill(node: Node, incident: Incident, stage: PlannedStage, *, scope: str, target: str,
                spare: Conn | None) -> killswitch.KillOutcome:
    return await killswitch.kill(node, scope=scope, target=target, revoke_devices="revoke_devices" in stage.steps,
                                 reason=f"incident {incident.id} stage {stage.number} ({incident.playbook}): "
                                        f"{incident.reason}"[:500],
                                 actor=incident.actor, spare=spare)


async def run_stage(node: Node, incident: Incident, stage: PlannedStage, *,
                    spare: Conn | None = None) -> tuple[StageResult, bool]:
    """Run one stage and commit it; the result, and whether ``spare`` (the asking connection) must close."""
    steps = set(stage.steps)
    kills: list[int] = []
    sessions = devices = connections = 0
    failed: list[tuple[str, str]] = []
    spared = False
    if steps & _CUTTING:
        for scope, targets in (("user", stage.users), ("device", stage.devices)):
            for target in targets:
                outcome = await _kill(node, incident, stage, scope=scope, target=target, spare=spare)
                kills.append(outcome.audit_seq)
                sessions += outcome.sessions_revoked
                devices += outcome.devices_revoked
                connections += outcome.connections_closed
                spared = spared or outcome.spared
                if outcome.workers.unreached:
                    failed.append((target, "workers did not confirm the cut: " + ", ".join(outcome.workers.unreached)))
    work = StageWork(users=stage.users, reapprove="require_reapproval" in steps and "revoke_devices" not in steps,
                     suspect="suspect_passkeys" in steps,
                     tokens=stage.tokens if "revoke_tokens" in steps else (),
                     fresh_auth=stage.fresh_auth if "raise_fresh_auth" in steps else None,
                     block_code_enrollment="block_code_enrollment" in steps)
    data = {"incident_id": incident.id, "number": stage.number, "part": stage.part, "steps": list(stage.steps),
            "users": list(stage.users), "devices": list(stage.devices), "kills": kills,
            "fresh_auth": work.fresh_auth, "block_code_enrollment": work.block_code_enrollment}
    partial = {"sessions_revoked": sessions, "devices_revoked": devices, "connections_closed": connections,
               "failed": [list(f) for f in failed]}
    commit = await node.store.commit_incident_stage(incident.id, stage.number, work, result=partial, now=node.clock(),
                                                    draft=LedgerDraft("incident.stage", incident.actor, incident.id,
                                                                      data))
    # a raised fresh_auth or a device back to approval changes what this node's connections may do: re-resolve
    node.registry.invalidate(node.registry.for_ids(users=stage.users))
    result = StageResult(number=stage.number, sessions_revoked=sessions, devices_revoked=devices,
                         connections_closed=connections, tokens_revoked=len(commit.tokens_revoked),
                         passkeys_marked_suspect=len(commit.credentials_suspect),
                         devices_to_reapprove=len(commit.devices_reapproval), failed=tuple(failed),
                         audit_seq=commit.audit_seq)
    event("incident.stage", incident=incident.id, stage=stage.number, part=stage.part, users=len(stage.users),
          sessions=sessions, connections=connections, audit_seq=commit.audit_seq)
    node.webhooks.announce("incident.stage", {
        "incident_id": incident.id, "playbook": incident.playbook, "number": stage.number, "part": stage.part,
        "steps": list(stage.steps), "users": len(stage.users), "sessions_revoked": sessions,
        "devices_revoked": devices, "connections_closed": connections,
        "tokens_revoked": len(commit.tokens_revoked), "passkeys_marked_suspect": len(commit.credentials_suspect),
        "devices_to_reapprove": len(commit.devices_reapproval), "failed": len(failed), "audit_seq": commit.audit_seq})
    return result, spared


async def run_stages(node: Node, incident: Incident, *, spare: Conn | None = None) -> bool:
    """Run every stage not yet committed, in order; whether ``spare`` must be closed after the answer."""
    plan = plan_from_json(incident.plan)
    spared = False
    RUNNING.add(incident.id)
    try:
        for stage in plan.stages[incident.stages_committed:]:
            _, cut_spare = await run_stage(node, incident, stage, spare=spare)
            spared = spared or cut_spare
    finally:
        RUNNING.discard(incident.id)
    return spared


async def incident_or_404(node: Node, incident_id: str) -> Incident:
    """The stored incident, or 404."""
    incident = await node.store.get_incident(incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id[:64]!r}")
    return incident


async def resume(node: Node, incident_id: str, *, spare: Conn | None = None) -> tuple[Incident, bool]:
    """Continue an interrupted run from its first uncommitted stage (409 if it ended or is running here)."""
    incident = await incident_or_404(node, incident_id)
    if incident.ended_at is not None:
        raise Conflict(f"incident {incident.id} has ended; start a new run instead")
    if incident.id in RUNNING:
        raise Conflict(f"incident {incident.id} is running on this node now")
    spared = await run_stages(node, incident, spare=spare)
    return await incident_or_404(node, incident_id), spared


def state_of(incident: Incident, *, running: bool) -> str:
    """``running`` (on this node), ``interrupted``, ``complete`` (every stage committed, still active), ``ended``.

    ``running`` must be read from :data:`RUNNING` *before* ``incident`` was read from the store: a run that ends
    in between then shows its last stage committed, instead of an uncommitted stage and no run (interrupted).
    """
    if incident.ended_at is not None:
        return "ended"
    if running:
        return "running"
    return "complete" if incident.stages_committed == incident.stages_total else "interrupted"


async def status(node: Node, incident: Incident) -> dict[str, Any]:
    """The incident as the API answers it: state, the report of the committed stages, what is left."""
    running = incident.id in RUNNING
    incident = await node.store.get_incident(incident.id) or incident  # read after the flag (see state_of)
    snapshot = await node.store.incident_snapshot(now=node.clock())
    rows = {row.number: row for row in await node.store.incident_stages(incident.id)}
    results = [StageResult(number=n, sessions_revoked=r.result.get("sessions_revoked", 0),
                           devices_revoked=r.result.get("devices_revoked", 0),
                           connections_closed=r.result.get("connections_closed", 0),
                           tokens_revoked=r.result.get("tokens_revoked", 0),
                           passkeys_marked_suspect=r.result.get("passkeys_marked_suspect", 0),
                           devices_to_reapprove=r.result.get("devices_to_reapprove", 0),
                           failed=tuple((u, why) for u, why in r.result.get("failed", ())), audit_seq=r.audit_seq)
               for n, r in sorted(rows.items())]
    report = report_json(plan_from_json(incident.plan), results, _members(snapshot), dry_run=False)
    for stage in report["stages"]:
        row = rows.get(stage["number"])
        stage["committed_at"] = row.committed_at if row else None
    return {**report, "incident_id": incident.id, "reason": incident.reason, "actor": incident.actor,
            "state": state_of(incident, running=running), "started_at": incident.started_at, "ended_at": incident.ended_at,
            "ended_by": incident.ended_by, "stages_total": incident.stages_total,
            "stages_committed": incident.stages_committed, "audit_seq": incident.audit_seq}


def _restricted_users(incident: Incident) -> Iterable[str]:
    return plan_from_json(incident.plan).users


async def end(node: Node, incident_id: str, *, actor: str) -> Incident:
    """End a live incident: its restrictions lift (revocations stay); ``incident.end`` and its webhook."""
    incident = await incident_or_404(node, incident_id)
    seq = await node.store.end_incident(incident.id, now=node.clock(),
                                        draft=LedgerDraft("incident.end", actor, incident.id,
                                                          {"incident_id": incident.id}))
    node.registry.invalidate(node.registry.for_ids(users=_restricted_users(incident)))
    event("incident.end", incident=incident.id, actor=actor, audit_seq=seq)
    node.webhooks.announce("incident.end", {"incident_id": incident.id, "playbook": incident.playbook,
                                            "actor": actor, "audit_seq": seq})
    return await incident_or_404(node, incident_id)
