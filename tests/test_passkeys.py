"""idwall.passkeys: options, verification, and every way a passkey response can be wrong.

Each attack test builds a response that is wrong in exactly one way (the
software authenticator signs it validly unless the test tampers after signing)
and checks the exact error class and the reason in its message. The committed
vectors of ``tests/vectors/webauthn`` replay responses from two sources: the
software authenticator (``generate.py``) and real Chromium with its virtual
authenticator (``record_chromium.py``), so what a real browser sends is held
to the same checks.
"""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path
from typing import Any, Callable

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webauthn import verify_registration_response

from idwall import passkeys
from idwall.encoding import b64url_decode, b64url_encode, sha256
from idwall.errors import BadRequest, PayloadTooLarge, WebAuthnRejected
from idwall.passkeys import SignCountRegression, VerifiedRegistration
from idwall.testing import EDDSA, ES256, RS256, InvalidStateError, SoftAuthenticator
from tests.helpers.vectors import read_json, vector_files

ORIGIN = "https://localhost:8443"
ORIGINS = (ORIGIN, "https://gateway.example:9443")
RP_ID = "localhost"
REG_CHALLENGE = sha256(b"registration challenge")
AUTH_CHALLENGE = sha256(b"authentication challenge")
USER_HANDLE = b"user-alice"


def reg_options(*, challenge: bytes = REG_CHALLENGE, exclude: list[bytes] | None = None,
                user_verification: str = "required") -> dict[str, Any]:
    return passkeys.registration_options(
        rp_id=RP_ID, rp_name="IDWall", user_id=USER_HANDLE, user_name="alice", display_name="Alice Example",
        challenge=challenge, timeout_ms=300_000, user_verification=user_verification, exclude=exclude or [],
    )


def auth_options(allow: list[bytes], *, challenge: bytes = AUTH_CHALLENGE) -> dict[str, Any]:
    return passkeys.authentication_options(
        rp_id=RP_ID, challenge=challenge, allow=allow, timeout_ms=300_000, user_verification="required"
    )


def verify_reg(credential: Any, *, challenge: bytes = REG_CHALLENGE, require_uv: bool = True) -> VerifiedRegistration:
    return passkeys.verify_registration(
        credential=credential, expected_challenge=challenge, rp_id=RP_ID, origins=ORIGINS, require_uv=require_uv
    )


def enroll(device: SoftAuthenticator) -> VerifiedRegistration:
    return verify_reg(device.create(reg_options()))


def verify_auth(credential: Any, reg: VerifiedRegistration, *, stored: int = 0, require_uv: bool = True,
                expected_id: bytes | None = None) -> passkeys.VerifiedAuthentication:
    return passkeys.verify_authentication(
        credential=credential,
        expected_challenge=AUTH_CHALLENGE,
        expected_credential_id=reg.credential_id if expected_id is None else expected_id,
        rp_id=RP_ID,
        origins=ORIGINS,
        public_key=reg.public_key,
        stored_sign_count=stored,
        require_uv=require_uv,
        user_handle=USER_HANDLE,
    )


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN)


@pytest.fixture
def reg(device: SoftAuthenticator) -> VerifiedRegistration:
    return enroll(device)


def edit(credential: dict[str, Any], field: str, change: Callable[[bytes], bytes]) -> dict[str, Any]:
    """A copy of ``credential`` with one response field's bytes changed."""
    tampered = copy.deepcopy(credential)
    tampered["response"][field] = b64url_encode(change(b64url_decode(tampered["response"][field])))
    return tampered


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


# --- options ---------------------------------------------------------------------------------------


def test_registration_options_carry_our_choices() -> None:
    options = reg_options(exclude=[b"old-credential"], user_verification="preferred")
    assert b64url_decode(options["challenge"]) == REG_CHALLENGE
    assert options["rp"] == {"id": RP_ID, "name": "IDWall"}
    assert options["user"] == {"id": b64url_encode(b"user-alice"), "name": "alice", "displayName": "Alice Example"}
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert [b64url_decode(c["id"]) for c in options["excludeCredentials"]] == [b"old-credential"]
    assert options["timeout"] == 300_000


def test_authentication_options() -> None:
    options = auth_options([b"cred-1", b"cred-2"])
    assert b64url_decode(options["challenge"]) == AUTH_CHALLENGE
    assert options["rpId"] == RP_ID
    assert options["userVerification"] == "required"
    assert [b64url_decode(c["id"]) for c in options["allowCredentials"]] == [b"cred-1", b"cred-2"]
    assert auth_options([])["allowCredentials"] == []


def test_unknown_user_verification_value_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        reg_options(user_verification="always")


def test_excluded_credential_stops_the_authenticator(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    with pytest.raises(InvalidStateError):
        device.create(reg_options(exclude=[reg.credential_id]))


# --- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ES256, EDDSA, RS256])
def test_registration_and_login_round_trip(alg: int) -> None:
    device = SoftAuthenticator(origin=ORIGIN, alg=alg)
    credential = device.create(reg_options())
    reg = verify_reg(json.dumps(credential))  # the str form too
    assert reg.credential_id == b64url_decode(credential["rawId"])
    assert reg.public_key == device.public_key_cose(reg.credential_id)
    assert (reg.alg, reg.sign_count, reg.user_verified, reg.backed_up) == (alg, 0, True, False)
    assert reg.credential_type == "public-key"
    assert reg.aaguid == "49445761-6c6c-2073-6f66-742061757468"
    stored = reg.sign_count
    for expected in (1, 2):
        assertion = device.get(auth_options([reg.credential_id]))
        assert passkeys.credential_id_of(assertion) == reg.credential_id
        result = verify_auth(assertion, reg, stored=stored)
        assert result.new_sign_count == expected
        assert result.user_verified and result.user_present
        assert result.amr == ("hwk", "user", "mfa")
        stored = result.new_sign_count


def test_second_origin_is_accepted(device: SoftAuthenticator) -> None:
    verify_reg(device.create(reg_options(), origin=ORIGINS[1]))


def test_registration_without_uv_when_not_required(device: SoftAuthenticator) -> None:
    reg = verify_reg(device.create(reg_options(), uv=False), require_uv=False)
    assert reg.user_verified is False


def _cose_es384() -> bytes:
    numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    return cbor2.dumps({1: 2, 3: -35, -1: 2, -2: numbers.x.to_bytes(48, "big"), -3: numbers.y.to_bytes(48, "big")})


def _swap_cose_key(credential: dict[str, Any], cose: bytes) -> dict[str, Any]:
    """Replace the attested public key. Attestation "none" signs nothing, so the rest stays valid."""
    att = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    auth_data = att["authData"]
    id_len = struct.unpack(">H", auth_data[53:55])[0]
    att["authData"] = auth_data[: 55 + id_len] + cose
    return edit(credential, "attestationObject", lambda _: cbor2.dumps(att))


def _set_attestation(credential: dict[str, Any], **fields: Any) -> dict[str, Any]:
    att = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    att.update(fields)
    return edit(credential, "attestationObject", lambda _: cbor2.dumps(att))


def _dup_key_attestation(credential: dict[str, Any]) -> dict[str, Any]:
    att = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    raw = (b"\xa4" + cbor2.dumps("fmt") + cbor2.dumps("none") + cbor2.dumps("attStmt") + cbor2.dumps({})
           + cbor2.dumps("authData") + cbor2.dumps(att["authData"]) + cbor2.dumps("fmt") + cbor2.dumps("packed"))
    return edit(credential, "attestationObject", lambda _: raw)


def _dup_key_cose(credential: dict[str, Any]) -> dict[str, Any]:
    # {1: 2, 3: -7, 3: -8, ...}: which alg a lenient decoder keeps is up to it; we refuse both.
    cose = cbor2.loads(_attested_cose(credential))
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in cose.items()) + cbor2.dumps(3) + cbor2.dumps(-8)
    return _swap_cose_key(credential, bytes([0xA0 + len(cose) + 1]) + body)


def _attested_cose(credential: dict[str, Any]) -> bytes:
    auth_data = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))["authData"]
    id_len = struct.unpack(">H", auth_data[53:55])[0]
    return auth_data[55 + id_len :]


def _other_raw_id(credential: dict[str, Any]) -> dict[str, Any]:
    tampered = copy.deepcopy(credential)
    tampered["id"] = tampered["rawId"] = b64url_encode(b"another credential id")
    return tampered


def _auth_data_edit(change: Callable[[bytes], bytes]) -> Callable[[SoftAuthenticator], dict[str, Any]]:
    def apply(device: SoftAuthenticator) -> dict[str, Any]:
        credential = device.create(reg_options())
        att = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
        att["authData"] = change(att["authData"])
        return edit(credential, "attestationObject", lambda _: cbor2.dumps(att))

    return apply


def _cose(key: Any) -> Callable[[SoftAuthenticator], dict[str, Any]]:
    return lambda d: _swap_cose_key(d.create(reg_options()), cbor2.dumps(key))


def _statement(fmt: str, statement: Any) -> Callable[[SoftAuthenticator], dict[str, Any]]:
    return lambda d: _set_attestation(d.create(reg_options()), fmt=fmt, attStmt=statement)


P256_ORDER_PLUS = (2**256 - 1).to_bytes(32, "big")
ZERO32 = bytes(32)
BROKEN = "could not be processed"  # what py_webauthn let escape as TypeError, KeyError, ValueError...

REGISTRATION_ATTACKS: list[tuple[str, Callable[[SoftAuthenticator], dict[str, Any]], str]] = [
    ("challenge for another ceremony",
     lambda d: d.create(reg_options(challenge=sha256(b"another"))), "challenge was not expected challenge"),
    ("origin differs by port", lambda d: d.create(reg_options(), origin="https://localhost:8444"), "origin"),
    ("http instead of https", lambda d: d.create(reg_options(), origin="http://localhost:8443"), "origin"),
    ("rpIdHash of another RP", lambda d: d.create(reg_options(), rp_id="evil.example"), "RP ID hash"),
    ("rpIdHash of the origin instead of the RP ID",
     lambda d: d.create(reg_options(), rp_id=ORIGIN), "RP ID hash"),
    ("UV missing where required", lambda d: d.create(reg_options(), uv=False), "User verification is required"),
    ("UP missing", lambda d: d.create(reg_options(), up=False), "User presence was required"),
    ("webauthn.get at registration",
     lambda d: d.create(reg_options(), client_data={"type": "webauthn.get"}), 'client data type "webauthn.get"'),
    ("rawId is not the attested credential id", lambda d: _other_raw_id(d.create(reg_options())),
     "differs from the credential ID in the attested"),
    ("ES384 key, not an offered algorithm",
     lambda d: _swap_cose_key(d.create(reg_options()), _cose_es384()), "Unsupported credential public key alg"),
    ("COSE key with alg twice", lambda d: _dup_key_cose(d.create(reg_options())), "CBOR"),
    ('"none" attestation with a statement',
     lambda d: _set_attestation(d.create(reg_options()), attStmt={"sig": b"x"}), "unexpected attestation statement"),
    ("unknown attestation format",
     lambda d: _set_attestation(d.create(reg_options()), fmt="made-up"), 'Unsupported attestation type "made-up"'),
    ("attestationObject of garbage bytes",
     lambda d: edit(d.create(reg_options()), "attestationObject", lambda _: b"\xff\x00\xfe\x01garbage"),
     "attestationObject was malformed"),
    ("truncated CBOR",
     lambda d: edit(d.create(reg_options()), "attestationObject", lambda b: b[: len(b) // 2]),
     "attestationObject was malformed"),
    ("CBOR with duplicate keys", lambda d: _dup_key_attestation(d.create(reg_options())),
     "attestationObject was malformed"),
    ("attestationObject is a CBOR list",
     lambda d: edit(d.create(reg_options()), "attestationObject", lambda _: cbor2.dumps([1, 2, 3])),
     "attestationObject was malformed"),
    ("authData shorter than 37 bytes", _auth_data_edit(lambda b: b[:20]), "37 bytes"),
    ("authData with leftover bytes", _auth_data_edit(lambda b: b + b"\x00"), "attestationObject.authData has bytes left over: its flags (0x45) account for 164 of its 165 bytes"),
    ("authData without attested credential data",
     _auth_data_edit(lambda b: b[:32] + bytes([b[32] & ~0x40]) + b[33:37]), "attested credential data"),
    ("clientDataJSON not JSON",
     lambda d: edit(d.create(reg_options()), "clientDataJSON", lambda _: b"\xff not json"), "clientDataJSON"),
    # COSE keys py_webauthn chokes on or, worse, would store (attestation "none" never loads the key).
    ("COSE key is an integer", _cose(5), BROKEN),
    ("COSE key is a list", _cose([1, 2]), BROKEN),
    ("COSE key is a tag", _cose(cbor2.CBORTag(1000, b"x")), BROKEN),
    ("COSE key without alg", _cose({1: 2}), BROKEN),
    ("COSE EC2 key without x", _cose({1: 2, 3: -7, -1: 1}), BROKEN),
    ("ES256 x is a string", _cose({1: 2, 3: -7, -1: 1, -2: "x", -3: ZERO32}), "x (label -2) is str, expected 32 bytes"),
    ("ES256 y of 31 bytes", _cose({1: 2, 3: -7, -1: 1, -2: ZERO32, -3: bytes(31)}), "is 31 bytes, expected 32"),
    ("ES256 point (0, 0) off the curve", _cose({1: 2, 3: -7, -1: 1, -2: ZERO32, -3: ZERO32}), "does not load"),
    ("ES256 coordinates above the field", _cose({1: 2, 3: -7, -1: 1, -2: P256_ORDER_PLUS, -3: P256_ORDER_PLUS}),
     "does not load"),
    ("ES256 label on curve 99", _cose({1: 2, 3: -7, -1: 99, -2: ZERO32, -3: ZERO32}), "expected EC2 (2) on P-256"),
    ("ES256 label on an OKP key", _cose({1: 1, 3: -7, -1: 6, -2: ZERO32}), "expected EC2 (2) on P-256"),
    ("EdDSA x is a string", _cose({1: 1, 3: -8, -1: 6, -2: "x"}), "x (label -2) is str"),
    ("EdDSA on X25519", _cose({1: 1, 3: -8, -1: 4, -2: ZERO32}), "OKP"),
    ("RS256 n is a string", _cose({1: 3, 3: -257, -1: "n", -2: b"\x01\x00\x01"}), "n (label -1) is str"),
    ("RS256 with a 1024-bit modulus", _cose({1: 3, 3: -257, -1: b"\xc5" * 128, -2: b"\x01\x00\x01"}),
     "1024 bits, expected at least 2048"),
    ("RS256 with e = 1", _cose({1: 3, 3: -257, -1: b"\xc5" * 255 + b"\x01", -2: b"\x01"}), "does not load"),
    # Attestation statements whose parsers raise below py_webauthn's own errors.
    ("packed x5c of junk bytes", _statement("packed", {"alg": -7, "sig": b"x", "x5c": [b"junk"]}), BROKEN),
    ("packed x5c a string", _statement("packed", {"alg": -7, "sig": b"x", "x5c": "str"}), BROKEN),
    ("tpm of junk", _statement("tpm", {"ver": "2.0", "alg": -7, "sig": b"x", "x5c": [b"j"], "certInfo": b"x",
                                       "pubArea": b"y"}), BROKEN),
    ("safetynet response not base64", _statement("android-safetynet", {"ver": "1", "response": b"x.y.z"}), BROKEN),
]


@pytest.mark.parametrize(("attack", "message"), [(make, msg) for _, make, msg in REGISTRATION_ATTACKS],
                         ids=[name for name, _, _ in REGISTRATION_ATTACKS])
def test_registration_attack_is_rejected(device: SoftAuthenticator, attack: Callable, message: str) -> None:
    credential = attack(device)
    with pytest.raises(WebAuthnRejected) as info:
        verify_reg(credential)
    assert type(info.value) is WebAuthnRejected
    assert message in info.value.detail


# --- authentication -------------------------------------------------------------------------------


def test_uv_not_required_gives_possession_only_amr(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    result = verify_auth(device.get(auth_options([reg.credential_id]), uv=False), reg, require_uv=False)
    assert (result.user_verified, result.amr) == (False, ("hwk",))


def test_counterless_authenticator_is_accepted(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    result = verify_auth(device.get(auth_options([reg.credential_id]), sign_count=0), reg, stored=0)
    assert result.new_sign_count == 0


def test_user_handle_of_another_user_is_refused(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    """WebAuthn §7.2 step 6: the userHandle is outside the signature, so a valid signature does not vouch for it."""
    assertion = device.get(auth_options([reg.credential_id]))
    assert b64url_decode(assertion["response"]["userHandle"]) == USER_HANDLE
    with pytest.raises(WebAuthnRejected) as info:
        passkeys.verify_authentication(
            credential=assertion, expected_challenge=AUTH_CHALLENGE, expected_credential_id=reg.credential_id,
            rp_id=RP_ID, origins=ORIGINS, public_key=reg.public_key, stored_sign_count=0, require_uv=True,
            user_handle=b"user-bob")
    assert (info.value.check, "userHandle names another user" in info.value.detail) == ("user_handle", True)


def test_response_without_user_handle_is_judged_by_its_credential(device: SoftAuthenticator,
                                                                  reg: VerifiedRegistration) -> None:
    """A non-discoverable credential may answer without a userHandle (it is optional, §5.2.2)."""
    assertion = device.get(auth_options([reg.credential_id]))
    del assertion["response"]["userHandle"]
    assert verify_auth(assertion, reg).new_sign_count == 1


@pytest.mark.parametrize(("stored", "received"), [(7, 3), (7, 7), (1, 0), (2**32 - 1, 5)])
def test_sign_count_must_go_up(device: SoftAuthenticator, reg: VerifiedRegistration, stored: int,
                               received: int) -> None:
    assertion = device.get(auth_options([reg.credential_id]), sign_count=received)
    with pytest.raises(SignCountRegression) as info:
        verify_auth(assertion, reg, stored=stored)
    assert (info.value.stored, info.value.received) == (stored, received)
    assert f"{received} is not greater than the stored count {stored}" in info.value.detail


def test_forged_low_counter_is_not_reported_as_a_clone(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    """Only the key holder can cause SignCountRegression; an edited counter is a bad signature."""
    assertion = device.get(auth_options([reg.credential_id]), sign_count=9)
    forged = edit(assertion, "authenticatorData", lambda b: b[:33] + struct.pack(">I", 2))
    with pytest.raises(WebAuthnRejected) as info:
        verify_auth(forged, reg, stored=5)
    assert type(info.value) is WebAuthnRejected
    assert "signature" in info.value.detail


def test_assertion_by_another_credential_is_refused(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    other = enroll(device)
    assertion = device.get(auth_options([other.credential_id]))
    with pytest.raises(WebAuthnRejected, match="different credential"):
        verify_auth(assertion, reg)
    # Even when the caller passes the other credential's id but this one's key, the signature fails.
    with pytest.raises(WebAuthnRejected, match="signature"):
        verify_auth(assertion, reg, expected_id=other.credential_id)


def _signature_over_other_data(device: SoftAuthenticator, credential_id: bytes) -> dict[str, Any]:
    assertion = device.get(auth_options([credential_id]))
    return edit(assertion, "signature", lambda _: device.sign(credential_id, b"some other message"))


AUTHENTICATION_ATTACKS: list[tuple[str, Callable[[SoftAuthenticator, bytes], dict[str, Any]], str]] = [
    ("assertion made for another challenge, replayed",
     lambda d, c: d.get(auth_options([c], challenge=sha256(b"old ceremony"))), "challenge was not expected"),
    ("origin differs by port", lambda d, c: d.get(auth_options([c]), origin="https://localhost:8444"), "origin"),
    ("origin of another host", lambda d, c: d.get(auth_options([c]), origin="https://localhost.evil"), "origin"),
    ("rpIdHash of another RP", lambda d, c: d.get(auth_options([c]), rp_id="evil.example"), "RP ID hash"),
    ("UV missing where required", lambda d, c: d.get(auth_options([c]), uv=False), "User verification is required"),
    ("UP missing", lambda d, c: d.get(auth_options([c]), up=False), "User was not present"),
    ("webauthn.create at authentication",
     lambda d, c: d.get(auth_options([c]), client_data={"type": "webauthn.create"}),
     'client data type "webauthn.create"'),
    ("clientDataJSON edited after signing",
     lambda d, c: edit(d.get(auth_options([c])), "clientDataJSON",
                       lambda b: b.replace(b'"crossOrigin":false', b'"crossOrigin":true')), "signature"),
    ("clientDataJSON origin edited after signing",
     lambda d, c: edit(d.get(auth_options([c]), origin="https://evil.example"), "clientDataJSON",
                       lambda b: b.replace(b"https://evil.example", ORIGIN.encode())), "signature"),
    ("UV flag set after signing",
     lambda d, c: edit(d.get(auth_options([c]), uv=False), "authenticatorData",
                       lambda b: b[:32] + bytes([b[32] | 0x04]) + b[33:]), "signature"),
    ("signature byte flipped", lambda d, c: edit(d.get(auth_options([c])), "signature", flip_last_byte), "signature"),
    ("signature of another message", _signature_over_other_data, "signature"),
    ("signature r=1 s=1", lambda d, c: edit(d.get(auth_options([c])), "signature",
                                            lambda _: bytes.fromhex("3006020101020101")), "signature"),
    ("signature not DER", lambda d, c: edit(d.get(auth_options([c])), "signature", lambda _: b"\x01" * 64),
     "signature"),
    ("authenticatorData truncated",
     lambda d, c: edit(d.get(auth_options([c])), "authenticatorData", lambda b: b[:20]), "37 bytes"),
    ("authenticatorData with leftover bytes",
     lambda d, c: edit(d.get(auth_options([c])), "authenticatorData", lambda b: b + b"\x00"),
     "authenticatorData has bytes left over: its flags (0x05) account for 37 of its 38 bytes"),
    ("clientDataJSON not JSON",
     lambda d, c: edit(d.get(auth_options([c])), "clientDataJSON", lambda _: b"[1,2"), "clientDataJSON"),
    ("clientDataJSON without challenge",
     lambda d, c: edit(d.get(auth_options([c])), "clientDataJSON",
                       lambda _: b'{"type":"webauthn.get","origin":"https://localhost:8443"}'), "clientDataJSON"),
    # refused by verify_assertion, not by py_webauthn (ledger replay refused them before it shared the verifier)
    ("clientDataJSON with a repeated member",
     lambda d, c: edit(d.get(auth_options([c])), "clientDataJSON", lambda b: b[:-1] + b',"challenge":"AAAA"}'),
     'clientDataJSON has the key "challenge" twice'),
    ("challenge spelled with padding",
     lambda d, c: d.get(auth_options([c]), client_data={"challenge": b64url_encode(AUTH_CHALLENGE) + "="}),
     "is not unpadded base64url"),
    ("attested credential data in an assertion",
     lambda d, c: edit(d.get(auth_options([c])), "authenticatorData",
                       lambda b: b[:32] + bytes([b[32] | 0x40]) + b[33:]),
     "authenticatorData carries attested credential data (flag AT)"),
]


@pytest.mark.parametrize(("attack", "message"), [(make, msg) for _, make, msg in AUTHENTICATION_ATTACKS],
                         ids=[name for name, _, _ in AUTHENTICATION_ATTACKS])
def test_authentication_attack_is_rejected(device: SoftAuthenticator, reg: VerifiedRegistration,
                                           attack: Callable, message: str) -> None:
    assertion = attack(device, reg.credential_id)
    with pytest.raises(WebAuthnRejected) as info:
        verify_auth(assertion, reg)
    assert type(info.value) is WebAuthnRejected
    assert message in info.value.detail


def test_key_of_another_algorithm_does_not_verify(reg: VerifiedRegistration) -> None:
    eddsa_device = SoftAuthenticator(origin=ORIGIN, alg=EDDSA)
    eddsa = enroll(eddsa_device)
    assertion = eddsa_device.get(auth_options([eddsa.credential_id]))
    with pytest.raises(WebAuthnRejected):
        verify_auth(assertion, reg, expected_id=eddsa.credential_id)


# --- structure: BadRequest before py_webauthn ------------------------------------------------------


def _mutate(path: list[str], value: Any = ...) -> Callable[[dict[str, Any]], Any]:
    def apply(credential: dict[str, Any]) -> Any:
        tampered = copy.deepcopy(credential)
        target = tampered
        for key in path[:-1]:
            target = target[key]
        if value is ...:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return tampered

    return apply


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("not JSON", lambda c: '{"id": ', "not valid JSON"),
    ("JSON array", lambda c: json.dumps([c]), "credential JSON must be a JSON object, got an array"),
    ("JSON number", lambda c: "42", "must be a JSON object, got an integer"),
    ("a list, not a dict", lambda c: [c], "credential must be a JSON object, got an array"),
    ("None", lambda c: None, "must be a JSON object, got null"),
    ("deeply nested JSON", lambda c: "[" * 30_000 + "]" * 30_000, "nests 30000 levels deep, expected at most 32"),
    ("duplicate JSON key",
     lambda c: json.dumps(c)[:-1] + ', "rawId": "' + b64url_encode(b"x") + '"}', 'key "rawId" twice'),
    ("huge integer", lambda c: '{"id": ' + "9" * 5000 + "}", "an integer of 5000 digits, expected at most 20"),
    ("id missing", _mutate(["id"]), "credential.id is missing"),
    ("rawId missing", _mutate(["rawId"]), "credential.rawId is missing"),
    ("rawId null", _mutate(["rawId"], None), "credential.rawId is missing"),
    ("rawId a number", _mutate(["rawId"], 12), "credential.rawId must be a base64url string, got an integer"),
    ("rawId standard alphabet", _mutate(["rawId"], "ab+/"), "credential.rawId is not base64url"),
    ("rawId with a space", _mutate(["rawId"], "abc d"), "credential.rawId is not base64url"),
    ("rawId impossible length", _mutate(["rawId"], "abcde"), "credential.rawId is not base64url"),
    ("rawId too much padding", _mutate(["rawId"], "ab==="), "credential.rawId is not base64url"),
    ("id not base64url", _mutate(["id"], "é"), "credential.id is not base64url"),
    ("id and rawId differ", _mutate(["id"], b64url_encode(b"other")), "name different credentials"),
    ("empty credential id", lambda c: c | {"id": "", "rawId": ""}, "credential ID is 0 bytes"),
    ("credential id of 1024 bytes", lambda c: c | {"id": b64url_encode(b"\x07" * 1024),
                                                   "rawId": b64url_encode(b"\x07" * 1024)}, "is 1024 bytes"),
    ("type missing", _mutate(["type"]), 'credential.type must be "public-key", got None'),
    ("type private-key", _mutate(["type"], "private-key"), 'must be "public-key"'),
    ("response missing", _mutate(["response"]), "credential.response must be an object"),
    ("response a string", _mutate(["response"], "{}"), "credential.response must be an object, got a string"),
    ("clientDataJSON missing", _mutate(["response", "clientDataJSON"]),
     "credential.response.clientDataJSON is missing"),
    ("clientDataJSON an object", _mutate(["response", "clientDataJSON"], {"type": "webauthn.get"}),
     "credential.response.clientDataJSON must be a base64url string, got an object"),
    ("clientDataJSON not base64url", _mutate(["response", "clientDataJSON"], "eyJ0eXBlIjo=/"),
     "credential.response.clientDataJSON is not base64url"),
]


@pytest.mark.parametrize(("make", "message"), [(m, msg) for _, m, msg in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_registration_is_a_bad_request(device: SoftAuthenticator, make: Callable, message: str) -> None:
    credential = make(device.create(reg_options()))
    with pytest.raises(BadRequest) as info:
        verify_reg(credential)
    assert message in info.value.detail


@pytest.mark.parametrize(("make", "message"), [(m, msg) for _, m, msg in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_assertion_is_a_bad_request(device: SoftAuthenticator, reg: VerifiedRegistration,
                                              make: Callable, message: str) -> None:
    credential = make(device.get(auth_options([reg.credential_id])))
    with pytest.raises(BadRequest) as info:
        verify_auth(credential, reg)
    assert message in info.value.detail


@pytest.mark.parametrize(("field", "ceremony"), [
    ("attestationObject", "registration"), ("authenticatorData", "authentication"), ("signature", "authentication"),
])
def test_each_required_response_field(device: SoftAuthenticator, reg: VerifiedRegistration, field: str,
                                      ceremony: str) -> None:
    if ceremony == "registration":
        credential = _mutate(["response", field])(device.create(reg_options()))
        call: Callable[[Any], Any] = verify_reg
    else:
        credential = _mutate(["response", field])(device.get(auth_options([reg.credential_id])))
        call = lambda c: verify_auth(c, reg)  # noqa: E731
    with pytest.raises(BadRequest, match=f"credential.response.{field} is missing"):
        call(credential)


def test_user_handle_must_be_base64url(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    credential = _mutate(["response", "userHandle"], "not base64!")(device.get(auth_options([reg.credential_id])))
    with pytest.raises(BadRequest, match="credential.response.userHandle is not base64url"):
        verify_auth(credential, reg)


def test_oversized_json_string(device: SoftAuthenticator) -> None:
    credential = device.create(reg_options()) | {"padding": "x" * (64 * 1024)}
    with pytest.raises(PayloadTooLarge, match="expected at most 65536"):
        verify_reg(json.dumps(credential))


def test_informational_fields_take_any_value_of_their_type(device: SoftAuthenticator,
                                                          reg: VerifiedRegistration) -> None:
    """Fields that decide nothing accept values we do not know yet, so future browser additions do not break login."""
    credential = device.create(reg_options()) | {
        "authenticatorAttachment": "quantum", "clientExtensionResults": {"credProps": {"rk": True}, "future": [1]},
        "somethingNew": 3}
    credential["response"] |= {"transports": ["internal", "hybrid", "teleport"], "publicKeyAlgorithm": -7,
                               "publicKey": b64url_encode(b"spki"), "authenticatorData": b64url_encode(b"copy")}
    verify_reg(credential)
    registration = device.create(reg_options()) | {"authenticatorAttachment": None, "clientExtensionResults": None}
    registration["response"] |= {"transports": None, "publicKeyAlgorithm": None, "publicKey": None}
    verify_reg(registration)
    assertion = device.get(auth_options([reg.credential_id])) | {"clientExtensionResults": {"appid": False}}
    verify_auth(assertion, reg)


BOTH, REG, AUTH = ("registration", "authentication"), ("registration",), ("authentication",)
#: a field of the W3C JSON form with a value of the wrong type, which ceremonies carry it, and the message
SHAPES: list[tuple[str, list[str], Any, tuple[str, ...], str]] = [
    ("id a list", ["id"], ["abc"], BOTH, "credential.id must be a base64url string, got an array"),
    ("rawId an object", ["rawId"], {}, BOTH, "credential.rawId must be a base64url string, got an object"),
    ("rawId true", ["rawId"], True, BOTH, "credential.rawId must be a base64url string, got a boolean"),
    ("type a list", ["type"], ["public-key"], BOTH, 'credential.type must be "public-key", got [\'public-key\']'),
    ("response a list", ["response"], [], BOTH, "credential.response must be an object, got an array"),
    ("clientDataJSON a number", ["response", "clientDataJSON"], 7, BOTH,
     "credential.response.clientDataJSON must be a base64url string, got an integer"),
    ("attestationObject a list", ["response", "attestationObject"], ["o"], REG,
     "credential.response.attestationObject must be a base64url string, got an array"),
    ("authenticatorData an object", ["response", "authenticatorData"], {"a": 1}, BOTH,
     "credential.response.authenticatorData must be a base64url string, got an object"),
    ("signature a float", ["response", "signature"], 1.5, AUTH,
     "credential.response.signature must be a base64url string, got a number"),
    ("userHandle a number", ["response", "userHandle"], 5, AUTH,
     "credential.response.userHandle must be a base64url string, got an integer"),
    ("userHandle an object", ["response", "userHandle"], {}, AUTH,
     "credential.response.userHandle must be a base64url string, got an object"),
    ("clientExtensionResults a number", ["clientExtensionResults"], 3, BOTH,
     "credential.clientExtensionResults must be an object, got an integer"),
    ("clientExtensionResults a list", ["clientExtensionResults"], [], BOTH,
     "credential.clientExtensionResults must be an object, got an array"),
    ("clientExtensionResults a string", ["clientExtensionResults"], "{}", BOTH,
     "credential.clientExtensionResults must be an object, got a string"),
    ("authenticatorAttachment a list", ["authenticatorAttachment"], ["platform"], BOTH,
     "credential.authenticatorAttachment must be a string, got an array"),
    ("authenticatorAttachment a number", ["authenticatorAttachment"], 1, BOTH,
     "credential.authenticatorAttachment must be a string, got an integer"),
    ("transports a string", ["response", "transports"], "internal", REG,
     "credential.response.transports must be an array, got a string"),
    ("transports holding a number", ["response", "transports"], ["usb", 2], REG,
     "credential.response.transports[1] must be a string, got an integer"),
    ("transports holding an object", ["response", "transports"], [{}], REG,
     "credential.response.transports[0] must be a string, got an object"),
    ("publicKeyAlgorithm a string", ["response", "publicKeyAlgorithm"], "-7", REG,
     "credential.response.publicKeyAlgorithm must be an integer, got a string"),
    ("publicKeyAlgorithm a boolean", ["response", "publicKeyAlgorithm"], True, REG,
     "credential.response.publicKeyAlgorithm must be an integer, got a boolean"),
    ("publicKey not base64url", ["response", "publicKey"], "MFkw+/==", REG,
     "credential.response.publicKey is not base64url"),
    ("publicKey a list", ["response", "publicKey"], [], REG,
     "credential.response.publicKey must be a base64url string, got an array"),
]


@pytest.mark.parametrize(("path", "value", "ceremony", "message"),
                         [(p, v, c, m) for _, p, v, cs, m in SHAPES for c in cs],
                         ids=[f"{name} ({c})" for name, _, _, cs, _ in SHAPES for c in cs])
def test_each_field_must_have_its_w3c_type(device: SoftAuthenticator, reg: VerifiedRegistration, path: list[str],
                                           value: Any, ceremony: str, message: str) -> None:
    if ceremony == "registration":
        credential = _mutate(path, value)(device.create(reg_options()))
        with pytest.raises(BadRequest) as info:
            verify_reg(credential)
    else:
        credential = _mutate(path, value)(device.get(auth_options([reg.credential_id])))
        with pytest.raises(BadRequest) as info:
            verify_auth(credential, reg)
        # the handlers look the credential up first: the same refusal, before any challenge is spent
        with pytest.raises(BadRequest, match=re.escape(message)):
            passkeys.credential_id_of(credential)
    assert type(info.value) is BadRequest
    assert message in info.value.detail


# --- leftover bytes: what py_webauthn lets through ------------------------------------------------

HALF_FLOAT_ZERO = b"\xf9\x00\x00"  # 0.0 in 3 bytes; cbor2 re-encodes it as a 9-byte double


def _map_with_half_float(items: dict[Any, Any]) -> bytes:
    """A CBOR map of ``items`` plus ``99: 0.0`` written as a half-precision float."""
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items.items())
    return bytes([0xA0 + len(items) + 1]) + body + cbor2.dumps(99) + HALF_FLOAT_ZERO


def _with_auth_data(credential: dict[str, Any], auth_data: bytes) -> dict[str, Any]:
    att = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    att["authData"] = auth_data
    return edit(credential, "attestationObject", lambda _: cbor2.dumps(att))


def _attested_prefix(credential: dict[str, Any]) -> bytes:
    """The registration's authData up to the end of the credential ID (where the COSE key begins)."""
    auth_data = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))["authData"]
    return auth_data[: 55 + struct.unpack(">H", auth_data[53:55])[0]]


def _key_hiding_bytes(credential: dict[str, Any], hidden: bytes) -> dict[str, Any]:
    cose = cbor2.loads(_attested_cose(credential))
    return _with_auth_data(credential, _attested_prefix(credential) + _map_with_half_float(cose) + hidden)


def _flag_ed(auth_data: bytes) -> bytes:
    """``auth_data`` with the ED flag set: extensions are announced (whether or not any follow)."""
    return auth_data[:32] + bytes([auth_data[32] | 0x80]) + auth_data[33:]


def _with_extensions(credential: dict[str, Any], extensions: bytes) -> dict[str, Any]:
    return _with_auth_data(credential, _flag_ed(_attested_prefix(credential) + _attested_cose(credential)) + extensions)


def _extensions_hiding_bytes(credential: dict[str, Any], hidden: bytes) -> dict[str, Any]:
    return _with_extensions(credential, _map_with_half_float({"credProtect": 1}) + hidden)


def _verify_with_py_webauthn_alone(credential: dict[str, Any]) -> None:
    verify_registration_response(credential=credential, expected_challenge=REG_CHALLENGE, expected_rp_id=RP_ID,
                                 expected_origin=list(ORIGINS), require_user_verification=True)


@pytest.mark.parametrize("hide", [_key_hiding_bytes, _extensions_hiding_bytes], ids=["after the key", "after ext"])
def test_py_webauthn_alone_accepts_hidden_bytes_in_auth_data(device: SoftAuthenticator, hide: Callable) -> None:
    """Why the check exists: py_webauthn measures the COSE key and the extensions by re-encoding them."""
    _verify_with_py_webauthn_alone(hide(device.create(reg_options()), b"HIDDEN"))


LEFTOVERS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("a byte after the attestation object",
     lambda c: edit(c, "attestationObject", lambda b: b + b"\x00"),
     "attestationObject was malformed: bytes left over, its CBOR item ends after"),
    ("a second CBOR map after the attestation object",
     lambda c: edit(c, "attestationObject", lambda b: b + cbor2.dumps({"fmt": "packed"})),
     "bytes left over, its CBOR item ends after"),
    ("the attestation object twice", lambda c: edit(c, "attestationObject", lambda b: b + b),
     "bytes left over, its CBOR item ends after"),
    ("6 bytes hidden behind a half-float in the key", lambda c: _key_hiding_bytes(c, b"HIDDEN"),
     "attestationObject.authData has bytes left over"),
    ("1 byte hidden behind a half-float in the key", lambda c: _key_hiding_bytes(c, b"\x00"),
     "attestationObject.authData has bytes left over"),
    ("6 bytes hidden behind a half-float in the extensions", lambda c: _extensions_hiding_bytes(c, b"HIDDEN"),
     "attestationObject.authData has bytes left over: its flags (0xc5)"),
    ("extensions without the ED flag",
     lambda c: _with_auth_data(c, _attested_prefix(c) + _attested_cose(c) + cbor2.dumps({"credProtect": 1})),
     "attestationObject.authData has bytes left over: its flags (0x45)"),
    ("ED flag without extensions", lambda c: _with_extensions(c, b""),
     "the extensions in attestationObject.authData are not well-formed CBOR"),
    ("extensions that are a list", lambda c: _with_extensions(c, cbor2.dumps([1])),
     "the extensions in attestationObject.authData are a CBOR list, expected a map"),
    ("AT flag but the attested data cut short", lambda c: _with_auth_data(c, _attested_prefix(c)[:50]),
     "attestationObject.authData was 50 bytes, expected at least 55 bytes with attested credential data"),
    ("credential ID length past the end",
     lambda c: _with_auth_data(c, _attested_prefix(c)[:53] + b"\xff\xff" + b"x" * 40),
     "the credential public key in attestationObject.authData is not well-formed CBOR"),
    ("authData a text string", lambda c: _set_attestation(c, authData="x" * 40),
     "attestationObject was malformed: authData is a CBOR str, expected a byte string"),
    ("authData missing", lambda c: edit(c, "attestationObject", lambda _: cbor2.dumps({"fmt": "none", "attStmt": {}})),
     "attestationObject was malformed: authData is missing, expected a byte string"),
]


@pytest.mark.parametrize(("make", "message"), [(m, msg) for _, m, msg in LEFTOVERS], ids=[n for n, _, _ in LEFTOVERS])
def test_registration_with_leftover_bytes_is_rejected(device: SoftAuthenticator, make: Callable,
                                                      message: str) -> None:
    with pytest.raises(WebAuthnRejected) as info:
        verify_reg(make(device.create(reg_options())))
    assert type(info.value) is WebAuthnRejected
    assert message in info.value.detail


def _resigned(device: SoftAuthenticator, assertion: dict[str, Any], auth_data: bytes) -> dict[str, Any]:
    """``assertion`` with other authenticator data, validly signed again by the authenticator's key."""
    client_data = b64url_decode(assertion["response"]["clientDataJSON"])
    signature = device.sign(b64url_decode(assertion["rawId"]), auth_data + sha256(client_data))
    return edit(edit(assertion, "authenticatorData", lambda _: auth_data), "signature", lambda _: signature)


@pytest.mark.parametrize(("extra", "message"), [
    (_map_with_half_float({"credProtect": 1}) + b"HIDDEN", "authenticatorData has bytes left over: its flags (0x85)"),
    (cbor2.dumps({"credProtect": 1}) + b"\x00", "authenticatorData has bytes left over"),
    (b"", "the extensions in authenticatorData are not well-formed CBOR"),
    (cbor2.dumps("ext"), "the extensions in authenticatorData are a CBOR str, expected a map"),
])
def test_signed_assertion_with_leftover_bytes_is_rejected(device: SoftAuthenticator, reg: VerifiedRegistration,
                                                          extra: bytes, message: str) -> None:
    """Even signed by the key holder: bytes nobody can interpret are not part of a valid assertion."""
    assertion = device.get(auth_options([reg.credential_id]))
    auth_data = b64url_decode(assertion["response"]["authenticatorData"])
    tampered = _resigned(device, assertion, _flag_ed(auth_data) + extra)
    with pytest.raises(WebAuthnRejected) as info:
        verify_auth(tampered, reg, stored=1)
    assert message in info.value.detail


def test_registration_with_extensions_is_accepted(device: SoftAuthenticator) -> None:
    verify_reg(_with_extensions(device.create(reg_options()), cbor2.dumps({"credProtect": 1})))


def test_signed_assertion_with_extensions_is_accepted(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    assertion = device.get(auth_options([reg.credential_id]))
    auth_data = b64url_decode(assertion["response"]["authenticatorData"])
    with_extensions = _flag_ed(auth_data) + cbor2.dumps({"credProtect": 1})
    assert verify_auth(_resigned(device, assertion, with_extensions), reg, stored=0).new_sign_count == 1


def test_credential_id_of(device: SoftAuthenticator, reg: VerifiedRegistration) -> None:
    assertion = device.get(auth_options([reg.credential_id]))
    assert passkeys.credential_id_of(assertion) == reg.credential_id
    assert passkeys.credential_id_of(json.dumps(assertion)) == reg.credential_id
    with pytest.raises(BadRequest, match="name different credentials"):
        passkeys.credential_id_of(assertion | {"id": b64url_encode(b"other")})
    with pytest.raises(BadRequest, match="is 1024 bytes"):
        passkeys.credential_id_of({"id": b64url_encode(bytes(1024)), "rawId": b64url_encode(bytes(1024))})


# --- fuzzing ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
b64_blobs = st.binary(max_size=200).map(b64url_encode)


def _fuzz_device() -> tuple[SoftAuthenticator, VerifiedRegistration, dict[str, Any], dict[str, Any]]:
    device = SoftAuthenticator(origin=ORIGIN)
    registration = device.create(reg_options())
    reg = verify_reg(registration)
    return device, reg, registration, device.get(auth_options([reg.credential_id]))


FUZZ_DEVICE, FUZZ_REG, FUZZ_REGISTRATION, FUZZ_ASSERTION = _fuzz_device()
FIELDS = ["id", "rawId", "type", "response", "response.clientDataJSON", "response.attestationObject",
          "response.authenticatorData", "response.signature", "response.userHandle", "response.transports",
          "response.publicKeyAlgorithm", "response.publicKey", "clientExtensionResults", "authenticatorAttachment"]


@st.composite
def mutated_credentials(draw: st.DrawFn) -> Any:
    """A recorded credential with some fields deleted or replaced by random JSON or random base64url bytes."""
    base = copy.deepcopy(draw(st.sampled_from([FUZZ_REGISTRATION, FUZZ_ASSERTION])))
    for path in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        *parents, last = path.split(".")
        target = base
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        choice = draw(st.integers(0, 2))
        if choice == 0:
            target.pop(last, None)
        else:
            target[last] = draw(json_values if choice == 1 else b64_blobs)
    return base


def _only_expected_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except (BadRequest, WebAuthnRejected):
        pass


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(credential=st.one_of(mutated_credentials(), json_values, st.text(max_size=50)))
def test_fuzz_only_bad_request_or_rejected(credential: Any) -> None:
    _only_expected_errors(lambda: verify_reg(credential))
    _only_expected_errors(lambda: verify_auth(credential, FUZZ_REG))


@settings(max_examples=300, deadline=None, database=None)
@given(position=st.integers(min_value=0), value=st.integers(0, 255), cut=st.booleans(),
       field=st.sampled_from(["attestationObject", "clientDataJSON"]))
def test_fuzz_registration_bytes(position: int, value: int, cut: bool, field: str) -> None:
    """One byte of the CBOR or JSON changed, or the rest cut off: verified or rejected, nothing else."""
    def change(data: bytes) -> bytes:
        i = position % len(data)
        return data[:i] if cut else data[:i] + bytes([value]) + data[i + 1 :]

    _only_expected_errors(lambda: verify_reg(edit(FUZZ_REGISTRATION, field, change)))


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=300), field=st.sampled_from(["authenticatorData", "clientDataJSON", "signature"]))
def test_fuzz_assertion_bytes_never_verify(data: bytes, field: str) -> None:
    with pytest.raises((BadRequest, WebAuthnRejected)):
        verify_auth(edit(FUZZ_ASSERTION, field, lambda _: data), FUZZ_REG)


# --- recorded vectors ------------------------------------------------------------------------------

VECTOR_FILES = vector_files("webauthn", "*/*.json")
ERRORS = {"BadRequest": BadRequest, "WebAuthnRejected": WebAuthnRejected, "SignCountRegression": SignCountRegression}


def run_vector(vector: dict[str, Any]) -> Any:
    expected = vector["expected"]
    common = {
        "credential": vector["credential"],
        "expected_challenge": b64url_decode(expected["challenge"]),
        "rp_id": expected["rp_id"],
        "origins": tuple(expected["origins"]),
        "require_uv": expected["require_uv"],
    }
    if vector["ceremony"] == "registration":
        return passkeys.verify_registration(**common)
    return passkeys.verify_authentication(
        **common,
        expected_credential_id=b64url_decode(expected["credential_id"]),
        public_key=b64url_decode(expected["public_key"]),
        stored_sign_count=expected["stored_sign_count"],
        user_handle=b64url_decode(expected["user_handle"]),
    )


VECTOR_FIELDS = {"valid": {"description", "source", "ceremony", "expected", "credential", "result"},
                 "invalid": {"description", "source", "ceremony", "expected", "credential", "error", "message"}}
EXPECTED_FIELDS = {"registration": {"challenge", "rp_id", "origins", "require_uv"},
                   "authentication": {"challenge", "rp_id", "origins", "require_uv", "credential_id", "public_key",
                                      "stored_sign_count", "user_handle"}}
CHROMIUM_SOURCE = re.compile(r"chromium \d+\.\d+\.\d+\.\d+")  # "chromium <version>", as record_chromium.py writes
CHROMIUM_VIRTUAL_AAGUID = "01020304-0506-0708-0102-030405060708"  # the AAGUID of Chromium's virtual authenticator


def _source_of(vector: dict[str, Any]) -> str:
    """``"generate.py"`` or ``"chromium"`` (any version); anything else as it is."""
    return "chromium" if CHROMIUM_SOURCE.fullmatch(vector["source"]) else vector["source"]


def test_vector_sets_are_present() -> None:
    folders = {path.parent.name for path in VECTOR_FILES}
    assert folders == {"valid", "invalid"}
    assert len(VECTOR_FILES) >= 20
    # Both sources, each with both ceremonies, in both sets: deleting the Chromium recording (or the generated
    # vectors) fails here rather than leaving test_vector with fewer cases.
    vectors = [(path.parent.name, read_json(path)) for path in VECTOR_FILES]
    found = {(folder, _source_of(vector), vector["ceremony"]) for folder, vector in vectors}
    assert found == {(folder, source, ceremony) for folder in ("valid", "invalid")
                     for source in ("generate.py", "chromium") for ceremony in ("registration", "authentication")}
    # Chromium's virtual authenticator makes all three algorithms we accept, and the recording has each;
    # its AAGUID (not our software authenticator's) shows the credentials did come from Chromium.
    chromium_registrations = [vector["result"] for folder, vector in vectors if folder == "valid"
                              and _source_of(vector) == "chromium" and vector["ceremony"] == "registration"]
    assert {result["alg"] for result in chromium_registrations} == set(passkeys.SUPPORTED_ALGORITHMS)
    assert {result["aaguid"] for result in chromium_registrations} == {CHROMIUM_VIRTUAL_AAGUID}


def test_every_vector_has_exactly_the_documented_fields() -> None:
    """test_vector reads only the fields it knows: a misspelt or stray one would be ignored, so none is allowed.

    The ``chromium-`` file prefix is the recorder's (it replaces those files when it records again), so it marks
    exactly the Chromium vectors.
    """
    for path in VECTOR_FILES:
        vector = read_json(path)
        assert set(vector) == VECTOR_FIELDS[path.parent.name], path.name
        assert set(vector["expected"]) == EXPECTED_FIELDS[vector["ceremony"]], path.name
        assert _source_of(vector) in {"generate.py", "chromium"}, path.name
        assert path.name.startswith("chromium-") == (_source_of(vector) == "chromium"), path.name


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in VECTOR_FILES])
def test_vector(path: Path) -> None:
    vector = read_json(path)
    if path.parent.name == "valid":
        result = run_vector(vector)
        for key, value in vector["result"].items():
            actual = getattr(result, key)
            if isinstance(actual, bytes):
                actual = b64url_encode(actual)
            if isinstance(actual, tuple):
                actual = list(actual)
            assert actual == value, key
    else:
        with pytest.raises(ERRORS[vector["error"]]) as info:
            run_vector(vector)
        assert type(info.value).__name__ == vector["error"]
        assert vector["message"] in info.value.detail
