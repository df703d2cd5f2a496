"""idwall.incident.plan: who each stage of a playbook acts on, in which order, and who it never touches."""

from __future__ import annotations

import json

import pytest

from idwall.config.model import Playbook, PlaybookStage
from idwall.errors import BadRequest
from idwall.incident.plan import Member, Targets, plan_from_json, plan_json, plan_playbook

PEOPLE = [
    Member("root", ("ops",), admin=True),
    Member("alice", ("eng",)),
    Member("bob", ("eng", "sre")),
    Member("carol", ("sales",)),
    Member("glass", ("break-glass",), admin=True),
    Member("dave", ("eng",)),
]
ORG_WIDE = Playbook(
    name="org-wide-reset", trigger="privileged credentials exposed",
    stages=(PlaybookStage("privileged", ("kill", "revoke_devices", "suspect_passkeys")),
            PlaybookStage("all", ("kill", "revoke_devices"))),
    exclude_groups=("break-glass",))
ONE_USER = Playbook(name="one-user", trigger="one user compromised",
                    stages=(PlaybookStage("target", ("kill", "revoke_tokens")),))


def test_privileged_first_then_everyone_else_and_never_the_break_glass_group() -> None:
    plan = plan_playbook(ORG_WIDE, PEOPLE, privileged_groups=("sre",))
    assert [(s.number, s.source, s.part, s.users) for s in plan.stages] == [
        (1, 0, "privileged", ("bob", "root")),
        # bob and root already had kill + revoke_devices (and more) in stage 1: not planned twice
        (2, 1, "others", ("alice", "carol", "dave")),
    ]
    assert plan.privileged == ("bob", "glass", "root")
    assert plan.excluded == ("glass",)
    assert "glass" not in plan.users
    assert plan.users == ("bob", "root", "alice", "carol", "dave")


def test_a_single_all_stage_still_cuts_privileged_users_first() -> None:
    playbook = Playbook(name="all", trigger="ransomware", stages=(PlaybookStage("all", ("kill",)),))
    plan = plan_playbook(playbook, PEOPLE)
    assert [(s.part, s.users) for s in plan.stages] == [
        ("privileged", ("glass", "root")), ("others", ("alice", "bob", "carol", "dave"))]


def test_a_later_stage_with_new_steps_acts_again_on_users_an_earlier_stage_covered() -> None:
    playbook = Playbook(name="p", trigger="t", stages=(
        PlaybookStage("groups", ("kill",), groups=("eng",)),
        PlaybookStage("all", ("kill", "raise_fresh_auth"), fresh_auth=300),
        PlaybookStage("all", ("raise_fresh_auth",), fresh_auth=60),
    ))
    plan = plan_playbook(playbook, PEOPLE)
    assert [(s.source, s.part, s.users, s.fresh_auth) for s in plan.stages] == [
        (0, "others", ("alice", "bob", "dave"), None),  # no privileged user is in eng here
        (1, "privileged", ("glass", "root"), 300),
        (1, "others", ("alice", "bob", "carol", "dave"), 300),
        # a tighter window is a new step for everyone
        (2, "privileged", ("glass", "root"), 60),
        (2, "others", ("alice", "bob", "carol", "dave"), 60),
    ]


def test_users_scope_names_only_existing_people_and_exclusions_by_user() -> None:
    playbook = Playbook(name="p", trigger="t", exclude_users=("carol",), stages=(
        PlaybookStage("users", ("kill",), users=("carol", "alice", "nobody")),))
    plan = plan_playbook(playbook, PEOPLE)
    assert [(s.part, s.users) for s in plan.stages] == [("others", ("alice",))]
    assert plan.excluded == ("carol",)


def test_a_target_stage_acts_on_the_named_users_devices_and_their_tokens() -> None:
    plan = plan_playbook(ONE_USER, PEOPLE, targets=Targets(users=("alice",), devices=("dev-bob-1",)),
                         tokens={"tok-a": "alice", "tok-r": "root"}, device_owners={"dev-bob-1": "bob"})
    [stage] = plan.stages
    assert (stage.part, stage.users, stage.devices, stage.tokens) == ("target", ("alice",), ("dev-bob-1",), ("tok-a",))


def test_tokens_are_planned_only_by_a_revoke_tokens_step() -> None:
    plan = plan_playbook(ORG_WIDE, PEOPLE, tokens={"tok-r": "root"})
    assert all(stage.tokens == () for stage in plan.stages)
    with_tokens = Playbook(name="p", trigger="t", stages=(PlaybookStage("privileged", ("revoke_tokens",)),))
    assert plan_playbook(with_tokens, PEOPLE, tokens={"tok-r": "root", "tok-a": "alice"}).stages[0].tokens == ("tok-r",)


def test_an_empty_organisation_plans_nothing() -> None:
    plan = plan_playbook(ORG_WIDE, [])
    assert (plan.stages, plan.users, plan.excluded) == ((), (), ())


@pytest.mark.parametrize(("playbook", "targets", "owners", "problem"), [
    (ONE_USER, Targets(), {}, "acts on the users or devices named when it runs"),
    (ORG_WIDE, Targets(users=("alice",)), {}, "has no target stage"),
    (ONE_USER, Targets(users=("mallory",)), {}, "target user 'mallory' does not exist"),
    (ONE_USER, Targets(devices=("dev-x",)), {}, "target device 'dev-x' does not exist"),
    (Playbook(name="one-user", trigger="t", exclude_groups=("break-glass",),
              stages=(PlaybookStage("target", ("kill",)),)), Targets(users=("glass",)), {},
     "glass is excluded from playbook one-user"),
    (Playbook(name="one-user", trigger="t", exclude_groups=("break-glass",),
              stages=(PlaybookStage("target", ("kill",)),)), Targets(devices=("dev-g",)), {"dev-g": "glass"},
     "glass is excluded"),
])
def test_targets_that_do_not_fit_the_playbook_are_refused(playbook: Playbook, targets: Targets,
                                                          owners: dict[str, str], problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        plan_playbook(playbook, PEOPLE, targets=targets, device_owners=owners)


def test_the_plan_is_the_same_whatever_order_the_store_lists_people_in() -> None:
    forward = plan_playbook(ORG_WIDE, PEOPLE, privileged_groups=("sre",))
    backward = plan_playbook(ORG_WIDE, list(reversed(PEOPLE)), privileged_groups=("sre",))
    assert forward.stages == backward.stages


def test_a_plan_survives_the_store_as_json() -> None:
    plan = plan_playbook(ONE_USER, PEOPLE, tokens={"tok-1": "alice"}, targets=Targets(users=("alice",)))
    assert plan_from_json(json.loads(json.dumps(plan_json(plan)))) == plan
    assert plan.stages[0].tokens == ("tok-1",)
