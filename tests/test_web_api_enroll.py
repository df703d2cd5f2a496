"""Enrollment over the real API: bootstrap, invites, self-service, and every way to get past it failing.

The flows (enroll, log in, sign an action over real mTLS with a software
authenticator) are in ``tests/helpers/api.py``. The attacks of the adversarial
review (bounds on what unauthenticated clients can store, the last administrator)
are at the end; each one's docstring says what got through before its fix.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from idwall import pki
from idwall.audit import root_fingerprint, verify_ledger
from idwall.encoding import b64url_decode, b64url_encode
from idwall.enrollment import MAX_OPEN_ENROLLMENTS, MAX_PENDING_DEVICES, invite_id_of
from idwall.model import Invite
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import (
    begin_enroll,
    bootstrap,
    call,
    counts,
    enroll,
    finish_enroll,
    invite,
    ledger_ok,
    login,
    make_csr,
    sign,
)

pytestmark = pytest.mark.asyncio

# -- bootstrap ------------------------------------------------------------------------------------


async def test_bootstrap_admin_enrolls_and_is_the_ledger_genesis(gateway) -> None:
    admin = await bootstrap(gateway)
    assert admin.user_id == "admin"
    assert admin.answer["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(admin.answer["certificate_pem"].encode())
    assert pki.device_id_from_cert(cert) == admin.device_id
    # the certificate is for exactly the CSR's key
    assert cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == \
        serialization.load_pem_private_key(admin.key_path.read_bytes(), None).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    cred_id = next(iter(admin.auth.credentials))
    assert admin.answer["root_fingerprint"] == root_fingerprint(admin.auth.public_key_cose(cred_id))
    entries = await ledger_ok(gateway)
    assert len(entries) == 1
    genesis = entries[0]
    assert genesis["type"] == "bootstrap" and genesis["actor"] == "admin" and genesis["subject"] == "admin"
    assert genesis["data"]["cert_sha256"] == b64url_encode(admin.cert_sha256)
    assert genesis["data"]["origins"] == [gateway.url]
    assert verify_ledger(entries, root=admin.answer["root_fingerprint"]).ok
    user = await gateway.store.get_user("admin")
    assert user.admin and user.groups == ("admins",)
    invite_row = await gateway.store.get_invite(invite_id_of(gateway.init["bootstrap_code"]))
    assert invite_row.used_at is not None


async def test_bootstrap_code_refused_once_an_admin_exists(gateway) -> None:
    # two begins with the bootstrap code: begin does not consume it; the first finish does
    _, status, first = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    assert status == 200
    _, status, second = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    assert status == 200
    auth = SoftAuthenticator(origin=gateway.url)
    status, _ = await finish_enroll(gateway, first["enrollment_id"], auth.create(first["options"]))
    assert status == 200
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, second["enrollment_id"], auth.create(second["options"]))
    assert status in (404, 409), problem
    _, status, problem = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    assert status == 404 and "unknown or already used" in problem["detail"]
    assert await counts(gateway) == before


# -- invites ---------------------------------------------------------------------------------------


async def test_invite_code_is_single_use_and_copies_the_invite(gateway) -> None:
    admin = await bootstrap(gateway)
    assert (await login(gateway, admin))[0] == 200
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "bob", groups=["eng"], email="bob@example.com")
    bob = await enroll(gateway, code)
    user = await gateway.store.get_user("bob")
    assert (user.name, user.email, user.groups, user.admin) == ("Bob", "bob@example.com", ("eng",), False)
    entries = await ledger_ok(gateway)
    enroll_entry = entries[-1]
    assert enroll_entry["type"] == "device.enroll" and enroll_entry["subject"] == bob.device_id
    assert enroll_entry["data"]["invite_id"] == invite_id_of(code)
    assert enroll_entry["data"]["status"] == "active"
    # the same code again: refused at begin with the same answer as a code that never existed
    before = await counts(gateway)
    _, status, used = await begin_enroll(gateway, code=code)
    _, status2, unknown = await begin_enroll(gateway, code="no-such-code-" + "x" * 20)
    assert status == status2 == 404
    assert used["detail"] == unknown["detail"]
    assert await counts(gateway) == before


async def test_invite_code_used_twice_concurrently_only_one_finish_wins(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "carol")
    _, _, first = await begin_enroll(gateway, code=code)
    _, _, second = await begin_enroll(gateway, code=code)
    auth = SoftAuthenticator(origin=gateway.url)
    status, _ = await finish_enroll(gateway, first["enrollment_id"], auth.create(first["options"]))
    assert status == 200
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, second["enrollment_id"], auth.create(second["options"]))
    assert status == 404 and "already used" in problem["detail"]
    assert await counts(gateway) == before


async def test_expired_invite_code_is_410_at_begin_and_at_finish(gateway) -> None:
    gw = gateway.running.node
    now = gw.clock()
    code = "expired-code-for-test-" + b64url_encode(os.urandom(12))
    await gateway.store.create_invite(Invite(invite_id_of(code), "dave", "Dave", "", (), False, False, "admin",
                                             now - 100, now - 1), None)
    before = await counts(gateway)
    _, status, problem = await begin_enroll(gateway, code=code)
    assert status == 410, problem
    assert await counts(gateway) == before
    # expiring between begin and finish
    code2 = "soon-expired-code-" + b64url_encode(os.urandom(12))
    await gateway.store.create_invite(Invite(invite_id_of(code2), "erin", "Erin", "", (), False, False, "admin",
                                             now, now + 60), None)
    _, status, begun = await begin_enroll(gateway, code=code2)
    assert status == 200
    gw.clock = lambda: now + 61  # type: ignore[method-assign]
    try:
        before = await counts(gateway)
        status, problem = await finish_enroll(gateway, begun["enrollment_id"],
                                              SoftAuthenticator(origin=gateway.url).create(begun["options"]))
        assert status == 410, problem
        assert await counts(gateway) == before
    finally:
        gw.clock = time.time  # type: ignore[method-assign]


async def test_enrollment_challenge_expires(gateway) -> None:
    gw = gateway.running.node
    _, _, begun = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    real = gw.clock
    gw.clock = lambda: real() + gateway.config.webauthn.timeout + 1  # type: ignore[method-assign]
    try:
        before = await counts(gateway)
        status, problem = await finish_enroll(gateway, begun["enrollment_id"],
                                              SoftAuthenticator(origin=gateway.url).create(begun["options"]))
        assert status == 410 and "expired" in problem["detail"]
        assert await counts(gateway) == before
        async with gateway.session() as anon:
            status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + begun["enrollment_id"])
        assert status == 200 and view["status"] == "expired" and "options" not in view
    finally:
        gw.clock = real  # type: ignore[method-assign]


# -- the challenge commits to the CSR key; hostile registrations --------------------------------------


async def test_challenge_commits_to_the_csr_key(gateway) -> None:
    from idwall.challenges import enroll_challenge

    key, status, begun = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    enrollment = await gateway.store.get_enrollment(begun["enrollment_id"])
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert b64url_decode(begun["options"]["challenge"]) == enroll_challenge(enrollment.nonce, spki)
    assert begun["enroll_url"] == gateway.url + "/idwall/enroll/" + begun["enrollment_id"]
    assert begun["options"]["authenticatorSelection"]["userVerification"] == "required"


def _garbage_attestation(cred: dict[str, Any]) -> dict[str, Any]:
    cred["response"]["attestationObject"] = b64url_encode(b"\xff\x00garbage-cbor")
    return cred


def _attestation_not_a_map(cred: dict[str, Any]) -> dict[str, Any]:
    cred["response"]["attestationObject"] = b64url_encode(cbor2.dumps([1, 2, 3]))
    return cred


def _bad_b64(cred: dict[str, Any]) -> dict[str, Any]:
    cred["response"]["clientDataJSON"] = "not base64url!!"
    return cred


def _id_mismatch(cred: dict[str, Any]) -> dict[str, Any]:
    cred["id"] = cred["rawId"] = b64url_encode(os.urandom(32))
    return cred


HOSTILE_REGISTRATIONS = {
    "wrong origin": ({"origin": "https://evil.example"}, None),
    "wrong RP ID": ({"rp_id": "evil.example"}, None),
    "missing UV": ({"uv": False}, None),
    "missing UP": ({"up": False}, None),
    "get instead of create": ({"client_data": {"type": "webauthn.get"}}, None),
    "other challenge": ({"client_data": {"challenge": b64url_encode(os.urandom(32))}}, None),
    "garbage attestationObject CBOR": ({}, _garbage_attestation),
    "attestationObject not a map": ({}, _attestation_not_a_map),
    "malformed base64url": ({}, _bad_b64),
    "rawId not the attested credential": ({}, _id_mismatch),
}


@pytest.mark.parametrize("name", list(HOSTILE_REGISTRATIONS))
async def test_hostile_registration_is_refused_and_stores_nothing(gateway, name: str) -> None:
    create_kwargs, mangle = HOSTILE_REGISTRATIONS[name]
    _, _, begun = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    cred = SoftAuthenticator(origin=gateway.url).create(begun["options"], **create_kwargs)
    if mangle:
        cred = mangle(cred)
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, begun["enrollment_id"], cred)
    assert 400 <= status < 500, (status, problem)
    assert problem["status"] == status and problem["detail"]
    assert await counts(gateway) == before
    assert (await gateway.store.get_enrollment(begun["enrollment_id"])).status == "begun"


async def test_credential_id_registered_to_another_user_is_refused(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "mallory")
    _, _, begun = await begin_enroll(gateway, code=code)
    # a validly signed registration that reuses the admin's credential id
    auth = SoftAuthenticator(origin=gateway.url)
    admin_cred_id = next(iter(admin.auth.credentials))
    cred = auth.create(begun["options"])
    own_id = b64url_decode(cred["id"])
    att = cbor2.loads(b64url_decode(cred["response"]["attestationObject"]))
    att["authData"] = att["authData"].replace(own_id, admin_cred_id)
    cred["response"]["attestationObject"] = b64url_encode(cbor2.dumps(att))
    cred["id"] = cred["rawId"] = b64url_encode(admin_cred_id)
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, begun["enrollment_id"], cred)
    assert status == 409, problem
    assert await counts(gateway) == before
    assert (await gateway.store.get_invite(invite_id_of(code))).used_at is None


async def test_finished_enrollment_cannot_be_finished_again(gateway) -> None:
    _, _, begun = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    auth = SoftAuthenticator(origin=gateway.url)
    cred = auth.create(begun["options"])
    assert (await finish_enroll(gateway, begun["enrollment_id"], cred))[0] == 200
    before = await counts(gateway)
    status, _ = await finish_enroll(gateway, begun["enrollment_id"], cred)
    assert status == 409
    status, _ = await finish_enroll(gateway, "enr-unknown", cred)
    assert status == 404
    assert await counts(gateway) == before


# -- begin: hostile requests ---------------------------------------------------------------------------


def _other_csr() -> str:
    return make_csr()[1]


def _rsa_csr() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


BAD_BEGIN_BODIES = {
    "no code nor user": lambda code: {"csr_pem": _other_csr(), "device_name": "x"},
    "code and user": lambda code: {"code": code, "user": "admin", "csr_pem": _other_csr(), "device_name": "x"},
    "code not a string": lambda code: {"code": 12, "csr_pem": _other_csr(), "device_name": "x"},
    "garbage CSR": lambda code: {"code": code, "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                 "-----END CERTIFICATE REQUEST-----\n", "device_name": "x"},
    "RSA CSR": lambda code: {"code": code, "csr_pem": _rsa_csr(), "device_name": "x"},
    "empty device name": lambda code: {"code": code, "csr_pem": _other_csr(), "device_name": ""},
    "device name too long": lambda code: {"code": code, "csr_pem": _other_csr(), "device_name": "x" * 65},
    "control char in device name": lambda code: {"code": code, "csr_pem": _other_csr(), "device_name": "a\x1bb"},
    "bad self-service user id": lambda code: {"user": "../admin", "csr_pem": _other_csr(), "device_name": "x"},
    "unknown self-service user": lambda code: {"user": "nobody", "csr_pem": _other_csr(), "device_name": "x"},
    "huge code": lambda code: {"code": "x" * 5000, "csr_pem": _other_csr(), "device_name": "x"},
}


@pytest.mark.parametrize("name", list(BAD_BEGIN_BODIES))
async def test_bad_begin_is_refused_and_stores_nothing(gateway, name: str) -> None:
    body = BAD_BEGIN_BODIES[name](gateway.init["bootstrap_code"])
    before = await counts(gateway)
    async with gateway.session() as anon:
        status, problem = await call(anon, "POST", gateway.url + "/idwall/api/enroll/begin", body)
    assert 400 <= status < 500, (status, problem)
    assert await counts(gateway) == before


RAW_BODIES = {
    "malformed JSON": (b'{"code": ', "application/json", 400),
    "JSON array": (b"[]", "application/json", 400),
    "duplicate keys": (b'{"code": "a", "code": "b"}', "application/json", 400),
    "NaN": (b'{"code": NaN}', "application/json", 400),
    "not UTF-8": (b'{"code": "\xff"}', "application/json", 400),
    "wrong content type": (b'{"code": "a"}', "text/plain", 400),
    "form content type": (b"code=a", "application/x-www-form-urlencoded", 400),
    "oversized body": (b'{"code": "' + b"a" * 70000 + b'"}', "application/json", 413),
}


@pytest.mark.parametrize("name", list(RAW_BODIES))
@pytest.mark.parametrize("path", ["/idwall/api/enroll/begin", "/idwall/api/enroll/finish"])
async def test_malformed_bodies_get_a_problem_never_a_500(gateway, name: str, path: str) -> None:
    data, ctype, expected = RAW_BODIES[name]
    before = await counts(gateway)
    async with gateway.session() as anon:
        status, problem = await call(anon, "POST", gateway.url + path, data=data,
                                     headers={"Content-Type": ctype})
    assert status == expected, problem
    assert problem["status"] == expected
    assert await counts(gateway) == before


# -- self-service and approval policy ------------------------------------------------------------------


async def test_self_service_enrollment_is_pending_without_certificate(gateway) -> None:
    admin = await bootstrap(gateway)
    key, status, begun = await begin_enroll(gateway, user="admin", device_name="new phone")
    assert status == 200, begun
    # the options exclude the credentials the user already has
    excluded = [b64url_decode(c["id"]) for c in begun["options"]["excludeCredentials"]]
    assert excluded == list(admin.auth.credentials)
    status, answer = await finish_enroll(gateway, begun["enrollment_id"],
                                         SoftAuthenticator(origin=gateway.url).create(begun["options"]))
    assert status == 200, answer
    assert answer["status"] == "pending_approval" and "certificate_pem" not in answer
    device = await gateway.store.get_device(answer["device_id"])
    assert device.status == "pending_approval" and device.cert_sha256 is None
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + begun["enrollment_id"])
    assert status == 200
    assert view["status"] == "pending_approval" and view["device_id"] == answer["device_id"]
    assert "certificate_pem" not in view and "options" not in view
    entries = await ledger_ok(gateway)
    assert entries[-1]["data"]["status"] == "pending_approval" and entries[-1]["data"]["invite_id"] is None


async def test_status_while_begun_carries_the_options(gateway) -> None:
    _, _, begun = await begin_enroll(gateway, code=gateway.init["bootstrap_code"])
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + begun["enrollment_id"])
        assert status == 200 and view["status"] == "begun" and view["user"] == "admin"
        assert view["options"]["challenge"] == begun["options"]["challenge"]
        status, _ = await call(anon, "GET", gateway.url + "/idwall/api/enroll/enr-nope")
        assert status == 404
    auth = SoftAuthenticator(origin=gateway.url)
    status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(view["options"]))
    assert status == 200
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + begun["enrollment_id"])
    assert view["status"] == "active" and view["certificate_pem"] == answer["certificate_pem"]
    assert view["ca_pem"] == answer["ca_pem"]


async def test_approval_policy_holds_invited_devices_until_a_signed_approval(tmp_path, upstream) -> None:
    from tests.helpers.gateway import start_test_gateway

    gateway = await start_test_gateway(
        tmp_path, upstream.url, edit=lambda text: text.replace("approval: none", "approval: admin"))
    try:
        assert gateway.config.devices.approval == "admin"
        admin = await bootstrap(gateway)  # the bootstrap is never held
        async with gateway.session(admin) as client:
            assert (await login(gateway, admin, client))[0] == 200
            code = await invite(gateway, admin, client, "bob")
            _, _, begun = await begin_enroll(gateway, code=code)
            status, answer = await finish_enroll(gateway, begun["enrollment_id"],
                                                 SoftAuthenticator(origin=gateway.url).create(begun["options"]))
            assert status == 200 and answer["status"] == "pending_approval" and "certificate_pem" not in answer
            assert (await gateway.store.get_invite(invite_id_of(code))).used_at is not None
            status, approved = await sign(gateway, admin, client, {"type": "device.approve",
                                                                   "device_id": answer["device_id"]})
            assert status == 200, approved
        device = await gateway.store.get_device(answer["device_id"])
        assert device.status == "active" and device.approved_by == "admin" and device.cert_pem
        entries = await ledger_ok(gateway)
        assert [e["type"] for e in entries[-2:]] == ["device.enroll", "device.approve"]
    finally:
        await gateway.running.stop(drain=1)


# -- adversarial review: unauthenticated clients cannot fill the store through enroll/begin and enroll/finish


async def _enrollments(gateway: Any, *, user: str) -> int:
    return await gateway.store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM enrollments WHERE user_id = ?", (user,)).fetchone()[0])


async def test_self_service_begin_is_bounded_per_user(gateway) -> None:
    """Before: anyone who knew a user id could POST enroll/begin {user} without end, a stored row (CSR included)
    each time, and expired rows were never removed."""
    await gateway.device("alice")
    before = await _enrollments(gateway, user="alice")
    for _ in range(MAX_OPEN_ENROLLMENTS):
        _, status, begun = await begin_enroll(gateway, user="alice")
        assert status == 200, begun
    _, status, problem = await begin_enroll(gateway, user="alice")
    assert status == 429, problem
    assert problem["status"] == 429 and problem["detail"]
    assert await _enrollments(gateway, user="alice") == before + MAX_OPEN_ENROLLMENTS
    # once those have expired the user can start again, and long-expired ones are forgotten
    gw = gateway.running.node
    real = gw.clock
    gw.clock = lambda: real() + 2 * 3600  # type: ignore[method-assign]
    try:
        _, status, begun = await begin_enroll(gateway, user="alice")
        assert status == 200, begun
        assert await _enrollments(gateway, user="alice") == before + 1
    finally:
        gw.clock = real  # type: ignore[method-assign]


async def test_invite_begin_is_bounded_per_code_and_does_not_block_other_users(gateway) -> None:
    """The same bound per invite code: a leaked code cannot be used to write rows without end."""
    code = gateway.init["bootstrap_code"]
    for _ in range(MAX_OPEN_ENROLLMENTS):
        assert (await begin_enroll(gateway, code=code))[1] == 200
    before = await counts(gateway)
    _, status, problem = await begin_enroll(gateway, code=code)
    assert status == 429, problem
    assert await counts(gateway) == before
    # another user's self-service is not held up by this invite's enrollments
    await gateway.device("bob")
    assert (await begin_enroll(gateway, user="bob"))[1] == 200


async def test_self_service_finish_is_bounded_in_pending_devices(gateway) -> None:
    """Before: each finished self-service enrollment added a pending device, a credential and a device.enroll
    ledger entry (which can never be removed) for any user id, with a software passkey and no secret at all."""
    await gateway.device("carol")
    auth = SoftAuthenticator(origin=gateway.url)
    for _ in range(MAX_PENDING_DEVICES):
        _, status, begun = await begin_enroll(gateway, user="carol")
        assert status == 200, begun
        status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
        assert status == 200 and answer["status"] == "pending_approval", answer
    before = await counts(gateway)
    _, status, problem = await begin_enroll(gateway, user="carol")
    assert status == 429, problem
    assert await counts(gateway) == before


async def test_pending_bound_is_also_enforced_at_finish(gateway) -> None:
    """The check at begin is advisory; the one that counts runs in the finish transaction."""
    await gateway.device("dave")
    auth = SoftAuthenticator(origin=gateway.url)
    begun_all = []
    for _ in range(MAX_PENDING_DEVICES + 1):
        _, status, begun = await begin_enroll(gateway, user="dave")
        assert status == 200, begun
        begun_all.append(begun)
    for begun in begun_all[:MAX_PENDING_DEVICES]:
        assert (await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"])))[0] == 200
    before = await counts(gateway)
    last = begun_all[-1]
    status, problem = await finish_enroll(gateway, last["enrollment_id"], auth.create(last["options"]))
    assert status == 429, problem
    assert await counts(gateway) == before
    assert (await gateway.store.get_enrollment(last["enrollment_id"])).status == "begun"


# -- adversarial review: an enrollment never leaves zero administrators -----------------------------------


async def test_an_invite_cannot_demote_the_last_admin(gateway) -> None:
    """An invite for an existing user overwrites the user's role at finish; it must not leave no admin."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "admin", is_admin=False)
    _, status, begun = await begin_enroll(gateway, code=code)
    assert status == 200, begun
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, begun["enrollment_id"],
                                          SoftAuthenticator(origin=gateway.url).create(begun["options"]))
    assert status == 409, problem
    assert await counts(gateway) == before
    assert (await gateway.store.get_user("admin")).admin
