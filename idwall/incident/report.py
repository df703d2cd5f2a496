"""What an incident run did, or a dry run would do: per stage, per group, failures and exclusions.

A dry run and a real run print the same shape, so a tabletop exercise reads exactly like the day: the dry
run counts what each stage would cut from a :class:`Holdings` snapshot (taken without writing anything),
the real run from each stage's :class:`StageResult` as it commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .plan import Member, Plan, PlannedStage

__all__ = ["Holdings", "StageResult", "dry_run_results", "render_report", "report_json"]


@dataclass(frozen=True)
class Holdings:
    """What each user holds right now: live sessions, usable devices, usable passkeys, live connections."""

    sessions: Mapping[str, int] = field(default_factory=dict)
    devices: Mapping[str, int] = field(default_factory=dict)
    credentials: Mapping[str, int] = field(default_factory=dict)
    connections: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResult:
    """What one stage cut (or would cut), and the users it could not act on with the reason."""

    number: int
    sessions_revoked: int = 0
    devices_revoked: int = 0
    connections_closed: int = 0
    tokens_revoked: int = 0
    passkeys_marked_suspect: int = 0
    devices_to_reapprove: int = 0
    failed: tuple[tuple[str, str], ...] = ()
    audit_seq: int | None = None


def dry_run_results(plan: Plan, holdings: Holdings) -> list[StageResult]:
    """What each stage of ``plan`` would cut, from a snapshot; a user counts once, in the first stage reaching them."""
    cut: set[str] = set()
    revoked: set[str] = set()
    results = []
    for stage in plan.stages:
        fresh = [u for u in stage.users if u not in cut]
        kills = "kill" in stage.steps or "revoke_devices" in stage.steps
        revokes = "revoke_devices" in stage.steps
        results.append(StageResult(
            number=stage.number,
            sessions_revoked=sum(holdings.sessions.get(u, 0) for u in fresh) if kills else 0,
            devices_revoked=(sum(holdings.devices.get(u, 0) for u in stage.users if u not in revoked)
                             + len(stage.devices) if revokes else 0),
            connections_closed=sum(holdings.connections.get(u, 0) for u in fresh) if kills else 0,
            tokens_revoked=len(stage.tokens),
            passkeys_marked_suspect=(sum(holdings.credentials.get(u, 0) for u in stage.users)
                                     if "suspect_passkeys" in stage.steps else 0),
            devices_to_reapprove=(sum(holdings.devices.get(u, 0) for u in stage.users if u not in revoked)
                                  if "require_reapproval" in stage.steps and not revokes else 0),
        ))
        if kills:
            cut.update(stage.users)
        if revokes:
            revoked.update(stage.users)
    return results


def report_json(plan: Plan, results: Sequence[StageResult], members: Sequence[Member], *, dry_run: bool) -> dict[str, Any]:
    """The report as the API answers it and ``--json`` prints it: stages with per-group user counts."""
    groups = {m.user_id: m.groups for m in members}
    by_number = {r.number: r for r in results}
    stages = []
    for stage in plan.stages:
        result = by_number.get(stage.number)
        stages.append({
            "number": stage.number, "part": stage.part, "steps": list(stage.steps), "users": len(stage.users),
            "devices": list(stage.devices), "by_group": _by_group(stage, groups),
            "committed": result is not None and not dry_run,
            "result": None if result is None else {
                "sessions_revoked": result.sessions_revoked, "devices_revoked": result.devices_revoked,
                "connections_closed": result.connections_closed, "tokens_revoked": result.tokens_revoked,
                "passkeys_marked_suspect": result.passkeys_marked_suspect,
                "devices_to_reapprove": result.devices_to_reapprove,
                "failed": [{"user": u, "reason": why} for u, why in result.failed],
                "audit_seq": result.audit_seq},
        })
    return {"playbook": plan.playbook, "dry_run": dry_run, "stages": stages,
            "excluded": list(plan.excluded), "privileged": list(plan.privileged)}


def render_report(report: Mapping[str, Any]) -> list[str]:
    """The report as lines for a terminal: one block per stage, then failures and exclusions."""
    verb = "would cut" if report["dry_run"] else "cut"
    lines = [f"playbook {report['playbook']}" + (" (dry run: nothing was changed)" if report["dry_run"] else "")]
    failures = []
    for stage in report["stages"]:
        steps = ", ".join(stage["steps"])
        lines.append(f"stage {stage['number']} [{stage['part']}] {steps}: {stage['users']} user(s)"
                     + (f", {len(stage['devices'])} device(s)" if stage["devices"] else ""))
        if stage["by_group"]:
            lines.append("  by group: " + ", ".join(f"{g} {n}" for g, n in stage["by_group"].items()))
        result = stage["result"]
        if result is None:
            lines.append("  not run")
            continue
        counts = [(result["sessions_revoked"], "session(s)"), (result["connections_closed"], "connection(s)"),
                  (result["devices_revoked"], "device(s) revoked"), (result["tokens_revoked"], "token(s) revoked"),
                  (result["passkeys_marked_suspect"], "passkey(s) marked suspect"),
                  (result["devices_to_reapprove"], "device(s) back to approval")]
        lines.append(f"  {verb}: " + ", ".join(f"{n} {what}" for n, what in counts if n) if any(n for n, _ in counts)
                     else f"  {verb}: nothing")
        failures += [f"  stage {stage['number']}: {f['user']}: {f['reason']}" for f in result["failed"]]
    if failures:
        lines += ["failed:", *failures]
    lines.append("excluded (never touched): " + (", ".join(report["excluded"]) or "nobody"))
    return lines


def _by_group(stage: PlannedStage, groups: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for user in stage.users:
        for group in groups.get(user, ()) or ("(no group)",):
            counts[group] = counts.get(group, 0) + 1
    return dict(sorted(counts.items()))
