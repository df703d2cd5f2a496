"""Record the WebAuthn vectors of this directory with the software authenticator.

Run ``python tests/vectors/webauthn/generate.py`` (with ``idwall`` importable) to
record them again (keys are fresh each time; the cases stay the same). The
``chromium-*`` files beside them come from ``record_chromium.py`` (see README.md).
``tests/test_passkeys.py::test_vector`` replays every file in ``valid/`` and
``invalid/`` through one loader.

Format of one vector::

    {"description": str, "source": "generate.py" | "chromium <version>",
     "ceremony": "registration" | "authentication",
     "expected": {"challenge": b64url, "rp_id": str, "origins": [str], "require_uv": bool,
                  # authentication only:
                  "credential_id": b64url, "public_key": b64url, "stored_sign_count": int, "user_handle": b64url},
     "credential": <RegistrationResponseJSON | AuthenticationResponseJSON, or a raw JSON string>,
     # valid/: the fields of the verified result that are stable across recordings
     "result": {...},
     # invalid/: the exact error class and a fragment of its message
     "error": "BadRequest" | "WebAuthnRejected" | "SignCountRegression", "message": str}
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cbor2

from idwall import passkeys
from idwall.encoding import b64url_decode, b64url_encode, sha256
from idwall.testing import EDDSA, ES256, RS256, SoftAuthenticator

HERE = Path(__file__).parent
ORIGIN = "https://localhost:8443"
RP_ID = "localhost"
REG_CHALLENGE = sha256(b"idwall vectors: registration")
AUTH_CHALLENGE = sha256(b"idwall vectors: authentication")
USER_HANDLE = b"user-alice"  # the user handle every generated credential is registered with
OTHER_CHALLENGE = sha256(b"idwall vectors: another ceremony")
ALG_NAMES = {ES256: "es256", EDDSA: "eddsa", RS256: "rs256"}
SOURCE = "generate.py"  # record_chromium.py writes "chromium <version>"


def _reg_options() -> dict[str, Any]:
    return passkeys.registration_options(
        rp_id=RP_ID, rp_name="IDWall", user_id=USER_HANDLE, user_name="alice", display_name="Alice",
        challenge=REG_CHALLENGE, timeout_ms=300_000, user_verification="required", exclude=[],
    )


def _auth_options(allow: bytes, challenge: bytes = AUTH_CHALLENGE) -> dict[str, Any]:
    return passkeys.authentication_options(
        rp_id=RP_ID, challenge=challenge, allow=[allow], timeout_ms=300_000, user_verification="required"
    )


def _expected(challenge: bytes, **extra: Any) -> dict[str, Any]:
    return {"challenge": b64url_encode(challenge), "rp_id": RP_ID, "origins": [ORIGIN], "require_uv": True} | extra


def _write(folder: str, name: str, vector: dict[str, Any]) -> None:
    vector = {"description": vector["description"], "source": SOURCE} | vector
    (HERE / folder / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")


def _attestation(credential: dict[str, Any]) -> dict[str, Any]:
    return cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))


def _with_attestation_bytes(credential: dict[str, Any], raw: bytes) -> dict[str, Any]:
    tampered = copy.deepcopy(credential)
    tampered["response"]["attestationObject"] = b64url_encode(raw)
    return tampered


def main() -> None:
    auth_expect: dict[int, dict[str, Any]] = {}
    devices: dict[int, tuple[SoftAuthenticator, bytes]] = {}
    registration = None
    for alg, name in ALG_NAMES.items():
        device = SoftAuthenticator(origin=ORIGIN, alg=alg)
        credential = device.create(_reg_options())
        verified = passkeys.verify_registration(
            credential=credential, expected_challenge=REG_CHALLENGE, rp_id=RP_ID, origins=(ORIGIN,), require_uv=True
        )
        registration = registration or credential
        devices[alg] = (device, verified.credential_id)
        _write("valid", f"registration-{name}", {
            "description": f"{name.upper()} passkey, attestation none, user verified",
            "ceremony": "registration",
            "expected": _expected(REG_CHALLENGE),
            "credential": credential,
            "result": {"credential_id": credential["rawId"], "alg": alg, "sign_count": 0, "user_verified": True,
                       "aaguid": verified.aaguid, "credential_type": "public-key", "backed_up": False},
        })
        auth_expect[alg] = {"credential_id": b64url_encode(verified.credential_id),
                            "public_key": b64url_encode(verified.public_key), "stored_sign_count": 0,
                            "user_handle": b64url_encode(USER_HANDLE)}
        assertion = device.get(_auth_options(verified.credential_id))
        _write("valid", f"authentication-{name}", {
            "description": f"{name.upper()} assertion, first use (count 0 -> 1), user verified",
            "ceremony": "authentication",
            "expected": _expected(AUTH_CHALLENGE, **auth_expect[alg]),
            "credential": assertion,
            "result": {"credential_id": assertion["rawId"], "new_sign_count": 1, "user_verified": True,
                       "user_present": True, "amr": ["hwk", "user", "mfa"]},
        })
    assert registration is not None
    device, cred_id = devices[ES256]
    es = auth_expect[ES256]

    no_uv = device.get(_auth_options(cred_id), uv=False)
    _write("valid", "authentication-no-uv-not-required", {
        "description": "assertion without user verification where UV is not required: possession only",
        "ceremony": "authentication",
        "expected": _expected(AUTH_CHALLENGE, **es) | {"require_uv": False},
        "credential": no_uv,
        "result": {"credential_id": no_uv["rawId"], "new_sign_count": 2, "user_verified": False,
                   "user_present": True, "amr": ["hwk"]},
    })
    counterless = device.get(_auth_options(cred_id), sign_count=0)
    _write("valid", "authentication-counterless", {
        "description": "authenticator that never counts (0 stored, 0 received) is accepted",
        "ceremony": "authentication",
        "expected": _expected(AUTH_CHALLENGE, **es),
        "credential": counterless,
        "result": {"credential_id": counterless["rawId"], "new_sign_count": 0, "user_verified": True,
                   "user_present": True, "amr": ["hwk", "user", "mfa"]},
    })

    def invalid_auth(name: str, description: str, credential: Any, error: str, message: str,
                     **expected: Any) -> None:
        _write("invalid", name, {
            "description": description, "ceremony": "authentication",
            "expected": _expected(AUTH_CHALLENGE, **es) | expected,
            "credential": credential, "error": error, "message": message,
        })

    def invalid_reg(name: str, description: str, credential: Any, error: str, message: str) -> None:
        _write("invalid", name, {
            "description": description, "ceremony": "registration", "expected": _expected(REG_CHALLENGE),
            "credential": credential, "error": error, "message": message,
        })

    good = device.get(_auth_options(cred_id))
    invalid_auth("auth-replayed-for-other-challenge", "assertion made for another challenge, replayed",
                 device.get(_auth_options(cred_id, OTHER_CHALLENGE)), "WebAuthnRejected", "challenge")
    invalid_auth("auth-wrong-origin", "origin differs by port", device.get(_auth_options(cred_id),
                 origin="https://localhost:8444"), "WebAuthnRejected", "origin")
    invalid_auth("auth-wrong-rp-id", "rpIdHash of another RP ID", device.get(_auth_options(cred_id),
                 rp_id="evil.example"), "WebAuthnRejected", "RP ID hash")
    invalid_auth("auth-uv-missing", "UV flag clear where UV is required", device.get(_auth_options(cred_id),
                 uv=False), "WebAuthnRejected", "User verification is required")
    invalid_auth("auth-up-missing", "UP flag clear", device.get(_auth_options(cred_id), up=False),
                 "WebAuthnRejected", "not present")
    invalid_auth("auth-sign-count-regression", "validly signed count 3 after a stored 7",
                 device.get(_auth_options(cred_id), sign_count=3), "SignCountRegression", "not greater",
                 stored_sign_count=7)
    invalid_auth("auth-sign-count-equal", "validly signed count equal to the stored one",
                 device.get(_auth_options(cred_id), sign_count=7), "SignCountRegression", "not greater",
                 stored_sign_count=7)
    invalid_auth("auth-type-create", 'clientDataJSON type "webauthn.create" at authentication, validly signed',
                 device.get(_auth_options(cred_id), client_data={"type": "webauthn.create"}),
                 "WebAuthnRejected", 'client data type "webauthn.create"')
    invalid_auth("auth-credential-mismatch", "assertion by the RS256 credential, the ES256 one expected",
                 devices[RS256][0].get(_auth_options(devices[RS256][1])), "WebAuthnRejected", "different credential")

    tampered = copy.deepcopy(good)
    client_data = b64url_decode(tampered["response"]["clientDataJSON"]).replace(b'"crossOrigin":false',
                                                                                 b'"crossOrigin":true')
    tampered["response"]["clientDataJSON"] = b64url_encode(client_data)
    invalid_auth("auth-tampered-client-data", "crossOrigin flipped after signing", tampered,
                 "WebAuthnRejected", "signature")
    tampered = copy.deepcopy(good)
    auth_data = bytearray(b64url_decode(tampered["response"]["authenticatorData"]))
    auth_data[36] = 0  # counter byte lowered below the stored count: the signature fails first
    tampered["response"]["authenticatorData"] = b64url_encode(bytes(auth_data))
    invalid_auth("auth-tampered-authenticator-data", "counter edited after signing: rejected, not a regression",
                 tampered, "WebAuthnRejected", "signature", stored_sign_count=1)
    tampered = copy.deepcopy(good)
    signature = bytearray(b64url_decode(tampered["response"]["signature"]))
    signature[-1] ^= 0x01
    tampered["response"]["signature"] = b64url_encode(bytes(signature))
    invalid_auth("auth-tampered-signature", "last signature byte flipped", tampered, "WebAuthnRejected", "signature")
    tampered = copy.deepcopy(good)
    tampered["response"]["userHandle"] = b64url_encode(b"user-mallory")  # outside what the signature covers
    invalid_auth("auth-user-handle-of-another-user", "userHandle of another user beside a valid signature "
                 "(WebAuthn 7.2 step 6)", tampered, "WebAuthnRejected", "userHandle names another user")

    invalid_reg("reg-wrong-challenge", "registration made for another challenge",
                SoftAuthenticator(origin=ORIGIN).create(_reg_options() | {"challenge": b64url_encode(OTHER_CHALLENGE)}),
                "WebAuthnRejected", "challenge")
    invalid_reg("reg-garbage-attestation", "attestationObject of random bytes",
                _with_attestation_bytes(registration, bytes.fromhex("ff00fe01fd02fc03")), "WebAuthnRejected",
                "attestationObject")
    raw = b64url_decode(registration["response"]["attestationObject"])
    invalid_reg("reg-truncated-cbor", "attestationObject cut in half",
                _with_attestation_bytes(registration, raw[: len(raw) // 2]), "WebAuthnRejected", "attestationObject")
    att = _attestation(registration)
    duplicated = (b"\xa4" + cbor2.dumps("fmt") + cbor2.dumps("none") + cbor2.dumps("attStmt") + cbor2.dumps({})
                  + cbor2.dumps("authData") + cbor2.dumps(att["authData"]) + cbor2.dumps("fmt") + cbor2.dumps("packed"))
    invalid_reg("reg-duplicate-cbor-keys", 'attestationObject with "fmt" twice',
                _with_attestation_bytes(registration, duplicated), "WebAuthnRejected", "attestationObject")
    invalid_reg("reg-trailing-cbor-bytes", "a byte after the attestation object's CBOR map (cbor2.loads ignores it)",
                _with_attestation_bytes(registration, raw + b"\x00"), "WebAuthnRejected", "bytes left over")
    # 0.0 as a 3-byte half float re-encodes as a 9-byte double: py_webauthn's re-encoding skips 6 bytes after it
    key_at = 55 + int.from_bytes(att["authData"][53:55], "big")
    cose = cbor2.loads(att["authData"][key_at:])
    half = bytes([0xA0 + len(cose) + 1]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in cose.items())
    hiding = dict(att, authData=att["authData"][:key_at] + half + cbor2.dumps(99) + b"\xf9\x00\x00" + b"HIDDEN")
    invalid_reg("reg-auth-data-hidden-bytes", "6 bytes after a COSE key holding a half-precision float",
                _with_attestation_bytes(registration, cbor2.dumps(hiding)), "WebAuthnRejected",
                "attestationObject.authData has bytes left over")
    oversized = copy.deepcopy(registration)
    oversized["id"] = oversized["rawId"] = b64url_encode(b"\x01" * 1024)
    invalid_reg("reg-oversized-credential-id", "credential ID of 1024 bytes", oversized, "BadRequest", "1024 bytes")
    not_b64 = copy.deepcopy(registration)
    not_b64["rawId"] = not_b64["rawId"][:-2] + "+/"
    invalid_reg("reg-rawid-not-base64url", "rawId in the standard alphabet", not_b64, "BadRequest",
                "credential.rawId is not base64url")
    invalid_reg("reg-not-json", "credential string that is not JSON", '{"id": "AAAA", ', "BadRequest",
                "not valid JSON")


if __name__ == "__main__":
    main()
