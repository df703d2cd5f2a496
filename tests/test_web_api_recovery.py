"""The recovery dashboard's API over real mTLS with real passkeys: after a real incident run over several groups
(the break-glass group excluded), what was cut per stage and group and who is not back; a user logging in again
counts back in each of their groups and leaves the not-back list; a lost device's owner is cut and comes back
once an approved new device signs in; who may read it; bad ids and parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import (Enrolled, begin_enroll, bootstrap, call_fresh, enroll, finish_enroll, invite, ledger_ok,
                               login, save_device, sign)
from tests.helpers.gateway import ORG_WIDE_PLAYBOOK, GatewayUnderTest, running_gateway

RUN = "/idwall/api/admin/incidents"
PEOPLE = {"alice": ["eng"], "bob": ["eng", "ops"], "carol": ["ops"], "glass": ["break-glass"]}


class World:
    """An admin and four people who all logged in, tokens of each scope, and a real run of org-wide."""

    def __init__(self, gw: GatewayUnderTest, admin: Enrolled, people: dict[str, Enrolled], tokens: dict[str, str],
                 incident: dict[str, Any]) -> None:
        self.gw, self.admin, self.people, self.tokens, self.incident = gw, admin, people, tokens, incident

    @property
    def path(self) -> str:
        return f"{RUN}/{self.incident['incident_id']}/recovery"

    async def get(self, path: str | None = None, *, token: str | None = "read",
                  device: Enrolled | None = None) -> tuple[int, Any]:
        status, answer, _ = await call_fresh(self.gw, "GET", path or self.path, device=device,
                                             token=self.tokens[token] if token else None)
        return status, answer


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_gateway(tmp_path, None, extra_yaml=ORG_WIDE_PLAYBOOK) as gw:
        admin = await bootstrap(gw)
        tokens: dict[str, str] = {}
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            people = {user: await enroll(gw, await invite(gw, admin, client, user, groups=groups))
                      for user, groups in PEOPLE.items()}
            for scope in ("incident", "read", "kill"):
                status, made = await sign(gw, admin, client, {"type": "token.create", "name": scope,
                                                              "scopes": [scope], "ttl": "1h"})
                assert status == 200, made
                tokens[scope] = made["result"]["token"]
        for device in people.values():
            assert (await login(gw, device))[0] == 200
        status, done, _ = await call_fresh(gw, "POST", RUN, token=tokens["incident"],
                                           body={"playbook": "org-wide", "reason": "creds for sale"})
        assert status == 200 and done["state"] == "complete", done
        yield World(gw, admin, people, tokens, done)


def _groups(answer: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {g["group"]: (g["users_cut"], g["users_back"]) for g in answer["groups"]}


async def test_the_run_is_counted_per_stage_and_group_and_a_login_brings_a_user_back(world: World) -> None:
    status, answer = await world.get()
    assert status == 200, answer
    assert (answer["incident_id"], answer["playbook"], answer["reason"]) == (
        world.incident["incident_id"], "org-wide", "creds for sale")
    # the admin's stage first (privileged), then the others; glass (break-glass) is in neither
    assert [(s["part"], s["users"], s["sessions_revoked"]) for s in answer["stages"]] == [
        ("privileged", 1, 1), ("others", 3, 3)]
    assert answer["stages"][1]["by_group"] == {"eng": {"users": 2, "sessions_revoked": 2, "devices_revoked": 0},
                                               "ops": {"users": 2, "sessions_revoked": 2, "devices_revoked": 0}}
    assert answer["totals"]["users_cut"] == 4 and answer["totals"]["users_back"] == 0
    assert answer["totals"]["sessions_revoked"] == 4
    assert _groups(answer)["eng"] == (2, 0) and _groups(answer)["ops"] == (2, 0)
    assert "break-glass" not in _groups(answer) and answer["excluded"] == ["glass"]
    assert [w["user"] for w in answer["not_back"]] == ["admin", "alice", "bob", "carol"]
    assert {w["needs"] for w in answer["not_back"]} == {"login"}
    # the stage numbers and seqs are the ledger's
    ledger = await ledger_ok(world.gw)
    stage_seqs = [e["seq"] for e in ledger if e["type"] == "incident.stage"]
    assert [s["audit_seq"] for s in answer["stages"]] == stage_seqs

    assert (await login(world.gw, world.people["bob"]))[0] == 200
    status, answer = await world.get()
    assert status == 200
    assert _groups(answer)["eng"] == (2, 1) and _groups(answer)["ops"] == (2, 1)  # bob is in both
    series = {g["group"]: g["series"] for g in answer["groups"]}
    assert [(p["user"], p["back"], p["how"]) for p in series["eng"]] == [("bob", 1, "logged_in")]
    assert series["eng"][0]["at"] >= world.incident["started_at"]
    assert [w["user"] for w in answer["not_back"]] == ["admin", "alice", "carol"]
    assert answer["totals"]["users_back"] == 1 and answer["totals"]["back_by_how"]["logged_in"] == 1
    # glass, never cut, logging in changes nothing
    assert (await login(world.gw, world.people["glass"]))[0] == 200
    assert _groups((await world.get())[1]) == _groups(answer)


async def test_an_admin_session_and_tokens_of_scope_incident_or_read_may_read_it(world: World) -> None:
    for token in ("read", "incident"):
        status, answer = await world.get(token=token)
        assert status == 200 and answer["totals"]["users_cut"] == 4, (token, answer)
    status, refused = await world.get(token="kill")
    assert status == 403 and "scope" in refused["detail"], refused
    status, refused = await world.get(token=None)
    assert status == 403 and "device certificate" in refused["detail"], refused
    status, refused = await world.get(token=None, device=world.admin)  # the run ended the admin's session too
    assert status == 401, refused
    # a person's own session is not enough
    assert (await login(world.gw, world.people["alice"]))[0] == 200
    status, refused = await world.get(token=None, device=world.people["alice"])
    assert status == 403, refused
    # the admin signs in again: allowed, and back
    assert (await login(world.gw, world.admin))[0] == 200
    status, answer = await world.get(token=None, device=world.admin)
    assert status == 200, answer
    assert [w["user"] for w in answer["not_back"]] == ["bob", "carol"]


async def test_an_unknown_incident_is_404_and_bad_parameters_are_400(world: World) -> None:
    status, problem = await world.get(f"{RUN}/inc-0000000000000000/recovery")
    assert status == 404 and "inc-0000000000000000" in problem["detail"], problem
    for query, words in (("limit=0", "limit"), ("limit=many", "limit"), ("limit=501", "limit"),
                         ("after=3", "unknown query parameter"), ("limit=1&limit=2", "more than once")):
        status, problem = await world.get(f"{world.path}?{query}")
        assert status == 400 and words in problem["detail"], (query, problem)
        assert problem["type"].endswith("/bad-request"), problem
    status, answer = await world.get(f"{world.path}?limit=1")
    assert status == 200 and [w["user"] for w in answer["not_back"]] == ["admin"]
    assert answer["not_back_total"] == 4


LOST_LAPTOP = """
incident:
  playbooks:
    lost-laptop:
      trigger: a device lost
      stages:
        - {scope: target, steps: [kill, revoke_devices]}
"""


async def test_a_lost_device_counts_for_its_owner_who_is_back_once_an_approved_new_device_signs_in(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=LOST_LAPTOP) as gw:
        admin = await bootstrap(gw)
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            laptop = await enroll(gw, await invite(gw, admin, client, "alice", groups=["eng"]))
            status, made = await sign(gw, admin, client, {"type": "token.create", "name": "soar",
                                                          "scopes": ["incident"], "ttl": "1h"})
            assert status == 200, made
            token = made["result"]["token"]
            assert (await login(gw, laptop))[0] == 200
            status, done, _ = await call_fresh(gw, "POST", RUN, token=token, body={
                "playbook": "lost-laptop", "reason": "laptop stolen", "targets": {"users": [],
                                                                                 "devices": [laptop.device_id]}})
            assert status == 200 and done["state"] == "complete", done
            path = f"{RUN}/{done['incident_id']}/recovery"
            status, answer, _ = await call_fresh(gw, "GET", path, token=token)
            assert status == 200, answer
            # the kill named the device, revoked by now: it still counts for alice, in her group
            assert [(w["user"], w["devices_revoked"], w["needs"]) for w in answer["not_back"]] == [
                ("alice", 1, "new device")]
            assert _groups(answer) == {"eng": (1, 0)} and answer["totals"]["devices_revoked"] == 1
            # a new device of her own, waiting for approval until the admin signs device.approve
            key, status, begun = await begin_enroll(gw, user="alice", device_name="new laptop")
            assert status == 200, begun
            auth = SoftAuthenticator(origin=gw.url)
            status, finished = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
            assert status == 200 and finished["status"] == "pending_approval", finished
            status, approved = await sign(gw, admin, client, {"type": "device.approve",
                                                              "device_id": finished["device_id"]})
            assert status == 200, approved
        status, ready, _ = await call_fresh(gw, "GET", f"/idwall/api/enroll/{begun['enrollment_id']}")
        assert status == 200 and ready["status"] == "active", ready
        new_laptop = save_device(gw, key, ready, "alice", auth)
        status, answer, _ = await call_fresh(gw, "GET", path, token=token)
        # approved, but not signed in yet: not back
        assert [w["user"] for w in answer["not_back"]] == ["alice"] and _groups(answer) == {"eng": (1, 0)}
        assert (await login(gw, new_laptop))[0] == 200
        status, answer, _ = await call_fresh(gw, "GET", path, token=token)
        assert _groups(answer) == {"eng": (1, 1)} and answer["not_back"] == []
        [point] = answer["groups"][0]["series"]
        assert (point["user"], point["how"]) == ("alice", "approved")
        await ledger_ok(gw)
