"""Signed actions over real mTLS: each grant needs an admin's (or the user's own) passkey over the exact action.

The attack of the adversarial review (two administrators revoking themselves at once) is at the end; its
docstring says what got through before its fix.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from idwall import pki
from idwall.actions import ACTION_TYPES, build_action, claimed_challenge, validate_action
from idwall.challenges import action_challenge
from idwall.encoding import b64url_decode, b64url_encode
from idwall.enrollment import INVITE_TTL, invite_id_of
from idwall.errors import BadRequest
from idwall.tokens import token_hash
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import (
    Enrolled,
    begin_enroll,
    begin_renewal,
    bootstrap,
    call,
    counts,
    enroll,
    finish_enroll,
    invite,
    ledger_ok,
    login,
    make_csr,
    renewed,
    save_device,
    sign,
)
from tests.helpers.gateway import running_gateway

BEGIN, FINISH = "/idwall/api/actions/begin", "/idwall/api/actions/finish"


async def _logged_in_admin(gateway):  # type: ignore[no-untyped-def]
    admin = await bootstrap(gateway)
    client = gateway.session(admin)
    status, _ = await login(gateway, admin, client)
    assert status == 200
    return admin, client


async def test_invite_create_returns_a_code_once_and_stores_only_its_hash(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        status, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {
            "type": "invite.create", "user": "bob", "name": "Bob", "email": "bob@example.com", "groups": ["eng"],
            "admin": False}})
        assert status == 200, begun
        action = begun["action"]
        assert action["actor"] == "admin" and len(b64url_decode(action["nonce"])) == 32
        assert b64url_decode(begun["options"]["challenge"]) == action_challenge(action)
        assert begun["action_id"] == begun["options"]["challenge"]
        assert [b64url_decode(c["id"]) for c in begun["options"]["allowCredentials"]] == list(admin.auth.credentials)
        status, answer = await call(client, "POST", gateway.url + FINISH,
                                    {"action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])})
    assert status == 200, answer
    code = answer["result"]["code"]
    assert len(b64url_decode(code)) >= 16
    assert abs(answer["result"]["expires_at"] - (time.time() + INVITE_TTL)) < 5
    stored = await gateway.store.get_invite(invite_id_of(code))
    assert stored.user_id == "bob" and stored.created_by == "admin"
    db = b"".join(p.read_bytes() for p in gateway.dir.glob("idwall.db*"))
    assert code.encode() not in db
    entry = (await ledger_ok(gateway))[-1]
    assert entry["type"] == "invite.create" and entry["subject"] == "bob"
    assert entry["approval"]["action"] == action and entry["data"]["invite_id"] == invite_id_of(code)
    # the signer's new sign count was stored with the action
    assert (await gateway.store.get_credential(next(iter(admin.auth.credentials)))).sign_count == 2


async def test_non_admin_cannot_sign_an_invite(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        code = await invite(gateway, admin, client, "bob")
    bob = await enroll(gateway, code)
    async with gateway.session(bob) as bob_client:
        assert (await login(gateway, bob, bob_client))[0] == 200
        before = await counts(gateway)
        for action in ({"type": "invite.create", "user": "eve", "name": "Eve", "email": "", "groups": [],
                        "admin": True},
                       {"type": "admin.grant", "user": "bob"},
                       {"type": "token.create", "name": "t", "scopes": ["kill"], "ttl": "1h"}):
            status, problem = await sign(gateway, bob, bob_client, action)
            assert status == 403, problem
            assert "administrator" in problem["detail"]
        assert await counts(gateway) == before


async def test_admin_rights_are_checked_again_at_finish(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        code = await invite(gateway, admin, client, "bob")
        bob = await enroll(gateway, code)
        assert (await sign(gateway, admin, client, {"type": "admin.grant", "user": "bob"}))[0] == 200
        async with gateway.session(bob) as bob_client:
            assert (await login(gateway, bob, bob_client))[0] == 200
            status, begun = await call(bob_client, "POST", gateway.url + BEGIN, {"action": {
                "type": "invite.create", "user": "eve", "name": "Eve", "email": "", "groups": [], "admin": True}})
            assert status == 200, begun
            # bob's admin right is taken away between begin and finish
            status, answer = await sign(gateway, admin, client, {"type": "admin.revoke", "user": "bob"})
            assert status == 200 and answer["result"] == {"user": "bob", "admin": False}
            before = await counts(gateway)
            status, problem = await call(bob_client, "POST", gateway.url + FINISH, {
                "action_id": begun["action_id"], "credential": bob.auth.get(begun["options"])})
            assert status == 403, problem
            assert await counts(gateway) == before | {"ceremonies": before["ceremonies"] - 1}
    await ledger_ok(gateway)


async def test_last_admin_cannot_be_revoked(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        status, problem = await sign(gateway, admin, client, {"type": "admin.revoke", "user": "admin"})
    assert status == 409 and "last administrator" in problem["detail"]


BAD_ACTIONS = {
    "unknown type": {"type": "user.delete", "user": "bob"},
    "no type": {"user": "bob"},
    "extra field": {"type": "admin.grant", "user": "bob", "admin": True},
    "missing field": {"type": "invite.create", "user": "bob", "name": "Bob"},
    "bad user id": {"type": "invite.create", "user": "Bob Smith", "name": "B", "email": "", "groups": [],
                    "admin": False},
    "user id too long": {"type": "admin.grant", "user": "a" * 65},
    "groups not strings": {"type": "invite.create", "user": "bob", "name": "B", "email": "", "groups": [1],
                           "admin": False},
    "groups not a list": {"type": "invite.create", "user": "bob", "name": "B", "email": "", "groups": "eng",
                          "admin": False},
    "admin not a bool": {"type": "invite.create", "user": "bob", "name": "B", "email": "", "groups": [],
                         "admin": "yes"},
    "bad email": {"type": "invite.create", "user": "bob", "name": "B", "email": "not-an-email", "groups": [],
                  "admin": False},
    "control char in name": {"type": "invite.create", "user": "bob", "name": "B\x00", "email": "", "groups": [],
                             "admin": False},
    "unknown scope": {"type": "token.create", "name": "t", "scopes": ["root"], "ttl": "1h"},
    "no scopes": {"type": "token.create", "name": "t", "scopes": [], "ttl": "1h"},
    "bad ttl": {"type": "token.create", "name": "t", "scopes": ["kill"], "ttl": "forever"},
    "zero ttl": {"type": "token.create", "name": "t", "scopes": ["kill"], "ttl": "0s"},
    "float in action": {"type": "token.create", "name": "t", "scopes": ["kill"], "ttl": 1.5},
    "actor supplied": {"type": "admin.grant", "user": "bob", "actor": "someone"},
    "action not an object": "invite.create",
}


@pytest.mark.parametrize("name", list(BAD_ACTIONS))
async def test_invalid_actions_are_400_and_store_nothing(gateway, name: str) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + BEGIN, {"action": BAD_ACTIONS[name]})
    assert status == 400, problem
    assert problem["detail"]
    assert await counts(gateway) == before


async def test_actions_need_a_session(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        status, problem = await call(client, "POST", gateway.url + BEGIN, {"action": {"type": "admin.grant",
                                                                                       "user": "admin"}})
        assert status == 401 and problem["login_url"]
    async with gateway.session() as anon:
        status, problem = await call(anon, "POST", gateway.url + BEGIN, {"action": {"type": "admin.grant",
                                                                                     "user": "admin"}})
        assert status == 403 and problem["type"].endswith("/no-client-certificate")


async def test_replayed_action_assertion_is_refused(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        _, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {
            "type": "token.create", "name": "soar", "scopes": ["kill"], "ttl": "1h"}})
        body = {"action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])}
        status, answer = await call(client, "POST", gateway.url + FINISH, body)
        assert status == 200
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + FINISH, body)
        assert status == 409, problem
        assert await counts(gateway) == before


async def test_token_create_shows_the_token_once_and_keeps_its_hash(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        status, answer = await sign(gateway, admin, client, {"type": "token.create", "name": "soar",
                                                             "scopes": ["read", "kill"], "ttl": "2h"})
    assert status == 200, answer
    result = answer["result"]
    assert result["token"].startswith("idw_") and len(b64url_decode(result["token"][4:])) == 32
    stored = await gateway.store.get_token_by_hash(token_hash(result["token"]))
    assert stored.id == result["token_id"] and stored.scopes == ("kill", "read")
    assert stored.expires_at == result["expires_at"] and abs(result["expires_at"] - time.time() - 7200) < 5
    db = b"".join(p.read_bytes() for p in gateway.dir.glob("idwall.db*"))
    assert result["token"].encode() not in db
    entry = (await ledger_ok(gateway))[-1]
    assert entry["type"] == "token.create" and entry["subject"] == result["token_id"]
    assert "token" not in entry["data"]


async def test_action_finished_over_another_connection_is_refused(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        code = await invite(gateway, admin, client, "bob")
        bob = await enroll(gateway, code)
        async with gateway.session(bob) as bob_client:
            assert (await login(gateway, bob, bob_client))[0] == 200
            _, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {"type": "admin.grant",
                                                                                    "user": "bob"}})
            before = await counts(gateway)
            status, problem = await call(bob_client, "POST", gateway.url + FINISH, {
                "action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])})
            assert status == 403 and "another connection" in problem["detail"]
    assert (await gateway.store.get_user("bob")).admin is False
    after = await counts(gateway)
    assert after["ledger"] == before["ledger"]


async def test_signature_over_a_different_action_is_refused(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        _, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {
            "type": "invite.create", "user": "bob", "name": "Bob", "email": "", "groups": [], "admin": False}})
        tampered = dict(begun["action"], admin=True)
        forged = admin.auth.get(begun["options"], client_data={"challenge": b64url_encode(action_challenge(tampered))})
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + FINISH,
                                     {"action_id": begun["action_id"], "credential": forged})
        assert status == 400 and problem["type"].endswith("/webauthn-rejected")
        assert (await counts(gateway))["invites"] == before["invites"]


async def test_expired_action_is_410(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    gw = gateway.running.node
    async with client:
        _, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {"type": "admin.grant",
                                                                                "user": "admin"}})
        gw.clock = lambda: time.time() + gateway.config.webauthn.timeout + 1  # type: ignore[method-assign]
        try:
            before = await counts(gateway)
            status, problem = await call(client, "POST", gateway.url + FINISH, {
                "action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])})
        finally:
            gw.clock = time.time  # type: ignore[method-assign]
    assert status == 410, problem
    assert (await counts(gateway))["ledger"] == before["ledger"]


async def test_action_sign_count_regression_is_recorded(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        before = await counts(gateway)
        status, problem = await sign(gateway, admin, client, {"type": "admin.grant", "user": "admin"}, sign_count=1)
    assert status == 400, problem
    assert (await counts(gateway))["ledger"] == before["ledger"] + 1
    assert (await ledger_ok(gateway))[-1]["type"] == "signcount.anomaly"


async def test_device_approve_activates_a_pending_device_with_a_certificate(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    key, _, begun = await begin_enroll(gateway, user="admin", device_name="phone")
    phone_auth = SoftAuthenticator(origin=gateway.url)
    status, pending = await finish_enroll(gateway, begun["enrollment_id"], phone_auth.create(begun["options"]))
    assert status == 200 and pending["status"] == "pending_approval"
    async with client:
        status, answer = await sign(gateway, admin, client, {"type": "device.approve",
                                                             "device_id": pending["device_id"]})
        assert status == 200, answer
        assert answer["result"] == {"device_id": pending["device_id"], "status": "active"}
        status, problem = await sign(gateway, admin, client, {"type": "device.approve",
                                                              "device_id": pending["device_id"]})
        assert status == 409, problem
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + begun["enrollment_id"])
    assert view["status"] == "active" and view["certificate_pem"]
    phone = save_device(gateway, key, {"device_id": pending["device_id"], "certificate_pem": view["certificate_pem"]},
                        "admin", phone_auth)
    status, session = await login(gateway, phone)
    assert status == 200, session
    entries = await ledger_ok(gateway)
    assert [e["type"] for e in entries[-3:]] == ["device.enroll", "device.approve", "session.login"]


async def test_device_recover_needs_the_same_user_with_another_active_passkey(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        code = await invite(gateway, admin, client, "bob")
    bob = await enroll(gateway, code)
    _, _, begun = await begin_enroll(gateway, user="bob", device_name="replacement")
    status, pending = await finish_enroll(gateway, begun["enrollment_id"],
                                          SoftAuthenticator(origin=gateway.url).create(begun["options"]))
    assert status == 200 and pending["status"] == "pending_approval"
    recover = {"type": "device.recover", "enrollment_id": begun["enrollment_id"]}
    # the admin cannot "recover" bob's device (that would be device.approve)
    async with gateway.session(admin) as admin_client:
        assert (await login(gateway, admin, admin_client))[0] == 200
        status, problem = await sign(gateway, admin, admin_client, recover)
        assert status == 403, problem
    async with gateway.session(bob) as bob_client:
        assert (await login(gateway, bob, bob_client))[0] == 200
        status, answer = await sign(gateway, bob, bob_client, recover)
    assert status == 200, answer
    assert (await gateway.store.get_device(pending["device_id"])).status == "active"
    entry = (await ledger_ok(gateway))[-1]
    assert entry["type"] == "device.recover" and entry["actor"] == "bob"


async def test_with_admin_approval_policy_a_users_own_passkey_cannot_approve_a_new_device(tmp_path, upstream) -> None:
    from tests.helpers.gateway import start_test_gateway

    gateway = await start_test_gateway(
        tmp_path, upstream.url, edit=lambda text: text.replace("approval: none", "approval: admin"))
    try:
        admin = await bootstrap(gateway)
        async with gateway.session(admin) as client:
            assert (await login(gateway, admin, client))[0] == 200
            _, _, begun = await begin_enroll(gateway, user="admin", device_name="phone")
            status, pending = await finish_enroll(gateway, begun["enrollment_id"],
                                                  SoftAuthenticator(origin=gateway.url).create(begun["options"]))
            assert status == 200 and pending["status"] == "pending_approval"
            before = await counts(gateway)
            status, problem = await sign(gateway, admin, client, {"type": "device.recover",
                                                                  "enrollment_id": begun["enrollment_id"]})
            assert status == 403 and "devices.approval: admin" in problem["detail"], problem
            assert (await gateway.store.get_device(pending["device_id"])).status == "pending_approval"
            assert await counts(gateway) == before
            status, answer = await sign(gateway, admin, client, {"type": "device.approve",
                                                                 "device_id": pending["device_id"]})
            assert status == 200, answer
    finally:
        await gateway.running.stop(drain=1)


async def test_unknown_targets_are_refused_at_begin(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        before = await counts(gateway)
        for action, expected in (({"type": "admin.grant", "user": "nobody"}, 404),
                                 ({"type": "device.approve", "device_id": "dev-nope"}, 404),
                                 ({"type": "device.approve", "device_id": admin.device_id}, 409),
                                 ({"type": "device.recover", "enrollment_id": "enr-nope"}, 404)):
            status, problem = await call(client, "POST", gateway.url + BEGIN, {"action": action})
            assert status == expected, (action, problem)
        assert await counts(gateway) == before


async def test_malformed_finish_bodies(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        _, begun = await call(client, "POST", gateway.url + BEGIN, {"action": {"type": "admin.grant",
                                                                                "user": "admin"}})
        good = admin.auth.get(begun["options"])
        for body, expected in (({"action_id": begun["action_id"]}, 400),
                               ({"action_id": 5, "credential": good}, 400),
                               ({"action_id": begun["action_id"], "credential": "x"}, 400),
                               ({"action_id": begun["action_id"], "credential": dict(good, rawId="!!")}, 400),
                               ({"action_id": "nope", "credential": good}, 409)):
            status, problem = await call(client, "POST", gateway.url + FINISH, body)
            assert status == expected, (body, problem)
        status, problem = await call(client, "POST", gateway.url + FINISH, data=b"x" * 70000,
                                     headers={"Content-Type": "application/json"})
        assert status == 413
        status, answer = await call(client, "POST", gateway.url + FINISH,
                                    {"action_id": begun["action_id"], "credential": good})
        assert status == 200, answer


# -- the pure validators against arbitrary JSON (no sockets) ------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
_action_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*ACTION_TYPES, "nope"]) | _json},
    optional={k: _json for k in ("user", "name", "email", "groups", "admin", "scopes", "ttl", "device_id",
                                 "enrollment_id", "actor", "manager", "csr_pem")})


@settings(max_examples=200, deadline=None)
@given(raw=_json | _action_like)
def test_validate_action_answers_only_bad_request_or_a_canonical_action(raw) -> None:  # type: ignore[no-untyped-def]
    try:
        action = validate_action(raw)
    except BadRequest:
        return
    # whatever passes is signable: canonical JSON exists and nothing outside the type's fields slipped in
    full = build_action(action, actor="admin", nonce=bytes(32), now=0, timeout=300)
    assert action_challenge(full)
    defaulted = {"manager"} - set(raw) if action["type"] == "invite.create" else set()
    assert "actor" not in raw and set(full) - set(raw) == {"actor", "nonce", "not_after"} | defaulted


@pytest.mark.parametrize(("kind", "shown"), [(["invite.create"], "an array"), ({"a": 1}, "an object"),
                                             (7, "an integer"), (None, "null"), ("nope", "'nope'")])
def test_action_type_of_another_kind_is_a_bad_request(kind, shown: str) -> None:  # type: ignore[no-untyped-def]
    # a list or an object as the type used to be looked up in a dict: TypeError, a 500
    with pytest.raises(BadRequest, match=f"action.type must be one of invite.create, .*; got {shown}$"):
        validate_action({"type": kind})


@settings(max_examples=200, deadline=None)
@given(credential=_json)
def test_claimed_challenge_answers_only_bad_request(credential) -> None:  # type: ignore[no-untyped-def]
    try:
        assert len(claimed_challenge(credential)) == 32
    except BadRequest:
        pass


# -- adversarial review: signed actions never leave zero administrators ----------------------------------


async def test_two_admins_revoking_themselves_at_once_leave_one_admin(gateway) -> None:
    """Before: the last-admin check ran before the transaction; two admins revoking themselves concurrently
    both passed it, and nobody was left who could sign an invite or a grant."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "second", is_admin=True)
    second = await enroll(gateway, code)
    clients = [gateway.session(admin), gateway.session(second)]
    try:
        begun = []
        for device, client in zip((admin, second), clients):
            assert (await login(gateway, device, client))[0] == 200
            status, answer = await call(client, "POST", gateway.url + "/idwall/api/actions/begin",
                                        {"action": {"type": "admin.revoke", "user": device.user_id}})
            assert status == 200, answer
            begun.append(answer)
        results = await asyncio.gather(*(
            call(client, "POST", gateway.url + "/idwall/api/actions/finish",
                 {"action_id": b["action_id"], "credential": device.auth.get(b["options"])})
            for device, client, b in zip((admin, second), clients, begun)))
    finally:
        for client in clients:
            await client.close()
    assert sorted(status for status, _ in results) == [200, 409], results
    assert [u.id for u in await gateway.store.list_users() if u.admin] != []


# -- managers: invite.create's manager, user.set_manager, and device approvals by the owner's manager --------


@pytest.fixture
async def managed(tmp_path, upstream):  # type: ignore[no-untyped-def]
    """A gateway with ``devices.approval: manager``, its admin logged in (yields gateway, admin, admin client)."""
    async with running_gateway(tmp_path, upstream.url,
                               edit=lambda text: text.replace("approval: none", "approval: manager")) as gateway:
        admin, client = await _logged_in_admin(gateway)
        async with client:
            yield gateway, admin, client


async def _pending(gateway, *, code: str | None = None, user: str | None = None):  # type: ignore[no-untyped-def]
    """A device enrolled with ``code`` (or self-service for ``user``) that waits for approval."""
    auth = SoftAuthenticator(origin=gateway.url)
    key, status, begun = await begin_enroll(gateway, code=code, user=user)
    assert status == 200, begun
    status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and answer["status"] == "pending_approval", answer
    return key, begun["enrollment_id"], answer["device_id"], auth


async def _approved(gateway, admin, client, code: str) -> Enrolled:  # type: ignore[no-untyped-def]
    """Enroll with ``code``, have ``admin`` approve it, and return the active device."""
    key, enrollment_id, device_id, auth = await _pending(gateway, code=code)
    status, answer = await sign(gateway, admin, client, {"type": "device.approve", "device_id": device_id})
    assert status == 200, answer
    async with gateway.session() as anon:
        _, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + enrollment_id)
    user_id = (await gateway.store.get_enrollment(enrollment_id)).user_id
    return save_device(gateway, key, {"device_id": device_id, "certificate_pem": view["certificate_pem"]}, user_id,
                       auth)


async def _team(gateway, admin, client):  # type: ignore[no-untyped-def]
    """bob manages carol, eve manages dave; all four enrolled and active (approved by the admin)."""
    people = {}
    for user, manager in (("bob", None), ("eve", None), ("carol", "bob"), ("dave", "eve")):
        code = await invite(gateway, admin, client, user, manager=manager)
        people[user] = await _approved(gateway, admin, client, code)
    return people


async def test_an_invite_names_the_manager_the_user_gets(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
        code = await invite(gateway, admin, client, "carol", manager="bob")
    assert (await gateway.store.get_user("bob")).manager is None  # an invite without one (an older client)
    await enroll(gateway, code)
    assert (await gateway.store.get_user("carol")).manager == bob.user_id
    entries = await ledger_ok(gateway)
    invites = [e for e in entries if e["type"] == "invite.create"]
    assert [(e["data"]["manager"], e["approval"]["action"]["manager"]) for e in invites] == [(None, None),
                                                                                          ("bob", "bob")]


@pytest.mark.parametrize(("manager", "expected", "words"), [
    ("nobody", 409, "no user 'nobody' to be the manager"),
    ("carol", 400, "carol cannot be their own manager"),
    ("Bob", 400, "action.manager must match"),
])
async def test_an_invite_with_an_impossible_manager_is_refused_and_changes_nothing(
        gateway, manager: str, expected: int, words: str) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + BEGIN, {"action": {
            "type": "invite.create", "user": "carol", "name": "Carol", "email": "", "groups": [], "admin": False,
            "manager": manager}})
        assert status == expected and words in problem["detail"], problem
        assert await counts(gateway) == before


async def test_user_set_manager_is_an_admin_action_checked_for_who_it_names(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
        for action, expected, words in (
                ({"user": "nobody", "manager": "admin"}, 404, "no user 'nobody'"),
                ({"user": "bob", "manager": "nobody"}, 409, "no user 'nobody' to be the manager"),
                ({"user": "bob", "manager": "bob"}, 400, "bob cannot be their own manager"),
                ({"user": "bob"}, 400, "action user.set_manager is missing manager")):
            before = await counts(gateway)
            status, problem = await sign(gateway, admin, client, {"type": "user.set_manager", **action})
            assert status == expected and words in problem["detail"], (action, problem)
            assert await counts(gateway) == before
        status, answer = await sign(gateway, admin, client, {"type": "user.set_manager", "user": "bob",
                                                             "manager": "admin"})
        assert status == 200 and answer["result"] == {"user": "bob", "manager": "admin"}, answer
        assert (await gateway.store.get_user("bob")).manager == "admin"
        status, answer = await sign(gateway, admin, client, {"type": "user.set_manager", "user": "bob",
                                                             "manager": None})
        assert status == 200 and answer["result"] == {"user": "bob", "manager": None}, answer
    assert (await gateway.store.get_user("bob")).manager is None
    async with gateway.session(bob) as bob_client:
        assert (await login(gateway, bob, bob_client))[0] == 200
        before = await counts(gateway)
        status, problem = await sign(gateway, bob, bob_client, {"type": "user.set_manager", "user": "bob",
                                                                "manager": "admin"})
        assert status == 403 and "must be signed by an administrator" in problem["detail"], problem
        assert await counts(gateway) == before
    entries = await ledger_ok(gateway)
    assert [e["data"] for e in entries if e["type"] == "user.set_manager"] == [
        {"user": "bob", "manager": "admin"}, {"user": "bob", "manager": None}]


async def test_the_owners_manager_approves_and_nobody_else_who_is_not_an_admin(managed) -> None:
    gateway, admin, client = managed
    people = await _team(gateway, admin, client)
    bob, carol, eve = people["bob"], people["carol"], people["eve"]
    _, _, device_id, _ = await _pending(gateway, user="carol")
    approve = {"type": "device.approve", "device_id": device_id}
    # another user's manager, and the user themself with her other device: 403, nothing written
    for signer in (eve, carol):
        async with gateway.session(signer) as own:
            assert (await login(gateway, signer, own))[0] == 200
            before = await counts(gateway)
            status, problem = await sign(gateway, signer, own, approve)
            assert status == 403, problem
            assert f"device.approve must be signed by an administrator or, with devices.approval: manager, by the " \
                   f"device owner's manager; {signer.user_id} is neither" == problem["detail"]
            assert await counts(gateway) == before
    assert (await gateway.store.get_device(device_id)).status == "pending_approval"
    async with gateway.session(bob) as own:
        assert (await login(gateway, bob, own))[0] == 200
        status, answer = await sign(gateway, bob, own, approve)
    assert status == 200 and answer["result"] == {"device_id": device_id, "status": "active"}, answer
    device = await gateway.store.get_device(device_id)
    assert (device.status, device.approved_by) == ("active", "bob")
    entry = (await ledger_ok(gateway))[-1]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("device.approve", "bob", device_id)


async def test_an_approval_cannot_be_replayed(managed) -> None:
    gateway, admin, client = managed
    people = await _team(gateway, admin, client)
    bob = people["bob"]
    first = (await _pending(gateway, user="carol"))[2]
    second = (await _pending(gateway, user="carol"))[2]
    async with gateway.session(bob) as own:
        assert (await login(gateway, bob, own))[0] == 200
        status, begun = await call(own, "POST", gateway.url + BEGIN, {"action": {"type": "device.approve",
                                                                                 "device_id": first}})
        assert status == 200, begun
        finish = {"action_id": begun["action_id"], "credential": bob.auth.get(begun["options"])}
        assert (await call(own, "POST", gateway.url + FINISH, finish))[0] == 200
        before = await counts(gateway)
        status, problem = await call(own, "POST", gateway.url + FINISH, finish)
        assert status == 409, problem
        # the same assertion presented for another device's approval: its challenge is the first action's
        status, begun2 = await call(own, "POST", gateway.url + BEGIN, {"action": {"type": "device.approve",
                                                                                  "device_id": second}})
        status, problem = await call(own, "POST", gateway.url + FINISH,
                                     {"action_id": begun2["action_id"], "credential": finish["credential"]})
        assert status in (400, 409), problem
        assert await counts(gateway) == before
    assert (await gateway.store.get_device(second)).status == "pending_approval"
    await ledger_ok(gateway)


async def test_a_former_manager_cannot_approve_even_an_action_begun_while_still_manager(managed) -> None:
    gateway, admin, client = managed
    people = await _team(gateway, admin, client)
    bob = people["bob"]
    device_id = (await _pending(gateway, user="carol"))[2]
    async with gateway.session(bob) as own:
        assert (await login(gateway, bob, own))[0] == 200
        status, begun = await call(own, "POST", gateway.url + BEGIN, {"action": {"type": "device.approve",
                                                                                 "device_id": device_id}})
        assert status == 200, begun
        status, answer = await sign(gateway, admin, client, {"type": "user.set_manager", "user": "carol",
                                                             "manager": "eve"})
        assert status == 200, answer
        before = await counts(gateway)
        status, problem = await call(own, "POST", gateway.url + FINISH,
                                     {"action_id": begun["action_id"], "credential": bob.auth.get(begun["options"])})
        assert status == 403 and "bob is neither" in problem["detail"], problem
        # only the answered challenge is gone (single use); nothing of trust changed
        assert await counts(gateway) == {**before, "ceremonies": before["ceremonies"] - 1}
    async with gateway.session(people["eve"]) as own:
        assert (await login(gateway, people["eve"], own))[0] == 200
        status, answer = await sign(gateway, people["eve"], own, {"type": "device.approve", "device_id": device_id})
    assert status == 200, answer
    await ledger_ok(gateway)


async def test_the_manager_rejects_a_pending_device(managed) -> None:
    gateway, admin, client = managed
    people = await _team(gateway, admin, client)
    bob = people["bob"]
    _, enrollment_id, device_id, _ = await _pending(gateway, user="carol")
    async with gateway.session(people["eve"]) as own:
        assert (await login(gateway, people["eve"], own))[0] == 200
        before = await counts(gateway)
        status, problem = await sign(gateway, people["eve"], own, {"type": "device.reject", "device_id": device_id})
        assert status == 403, problem
        assert await counts(gateway) == before
    async with gateway.session(bob) as own:
        assert (await login(gateway, bob, own))[0] == 200
        status, answer = await sign(gateway, bob, own, {"type": "device.reject", "device_id": device_id})
        assert status == 200 and answer["result"] == {"device_id": device_id, "status": "revoked"}, answer
        # once rejected it is not pending: neither approval nor a second rejection
        for kind in ("device.reject", "device.approve"):
            status, problem = await sign(gateway, bob, own, {"type": kind, "device_id": device_id})
            assert status == 409 and "is revoked, not pending approval" in problem["detail"], problem
        status, problem = await sign(gateway, bob, own, {"type": "device.reject", "device_id": bob.device_id})
        assert status == 409, problem  # an active device (bob's own): nothing to reject
    device = await gateway.store.get_device(device_id)
    assert device.status == "revoked" and device.revoked_at is not None
    async with gateway.session() as anon:
        _, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + enrollment_id)
    assert view["status"] == "rejected" and "certificate_pem" not in view
    entry = (await ledger_ok(gateway))[-1]
    assert (entry["type"], entry["actor"], entry["data"]["status"]) == ("device.reject", "bob", "revoked")


async def test_without_the_manager_policy_a_manager_approves_nothing(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
        await enroll(gateway, await invite(gateway, admin, client, "carol", manager="bob"))
    device_id = (await _pending(gateway, user="carol"))[2]
    async with gateway.session(bob) as own:
        assert (await login(gateway, bob, own))[0] == 200
        before = await counts(gateway)
        for kind in ("device.approve", "device.reject"):
            status, problem = await sign(gateway, bob, own, {"type": kind, "device_id": device_id})
            assert status == 403 and "bob is neither" in problem["detail"], problem
        assert await counts(gateway) == before


# -- device.renew: a new key for a device, signed over its own connection ---------------------------------------


def _renew_action(device: Enrolled, csr_pem: str) -> dict[str, Any]:
    return {"type": "device.renew", "device_id": device.device_id, "csr_pem": csr_pem}


async def _me(gateway, device: Enrolled):  # type: ignore[no-untyped-def]
    async with gateway.session(device) as own:
        return await call(own, "GET", gateway.url + "/idwall/api/me")


async def test_a_device_renews_its_certificate_and_its_session_carries_over(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    bystander = gateway.session(admin)  # another live connection with the old certificate
    try:
        async with client:
            status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
            session_id = me["session"]["id"]
            assert (await call(bystander, "GET", gateway.url + "/idwall/api/me"))[1]["session"]["id"] == session_id
            key, status, begun = await begin_renewal(gateway, admin)
            assert status == 200, begun
            status, answer = await sign(gateway, admin, client, _renew_action(admin, begun["csr_pem"]))
            assert status == 200, answer
            result = answer["result"]
            assert set(result) == {"device_id", "certificate_pem", "not_after"} and result["device_id"] == admin.device_id
            new = renewed(gateway, admin, key, result["certificate_pem"])
            cert = x509.load_pem_x509_certificate(result["certificate_pem"].encode())
            assert cert.public_key().public_numbers() == key.public_key().public_numbers()
            assert int(cert.not_valid_after_utc.timestamp()) == result["not_after"] > time.time() + 86400
            # the connection that signed got its answer and is closed; a new one presents the old certificate
            status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
            assert status == 403, problem
        # the other live connection with the old certificate was cut: aiohttp reconnects, with the old one
        status, problem = await call(bystander, "GET", gateway.url + "/idwall/api/me")
        assert problem == {"user": None, "device": None, "session": None}, problem
    finally:
        await bystander.close()
    device = await gateway.store.get_device(admin.device_id)
    assert (device.cert_sha256, device.not_after) == (new.cert_sha256, result["not_after"])
    # the new certificate continues the same session, without a new passkey sign-in
    status, me = await _me(gateway, new)
    assert status == 200 and me["session"]["id"] == session_id, me
    async with gateway.session(new) as own:
        assert (await call(own, "GET", gateway.url + "/"))[0] == 200  # the proxied whoami route
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/renew/" + begun["renewal_id"])
    assert view["status"] == "renewed" and view["certificate_pem"] == result["certificate_pem"], view
    entry = (await ledger_ok(gateway))[-1]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("device.renew", "admin", admin.device_id)
    assert entry["data"] == {"device_id": admin.device_id, "cert_sha256": b64url_encode(new.cert_sha256),
                             "not_after": result["not_after"]}
    assert entry["approval"]["action"]["csr_pem"] == begun["csr_pem"]


async def _second_device(gateway, admin: Enrolled, client) -> Enrolled:  # type: ignore[no-untyped-def]
    key, enrollment_id, device_id, auth = await _pending(gateway, user=admin.user_id)
    status, answer = await sign(gateway, admin, client, {"type": "device.approve", "device_id": device_id})
    assert status == 200, answer
    async with gateway.session() as anon:
        _, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + enrollment_id)
    return save_device(gateway, key, {"device_id": device_id, "certificate_pem": view["certificate_pem"]},
                       admin.user_id, auth)


async def test_renewals_nobody_is_entitled_to_are_refused_and_change_nothing(gateway) -> None:
    admin, client = await _logged_in_admin(gateway)
    async with client:
        phone = await _second_device(gateway, admin, client)
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
        _, csr = make_csr()
        before = await counts(gateway)
        # the device's current key: a renewal must move it to a new one
        current = pki.make_csr(pki.load_private_key(admin.key_path), "laptop")
        status, problem = await sign(gateway, admin, client, _renew_action(admin, current))
        assert status == 409 and "the CSR is for the device's current key" in problem["detail"], problem
        # signed with a passkey of the same user, but bound to another device (a misbehaving client)
        status, begun = await call(client, "POST", gateway.url + BEGIN, {"action": _renew_action(admin, csr)})
        assert status == 200, begun
        assert [b64url_decode(c["id"]) for c in begun["options"]["allowCredentials"]] == list(admin.auth.credentials)
        other = phone.auth.get(begun["options"], credential_id=next(iter(phone.auth.credentials)))
        status, problem = await call(client, "POST", gateway.url + FINISH,
                                     {"action_id": begun["action_id"], "credential": other})
        assert status == 403 and "must be signed with a passkey bound to device" in problem["detail"], problem
        # a replayed renewal: the challenge was answered once
        status, begun = await call(client, "POST", gateway.url + BEGIN, {"action": _renew_action(admin, csr)})
        finish = {"action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])}
        assert (await call(client, "POST", gateway.url + FINISH, finish))[0] == 200
        after_first = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + FINISH, finish)
        assert status in (403, 409), problem  # this connection closed after the renewal: the old cert is gone
    assert await counts(gateway) == after_first
    assert after_first["ledger"] == before["ledger"] + 1
    # from another device's session, even the same user's, and from someone else's
    for signer in (phone, bob):
        async with gateway.session(signer) as own:
            assert (await login(gateway, signer, own))[0] == 200
            before = await counts(gateway)
            status, problem = await sign(gateway, signer, own, _renew_action(admin, make_csr()[1]))
            assert status == 403 and f"device {admin.device_id} can only be renewed over its own connection" \
                in problem["detail"], problem
            assert await counts(gateway) == before
    await ledger_ok(gateway)


async def test_an_expired_certificate_cannot_renew(gateway) -> None:
    """TLS refuses the expired certificate before anything is read: over a real socket, with the device's own key
    and a certificate from the gateway's device CA that the store records as the device's."""
    admin, client = await _logged_in_admin(gateway)
    await client.close()
    node = gateway.running.node
    key = pki.load_private_key(admin.key_path)
    expired = pki.issue_device_cert(ca_cert=node.device_ca_cert, ca_key=node.device_ca_key,
                                    csr=pki.check_csr(pki.make_csr(key, "laptop")), device_id=admin.device_id,
                                    now=time.time() - 3 * 86400, ttl=86400)
    stale = renewed(gateway, admin, key, pki.cert_pem(expired))
    await gateway.store.write(lambda c: c.execute("UPDATE devices SET cert_sha256 = ?, not_after = ? WHERE id = ?",
                                                  (stale.cert_sha256, expired.not_valid_after_utc.timestamp(),
                                                   admin.device_id)))
    before = await counts(gateway)
    with pytest.raises(aiohttp.ClientError):
        await begin_renewal(gateway, stale)
    assert await counts(gateway) == before
