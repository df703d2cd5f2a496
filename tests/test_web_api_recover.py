"""Self-service recovery over the enrollment page's plain TLS connection, over real sockets with real passkeys:
after a reset revoked every certificate of bob's, he enrolls a tablet with ``user`` and signs ``device.recover``
with a passkey he still holds, no client certificate and no admin; the ledger verifies. Then the attacks, each
with a software authenticator that signs whatever it is handed: a suspect passkey, a revoked (lost device's)
passkey, another user's, the new device's own, an enrollment not waiting or not self-service, a ceremony
consumed, expired, begun for another enrollment or over mTLS, and a replayed assertion; the open ceremonies of
a waiting device are bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from idwall.encoding import b64url_encode
from idwall.self_recovery import MAX_OPEN_RECOVERIES
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import (Enrolled, begin_enroll, bootstrap, call, call_fresh, enroll, finish_enroll, invite,
                               ledger_ok, login, save_device, sign)
from tests.helpers.approvals import MANAGER_POLICY
from tests.helpers.gateway import GatewayUnderTest, running_gateway

RUN = "/idwall/api/admin/incidents"
PLAYBOOKS = """
incident:
  playbooks:
    reset:
      trigger: privileged credentials exposed
      stages:
        - {scope: all, steps: [kill, revoke_devices]}
    ransomware:
      trigger: ransomware detected
      stages:
        - {scope: groups, groups: [eng], steps: [kill, revoke_devices, suspect_passkeys]}
    mark-suspect:
      trigger: one user compromised
      stages:
        - {scope: groups, groups: [eng], steps: [kill, suspect_passkeys]}
    device-lost:
      trigger: a device lost
      stages:
        - {scope: target, steps: [kill, revoke_devices]}
"""


class World:
    """An admin with a session, bob (group eng) with a laptop and a phone, and an incident token."""

    def __init__(self, gw: GatewayUnderTest, admin: Enrolled, client: Any, laptop: Enrolled, phone: Enrolled,
                 token: str) -> None:
        self.gw, self.admin, self.client, self.laptop, self.phone, self.token = gw, admin, client, laptop, phone, token

    async def run(self, playbook: str, **targets: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"playbook": playbook, "reason": "test"}
        if targets:
            body["targets"] = targets
        status, done, _ = await call_fresh(self.gw, "POST", RUN, token=self.token, body=body)
        assert status == 200 and done["state"] == "complete", done
        return done


class Tablet:
    """A self-service enrollment of bob's that finished and waits: its key, passkey and ids."""

    def __init__(self, key: Any, auth: SoftAuthenticator, enrollment_id: str, device_id: str) -> None:
        self.key, self.auth, self.enrollment_id, self.device_id = key, auth, enrollment_id, device_id


async def waiting(gw: GatewayUnderTest, user: str = "bob", name: str = "tablet") -> Tablet:
    key, status, begun = await begin_enroll(gw, user=user, device_name=name)
    assert status == 200, begun
    auth = SoftAuthenticator(origin=gw.url)
    status, answer = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and answer["status"] == "pending_approval", answer
    return Tablet(key, auth, begun["enrollment_id"], answer["device_id"])


async def page(gw: GatewayUnderTest, method: str, enrollment_id: str, step: str = "",
               body: Any = None) -> tuple[int, Any]:
    """One call of the recovery API with no client certificate, as the enrollment page makes it."""
    path = f"/idwall/api/enroll/{enrollment_id}/recover" + (f"/{step}" if step else "")
    async with gw.session() as anon:
        return await call(anon, method, gw.url + path, body)


async def begin(gw: GatewayUnderTest, tablet: Tablet) -> tuple[int, Any]:
    return await page(gw, "POST", tablet.enrollment_id, "begin", {})


async def finish(gw: GatewayUnderTest, tablet: Tablet, action_id: str, credential: Any) -> tuple[int, Any]:
    return await page(gw, "POST", tablet.enrollment_id, "finish", {"action_id": action_id, "credential": credential})


async def recover(gw: GatewayUnderTest, tablet: Tablet, signer: Enrolled) -> tuple[int, Any]:
    status, begun = await begin(gw, tablet)
    if status != 200:
        return status, begun
    return await finish(gw, tablet, begun["action_id"], signer.auth.get(begun["options"]))


async def world_of(gw: GatewayUnderTest) -> World:
    admin = await bootstrap(gw)
    client = gw.session(admin)
    status, _ = await login(gw, admin, client)
    assert status == 200
    laptop = await enroll(gw, await invite(gw, admin, client, "bob", groups=["eng"]))
    phone_waiting = await waiting(gw, name="phone")
    status, signed = await recover(gw, phone_waiting, laptop)  # while the laptop is still active, too
    assert status == 200, signed
    phone = await certificate(gw, phone_waiting)
    status, made = await sign(gw, admin, client, {"type": "token.create", "name": "ir", "scopes": ["incident"],
                                                  "ttl": "1h"})
    assert status == 200, made
    return World(gw, admin, client, laptop, phone, made["result"]["token"])


async def certificate(gw: GatewayUnderTest, tablet: Tablet) -> Enrolled:
    """What the polling ``idwall device enroll`` reads once the device is active: the certificate, saved."""
    status, done, _ = await call_fresh(gw, "GET", f"/idwall/api/enroll/{tablet.enrollment_id}")
    assert status == 200 and done["status"] == "active" and "certificate_pem" in done, done
    return save_device(gw, tablet.key, done, "bob", tablet.auth)


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        w = await world_of(gw)
        try:
            yield w
        finally:
            await w.client.close()


def allowed(options: dict[str, Any]) -> set[str]:
    return {c["id"] for c in options["allowCredentials"]}


def cid(device: Enrolled | Tablet) -> str:
    """The base64url id of the one passkey ``device``'s authenticator holds."""
    (credential_id,) = device.auth.credentials
    return b64url_encode(credential_id)


async def test_after_a_reset_bob_recovers_alone_with_no_certificate_and_the_ledger_verifies(world: World) -> None:
    gw = world.gw
    await world.run("reset")
    assert (await gw.store.get_device(world.laptop.device_id)).status == "revoked"
    assert (await gw.store.get_device(world.phone.device_id)).status == "revoked"
    tablet = await waiting(gw)
    status, case = await page(gw, "GET", tablet.enrollment_id)
    assert status == 200, case
    assert (case["case"], case["user"], case["device_name"], case["source"]) == ("self", "bob", "tablet", "127.0.0.1")
    assert abs(case["started_at"] - time.time()) < 60
    status, begun = await begin(gw, tablet)
    assert status == 200, begun
    # both passkeys bob still holds are offered; the tablet's own is not
    assert allowed(begun["options"]) == {cid(world.laptop), cid(world.phone)}
    assert begun["action"]["type"] == "device.recover" and begun["action"]["actor"] == "bob"
    status, done = await finish(gw, tablet, begun["action_id"], world.phone.auth.get(begun["options"]))
    assert status == 200 and done["result"] == {"device_id": tablet.device_id, "status": "active"}, done
    # the polling CLI picks the certificate up as after an approval, and bob logs in with the tablet's passkey
    new = await certificate(gw, tablet)
    status, session = await login(gw, new)
    assert status == 200, session
    entries = await ledger_ok(gw)
    entry = next(e for e in reversed(entries) if e["type"] == "device.recover")
    assert (entry["actor"], entry["subject"], entry["approval"]["credential_id"]) == (
        "bob", tablet.device_id, cid(world.phone))


async def test_suspect_passkeys_cannot_recover_and_an_admin_approves_instead(world: World) -> None:
    gw = world.gw
    done = await world.run("ransomware")
    tablet = await waiting(gw)
    status, case = await page(gw, "GET", tablet.enrollment_id)
    assert (status, case["case"], case["incident"]) == (200, "suspect", done["incident_id"]), case
    assert case["title"] == "Waiting for an administrator." and done["incident_id"] in case["detail"]
    assert "device.approve" in case["next"]
    status, refused = await begin(gw, tablet)
    assert status == 403 and refused["type"].endswith("/passkey-suspect"), refused
    assert done["incident_id"] in refused["detail"]
    status, approved = await sign(gw, world.admin, world.client, {"type": "device.approve",
                                                                  "device_id": tablet.device_id})
    assert status == 200 and approved["result"]["status"] == "active", approved
    await certificate(gw, tablet)
    await ledger_ok(gw)


async def test_a_passkey_marked_suspect_after_begin_is_refused_at_finish(world: World) -> None:
    """The race: recovery begins while the phone's passkey is clean; the incident marks it before finish."""
    gw = world.gw
    tablet = await waiting(gw)
    status, begun = await begin(gw, tablet)
    assert status == 200, begun
    done = await world.run("mark-suspect")  # sessions and passkeys only: the tablet still waits
    before = await gw.store.ledger_entries()
    status, refused = await finish(gw, tablet, begun["action_id"], world.phone.auth.get(begun["options"]))
    assert status == 403 and refused["type"].endswith("/passkey-suspect") and done["incident_id"] in refused["detail"]
    assert await gw.store.ledger_entries() == before
    assert (await gw.store.get_device(tablet.device_id)).status == "pending_approval"


async def test_a_lost_devices_passkey_is_revoked_with_it_and_cannot_recover(world: World) -> None:
    gw = world.gw
    await world.run("device-lost", devices=[world.laptop.device_id])
    tablet = await waiting(gw)
    status, begun = await begin(gw, tablet)
    assert status == 200 and allowed(begun["options"]) == {cid(world.phone)}, begun
    # the thief holds the laptop and its passkey, and signs the offered challenge with it anyway
    before = await gw.store.ledger_entries()
    (laptop_passkey,) = world.laptop.auth.credentials
    status, refused = await finish(gw, tablet, begun["action_id"],
                                   world.laptop.auth.get(begun["options"], credential_id=laptop_passkey))
    assert status == 403 and "revoked with its lost device" in refused["detail"], refused
    assert await gw.store.ledger_entries() == before
    # bob's phone still vouches
    status, done = await recover(gw, tablet, world.phone)
    assert status == 200, done
    entries = await ledger_ok(gw)
    kill = next(e for e in entries if e["type"] == "kill" and e["data"]["target"] == world.laptop.device_id)
    assert kill["data"]["passkeys_revoked"] == 1


async def test_another_users_passkey_and_the_new_devices_own_are_refused(world: World) -> None:
    gw = world.gw
    tablet = await waiting(gw)
    for thief in (world.admin.auth, tablet.auth):
        status, begun = await begin(gw, tablet)
        assert status == 200, begun
        forged = thief.get({**begun["options"], "allowCredentials": []})
        status, refused = await finish(gw, tablet, begun["action_id"], forged)
        assert status == 400 and refused["type"].endswith("/webauthn-rejected"), refused
        assert "not one of bob's passkeys" in refused["detail"]
    assert (await gw.store.get_device(tablet.device_id)).status == "pending_approval"


async def test_a_consumed_ceremony_and_a_replayed_assertion_are_refused(world: World) -> None:
    gw = world.gw
    tablet = await waiting(gw)
    status, begun = await begin(gw, tablet)
    signed = world.phone.auth.get(begun["options"])
    # a failed finish consumes the challenge: the genuine assertion cannot be used after it
    status, _ = await finish(gw, tablet, begun["action_id"], world.admin.auth.get({**begun["options"],
                                                                                   "allowCredentials": []}))
    assert status == 400
    status, refused = await finish(gw, tablet, begun["action_id"], signed)
    assert status == 409 and "already used" in refused["detail"], refused
    # the same assertion against a new ceremony signs another challenge
    status, again = await begin(gw, tablet)
    status, refused = await finish(gw, tablet, again["action_id"], signed)
    assert status == 400 and refused["type"].endswith("/webauthn-rejected"), refused
    # once recovered, the enrollment is no longer waiting: nothing more to approve
    status, done = await recover(gw, tablet, world.phone)
    assert status == 200, done
    status, refused = await begin(gw, tablet)
    assert status == 409 and "not waiting for approval" in refused["detail"], refused


async def test_an_expired_ceremony_is_refused(world: World) -> None:
    gw = world.gw
    tablet = await waiting(gw)
    status, begun = await begin(gw, tablet)
    signed = world.phone.auth.get(begun["options"])
    node = gw.running.node
    node.clock = lambda: time.time() + gw.config.webauthn.timeout + 5
    try:
        status, refused = await finish(gw, tablet, begun["action_id"], signed)
    finally:
        node.clock = time.time
    assert status == 410 and "expired" in refused["detail"], refused
    assert (await gw.store.get_device(tablet.device_id)).status == "pending_approval"


async def test_a_ceremony_belongs_to_its_enrollment_and_not_to_mtls(world: World) -> None:
    gw = world.gw
    first, second = await waiting(gw), await waiting(gw, name="watch")
    status, begun = await begin(gw, first)
    status, refused = await finish(gw, second, begun["action_id"], world.phone.auth.get(begun["options"]))
    assert status == 403 and "another enrollment" in refused["detail"], refused
    # a signed action begun over the admin's mTLS session cannot be finished on the enrollment page
    status, mtls = await call(world.client, "POST", gw.url + "/idwall/api/actions/begin",
                              {"action": {"type": "admin.grant", "user": "bob"}})
    assert status == 200, mtls
    status, refused = await finish(gw, second, mtls["action_id"], world.admin.auth.get(mtls["options"]))
    assert status == 403 and "another enrollment" in refused["detail"], refused
    assert (await gw.store.get_user("bob")).admin is False


async def test_a_waiting_device_keeps_only_its_newest_ceremonies(world: World) -> None:
    gw = world.gw
    tablet = await waiting(gw)
    begun = []
    for _ in range(MAX_OPEN_RECOVERIES + 1):
        status, answer = await begin(gw, tablet)
        assert status == 200, answer
        begun.append(answer)
    status, refused = await finish(gw, tablet, begun[0]["action_id"], world.phone.auth.get(begun[0]["options"]))
    assert status == 409 and "already used" in refused["detail"], refused
    status, done = await finish(gw, tablet, begun[-1]["action_id"], world.phone.auth.get(begun[-1]["options"]))
    assert status == 200, done


async def test_unknown_and_malformed_requests_are_specific_4xx(world: World) -> None:
    gw = world.gw
    tablet = await waiting(gw)
    status, problem = await page(gw, "GET", "enr-nope")
    assert status == 404, problem
    status, problem = await page(gw, "POST", tablet.enrollment_id, "finish", {"action_id": 5, "credential": {}})
    assert status == 400, problem
    status, problem = await page(gw, "POST", tablet.enrollment_id, "finish", {"action_id": "x", "credential": "no"})
    assert status == 400, problem
    async with gw.session() as anon:
        status, problem = await call(anon, "POST", gw.url + f"/idwall/api/enroll/{tablet.enrollment_id}/recover/begin",
                                     data=b"[not json")
    assert status == 400, problem


async def test_a_second_persons_policy_and_invited_enrollments_are_not_self_service(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, **MANAGER_POLICY) as gw:
        admin = await bootstrap(gw)
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            code = await invite(gw, admin, client, "carol")
        key, status, begun = await begin_enroll(gw, code=code)
        auth = SoftAuthenticator(origin=gw.url)
        status, answer = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
        assert answer["status"] == "pending_approval", answer
        status, refused = await page(gw, "POST", begun["enrollment_id"], "begin", {})
        assert status == 409 and "invite code" in refused["detail"], refused
        own = await waiting(gw, user="admin")
        status, case = await page(gw, "GET", own.enrollment_id)
        assert (status, case["case"]) == (200, "policy"), case
        status, refused = await begin(gw, own)
        assert status == 403 and "second person" in refused["detail"], refused
