"""idwall.actions: what a passkey signs, pure. A requested action is checked field by field for its type with
nothing missing and nothing extra (a client cannot set ``actor``, ``nonce`` or ``not_after``); the built action
adds those; roles say who may sign which type; the challenge a response claims is read strictly; and the ledger
drafts of actions, logins, logouts and anomalies are entries the ledger verifier's schemas accept.

Tested with hand-built records (helpers/records.py), every refusal with hostile input; the API that uses these
is tested over real mTLS in test_actions_api.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from idwall import pki
from idwall.actions import (ACTION_TYPES, ADMIN_ACTIONS, MANAGER_ACTIONS, MAX_TOKEN_TTL, action_draft, anomaly_draft,
                            approval_of, build_action, check_role, claimed_challenge, login_draft, logout_draft,
                            manages, token_ttl, validate_action)
from idwall.audit.schemas import ACTION_APPROVAL, ACTION_SCHEMAS, DATA_SCHEMAS, LOGIN_APPROVAL, check_fields
from idwall.encoding import b64url_encode
from idwall.errors import BadRequest, Forbidden
from tests.helpers.records import NOW, session

#: a valid request of every type: each test changes one thing
VALID: dict[str, dict[str, Any]] = {
    "invite.create": {"type": "invite.create", "user": "bob", "name": "Bob", "email": "bob@example.com",
                      "groups": ["eng", "ops:read"], "admin": False, "manager": "carol"},
    "admin.grant": {"type": "admin.grant", "user": "bob"},
    "admin.revoke": {"type": "admin.revoke", "user": "bob"},
    "token.create": {"type": "token.create", "name": "soar playbook", "scopes": ["kill"], "ttl": "30d"},
    "device.approve": {"type": "device.approve", "device_id": "dev-0123456789abcdef"},
    "device.recover": {"type": "device.recover", "enrollment_id": "enr-AbC_12-x"},
    "device.reject": {"type": "device.reject", "device_id": "dev-0123456789abcdef"},
    "device.renew": {"type": "device.renew", "device_id": "dev-0123456789abcdef",
                     "csr_pem": pki.make_csr(pki.generate_p256_key(), "laptop")},
    "user.set_manager": {"type": "user.set_manager", "user": "bob", "manager": None},
    "incident.start": {"type": "incident.start", "playbook": "org-wide-reset", "reason": "admin laptop stolen",
                       "dry_run": False, "targets": {"users": ["bob"], "devices": []}},
}
#: the fields a client may leave out, and what the action then says
DEFAULTS = {("invite.create", "manager"): None, ("incident.start", "dry_run"): False,
            ("incident.start", "targets"): {"users": [], "devices": []}}
NONCE = bytes(range(32))


def refused(raw: Any, problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        validate_action(raw)


# --------------------------------------------------------------------------- validate_action


def test_every_type_has_a_valid_example() -> None:
    assert set(VALID) == set(ACTION_TYPES)


@pytest.mark.parametrize("kind", ACTION_TYPES)
def test_a_valid_request_comes_back_as_exactly_its_fields(kind: str) -> None:
    raw = VALID[kind]
    action = validate_action(raw)
    assert action == raw and list(action)[0] == "type"
    assert action is not raw


@pytest.mark.parametrize(("raw", "problem"), [
    ([], "action must be an object, got list"),
    ("invite.create", "action must be an object, got str"),
    (None, "action must be an object, got NoneType"),
    ({}, "action.type must be one of invite.create, admin.grant, admin.revoke, token.create, device.approve, "
         "device.reject, device.recover, device.renew, user.set_manager, incident.start; got null"),
    ({"type": "Invite.Create"}, "got 'Invite.Create'"),
    ({"type": "invite.create "}, "got 'invite.create '"),
    ({"type": "x" * 1000}, "got '" + "x" * 60 + "'"),  # shown cut short
    ({"type": True}, "got a boolean"),
])
def test_what_is_not_an_action_of_a_known_type(raw: Any, problem: str) -> None:
    refused(raw, problem)


@pytest.mark.parametrize("kind", ACTION_TYPES)
@pytest.mark.parametrize("extra", ["actor", "nonce", "not_after", "admin_override", "Type"])
def test_a_field_the_type_does_not_take_is_refused(kind: str, extra: str) -> None:
    """The signer would see a field the gateway ignores: the signature would say more than the effect."""
    if extra in VALID[kind]:
        return
    refused({**VALID[kind], extra: "x"}, f"action {kind} has unexpected field(s) {extra}; it takes exactly ")


@pytest.mark.parametrize("kind", ACTION_TYPES)
def test_every_field_is_required(kind: str) -> None:
    for name in VALID[kind]:
        if name != "type" and (kind, name) not in DEFAULTS:
            refused({k: v for k, v in VALID[kind].items() if k != name}, f"action {kind} is missing {name}")


def test_an_invite_without_a_manager_says_so_in_the_signed_action() -> None:
    """Clients written before managers keep working, and the signer still sees "manager: null"."""
    raw = {k: v for k, v in VALID["invite.create"].items() if k != "manager"}
    assert validate_action(raw) == {**raw, "manager": None}


@pytest.mark.parametrize("kind", ["invite.create", "user.set_manager"])
def test_nobody_is_their_own_manager(kind: str) -> None:
    refused({**VALID[kind], "manager": "bob"}, "action.manager must be another user than action.user; bob cannot be "
                                               "their own manager")


@pytest.mark.parametrize("kind", ["invite.create", "user.set_manager"])
@pytest.mark.parametrize(("manager", "shown"), [("Carol", "'Carol'"), ("", "''"), (7, "int"), (["carol"], "list")])
def test_a_manager_is_a_user_id_or_null(kind: str, manager: Any, shown: str) -> None:
    refused({**VALID[kind], "manager": manager}, "action.manager must match ^[a-z0-9][a-z0-9._-]{0,63}$, got " + shown)


@pytest.mark.parametrize(("csr", "problem"), [
    (7, "action.csr_pem must be a PEM string, got int"),
    ("", "expected a PEM block '-----BEGIN CERTIFICATE REQUEST-----'"),
    ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "CSR is not a valid PEM"),
])
def test_a_renewal_holds_a_csr_that_enrollment_would_accept(csr: Any, problem: str) -> None:
    refused({**VALID["device.renew"], "csr_pem": csr}, problem)


def test_a_renewal_csr_must_be_for_an_ec_key() -> None:
    rsa_csr = pki.make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048), "laptop")
    refused({**VALID["device.renew"], "csr_pem": rsa_csr}, "expected EC P-256 or P-384")


_USERS = [("", "'"), ("Bob", "'Bob'"), ("-bob", "'-bob'"), ("b" * 65, "'bbbb"), ("bob\n", "'bob\\n'"),
          (7, "int"), (None, "NoneType"), (["bob"], "list")]


@pytest.mark.parametrize("kind", ["invite.create", "admin.grant", "admin.revoke", "user.set_manager"])
@pytest.mark.parametrize(("user", "shown"), _USERS)
def test_user_fields_must_be_user_ids(kind: str, user: Any, shown: str) -> None:
    refused({**VALID[kind], "user": user}, "action.user must match ^[a-z0-9][a-z0-9._-]{0,63}$, got " + shown)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("name", "", "action.name must not be empty"),
    ("name", 5, "action.name must be a string, got int"),
    ("name", "B" * 129, "action.name is 129 characters, at most 128 allowed"),
    ("name", "Bob\x1b[2J", "action.name must not hold control characters"),
    ("name", "Bob\u202e", "action.name must not hold control characters"),
    ("email", None, "action.email must be a string, got NoneType"),
    ("email", "bob", "action.email must be an address such as alice@example.com (or empty), got 'bob'"),
    ("email", "bob@@example.com", "must be an address"),
    ("email", "@example.com", "must be an address"),
    ("email", "bob@", "must be an address"),
    ("email", "bob smith@example.com", "must be an address"),
    ("email", "b" * 250 + "@x.io", "action.email is 255 characters, at most 254 allowed"),
    ("email", "bob@exa\nmple.com", "action.email must not hold control characters"),
    ("groups", "eng", "action.groups must be a list of strings, got str"),
    ("groups", {"eng": True}, "action.groups must be a list of strings, got dict"),
    ("groups", ["eng", "eng"], "action.groups lists a group twice"),
    ("groups", ["g%d" % i for i in range(65)], "action.groups has 65 entries, at most 64 allowed"),
    ("groups", [""], "action.groups entries must be 1-64 characters of [A-Za-z0-9._:-], got ''"),
    ("groups", ["-eng"], "got '-eng'"),
    ("groups", ["e g"], "got 'e g'"),
    ("groups", ["g" * 65], "got 'ggg"),
    ("groups", [1], "got int"),
    ("groups", [None], "got NoneType"),
    ("admin", 1, "action.admin must be true or false, got int"),  # 1 == True in Python, not in JSON
    ("admin", "false", "action.admin must be true or false, got str"),
    ("admin", None, "action.admin must be true or false, got NoneType"),
])
def test_invite_fields(field: str, value: Any, problem: str) -> None:
    refused({**VALID["invite.create"], field: value}, problem)


def test_an_invite_may_leave_the_email_and_groups_empty() -> None:
    raw = {**VALID["invite.create"], "email": "", "groups": []}
    assert validate_action(raw) == raw


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("name", "", "action.name must not be empty"),
    ("name", "t" * 101, "action.name is 101 characters, at most 100 allowed"),
    ("name", "tok\ten", "action.name must not hold control characters"),
    ("scopes", [], "action.scopes must be a non-empty list drawn from kill, read"),
    ("scopes", "kill", "action.scopes must be a non-empty list drawn from kill, read"),
    ("scopes", None, "action.scopes must be a non-empty list"),
    ("scopes", ["admin"], 'action.scopes must be distinct values from kill, read, incident, got ["admin"]'),
    ("scopes", ["kill", "kill"], 'got ["kill", "kill"]'),
    ("scopes", ["Kill"], 'got ["Kill"]'),
    ("ttl", 3600, 'action.ttl must be a duration string such as "1h", got int'),
    ("ttl", None, "action.ttl must be a duration string"),
    ("ttl", "forever", "action.ttl: "),
    ("ttl", "1.5h", "action.ttl: "),
    ("ttl", "90", "action.ttl: "),  # a signed ttl names its unit
    ("ttl", "0s", "action.ttl must be more than 0 and at most 365d, got '0s'"),
    ("ttl", "366d", "action.ttl must be more than 0 and at most 365d, got '366d'"),
])
def test_token_fields(field: str, value: Any, problem: str) -> None:
    refused({**VALID["token.create"], field: value}, problem)


@pytest.mark.parametrize(("kind", "field"), [("device.approve", "device_id"), ("device.recover", "enrollment_id"),
                                             ("device.reject", "device_id"), ("device.renew", "device_id")])
@pytest.mark.parametrize("value", ["", "x" * 129, "dev 1", "dev/1", "dév", "dev\n", 12, None])
def test_ids_of_devices_and_enrollments(kind: str, field: str, value: Any) -> None:
    refused({**VALID[kind], field: value}, f"action.{field} must be an id of 1-128 characters of [A-Za-z0-9._-]")


@pytest.mark.parametrize(("ttl", "seconds"), [("1s", 1), ("90m", 5400), ("1h", 3600), ("365d", MAX_TOKEN_TTL)])
def test_token_ttl(ttl: str, seconds: int) -> None:
    assert token_ttl(ttl) == seconds


# --------------------------------------------------------------------------- the action a passkey signs


@pytest.mark.parametrize("kind", ACTION_TYPES)
def test_the_built_action_is_what_the_ledger_verifier_expects(kind: str) -> None:
    action = build_action(validate_action(VALID[kind]), actor="alice", nonce=NONCE, now=NOW + 0.9, timeout=300)
    assert action == {**VALID[kind], "actor": "alice", "nonce": b64url_encode(NONCE), "not_after": int(NOW) + 300}
    check_fields(action, ACTION_SCHEMAS[kind], "approval.action")


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_the_nonce_is_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=f"nonce must be 32 bytes, got {size}"):
        build_action(validate_action(VALID["admin.grant"]), actor="alice", nonce=bytes(size), now=NOW, timeout=300)


@pytest.mark.parametrize("kind", ACTION_TYPES)
def test_roles(kind: str) -> None:
    action = build_action(validate_action(VALID[kind]), actor="bob", nonce=NONCE, now=NOW, timeout=300)
    check_role(action, signer_admin=True)
    if kind in ("device.recover", "device.renew"):  # the user's own device: no admin needed
        check_role(action, signer_admin=False)
        return
    if kind in ("device.approve", "device.reject"):
        check_role(action, signer_admin=False, signer_manages_owner=True)
        with pytest.raises(Forbidden, match=f"^{re.escape(kind)} must be signed by an administrator or, with "
                                            "devices.approval: manager, by the device owner's manager; bob is "
                                            "neither$"):
            check_role(action, signer_admin=False)
        return
    with pytest.raises(Forbidden, match=f"^{re.escape(kind)} must be signed by an administrator; bob is not one$"):
        check_role(action, signer_admin=False)
    # being someone's manager grants nothing but device approvals
    with pytest.raises(Forbidden):
        check_role(action, signer_admin=False, signer_manages_owner=True)


def test_admin_actions_are_all_but_the_users_own_device_business() -> None:
    assert ADMIN_ACTIONS == set(ACTION_TYPES) - {"device.recover", "device.renew"}
    assert MANAGER_ACTIONS == {"device.approve", "device.reject"} and MANAGER_ACTIONS <= ADMIN_ACTIONS


@pytest.mark.parametrize(("approval", "owner_manager", "signer", "expected"), [
    ("manager", "bob", "bob", True),
    ("manager", "bob", "carol", False),   # another user's manager, or nobody's
    ("manager", None, "bob", False),      # the owner has no manager
    ("manager", "bob", "", False),
    ("admin", "bob", "bob", False),       # the policy asks for an administrator
    ("none", "bob", "bob", False),
])
def test_a_manager_approves_only_under_the_manager_policy(approval: str, owner_manager: str | None, signer: str,
                                                          expected: bool) -> None:
    assert manages(approval=approval, owner_manager=owner_manager, signer=signer) is expected


# --------------------------------------------------------------------------- the challenge a response claims


def credential(client_data: Any, *, raw: bool = False) -> dict[str, Any]:
    text = client_data if raw else b64url_encode(json.dumps(client_data).encode())
    return {"id": "x", "response": {"clientDataJSON": text}}


def test_the_claimed_challenge_is_read_from_client_data() -> None:
    challenge = bytes(range(100, 132))
    assert claimed_challenge(credential({"type": "webauthn.get", "challenge": b64url_encode(challenge)})) == challenge


@pytest.mark.parametrize(("value", "problem"), [
    ([], "credential must be an object, got list"),
    (None, "credential must be an object, got NoneType"),
    ({}, "credential.response must be an object"),
    ({"response": "x"}, "credential.response must be an object"),
    ({"response": {}}, "credential.response.clientDataJSON must be a base64url string"),
    ({"response": {"clientDataJSON": 5}}, "credential.response.clientDataJSON must be a base64url string"),
    (credential("not+base64", raw=True), "clientDataJSON is not base64url of a UTF-8 JSON object"),
    (credential(b64url_encode(b"\xff\xfe{}"), raw=True), "is not base64url of a UTF-8 JSON object"),
    (credential(b64url_encode(b"{challenge"), raw=True), "is not base64url of a UTF-8 JSON object"),
    (credential(b64url_encode(b"[" * 100_000), raw=True), "is not base64url of a UTF-8 JSON object"),  # too deep
    (credential([]), "clientDataJSON has no challenge string"),
    (credential({"type": "webauthn.get"}), "clientDataJSON has no challenge string"),
    (credential({"challenge": 7}), "clientDataJSON has no challenge string"),
    (credential({"challenge": "not base64url!"}), "clientDataJSON.challenge is not base64url"),
    (credential({"challenge": b64url_encode(bytes(16))}), "clientDataJSON.challenge is 16 bytes; IDWall challenges"),
    (credential({"challenge": ""}), "clientDataJSON.challenge is 0 bytes"),
])
def test_a_malformed_response_is_a_bad_request(value: Any, problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        claimed_challenge(value)


# --------------------------------------------------------------------------- ledger drafts

APPROVAL = {"credential_id": b64url_encode(b"cred"), "authenticator_data": "YWJj", "client_data_json": "e30",
            "signature": "c2ln"}


def test_approval_of_reencodes_in_the_one_spelling() -> None:
    padded = {"response": {"authenticatorData": "YWJj", "clientDataJSON": "e30=", "signature": "c2ln"}}
    assert approval_of(padded, credential_id=b"cred") == APPROVAL


@pytest.mark.parametrize("kind", ACTION_TYPES)
def test_an_action_draft_carries_the_effect_and_the_signed_action(kind: str) -> None:
    action = build_action(validate_action(VALID[kind]), actor="alice", nonce=NONCE, now=NOW, timeout=300)
    draft = action_draft(action, approval=APPROVAL, subject="bob", data={"user": "bob"})
    assert (draft.type, draft.actor, draft.subject, draft.data) == (kind, "alice", "bob", {"user": "bob"})
    assert draft.approval == {**APPROVAL, "action": action}
    check_fields(draft.approval, ACTION_APPROVAL, "approval")


def test_a_login_draft_proves_its_nonce_and_certificate() -> None:
    ses = session()
    draft = login_draft(session=ses, approval=APPROVAL, nonce=NONCE, sign_count=8)
    assert (draft.type, draft.actor, draft.subject) == ("session.login", "alice", "ses-1")
    assert draft.data == {"user": "alice", "device_id": "dev-1", "credential_id": b64url_encode(b"cred"),
                          "cert_sha256": b64url_encode(ses.cert_sha256), "nonce": b64url_encode(NONCE),
                          "sign_count": 8}
    assert draft.approval == {**APPROVAL, "nonce": b64url_encode(NONCE)}
    check_fields(draft.data, DATA_SCHEMAS["session.login"], "data")
    check_fields(draft.approval, LOGIN_APPROVAL, "approval")


def test_logout_and_anomaly_drafts() -> None:
    logout = logout_draft(session())
    assert (logout.type, logout.actor, logout.subject, logout.approval) == ("session.logout", "alice", "ses-1", None)
    check_fields(logout.data, DATA_SCHEMAS["session.logout"], "data")
    anomaly = anomaly_draft(user_id="alice", device_id="dev-1", credential_id=b"cred", stored=9, received=9)
    cid = b64url_encode(b"cred")
    assert (anomaly.type, anomaly.actor, anomaly.subject) == ("signcount.anomaly", "system", cid)
    assert anomaly.data == {"user": "alice", "device_id": "dev-1", "credential_id": cid, "stored": 9, "received": 9}
    check_fields(anomaly.data, DATA_SCHEMAS["signcount.anomaly"], "data")
