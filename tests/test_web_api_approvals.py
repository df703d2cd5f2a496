"""``GET /idwall/api/approvals`` over real mTLS: each person sees exactly the pending devices they may approve
(every one for an administrator, those of the people they manage for a manager under ``devices.approval:
manager``, none otherwise), never another user's; sessions only, on the gateway's own address; bad queries 400.

Users, managers and devices are made through the real API (bootstrap, signed invites with a software passkey,
enrollment, signed approvals), so what the list offers is checked against what ``device.approve`` accepts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import pytest

from idwall.web.api_approvals import approval_scope
from tests.helpers.api import Enrolled, bootstrap, call, call_fresh, counts, enroll, invite, login, sign
from tests.helpers.approvals import MANAGER_POLICY, Waiting, approve, enroll_waiting
from tests.helpers.gateway import GatewayUnderTest, running_gateway

pytestmark = pytest.mark.asyncio

PATH = "/idwall/api/approvals"


@dataclass
class Team:
    """admin; dave (no manager) manages carol; erin manages nobody; a pending device of carol's and of erin's."""

    gateway: GatewayUnderTest
    admin: Enrolled
    people: dict[str, Enrolled]
    carol_phone: Waiting
    erin_phone: Waiting


async def _team(gateway: GatewayUnderTest) -> Team:
    admin = await bootstrap(gateway)
    people: dict[str, Enrolled] = {}
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        for user, manager in (("dave", None), ("carol", "dave"), ("erin", None)):
            code = await invite(gateway, admin, client, user, manager=manager)
            people[user] = await approve(gateway, admin, client, await enroll_waiting(gateway, code=code))
    for person in people.values():
        assert (await login(gateway, person))[0] == 200
    carol_phone = await enroll_waiting(gateway, user="carol", device_name="Carol phone")
    erin_phone = await enroll_waiting(gateway, user="erin", device_name="Erin phone")
    return Team(gateway, admin, people, carol_phone, erin_phone)


@pytest.fixture
async def team(tmp_path, upstream) -> AsyncIterator[Team]:  # type: ignore[no-untyped-def]
    """A gateway with ``devices.approval: manager`` and the team above, everyone logged in."""
    async with running_gateway(tmp_path, upstream.url, **MANAGER_POLICY) as gateway:
        yield await _team(gateway)


async def _read(team: Team, who: str, query: str = "") -> tuple[int, Any]:
    device = team.admin if who == "admin" else team.people[who]
    status, body, _ = await call_fresh(team.gateway, "GET", PATH + query, device=device)
    return status, body


async def test_who_approves_whom() -> None:
    assert approval_scope(admin=True, approval="none") == "all"
    assert approval_scope(admin=True, approval="manager") == "all"
    assert approval_scope(admin=False, approval="manager") == "reports"
    assert approval_scope(admin=False, approval="admin") == "none"
    assert approval_scope(admin=False, approval="none") == "none"


async def test_a_manager_sees_the_pending_devices_of_the_people_they_manage_and_nobody_elses(team: Team) -> None:
    status, body = await _read(team, "dave")
    assert status == 200, body
    assert body["user"] == "dave" and body["admin"] is False and body["approval"] == "manager"
    assert body["scope"] == "reports" and body["reports"] == ["carol"] and body["next"] is None
    assert [(d["id"], d["user"], d["user_name"], d["name"], d["status"]) for d in body["devices"]] == [
        (team.carol_phone.device_id, "carol", "Carol", "Carol phone", "pending_approval")]
    assert body["devices"][0]["enrolled_at"] <= time.time()
    assert "BEGIN CERTIFICATE" not in json.dumps(body) and team.erin_phone.device_id not in json.dumps(body)


async def test_someone_who_manages_nobody_sees_nothing_not_even_their_own_pending_device(team: Team) -> None:
    for who in ("erin", "carol"):
        status, body = await _read(team, who)
        assert status == 200, body
        assert (body["scope"], body["reports"], body["devices"], body["next"]) == ("reports", [], [], None), body


async def test_an_administrator_sees_every_pending_device(team: Team) -> None:
    status, body = await _read(team, "admin")
    assert status == 200, body
    assert body["scope"] == "all" and body["admin"] is True
    assert sorted(d["id"] for d in body["devices"]) == sorted([team.carol_phone.device_id,
                                                               team.erin_phone.device_id])


async def test_what_is_listed_is_what_the_signature_accepts_and_an_approved_device_leaves_the_list(
        team: Team) -> None:
    gateway, dave = team.gateway, team.people["dave"]
    async with gateway.session(dave) as client:
        assert (await login(gateway, dave, client))[0] == 200
        # the device that is not listed for dave: his signature over it is refused, and nothing is written
        before = await counts(gateway)
        status, problem = await sign(gateway, dave, client, {"type": "device.approve",
                                                             "device_id": team.erin_phone.device_id})
        assert status == 403 and "dave is neither" in problem["detail"], problem
        assert await counts(gateway) == before
        # the listed one is accepted, and then no longer listed
        await approve(gateway, dave, client, team.carol_phone)
    status, body = await _read(team, "dave")
    assert status == 200 and body["devices"] == [] and body["reports"] == ["carol"], body
    assert (await gateway.store.get_device(team.carol_phone.device_id)).approved_by == "dave"


async def test_a_former_manager_sees_nothing_more(team: Team) -> None:
    gateway, admin = team.gateway, team.admin
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        status, answer = await sign(gateway, admin, client, {"type": "user.set_manager", "user": "carol",
                                                             "manager": "erin"})
        assert status == 200, answer
    status, body = await _read(team, "dave")
    assert status == 200 and (body["reports"], body["devices"]) == ([], []), body
    status, body = await _read(team, "erin")
    assert [d["id"] for d in body["devices"]] == [team.carol_phone.device_id] and body["reports"] == ["carol"]


async def test_pages_are_bounded_and_continue(team: Team) -> None:
    extra = await enroll_waiting(team.gateway, user="carol", device_name="Carol tablet")
    ids = sorted([team.carol_phone.device_id, extra.device_id])
    status, body = await _read(team, "dave", "?limit=1")
    assert status == 200 and [d["id"] for d in body["devices"]] == ids[:1] and body["next"] == ids[0]
    status, body = await _read(team, "dave", f"?limit=1&after={ids[0]}")
    assert [d["id"] for d in body["devices"]] == ids[1:]


@pytest.mark.parametrize(("query", "words"), [
    ("?limit=0", "'limit' must be an integer from 1 to 500"),
    ("?limit=501", "'limit' must be an integer from 1 to 500"),
    ("?after=../x", "'after' must be an id"),
    ("?user=carol", "unknown query parameter(s) user"),
    ("?limit=1&limit=2", "given more than once"),
])
async def test_a_bad_query_is_refused_with_a_clear_problem(team: Team, query: str, words: str) -> None:
    status, problem = await _read(team, "dave", query)
    assert status == 400 and problem["type"].endswith("/bad-request") and words in problem["detail"], problem


async def test_it_needs_a_passkey_session_of_an_enrolled_device(team: Team) -> None:
    gateway = team.gateway
    status, problem, _ = await call_fresh(gateway, "GET", PATH)
    assert status == 403 and problem["type"].endswith("/no-client-certificate"), problem
    stale = await gateway.device("dave", with_session=False)  # dave's own certificate, no session on it
    status, problem, _ = await call_fresh(gateway, "GET", PATH, device=stale)
    assert status == 401 and problem["type"].endswith("/login-required") and "login_url" in problem, problem


async def test_a_session_is_not_usable_from_a_proxied_hosts_origin(team: Team) -> None:
    """A page of a proxied app (wiki.localhost) must not read whose devices wait for dave with his certificate."""
    gateway, dave = team.gateway, team.people["dave"]
    ctx = gateway.ssl(dave)
    ctx.check_hostname = False  # the test certificate covers localhost only: the name is what is attacked here
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as client:
        status, problem = await call(client, "GET", gateway.url + PATH, server_hostname="wiki.localhost",
                                     headers={"Host": f"wiki.localhost:{gateway.port}"})
    assert status == 403 and "only at " + gateway.url in problem["detail"], problem
    assert team.carol_phone.device_id not in json.dumps(problem)


@pytest.mark.parametrize("policy", ["admin", "none"])
async def test_without_the_manager_policy_a_manager_approves_nothing(tmp_path, upstream, policy: str) -> None:
    async with running_gateway(tmp_path, upstream.url,
                               edit=lambda text: text.replace("approval: none", f"approval: {policy}")) as gateway:
        admin = await bootstrap(gateway)
        async with gateway.session(admin) as client:
            assert (await login(gateway, admin, client))[0] == 200
            dave_code = await invite(gateway, admin, client, "dave")
            if policy == "admin":
                dave = await approve(gateway, admin, client, await enroll_waiting(gateway, code=dave_code))
                await approve(gateway, admin, client, await enroll_waiting(
                    gateway, code=await invite(gateway, admin, client, "carol", manager="dave")))
            else:
                dave = await enroll(gateway, dave_code)
                await enroll(gateway, await invite(gateway, admin, client, "carol", manager="dave"))
        assert (await login(gateway, dave))[0] == 200
        waiting = await enroll_waiting(gateway, user="carol", device_name="Carol phone")
        status, body, _ = await call_fresh(gateway, "GET", PATH, device=dave)
        assert status == 200, body
        assert (body["scope"], body["reports"], body["devices"], body["approval"]) == ("none", ["carol"], [], policy)
        status, body, _ = await call_fresh(gateway, "GET", PATH, device=admin)
        assert [d["id"] for d in body["devices"]] == [waiting.device_id]
