"""The incident API over real mTLS with real passkeys: tokens and sessions, dry runs, real runs, recovery after
a reset (alone with a second passkey; refused once the playbook marked passkeys suspect, until an admin
approves), the signed incident.start, and a ledger that verifies (and fails once a stage entry is tampered)."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from idwall.audit import verify_ledger
from idwall.encoding import b64url_encode
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import (Enrolled, begin_enroll, bootstrap, call, call_fresh, counts, enroll, finish_enroll,
                               invite, ledger_ok, login, save_device, sign)
from tests.helpers.cli import run_cli
from tests.helpers.gateway import GatewayUnderTest, running_gateway

RUN = "/idwall/api/admin/incidents"
PLAYBOOKS = """
incident:
  notice: {title: "Security incident", body: "Sign in again with your passkey.", contact: "soc@example.com"}
  playbooks:
    sessions-reset:
      trigger: credentials seen for sale
      exclude: {groups: [break-glass]}
      stages:
        - {scope: all, steps: [kill]}
    passkeys-suspect:
      trigger: ransomware detected
      stages:
        - {scope: groups, groups: [eng], steps: [kill, suspect_passkeys, block_code_enrollment]}
    one-user:
      trigger: one user compromised
      stages:
        - {scope: target, steps: [kill, revoke_devices]}
"""


class World:
    """An admin with a session, bob (group eng) with two devices, and an incident token made by a signature."""

    def __init__(self, gw: GatewayUnderTest, admin: Enrolled, client: Any, laptop: Enrolled, phone: Enrolled,
                 token: str, reader: str) -> None:
        self.gw, self.admin, self.client, self.laptop, self.phone = gw, admin, client, laptop, phone
        self.token, self.reader = token, reader

    async def post(self, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        status, answer, _ = await call_fresh(self.gw, "POST", path, token=token or self.token, body=body)
        return status, answer

    async def get(self, path: str, *, token: str | None = None) -> tuple[int, Any]:
        status, answer, _ = await call_fresh(self.gw, "GET", path, token=token or self.reader)
        return status, answer


async def _second_device(gw: GatewayUnderTest, first: Enrolled, name: str) -> tuple[int, Any, Enrolled | None]:
    """Bob enrolls another device by himself and signs device.recover with ``first``'s passkey (a new session)."""
    key, status, begun = await begin_enroll(gw, user="bob", device_name=name)
    assert status == 200, begun
    auth = SoftAuthenticator(origin=gw.url)
    status, answer = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and answer["status"] == "pending_approval", answer
    async with gw.session(first) as client:
        status, logged = await login(gw, first, client)
        assert status == 200, logged
        status, signed = await sign(gw, first, client, {"type": "device.recover",
                                                        "enrollment_id": begun["enrollment_id"]})
    if status != 200:
        return status, {**signed, "enrollment_id": begun["enrollment_id"], "device_id": answer["device_id"]}, None
    async with gw.session() as anon:
        _, done = await call(anon, "GET", gw.url + f"/idwall/api/enroll/{begun['enrollment_id']}")
    return status, signed, save_device(gw, key, done, "bob", auth)


async def _world(gw: GatewayUnderTest) -> World:
    admin = await bootstrap(gw)
    client = gw.session(admin)
    status, _ = await login(gw, admin, client)
    assert status == 200
    laptop = await enroll(gw, await invite(gw, admin, client, "bob", groups=["eng"]))
    status, _, phone = await _second_device(gw, laptop, "phone")
    assert status == 200 and phone is not None
    tokens = []
    for scopes in (["incident"], ["read"]):
        status, made = await sign(gw, admin, client, {"type": "token.create", "name": scopes[0], "scopes": scopes,
                                                      "ttl": "1h"})
        assert status == 200, made
        tokens.append(made["result"]["token"])
    return World(gw, admin, client, laptop, phone, *tokens)


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        w = await _world(gw)
        try:
            yield w
        finally:
            await w.client.close()


async def test_a_dry_run_counts_and_changes_nothing(world: World) -> None:
    before = await counts(world.gw)
    status, report = await world.post(RUN, {"playbook": "sessions-reset", "reason": "tabletop", "dry_run": True})
    assert status == 200, report
    assert report["dry_run"] is True and [s["users"] for s in report["stages"]] == [1, 1]  # admin first, then bob
    assert report["stages"][1]["result"]["sessions_revoked"] == 1  # bob logged in on his laptop
    assert await counts(world.gw) == before


async def test_a_token_run_cuts_then_bob_recovers_alone_with_his_second_passkey(world: World) -> None:
    status, done = await world.post(RUN, {"playbook": "sessions-reset", "reason": "creds for sale"})
    assert status == 200, done
    assert done["state"] == "complete" and [s["committed"] for s in done["stages"]] == [True, True]
    assert done["actor"].startswith("token:")
    status, shown = await world.get(f"{RUN}/{done['incident_id']}")
    assert status == 200 and shown["stages_committed"] == 2
    status, listed = await world.get(RUN)
    assert [i["incident_id"] for i in listed["incidents"]] == [done["incident_id"]]
    # the laptop is lost: bob enrolls a tablet and vouches for it with the passkey on his phone
    status, signed, tablet = await _second_device(world.gw, world.phone, "tablet")
    assert status == 200, signed
    assert tablet is not None and (await world.gw.store.get_device(tablet.device_id)).status == "active"
    status, ended = await world.post(f"{RUN}/{done['incident_id']}/end")
    assert status == 200 and ended["state"] == "ended"
    await ledger_ok(world.gw)


async def test_suspect_passkeys_cannot_recover_until_an_admin_approves(world: World) -> None:
    status, done = await world.post(RUN, {"playbook": "passkeys-suspect", "reason": "ransomware"})
    assert status == 200 and done["stages"][0]["result"]["passkeys_marked_suspect"] == 2, done
    status, refused, _ = await _second_device(world.gw, world.phone, "tablet")
    assert status == 403 and refused["type"].endswith("/passkey-suspect"), refused
    assert done["incident_id"] in refused["detail"] and "device.approve" in refused["detail"]
    assert (await world.gw.store.get_device(refused["device_id"])).status == "pending_approval"
    # the admin (not in eng, not cut) approves: the device becomes active
    status, approved = await sign(world.gw, world.admin, world.client, {"type": "device.approve",
                                                                        "device_id": refused["device_id"]})
    assert status == 200 and approved["result"]["status"] == "active", approved
    # enrollment by code is blocked for bob while the incident is active
    code = await invite(world.gw, world.admin, world.client, "bob", groups=["eng"])
    _, status, blocked = await begin_enroll(world.gw, code=code)
    assert status == 403 and blocked["type"].endswith("/enrollment-blocked")
    assert done["incident_id"] in blocked["detail"]
    await world.post(f"{RUN}/{done['incident_id']}/end")
    _, status, begun = await begin_enroll(world.gw, code=code)
    assert status == 200, begun
    entries = await ledger_ok(world.gw)
    stage = next(e for e in entries if e["type"] == "incident.stage")
    tampered = copy.deepcopy(entries)
    tampered[stage["seq"] - 1]["data"]["credentials_suspect"] = []
    result = verify_ledger(tampered)
    assert not result.ok and result.seq == stage["seq"] and "hash does not match" in result.reason


async def test_an_admin_signs_incident_start_and_the_answer_comes_before_their_connection_closes(
        world: World) -> None:
    action = {"type": "incident.start", "playbook": "sessions-reset", "reason": "admin laptop stolen"}
    status, done = await sign(world.gw, world.admin, world.client, action)
    assert status == 200, done
    result = done["result"]
    assert result["actor"] == "admin" and result["state"] == "complete"
    entries = await ledger_ok(world.gw)
    start = next(e for e in entries if e["type"] == "incident.start")
    assert start["approval"]["action"]["playbook"] == "sessions-reset"
    # the admin's own session was the first cut
    kills = [e for e in entries if e["type"] == "kill" and e["seq"] > start["seq"]]
    assert [k["subject"] for k in kills] == ["admin", "bob"]


async def test_a_signed_dry_run_is_refused_it_needs_no_signature(world: World) -> None:
    before = await counts(world.gw)
    status, refused = await sign(world.gw, world.admin, world.client,
                                 {"type": "incident.start", "playbook": "sessions-reset", "reason": "x",
                                  "dry_run": True})
    assert status == 400 and "needs no signature" in refused["detail"]
    assert await counts(world.gw) == before


async def test_a_background_run_answers_202_and_its_stages_show_up(world: World) -> None:
    status, begun = await world.post(RUN, {"playbook": "sessions-reset", "reason": "soar", "wait": False})
    assert status == 202 and begun["stages_total"] == 2, begun
    for _ in range(200):
        status, shown = await world.get(f"{RUN}/{begun['incident_id']}")
        if shown["state"] == "complete":
            break
        await asyncio.sleep(0.05)
    assert shown["state"] == "complete" and shown["stages_committed"] == 2


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"playbook": "nope", "reason": "x"}, 404, "no playbook 'nope'"),
    ({"playbook": "sessions-reset"}, 400, "reason is required"),
    ({"playbook": "sessions-reset", "reason": "x", "extra": 1}, 400, "unknown field(s) ['extra']"),
    ({"playbook": "sessions-reset", "reason": "x", "dry_run": "yes"}, 400, "dry_run must be true or false"),
    ({"playbook": "one-user", "reason": "x"}, 400, "name at least one"),
    ({"playbook": "one-user", "reason": "x", "targets": {"users": ["mallory"]}}, 400, "does not exist"),
    ({"playbook": "one-user", "reason": "x", "targets": {"users": "bob"}}, 400, "targets.users must be a list"),
    ({"playbook": "sessions-reset", "reason": "x", "targets": {"users": ["bob"]}}, 400, "has no target stage"),
    ([], 400, "JSON object"),
])
async def test_bad_runs_are_refused_and_change_nothing(world: World, body: Any, status: int, says: str) -> None:
    before = await counts(world.gw)
    got, problem = await world.post(RUN, body)
    assert got == status and says in problem["detail"], problem
    assert await counts(world.gw) == before


async def test_who_may_run_follow_and_end(world: World) -> None:
    before = await counts(world.gw)
    body = {"playbook": "sessions-reset", "reason": "x"}
    status, problem = await world.post(RUN, body, token=world.reader)  # read scope cannot run
    assert status == 403 and problem["type"].endswith("/insufficient-scope")
    status, problem = await world.post(RUN, body, token="idw_" + "A" * 43)
    assert status == 401 and problem["type"].endswith("/invalid-token")
    status, problem, _ = await call_fresh(world.gw, "POST", RUN, body=body)  # no token, no certificate
    assert status == 403 and problem["type"].endswith("/no-client-certificate")
    # an admin session may rehearse, but a real run by a person is a passkey-signed incident.start
    status, problem = await call(world.client, "POST", world.gw.url + RUN, body)
    assert status == 403 and "incident.start" in problem["detail"]
    status, report = await call(world.client, "POST", world.gw.url + RUN, {**body, "dry_run": True})
    assert status == 200 and report["dry_run"] is True
    assert await counts(world.gw) == before
    status, problem = await world.get(f"{RUN}/inc-nope")
    assert status == 404
    status, problem = await world.post(f"{RUN}/inc-nope/end")
    assert status == 404


async def test_another_sites_page_cannot_end_an_incident_with_the_admins_certificate(world: World) -> None:
    status, done = await world.post(RUN, {"playbook": "passkeys-suspect", "reason": "ransomware"})
    assert status == 200, done
    client = world.gw.session(world.admin)
    try:
        status, _ = await login(world.gw, world.admin, client)
        assert status == 200
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            status, problem = await call(client, "POST", world.gw.url + f"{RUN}/{done['incident_id']}/end",
                                         headers=headers)
            assert status == 403 and problem["type"].endswith("/cross-site-refused"), problem
        assert (await world.gw.store.get_incident(done["incident_id"])).ended_at is None
        status, ended = await call(client, "POST", world.gw.url + f"{RUN}/{done['incident_id']}/end")
        assert status == 200 and ended["state"] == "ended" and ended["ended_by"] == "admin"
    finally:
        await client.close()


async def test_idwall_audit_verify_passes_with_the_incident_and_names_a_tampered_stage(world: World) -> None:
    status, done = await world.post(RUN, {"playbook": "passkeys-suspect", "reason": "ransomware"})
    assert status == 200, done
    config = world.gw.init["config"]
    verified = await asyncio.to_thread(run_cli, "audit", "verify", "--config", config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    seq = done["stages"][0]["result"]["audit_seq"]

    def tamper(conn: Any) -> None:
        (text,) = conn.execute("SELECT entry FROM ledger WHERE seq = ?", (seq,)).fetchone()
        entry = json.loads(text)
        entry["data"]["credentials_suspect"] = []  # a ledger-key thief hides which passkeys were marked
        conn.execute("UPDATE ledger SET entry = ? WHERE seq = ?", (json.dumps(entry, sort_keys=True), seq))

    await world.gw.store.write(tamper)
    refused = await asyncio.to_thread(run_cli, "audit", "verify", "--config", config)
    assert refused.returncode == 1 and f"seq {seq}" in refused.stdout + refused.stderr


async def test_a_suspect_passkey_cannot_sign_a_recovery_even_when_another_passkey_is_offered(world: World) -> None:
    """The attack: bob has one unsuspected passkey again (his approved tablet), so recovery begins; the thief
    holding his phone signs the challenge with the phone's suspect passkey instead. finish refuses it."""
    status, done = await world.post(RUN, {"playbook": "passkeys-suspect", "reason": "ransomware"})
    assert status == 200, done
    status, refused, _ = await _second_device(world.gw, world.phone, "tablet")
    assert status == 403
    status, _ = await sign(world.gw, world.admin, world.client, {"type": "device.approve",
                                                                 "device_id": refused["device_id"]})
    assert status == 200
    _, status, begun = await begin_enroll(world.gw, user="bob", device_name="thief")
    finished, answer = await finish_enroll(world.gw, begun["enrollment_id"],
                                           SoftAuthenticator(origin=world.gw.url).create(begun["options"]))
    assert finished == 200 and answer["status"] == "pending_approval"
    before = await counts(world.gw)
    async with world.gw.session(world.phone) as client:
        assert (await login(world.gw, world.phone, client))[0] == 200
        status, started = await call(client, "POST", world.gw.url + "/idwall/api/actions/begin",
                                     {"action": {"type": "device.recover", "enrollment_id": begun["enrollment_id"]}})
        assert status == 200, started
        offered = [c["id"] for c in started["options"]["allowCredentials"]]
        phone_credential = next(iter(world.phone.auth.credentials))
        assert b64url_encode(phone_credential) not in offered  # only the tablet's passkey is offered
        forged = world.phone.auth.get({**started["options"], "allowCredentials": []}, credential_id=phone_credential)
        status, problem = await call(client, "POST", world.gw.url + "/idwall/api/actions/finish",
                                     {"action_id": started["action_id"], "credential": forged})
    assert status == 403 and problem["type"].endswith("/passkey-suspect"), problem
    assert (await world.gw.store.get_device(answer["device_id"])).status == "pending_approval"
    after = await counts(world.gw)
    assert {k: v for k, v in after.items() if k not in ("ceremonies", "ledger", "sessions")} == \
        {k: v for k, v in before.items() if k not in ("ceremonies", "ledger", "sessions")}
    assert after["ledger"] == before["ledger"] + 1  # the phone's new login, nothing else
