"""idwall.incident.recovery: who an incident cut and who is back, by group and over time, from ledger entries.

The entries are written here in the ledger's shape (the store seals them; nothing here reads a store): a run of
two stages over root (an admin), alice and bob (eng, bob also sales) and carol (no group), with the logins,
recoveries, approvals and enrollments that follow.
"""

from __future__ import annotations

from typing import Any

from idwall.audit.sealing import format_time
from idwall.incident.plan import Plan, PlannedStage, plan_json
from idwall.incident.recovery import ENTRY_TYPES, recovery, recovery_json
from idwall.model import Incident

T0 = 1_800_000_000.0
GROUPS = {"root": ("ops",), "alice": ("eng",), "bob": ("eng", "sales"), "carol": ()}
PLAN = Plan("org-wide", (PlannedStage(1, 0, "privileged", ("kill", "revoke_devices", "suspect_passkeys"), ("root",)),
                         PlannedStage(2, 0, "others", ("kill",), ("alice", "bob", "carol"))),
            privileged=("root",), excluded=("glass",))
INCIDENT = Incident("inc-1", "org-wide", "creds for sale", "token:t1", T0, plan_json(PLAN), 2, 2, 10)


class Ledger:
    """Entries numbered from the incident's start (seq 10), one second apart."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.seq = 10

    def add(self, kind: str, subject: str, actor: str = "system", **data: Any) -> int:
        self.seq += 1
        self.entries.append({"seq": self.seq, "time": format_time(T0 + self.seq - 10), "type": kind, "actor": actor,
                             "subject": subject, "data": data})
        return self.seq

    def kill(self, user: str, sessions: int, devices: int = 0) -> int:
        return self.add("kill", user, scope="user", target=user, reason="incident", revoke_devices=devices > 0,
                        sessions_revoked=sessions, sessions_sha256="x", devices_revoked=devices, devices_sha256="x")

    def stage(self, number: int, users: list[str], kills: list[int], *, incident: str = "inc-1",
              steps: tuple[str, ...] = ("kill",), reapproval: tuple[str, ...] = ()) -> int:
        return self.add("incident.stage", incident, "token:t1", incident_id=incident, number=number,
                        part="others", steps=list(steps), users=users, devices=[], kills=kills,
                        devices_reapproval=list(reapproval), credentials_suspect=[], tokens_revoked=[],
                        fresh_auth=None, block_code_enrollment=False)

    def login(self, user: str, device: str) -> int:
        return self.add("session.login", f"s-{self.seq}", user, user=user, device_id=device)


def _run(ledger: Ledger) -> None:
    """Stage 1 kills root (2 sessions, 2 devices revoked); stage 2 alice (1), bob (2), carol (1)."""
    ledger.stage(1, ["root"], [ledger.kill("root", 2, 2)], steps=("kill", "revoke_devices", "suspect_passkeys"))
    ledger.stage(2, ["alice", "bob", "carol"], [ledger.kill("alice", 1), ledger.kill("bob", 2),
                                                 ledger.kill("carol", 1)])


def test_each_stage_counts_what_it_cut_in_all_and_per_group() -> None:
    ledger = Ledger()
    _run(ledger)
    picture = recovery(INCIDENT, ledger.entries, GROUPS)
    first, second = picture.stages
    assert (first.number, first.users, first.sessions_revoked, first.devices_revoked) == (1, 1, 2, 2)
    assert first.committed_at == T0 + 2 and first.audit_seq == 12
    assert (second.users, second.sessions_revoked, second.devices_revoked) == (3, 4, 0)
    assert {g: (c.users, c.sessions_revoked) for g, c in second.by_group.items()} == {
        "(no group)": (1, 1), "eng": (2, 3), "sales": (1, 2)}
    assert [(g.group, g.users_cut, g.sessions_revoked, g.devices_revoked) for g in picture.groups] == [
        ("(no group)", 1, 1, 0), ("eng", 2, 3, 0), ("ops", 1, 2, 2), ("sales", 1, 2, 0)]
    assert picture.users_cut == 4 and picture.back == () and picture.excluded == ("glass",)
    assert [(w.user, w.stage, w.needs, w.suspect) for w in picture.waiting] == [
        ("alice", 2, "login", False), ("bob", 2, "login", False), ("carol", 2, "login", False),
        ("root", 1, "new device", True)]
    assert picture.waiting[0].cut_at == T0 + 3  # alice's own kill, before her stage committed


def test_a_user_is_back_at_the_first_login_after_their_cut_and_how_says_what_it_needed() -> None:
    ledger = Ledger()
    ledger.login("alice", "dev-a")  # before the run: not a return
    _run(ledger)
    ledger.login("bob", "dev-b")  # his device still works: only the session was cut
    ledger.add("device.enroll", "dev-r2", user="root", device_id="dev-r2", status="pending_approval")
    ledger.add("device.approve", "dev-r2", "admin2", device_id="dev-r2", status="active")
    ledger.login("root", "dev-r2")
    ledger.add("device.enroll", "dev-c2", user="carol", device_id="dev-c2", status="pending_approval")
    ledger.add("device.recover", "dev-c2", "carol", device_id="dev-c2", status="active")
    ledger.login("carol", "dev-c2")
    ledger.login("carol", "dev-c2")  # a second login is no second return
    picture = recovery(INCIDENT, ledger.entries, GROUPS)
    assert [(r.user, r.how, r.device_id) for r in picture.back] == [
        ("bob", "logged_in", "dev-b"), ("root", "approved", "dev-r2"), ("carol", "recovered", "dev-c2")]
    assert [w.user for w in picture.waiting] == ["alice"]
    eng = {g.group: g for g in picture.groups}["eng"]
    assert [r.user for r in eng.returns] == ["bob"] and eng.users_cut == 2
    assert picture.as_of_seq == ledger.seq


def test_a_device_enrolled_active_after_the_cut_is_a_re_enrollment() -> None:
    ledger = Ledger()
    _run(ledger)
    ledger.add("device.enroll", "dev-a2", user="alice", device_id="dev-a2", status="active")
    ledger.login("alice", "dev-a2")
    [back] = recovery(INCIDENT, ledger.entries, GROUPS).back
    assert (back.user, back.how, back.at) == ("alice", "re-enrolled", T0 + ledger.seq - 10)


def test_a_user_back_between_two_stages_and_cut_again_is_not_back_until_they_return_again() -> None:
    ledger = Ledger()
    ledger.stage(1, ["alice"], [ledger.kill("alice", 1)])
    ledger.login("alice", "dev-a")
    ledger.stage(2, ["alice"], [], steps=("require_reapproval",), reapproval=("dev-a",))
    owners = {"dev-a": "alice"}
    [waiting] = recovery(INCIDENT, ledger.entries, GROUPS, device_owners=owners).waiting
    assert (waiting.stage, waiting.devices_to_reapprove, waiting.needs) == (2, 1, "approval")
    ledger.add("device.approve", "dev-a", "admin", device_id="dev-a", status="active")
    ledger.login("alice", "dev-a")
    picture = recovery(INCIDENT, ledger.entries, GROUPS, device_owners=owners)
    assert [(r.user, r.how) for r in picture.back] == [("alice", "approved")] and picture.waiting == ()


def test_only_this_incidents_stages_and_their_own_kills_count() -> None:
    ledger = Ledger()
    stray = ledger.kill("bob", 5)  # an analyst's kill during the incident, in no stage
    ledger.stage(1, ["carol"], [ledger.kill("carol", 1)], incident="inc-other")
    # a kill written before kills carried counts lists the ids; one named by a stage but not read (before the
    # incident) is left out
    old = ledger.add("kill", "alice", scope="user", target="alice", reason="r", revoke_devices=True,
                     sessions=["s1", "s2"], devices=["d1"])
    ledger.stage(1, ["alice"], [old, 3])
    picture = recovery(INCIDENT, ledger.entries, GROUPS)
    assert [(s.number, s.sessions_revoked, s.devices_revoked) for s in picture.stages] == [(1, 2, 1)]
    assert [w.user for w in picture.waiting] == ["alice"] and stray not in [s.audit_seq for s in picture.stages]


def test_a_device_kill_counts_for_its_owner_when_known() -> None:
    ledger = Ledger()
    kill = ledger.add("kill", "dev-b", scope="device", target="dev-b", reason="lost", revoke_devices=True,
                      sessions_revoked=1, sessions_sha256="x", devices_revoked=1, devices_sha256="x")
    ledger.stage(1, [], [kill], steps=("revoke_devices",))
    assert recovery(INCIDENT, ledger.entries, GROUPS).waiting == ()  # whose device: not known
    picture = recovery(INCIDENT, ledger.entries, GROUPS, device_owners={"dev-b": "bob"})
    assert [(w.user, w.devices_revoked, w.needs) for w in picture.waiting] == [("bob", 1, "new device")]
    assert picture.stages[0].users == 1 and set(picture.stages[0].by_group) == {"eng", "sales"}


def test_a_stage_that_cuts_nothing_makes_no_one_wait() -> None:
    ledger = Ledger()
    ledger.stage(1, ["alice", "bob"], [], steps=("raise_fresh_auth", "block_code_enrollment"))
    picture = recovery(INCIDENT, ledger.entries, GROUPS)
    assert picture.users_cut == 0 and picture.stages[0].users == 2 and picture.groups == ()


def test_the_json_has_totals_a_running_series_per_group_and_a_bounded_not_back_list() -> None:
    ledger = Ledger()
    _run(ledger)
    ledger.login("bob", "dev-b")
    ledger.login("alice", "dev-a")
    answer = recovery_json(recovery(INCIDENT, ledger.entries, GROUPS), not_back_limit=1)
    assert answer["totals"] == {"users_cut": 4, "users_back": 2, "users_not_back": 2, "sessions_revoked": 6,
                                "devices_revoked": 2, "devices_to_reapprove": 0,
                                "back_by_how": {"recovered": 0, "approved": 0, "re-enrolled": 0, "logged_in": 2}}
    eng = {g["group"]: g for g in answer["groups"]}["eng"]
    assert [(p["user"], p["back"], p["how"]) for p in eng["series"]] == [("bob", 1, "logged_in"),
                                                                         ("alice", 2, "logged_in")]
    assert eng["series"][0]["at"] < eng["series"][1]["at"] and (eng["users_cut"], eng["users_back"]) == (2, 2)
    assert [w["user"] for w in answer["not_back"]] == ["carol"] and answer["not_back_total"] == 2
    assert answer["stages"][1]["by_group"]["eng"] == {"users": 2, "sessions_revoked": 3, "devices_revoked": 0}
    assert set(ENTRY_TYPES) >= {e["type"] for e in ledger.entries}
