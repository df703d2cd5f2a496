"""idwall.incident.report: a dry run's counts from a snapshot, and the report both runs print."""

from __future__ import annotations

from idwall.config.model import Playbook, PlaybookStage
from idwall.incident.plan import Member, Targets, plan_playbook
from idwall.incident.report import Holdings, StageResult, dry_run_results, render_report, report_json

PEOPLE = [Member("root", ("ops",), admin=True), Member("alice", ("eng",)), Member("bob", ("eng", "sales")),
          Member("carol", ()), Member("glass", ("break-glass",))]
ORG_WIDE = Playbook(name="org-wide-reset", trigger="privileged credentials exposed", exclude_groups=("break-glass",),
                    stages=(PlaybookStage("privileged", ("kill", "revoke_devices", "suspect_passkeys")),
                            PlaybookStage("all", ("kill", "require_reapproval"))))
HOLDINGS = Holdings(sessions={"root": 2, "alice": 1, "bob": 1, "glass": 5},
                    devices={"root": 2, "alice": 1, "bob": 2, "carol": 1, "glass": 1},
                    credentials={"root": 3, "alice": 1},
                    connections={"root": 4, "alice": 2, "bob": 1, "glass": 9})


def test_a_dry_run_counts_what_each_stage_would_cut_and_never_the_excluded() -> None:
    plan = plan_playbook(ORG_WIDE, PEOPLE)
    assert dry_run_results(plan, HOLDINGS) == [
        StageResult(1, sessions_revoked=2, devices_revoked=2, connections_closed=4, passkeys_marked_suspect=3),
        # root again (require_reapproval is new to them), but their sessions and devices are gone already
        StageResult(2),
        StageResult(3, sessions_revoked=2, connections_closed=3, devices_to_reapprove=4),
    ]


def test_a_user_reached_again_is_not_counted_twice() -> None:
    playbook = Playbook(name="p", trigger="t", stages=(
        PlaybookStage("all", ("kill", "revoke_devices")),
        PlaybookStage("all", ("kill", "revoke_devices", "require_reapproval"))))
    results = dry_run_results(plan_playbook(playbook, PEOPLE[:2]), HOLDINGS)
    assert [(r.sessions_revoked, r.devices_revoked, r.devices_to_reapprove) for r in results] == [
        (2, 2, 0), (1, 1, 0), (0, 0, 0), (0, 0, 0)]


def test_target_devices_count_as_revoked() -> None:
    playbook = Playbook(name="lost", trigger="a device lost", stages=(PlaybookStage("target", ("revoke_devices",)),))
    plan = plan_playbook(playbook, PEOPLE, targets=Targets(devices=("dev-1",)), device_owners={"dev-1": "alice"})
    assert dry_run_results(plan, HOLDINGS) == [StageResult(1, devices_revoked=1)]


def test_the_report_json_and_text_of_a_real_run_with_a_failure() -> None:
    plan = plan_playbook(ORG_WIDE, PEOPLE)
    results = [StageResult(1, sessions_revoked=2, devices_revoked=2, connections_closed=4, passkeys_marked_suspect=3,
                           audit_seq=40)]
    report = report_json(plan, results, PEOPLE, dry_run=False)
    assert report["stages"][0] == {
        "number": 1, "part": "privileged", "steps": ["kill", "revoke_devices", "suspect_passkeys"], "users": 1,
        "devices": [], "by_group": {"ops": 1}, "committed": True,
        "result": {"sessions_revoked": 2, "devices_revoked": 2, "connections_closed": 4, "tokens_revoked": 0,
                   "passkeys_marked_suspect": 3, "devices_to_reapprove": 0, "failed": [], "audit_seq": 40}}
    assert report["stages"][2]["committed"] is False and report["stages"][2]["result"] is None
    assert report["stages"][2]["by_group"] == {"(no group)": 1, "eng": 2, "sales": 1}
    assert (report["excluded"], report["privileged"]) == (["glass"], ["root"])
    results += [StageResult(2), StageResult(3, sessions_revoked=1, failed=(("bob", "store unavailable"),))]
    text = render_report(report_json(plan, results, PEOPLE, dry_run=False))
    assert text == [
        "playbook org-wide-reset",
        "stage 1 [privileged] kill, revoke_devices, suspect_passkeys: 1 user(s)",
        "  by group: ops 1",
        "  cut: 2 session(s), 4 connection(s), 2 device(s) revoked, 3 passkey(s) marked suspect",
        "stage 2 [privileged] kill, require_reapproval: 1 user(s)",
        "  by group: ops 1",
        "  cut: nothing",
        "stage 3 [others] kill, require_reapproval: 3 user(s)",
        "  by group: (no group) 1, eng 2, sales 1",
        "  cut: 1 session(s)",
        "failed:",
        "  stage 3: bob: store unavailable",
        "excluded (never touched): glass",
    ]


def test_a_dry_run_report_says_so_and_nothing_is_marked_committed() -> None:
    plan = plan_playbook(ORG_WIDE, PEOPLE)
    report = report_json(plan, dry_run_results(plan, HOLDINGS), PEOPLE, dry_run=True)
    assert not any(stage["committed"] for stage in report["stages"])
    text = render_report(report)
    assert text[0] == "playbook org-wide-reset (dry run: nothing was changed)"
    assert "  would cut: 2 session(s), 4 connection(s), 2 device(s) revoked, 3 passkey(s) marked suspect" in text


def test_a_stage_that_cuts_nothing_says_so() -> None:
    playbook = Playbook(name="p", trigger="t", stages=(PlaybookStage("users", ("kill",), users=("carol",)),))
    plan = plan_playbook(playbook, PEOPLE)
    text = render_report(report_json(plan, dry_run_results(plan, HOLDINGS), PEOPLE, dry_run=True))
    assert "  would cut: nothing" in text and text[-1] == "excluded (never touched): nobody"
