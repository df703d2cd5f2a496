"""Playbook planning: from a playbook and who exists, the exact stages a run will take, in order.

The plan is the whole decision, made before anything changes, so a dry run and a real run cut the same
people, and a tabletop exercise sees exactly what the day itself would do. Rules:

- Every configured stage runs in order, and within each stage privileged users (administrators and
  members of ``privileged.groups``) go first, as a stage of their own: their credentials are worth the
  most to an intruder, so their connections close before anybody else's.
- Excluded users (``exclude.users`` and members of ``exclude.groups``, a break-glass group) are in no
  stage, whatever its scope; naming one as a target is refused rather than quietly skipped.
- A user already given every step of a stage by an earlier stage is not planned again, so the counts
  of a dry run add up.
- ``target`` stages act on the users and devices named at run time; a playbook with such a stage needs
  targets, and one without refuses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..config.model import Playbook, PlaybookStage
from ..errors import BadRequest

__all__ = ["Member", "Plan", "PlannedStage", "Targets", "plan_from_json", "plan_json", "plan_playbook"]


@dataclass(frozen=True)
class Member:
    """One user as a plan sees them."""

    user_id: str
    groups: tuple[str, ...] = ()
    admin: bool = False


@dataclass(frozen=True)
class Targets:
    """What a run names for the playbook's ``target`` stages: users, and devices (by id)."""

    users: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.devices)


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a run: these steps, over exactly these users, devices and tokens.

    ``number`` counts from 1 in run order; ``source`` is the index of the playbook stage it comes from
    and ``part`` says whether it is that stage's ``privileged`` share, the ``others``, or ``target``.
    """

    number: int
    source: int
    part: str
    steps: tuple[str, ...]
    users: tuple[str, ...]
    devices: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    fresh_auth: int | None = None


@dataclass(frozen=True)
class Plan:
    """The stages of one run of ``playbook``, and who it leaves alone."""

    playbook: str
    stages: tuple[PlannedStage, ...]
    privileged: tuple[str, ...]
    excluded: tuple[str, ...]

    @property
    def users(self) -> tuple[str, ...]:
        """Every user some stage acts on, in the order the run first reaches them."""
        return tuple(dict.fromkeys(user for stage in self.stages for user in stage.users))


def plan_playbook(playbook: Playbook, members: Sequence[Member], *, privileged_groups: Iterable[str] = (),
                  tokens: Mapping[str, str] | None = None, targets: Targets = Targets(),
                  device_owners: Mapping[str, str] | None = None) -> Plan:
    """The plan of one run. ``tokens`` maps each live automation token id to the user who created it.

    Raises :class:`~idwall.errors.BadRequest` when the targets do not fit the playbook: missing for a
    ``target`` stage, given to a playbook without one, unknown, or excluded.
    """
    by_id = {m.user_id: m for m in members}
    privileged_set = set(privileged_groups)
    privileged = tuple(m.user_id for m in members if m.admin or privileged_set.intersection(m.groups))
    exclude_groups = set(playbook.exclude_groups)
    excluded = tuple(m.user_id for m in members
                     if m.user_id in playbook.exclude_users or exclude_groups.intersection(m.groups))
    _check_targets(playbook, targets, by_id, device_owners or {}, set(excluded))
    token_owners = tokens or {}

    stages: list[PlannedStage] = []
    given: dict[str, set[tuple[str, int | None]]] = {}
    for source, stage in enumerate(playbook.stages):
        wanted = {(step, stage.fresh_auth if step == "raise_fresh_auth" else None) for step in stage.steps}
        users = [u for u in _scope_users(stage, members, privileged, targets)
                 if u not in excluded and not wanted <= given.get(u, set())]
        devices = targets.devices if stage.scope == "target" else ()
        parts = ([("target", users)] if stage.scope == "target" else
                 [("privileged", [u for u in users if u in privileged]),
                  ("others", [u for u in users if u not in privileged])])
        for part, part_users in parts:
            if not part_users and not (part == "target" and devices):
                continue
            owned = (tuple(sorted(t for t, owner in token_owners.items() if owner in part_users))
                     if "revoke_tokens" in stage.steps else ())
            stages.append(PlannedStage(number=len(stages) + 1, source=source, part=part, steps=stage.steps,
                                       users=tuple(sorted(part_users)), devices=tuple(sorted(devices)),
                                       tokens=owned, fresh_auth=stage.fresh_auth))
            for user in part_users:
                given.setdefault(user, set()).update(wanted)
    return Plan(playbook=playbook.name, stages=tuple(stages), privileged=tuple(sorted(privileged)),
                excluded=tuple(sorted(excluded)))


def _scope_users(stage: PlaybookStage, members: Sequence[Member], privileged: Sequence[str],
                 targets: Targets) -> list[str]:
    if stage.scope == "all":
        return [m.user_id for m in members]
    if stage.scope == "privileged":
        return list(privileged)
    if stage.scope == "groups":
        wanted = set(stage.groups)
        return [m.user_id for m in members if wanted.intersection(m.groups)]
    if stage.scope == "users":
        known = {m.user_id for m in members}
        return [u for u in stage.users if u in known]
    return list(targets.users)


def _check_targets(playbook: Playbook, targets: Targets, by_id: Mapping[str, Member],
                   device_owners: Mapping[str, str], excluded: set[str]) -> None:
    takes_targets = any(stage.scope == "target" for stage in playbook.stages)
    if takes_targets and not targets:
        raise BadRequest(f"playbook {playbook.name} acts on the users or devices named when it runs; name at least one")
    if targets and not takes_targets:
        raise BadRequest(f"playbook {playbook.name} has no target stage, so it takes no users or devices; "
                         "run it without them")
    for user in targets.users:
        if user not in by_id:
            raise BadRequest(f"target user {user!r} does not exist")
    for device in targets.devices:
        if device not in device_owners:
            raise BadRequest(f"target device {device!r} does not exist")
    for user in (*targets.users, *(device_owners[d] for d in targets.devices)):
        if user in excluded:
            raise BadRequest(f"{user} is excluded from playbook {playbook.name} (break-glass); "
                             "use a playbook without that exclusion, or a kill")


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as the store keeps it (a resumed run continues exactly the plan it started with)."""
    return asdict(plan)


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    """The inverse of :func:`plan_json`."""
    stages = tuple(PlannedStage(number=s["number"], source=s["source"], part=s["part"], steps=tuple(s["steps"]),
                                users=tuple(s["users"]), devices=tuple(s["devices"]), tokens=tuple(s["tokens"]),
                                fresh_auth=s["fresh_auth"]) for s in data["stages"])
    return Plan(playbook=data["playbook"], stages=stages, privileged=tuple(data["privileged"]),
                excluded=tuple(data["excluded"]))
