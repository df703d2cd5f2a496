"""idwall.enrollment: the rules of enrollment, pure. An invite code has 192 random bits and is stored only as its
hash; an unknown and a used code get the same answer, an expired one 410, the bootstrap code once an admin exists
409; user ids, device names and codes as typed are checked before anything is stored; a device starts active or
pending by the documented table; what a finished enrollment records is a ledger entry the verifier accepts.

Tested with hand-built records (helpers/records.py) and time as a parameter, every refusal with hostile input.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

from idwall import pki
from idwall.audit import ledger_public_jwk
from idwall.audit.schemas import DATA_SCHEMAS, check_cose_key, check_fields
from idwall.config import WebAuthnConfig
from idwall.encoding import b64url_decode, b64url_encode
from idwall.enrollment import (MAX_CODE_CHARS, MAX_DEVICE_NAME, UNKNOWN_CODE, check_code, check_device_name,
                               check_invite, check_user_id, enrollment_draft, initial_status, invite_id_of,
                               new_device_id, new_enrollment_id, new_invite_code, public_status, user_handle)
from idwall.errors import BadRequest, Conflict, Gone, NotFound
from idwall.passkeys import VerifiedRegistration
from tests.helpers.records import NOW, enrollment, invite
from tests.helpers.webauthn_client import Passkey

# --------------------------------------------------------------------------- codes and ids


def test_invite_id_is_b64url_sha256_of_the_code() -> None:
    code = "s3cret-code"
    expected = base64.urlsafe_b64encode(hashlib.sha256(code.encode()).digest()).rstrip(b"=").decode()
    assert invite_id_of(code) == expected
    assert invite_id_of(code + " ") != expected


def test_new_invite_codes_have_192_bits_and_are_stored_by_hash_only() -> None:
    codes = [new_invite_code() for _ in range(50)]
    assert len({c.code for c in codes}) == 50
    for new in codes:
        assert len(b64url_decode(new.code)) == 24  # token_urlsafe(24): 192 random bits
        assert new.invite_id == invite_id_of(new.code) and new.code not in new.invite_id


def test_enrollment_and_device_ids() -> None:
    enrollments = {new_enrollment_id() for _ in range(50)}
    devices = {new_device_id() for _ in range(50)}
    assert len(enrollments) == len(devices) == 50
    assert all(re.fullmatch(r"enr-[A-Za-z0-9_-]{24}", e) for e in enrollments)  # 144 bits: unguessable URLs
    assert all(re.fullmatch(r"dev-[0-9a-f]{16}", d) for d in devices)


def test_user_handle_is_stable_opaque_and_16_bytes() -> None:
    handle = user_handle("alice")
    assert handle == user_handle("alice") and len(handle) == 16
    assert handle != user_handle("bob") and handle != user_handle("alice ")
    assert b"alice" not in handle  # no personal data in what the authenticator stores


# --------------------------------------------------------------------------- what a client types


@pytest.mark.parametrize("value", ["a", "alice", "a.b-c_d", "0day", "x" * 64])
def test_user_ids_that_pass(value: str) -> None:
    assert check_user_id(value) == value


@pytest.mark.parametrize(("value", "shown"), [
    ("", "''"), ("Alice", "'Alice'"), ("-alice", "'-alice'"), ("_a", "'_a'"), ("x" * 65, "'" + "x" * 65),
    ("a b", "'a b'"), ("a/b", "'a/b'"), ("a@b", "'a@b'"), ("alice\n", "'alice\\n'"), ("\u00e9", "'\u00e9'"),
    ("ａ", "'ａ'"),  # full-width a
    (None, "NoneType"), (7, "int"), (["alice"], "list"), ({"id": "alice"}, "dict"),
])
def test_user_ids_that_are_refused(value: Any, shown: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_user_id(value, field="user")
    assert info.value.detail.startswith("user must be 1-64 characters of a-z, 0-9, '.', '_', '-' starting with")
    assert f"got {shown}" in info.value.detail


def test_a_refused_user_id_is_shown_cut_short() -> None:
    with pytest.raises(BadRequest) as info:
        check_user_id("X" * 10_000, field="action.user")
    assert info.value.detail.startswith("action.user must be") and len(info.value.detail) < 200


@pytest.mark.parametrize("value", ["laptop", "Alice's MacBook Pro", "é" * MAX_DEVICE_NAME, " padded ", "x"])
def test_device_names_that_pass(value: str) -> None:
    assert check_device_name(value) == value


@pytest.mark.parametrize(("value", "problem"), [
    (None, "device_name must be a string, got NoneType"),
    (42, "device_name must be a string, got int"),
    (["laptop"], "device_name must be a string, got list"),
    ("", f"device_name must be 1-{MAX_DEVICE_NAME} characters, got 0"),
    ("x" * (MAX_DEVICE_NAME + 1), f"device_name must be 1-{MAX_DEVICE_NAME} characters, got {MAX_DEVICE_NAME + 1}"),
    ("   ", "device_name must be printable characters"),
    ("lap\ntop", "device_name must be printable characters"),
    ("lap\x1b[31mtop", "device_name must be printable characters"),  # a terminal escape in an admin's listing
    ("lap\u202etop", "device_name must be printable characters"),  # right-to-left override
    ("lap\u200btop", "device_name must be printable characters"),  # zero-width space
    ("lap\x00", "device_name must be printable characters"),
])
def test_device_names_that_are_refused(value: Any, problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        check_device_name(value)


def test_codes_are_trimmed_and_bounded() -> None:
    assert check_code("  abc \n") == "abc"
    assert check_code("x" * MAX_CODE_CHARS) == "x" * MAX_CODE_CHARS


@pytest.mark.parametrize(("value", "problem"), [
    (None, "code must be a non-empty string"), (123, "code must be a non-empty string"),
    (["code"], "code must be a non-empty string"), ("", "code must be a non-empty string"),
    (" \t\n", "code must be a non-empty string"),
    ("x" * (MAX_CODE_CHARS + 1), f"code is {MAX_CODE_CHARS + 1} characters; codes are at most {MAX_CODE_CHARS}"),
    ("x" * 1_000_000, "code is 1000000 characters"),  # never hashed, never looked up
])
def test_codes_that_are_refused(value: Any, problem: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(problem)):
        check_code(value)


# --------------------------------------------------------------------------- which invite may start an enrollment


def test_a_valid_invite_is_returned() -> None:
    valid = invite()
    assert check_invite(valid, now=NOW, admin_exists=True) is valid
    bootstrap = invite(bootstrap=True, admin=True)
    assert check_invite(bootstrap, now=NOW, admin_exists=False) is bootstrap


def test_unknown_and_used_codes_get_the_same_answer() -> None:
    """Whoever guesses codes learns nothing from the answer: never seen and already used look alike."""
    answers = []
    for found in (None, invite(used_at=NOW - 10)):
        with pytest.raises(NotFound) as info:
            check_invite(found, now=NOW, admin_exists=True)
        answers.append(info.value.problem())
    assert answers[0] == answers[1] and answers[0]["detail"] == UNKNOWN_CODE


def test_a_used_code_is_refused_even_before_it_expires_and_even_when_expired() -> None:
    with pytest.raises(NotFound):
        check_invite(invite(used_at=NOW - 10, expires_at=NOW - 1), now=NOW, admin_exists=False)


@pytest.mark.parametrize("expires_at", [NOW, NOW - 1, NOW - 86400])
def test_an_expired_code_is_gone(expires_at: float) -> None:
    with pytest.raises(Gone, match="expired"):
        check_invite(invite(expires_at=expires_at), now=NOW, admin_exists=True)


def test_the_bootstrap_code_is_refused_once_an_admin_exists() -> None:
    with pytest.raises(Conflict, match="bootstrap code is no longer valid"):
        check_invite(invite(bootstrap=True, admin=True), now=NOW, admin_exists=True)


@pytest.mark.parametrize(("bootstrap", "invited", "approval", "status"), [
    (True, True, "none", "active"),
    (True, True, "admin", "active"),  # the bootstrap is active whatever the policy: nobody could approve it
    (False, True, "none", "active"),
    (False, True, "manager", "pending_approval"),
    (False, True, "admin", "pending_approval"),
    (False, False, "none", "pending_approval"),  # self-service always waits for an approval
    (False, False, "admin", "pending_approval"),
])
def test_initial_status(bootstrap: bool, invited: bool, approval: str, status: str) -> None:
    assert initial_status(bootstrap=bootstrap, invited=invited, approval=approval) == status


@pytest.mark.parametrize(("status", "expires_at", "shown"), [
    ("begun", NOW + 1, "begun"),
    ("begun", NOW, "expired"),
    ("rejected", NOW + 300, "rejected"),  # a signed device.reject: the waiting CLI must stop
    ("pending_approval", NOW - 1000, "pending_approval"),
    ("active", NOW - 1000, "active"),  # a finished enrollment does not expire
])
def test_public_status(status: str, expires_at: float, shown: str) -> None:
    assert public_status(enrollment(status=status, expires_at=expires_at), now=NOW) == shown


# --------------------------------------------------------------------------- the ledger entry of a finished enrollment

WEBAUTHN = WebAuthnConfig(rp_id="example.com", origins=("https://idwall.example.com",), user_verification="required")
LEDGER_JWK = ledger_public_jwk(pki.generate_p256_key())
CERT = bytes(range(32))


def registration() -> VerifiedRegistration:
    passkey = Passkey("https://idwall.example.com")
    return VerifiedRegistration(passkey.credential_id, passkey.cose_public_key(), 0, -7, True, "0" * 32,
                                "public-key", False)


def test_the_bootstrap_records_the_relying_party_and_the_ledger_key() -> None:
    first = enrollment(user_id="alice", invite_id="inv-boot", admin=True, bootstrap=True, groups=("admins",))
    reg = registration()
    draft = enrollment_draft(enrollment=first, device_id="dev-1", registration=reg, cert_sha256=CERT,
                             status="active", webauthn=WEBAUTHN, ledger_key_jwk=LEDGER_JWK)
    assert (draft.type, draft.actor, draft.subject, draft.approval) == ("bootstrap", "alice", "alice", None)
    assert draft.data == {
        "user": "alice", "name": "Alice", "email": "alice@example.com", "groups": ["admins"], "admin": True,
        "device_id": "dev-1", "device_name": "laptop", "credential_id": b64url_encode(reg.credential_id),
        "public_key": b64url_encode(reg.public_key), "alg": -7, "cert_sha256": b64url_encode(CERT),
        "rp_id": "example.com", "origins": ["https://idwall.example.com"], "user_verification": "required",
        "ledger_key": LEDGER_JWK}
    check_fields(draft.data, DATA_SCHEMAS["bootstrap"], "data")  # what the ledger verifier will demand
    check_cose_key(b64url_decode(draft.data["public_key"]), draft.data["alg"])


@pytest.mark.parametrize(("cert", "status"), [(None, "active"), (CERT, "pending_approval")])
def test_the_bootstrap_is_always_active_with_a_certificate(cert: bytes | None, status: str) -> None:
    first = enrollment(user_id="alice", admin=True, bootstrap=True)
    with pytest.raises(ValueError, match="always active with a certificate"):
        enrollment_draft(enrollment=first, device_id="dev-1", registration=registration(), cert_sha256=cert,
                         status=status, webauthn=WEBAUTHN, ledger_key_jwk=LEDGER_JWK)


@pytest.mark.parametrize(("invite_id", "cert", "status"), [
    (invite_id_of("code"), CERT, "active"),
    (invite_id_of("code"), None, "pending_approval"),
    (None, None, "pending_approval"),  # self-service: no invite, no certificate until approved
])
def test_a_device_enroll_entry_names_its_invite_enrollment_and_status(invite_id: str | None, cert: bytes | None,
                                                                      status: str) -> None:
    later = enrollment("enr-7", user_id="bob", invite_id=invite_id, groups=("eng", "ops"))
    reg = registration()
    draft = enrollment_draft(enrollment=later, device_id="dev-9", registration=reg, cert_sha256=cert, status=status,
                             webauthn=WEBAUTHN, ledger_key_jwk=LEDGER_JWK)
    assert (draft.type, draft.actor, draft.subject, draft.approval) == ("device.enroll", "bob", "dev-9", None)
    assert draft.data["invite_id"] == invite_id and draft.data["enrollment_id"] == "enr-7"
    assert draft.data["status"] == status and draft.data["groups"] == ["eng", "ops"]
    assert draft.data["cert_sha256"] == (b64url_encode(cert) if cert else None)
    assert "ledger_key" not in draft.data and "rp_id" not in draft.data  # pinned once, by the bootstrap
    check_fields(draft.data, DATA_SCHEMAS["device.enroll"], "data")
