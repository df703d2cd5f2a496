"""An incident's recovery picture, from the incident and the ledger after it started: who was cut, who is back.

Pure: the caller reads the entries (:data:`ENTRY_TYPES`, after the incident's ``incident.start``) and who is in
which group; this module only counts. The words, exactly:

- **Cut.** A user is cut by a committed stage of the incident (its ``incident.stage`` entry) whose steps take
  their sessions away (``kill``, ``revoke_devices``, ``require_reapproval``) and which lists them, or which
  killed a device of theirs. They are cut *at* the ledger entry of that stage's kill naming them (a user kill,
  or a kill of one of their devices), or at the stage's own entry when no kill named them (a stage that only
  sent devices back to approval). A user cut by several stages counts from the last of them: a user who came
  back between two stages and was cut again is not back until they return after the second.
- **Back.** A cut user is back at their first ``session.login`` after the entry that cut them: they hold a
  working device and passkey again. ``how`` says what that login needed first, from the device it was made
  with: ``recovered`` (a ``device.recover`` after the cut: the user vouched for a new device with a passkey
  they still held), ``approved`` (a ``device.approve`` after the cut, by an admin or their manager),
  ``re-enrolled`` (a device enrolled after the cut, active from its enrollment) or ``logged_in`` (the device
  was still usable: only the session had been cut). A renewed certificate is no way back (renewing needs a
  session), so ``device.renew`` is not read.
- **Not back.** Every cut user without such a login, with what was cut and what they need: ``new device``
  (their devices were revoked), ``approval`` (sent back to approval, or passkeys marked suspect so only an
  approver can vouch for a new device) or ``login``.

A user in several groups counts in each; a user in none counts in ``(no group)``, as in the run's report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..audit.sealing import parse_time
from ..model import Incident
from .plan import plan_from_json

__all__ = ["ENTRY_TYPES", "GroupRecovery", "Recovery", "Return", "StageCut", "Waiting", "recovery", "recovery_json"]

#: the ledger entry types the picture is made from
ENTRY_TYPES = ("incident.stage", "kill", "session.login", "device.recover", "device.approve", "device.enroll")
#: the steps after which a user must sign in again
_CUTTING = frozenset({"kill", "revoke_devices", "require_reapproval"})
NO_GROUP = "(no group)"
#: what the device of the returning login needed first, strongest first
_HOW = (("device.recover", "recovered"), ("device.approve", "approved"), ("device.enroll", "re-enrolled"))
HOWS = ("recovered", "approved", "re-enrolled", "logged_in")


@dataclass(frozen=True)
class GroupCut:
    """What one stage cut of one group's users."""

    users: int = 0
    sessions_revoked: int = 0
    devices_revoked: int = 0


@dataclass(frozen=True)
class StageCut:
    """One committed stage: when, and what it cut in all and per group."""

    number: int
    part: str
    steps: tuple[str, ...]
    committed_at: float
    audit_seq: int
    users: int
    sessions_revoked: int
    devices_revoked: int
    devices_to_reapprove: int
    by_group: Mapping[str, GroupCut]


@dataclass(frozen=True)
class Return:
    """A cut user back: when (their login's time and seq), with which device, and what it needed first."""

    user: str
    groups: tuple[str, ...]
    at: float
    seq: int
    device_id: str
    how: str


@dataclass(frozen=True)
class Waiting:
    """A cut user not back yet: who cut them, when, what was cut, and what they need to come back."""

    user: str
    groups: tuple[str, ...]
    stage: int
    cut_at: float
    sessions_revoked: int
    devices_revoked: int
    devices_to_reapprove: int
    suspect: bool
    needs: str


@dataclass(frozen=True)
class GroupRecovery:
    """One group: how many of its users were cut and are back, what was cut, and the returns in time order."""

    group: str
    users_cut: int
    sessions_revoked: int
    devices_revoked: int
    returns: tuple[Return, ...] = ()


@dataclass(frozen=True)
class Recovery:
    """The whole picture, as of the last entry read (``as_of_seq``)."""

    incident_id: str
    stages: tuple[StageCut, ...]
    groups: tuple[GroupRecovery, ...]
    back: tuple[Return, ...]
    waiting: tuple[Waiting, ...]
    excluded: tuple[str, ...]
    as_of_seq: int

    @property
    def users_cut(self) -> int:
        """Every user the incident cut: those back and those not."""
        return len(self.back) + len(self.waiting)


@dataclass
class _Cut:
    """What the incident did to one user, as the stages are read."""

    stage: int = 0
    seq: int = 0
    at: float = 0.0
    sessions: int = 0
    devices: int = 0
    reapprove: int = 0


def _groups_of(groups: Mapping[str, Sequence[str]], user: str) -> tuple[str, ...]:
    return tuple(groups.get(user, ())) or (NO_GROUP,)


def _kill_counts(data: Mapping[str, Any]) -> tuple[int, int]:
    """Sessions and devices a kill cut: its counts, or its id lists (entries written before the counts)."""
    sessions = data.get("sessions_revoked", len(data.get("sessions", ())))
    devices = data.get("devices_revoked", len(data.get("devices", ())))
    return int(sessions), int(devices)


def recovery(incident: Incident, entries: Iterable[Mapping[str, Any]], groups: Mapping[str, Sequence[str]], *,
             device_owners: Mapping[str, str] | None = None) -> Recovery:
    """The recovery picture of ``incident`` from ``entries`` (of :data:`ENTRY_TYPES`, oldest first, after its start).

    ``groups`` maps each user to their groups; ``device_owners`` each device to its user, to name whose device a
    device kill or a device sent back to approval was (those it does not know count for nobody's group).
    """
    owners = device_owners or {}
    kills: dict[int, Mapping[str, Any]] = {}
    activations: dict[str, list[tuple[int, str]]] = {}  # device -> (seq, entry type) after the incident started
    logins: list[Mapping[str, Any]] = []
    stages: list[StageCut] = []
    cuts: dict[str, _Cut] = {}
    suspects: set[str] = set()  # users whose passkeys a stage marked suspect
    as_of = incident.audit_seq
    for entry in entries:
        seq, kind, data = entry["seq"], entry["type"], entry.get("data") or {}
        as_of = max(as_of, seq)
        if kind == "kill":
            kills[seq] = entry
        elif kind == "session.login":
            logins.append(entry)
        elif kind in ("device.recover", "device.approve", "device.enroll"):
            activations.setdefault(str(data.get("device_id", entry["subject"])), []).append((seq, kind))
        elif kind == "incident.stage" and data.get("incident_id") == incident.id:
            stages.append(_stage(entry, kills, groups, owners, cuts))
            if "suspect_passkeys" in entry["data"].get("steps", ()):
                suspects.update(entry["data"].get("users", ()))
    back, waiting = _returns(cuts, suspects, logins, activations, groups)
    return Recovery(incident_id=incident.id, stages=tuple(stages), groups=_by_group(cuts, back, groups),
                    back=back, waiting=waiting, excluded=plan_from_json(incident.plan).excluded, as_of_seq=as_of)


def _stage(entry: Mapping[str, Any], kills: Mapping[int, Mapping[str, Any]], groups: Mapping[str, Sequence[str]],
           owners: Mapping[str, str], cuts: dict[str, _Cut]) -> StageCut:
    """Read one stage entry (its kills were read before it: they precede it in the ledger)."""
    data, seq = entry["data"], entry["seq"]
    number, steps = int(data["number"]), tuple(data.get("steps", ()))
    at = parse_time(entry["time"])
    cutting = bool(_CUTTING.intersection(steps))
    by_group: dict[str, dict[str, int]] = {}
    totals = {"sessions": 0, "devices": 0}
    named: dict[str, int] = {}  # user -> the seq of the kill that named them
    per_user: dict[str, list[int]] = {}
    for kill_seq in data.get("kills", ()):
        kill = kills.get(kill_seq)
        if kill is None:
            continue  # a kill before the incident started cannot be one of its stages'
        kdata = kill["data"]
        sessions, devices = _kill_counts(kdata)
        totals["sessions"] += sessions
        totals["devices"] += devices
        user = kdata.get("target") if kdata.get("scope") == "user" else owners.get(str(kdata.get("target")))
        if user is None:
            continue
        named[user] = kill_seq
        counts = per_user.setdefault(user, [0, 0])
        counts[0] += sessions
        counts[1] += devices
    reapprove: dict[str, int] = {}
    for device in data.get("devices_reapproval", ()):
        if device in owners:
            reapprove[owners[device]] = reapprove.get(owners[device], 0) + 1
    users = list(dict.fromkeys([*data.get("users", ()), *named]))
    for user in users:
        sessions, devices = per_user.get(user, (0, 0))
        for group in _groups_of(groups, user):
            row = by_group.setdefault(group, {"users": 0, "sessions": 0, "devices": 0})
            row["users"] += 1
            row["sessions"] += sessions
            row["devices"] += devices
        if not cutting:
            continue
        cut = cuts.setdefault(user, _Cut())
        cut.stage, cut.seq = number, named.get(user, seq)
        cut.at = parse_time(kills[named[user]]["time"]) if user in named else at
        cut.sessions += sessions
        cut.devices += devices
        cut.reapprove += reapprove.get(user, 0)
    return StageCut(number=number, part=str(data.get("part", "")), steps=steps, committed_at=at, audit_seq=seq,
                    users=len(users), sessions_revoked=totals["sessions"], devices_revoked=totals["devices"],
                    devices_to_reapprove=len(data.get("devices_reapproval", ())),
                    by_group={g: GroupCut(r["users"], r["sessions"], r["devices"])
                              for g, r in sorted(by_group.items())})


def _how(device: str, after: int, before: int, activations: Mapping[str, Sequence[tuple[int, str]]]) -> str:
    kinds = {kind for seq, kind in activations.get(device, ()) if after < seq < before}
    return next((how for kind, how in _HOW if kind in kinds), "logged_in")


def _returns(cuts: Mapping[str, _Cut], suspects: set[str], logins: Sequence[Mapping[str, Any]],
             activations: Mapping[str, Sequence[tuple[int, str]]],
             groups: Mapping[str, Sequence[str]]) -> tuple[tuple[Return, ...], tuple[Waiting, ...]]:
    back: dict[str, Return] = {}
    for entry in logins:
        user = entry["data"].get("user", entry["actor"])
        cut = cuts.get(user)
        if cut is None or user in back or entry["seq"] <= cut.seq:
            continue
        device = str(entry["data"].get("device_id", ""))
        back[user] = Return(user=user, groups=_groups_of(groups, user), at=parse_time(entry["time"]), seq=entry["seq"],
                            device_id=device, how=_how(device, cut.seq, entry["seq"], activations))
    waiting = tuple(
        Waiting(user=user, groups=_groups_of(groups, user), stage=cut.stage, cut_at=cut.at,
                sessions_revoked=cut.sessions, devices_revoked=cut.devices, devices_to_reapprove=cut.reapprove,
                suspect=user in suspects,
                needs="new device" if cut.devices else "approval" if cut.reapprove or user in suspects else "login")
        for user, cut in sorted(cuts.items()) if user not in back)
    return tuple(sorted(back.values(), key=lambda r: r.seq)), waiting


def _by_group(cuts: Mapping[str, _Cut], back: Sequence[Return],
              groups: Mapping[str, Sequence[str]]) -> tuple[GroupRecovery, ...]:
    rows: dict[str, dict[str, int]] = {}
    for user, cut in cuts.items():
        for group in _groups_of(groups, user):
            row = rows.setdefault(group, {"users": 0, "sessions": 0, "devices": 0})
            row["users"] += 1
            row["sessions"] += cut.sessions
            row["devices"] += cut.devices
    returns: dict[str, list[Return]] = {}
    for ret in back:
        for group in ret.groups:
            returns.setdefault(group, []).append(ret)
    return tuple(GroupRecovery(group=g, users_cut=r["users"], sessions_revoked=r["sessions"],
                               devices_revoked=r["devices"], returns=tuple(returns.get(g, ())))
                 for g, r in sorted(rows.items()))


def _hows(returns: Iterable[Return]) -> dict[str, int]:
    counts = dict.fromkeys(HOWS, 0)
    for ret in returns:
        counts[ret.how] += 1
    return counts


def recovery_json(picture: Recovery, *, not_back_limit: int | None = None) -> dict[str, Any]:
    """The picture as the API answers it: totals, stages, groups with their series, the users not back.

    A group's ``series`` has one point per user back, in time order, with the group's running count of users
    back (a step chart's points). ``not_back`` lists at most ``not_back_limit`` users (by id); ``not_back_total``
    says how many there are.
    """
    waiting = picture.waiting if not_back_limit is None else picture.waiting[:not_back_limit]
    return {
        "incident_id": picture.incident_id,
        "as_of_seq": picture.as_of_seq,
        "totals": {
            "users_cut": picture.users_cut, "users_back": len(picture.back), "users_not_back": len(picture.waiting),
            "sessions_revoked": sum(s.sessions_revoked for s in picture.stages),
            "devices_revoked": sum(s.devices_revoked for s in picture.stages),
            "devices_to_reapprove": sum(s.devices_to_reapprove for s in picture.stages),
            "back_by_how": _hows(picture.back),
        },
        "stages": [{"number": s.number, "part": s.part, "steps": list(s.steps), "committed_at": s.committed_at,
                    "audit_seq": s.audit_seq, "users": s.users, "sessions_revoked": s.sessions_revoked,
                    "devices_revoked": s.devices_revoked, "devices_to_reapprove": s.devices_to_reapprove,
                    "by_group": {g: {"users": c.users, "sessions_revoked": c.sessions_revoked,
                                     "devices_revoked": c.devices_revoked} for g, c in s.by_group.items()}}
                   for s in picture.stages],
        "groups": [{"group": g.group, "users_cut": g.users_cut, "users_back": len(g.returns),
                    "sessions_revoked": g.sessions_revoked, "devices_revoked": g.devices_revoked,
                    "back_by_how": _hows(g.returns),
                    "series": [{"at": r.at, "back": n, "user": r.user, "how": r.how}
                               for n, r in enumerate(g.returns, start=1)]}
                   for g in picture.groups],
        "not_back": [{"user": w.user, "groups": list(w.groups), "stage": w.stage, "cut_at": w.cut_at,
                      "sessions_revoked": w.sessions_revoked, "devices_revoked": w.devices_revoked,
                      "devices_to_reapprove": w.devices_to_reapprove, "suspect": w.suspect, "needs": w.needs}
                     for w in waiting],
        "not_back_total": len(picture.waiting),
        "excluded": list(picture.excluded),
    }
