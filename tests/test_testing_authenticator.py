"""idwall.testing.authenticator: the software authenticator's output must be what py_webauthn (and a browser) expects."""

from __future__ import annotations

import json
import struct

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

from idwall.encoding import b64url_decode, sha256
from idwall.testing import (
    EDDSA,
    ES256,
    RS256,
    InvalidStateError,
    NotAllowedError,
    NotSupportedError,
    SoftAuthenticator,
)

ORIGIN = "https://localhost:8443"
RP_ID = "localhost"
REG_CHALLENGE = bytes(range(32))
AUTH_CHALLENGE = bytes(range(32, 64))


def creation_options(*, exclude: tuple[bytes, ...] = (), algs: list[int] | None = None) -> dict:
    kwargs = {"supported_pub_key_algs": algs} if algs else {}
    opts = generate_registration_options(
        rp_id=RP_ID,
        rp_name="IDWall",
        user_id=b"user-1",
        user_name="alice",
        challenge=REG_CHALLENGE,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude],
        **kwargs,
    )
    return json.loads(options_to_json(opts))


def request_options(allow: list[bytes], challenge: bytes = AUTH_CHALLENGE) -> dict:
    opts = generate_authentication_options(
        rp_id=RP_ID,
        challenge=challenge,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return json.loads(options_to_json(opts))


def register(auth: SoftAuthenticator):
    response = auth.create(creation_options())
    return verify_registration_response(
        credential=response,
        expected_challenge=REG_CHALLENGE,
        expected_rp_id=RP_ID,
        expected_origin=[ORIGIN],
        require_user_verification=True,
    )


@pytest.mark.parametrize("alg", [ES256, EDDSA, RS256])
def test_round_trip_through_py_webauthn(alg: int) -> None:
    auth = SoftAuthenticator(origin=ORIGIN, alg=alg)
    reg = register(auth)
    assert reg.credential_public_key == auth.public_key_cose(reg.credential_id)
    assert cbor2.loads(reg.credential_public_key)[3] == alg
    count = 0
    for expected in (1, 2, 3):
        assertion = auth.get(request_options([reg.credential_id]))
        verified = verify_authentication_response(
            credential=assertion,
            expected_challenge=AUTH_CHALLENGE,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=count,
            require_user_verification=True,
        )
        assert verified.new_sign_count == expected
        assert verified.user_verified
        count = verified.new_sign_count


def test_registration_layout_follows_the_spec() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    response = auth.create(creation_options())
    assert response["type"] == "public-key"
    assert response["id"] == response["rawId"]
    assert response["response"]["transports"] == ["internal"]
    assert response["authenticatorAttachment"] == "platform"
    client_data = json.loads(b64url_decode(response["response"]["clientDataJSON"]))
    assert client_data == {
        "type": "webauthn.create",
        "challenge": creation_options()["challenge"],
        "origin": ORIGIN,
        "crossOrigin": False,
    }
    att = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    assert att["fmt"] == "none" and att["attStmt"] == {}
    auth_data = att["authData"]
    assert auth_data[:32] == sha256(b"localhost")  # of the RP ID, not of the origin
    assert auth_data[32] == 0x01 | 0x04 | 0x40
    assert struct.unpack(">I", auth_data[33:37]) == (0,)
    cred_len = struct.unpack(">H", auth_data[53:55])[0]
    credential_id = auth_data[55 : 55 + cred_len]
    assert credential_id == b64url_decode(response["rawId"])
    cose = cbor2.loads(auth_data[55 + cred_len :])
    assert set(cose) == {1, 3, -1, -2, -3}
    assert (cose[1], cose[3], cose[-1]) == (2, -7, 1)
    assert len(cose[-2]) == len(cose[-3]) == 32
    assert auth.credentials[credential_id].user_handle == b"user-1"


def register_without_uv(auth: SoftAuthenticator) -> bytes:
    response = auth.create(creation_options())
    return b64url_decode(response["rawId"])


def test_assertion_layout_and_der_signature() -> None:
    auth = SoftAuthenticator(origin=ORIGIN, user_verified=False)
    reg = register_without_uv(auth)
    assertion = auth.get(request_options([reg]))
    auth_data = b64url_decode(assertion["response"]["authenticatorData"])
    assert len(auth_data) == 37
    assert auth_data[32] == 0x01  # UP only: no UV, no AT at assertion time
    r, s = decode_dss_signature(b64url_decode(assertion["response"]["signature"]))
    assert r > 0 and s > 0
    assert b64url_decode(assertion["response"]["userHandle"]) == b"user-1"
    client_data = json.loads(b64url_decode(assertion["response"]["clientDataJSON"]))
    assert client_data["type"] == "webauthn.get"


def test_user_verified_false_is_refused_when_uv_is_required() -> None:
    auth = SoftAuthenticator(origin=ORIGIN, user_verified=False)
    with pytest.raises(InvalidRegistrationResponse, match="User verification is required"):
        register(auth)


def test_per_call_uv_override() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    reg = register(auth)
    assertion = auth.get(request_options([reg.credential_id]), uv=False)
    with pytest.raises(InvalidAuthenticationResponse, match="User verification is required"):
        verify_authentication_response(
            credential=assertion,
            expected_challenge=AUTH_CHALLENGE,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=reg.credential_public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )


def test_exclude_credentials_is_respected() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    reg = register(auth)
    with pytest.raises(InvalidStateError):
        auth.create(creation_options(exclude=(reg.credential_id,)))
    # Someone else's credential in the exclude list does not stop a new one.
    auth.create(creation_options(exclude=(b"not-ours",)))
    assert len(auth.credentials) == 2


def test_algorithm_must_be_offered() -> None:
    auth = SoftAuthenticator(origin=ORIGIN, alg=EDDSA)
    with pytest.raises(NotSupportedError):
        auth.create(creation_options(algs=[ES256, RS256]))
    with pytest.raises(NotSupportedError):
        SoftAuthenticator(origin=ORIGIN, alg=-35)


def test_get_picks_a_held_credential_from_allow_list() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    first = register(auth).credential_id
    second = register(auth).credential_id
    assertion = auth.get(request_options([b"unknown", second, first]))
    assert b64url_decode(assertion["rawId"]) == second
    with pytest.raises(NotAllowedError):
        auth.get(request_options([b"unknown"]))


def test_discoverable_picks_newest_for_the_rp() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    register(auth)
    newest = register(auth).credential_id
    assertion = auth.get(request_options([]))
    assert b64url_decode(assertion["rawId"]) == newest
    other_rp = SoftAuthenticator(origin="https://example.org")
    other_rp.create(creation_options() | {"rp": {"id": "example.org", "name": "x"}})
    with pytest.raises(NotAllowedError):
        other_rp.get(request_options([]))


def test_counter_is_per_credential_and_override_does_not_move_it() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    a = register(auth).credential_id
    b = register(auth).credential_id
    auth.get(request_options([a]))
    auth.get(request_options([a]))
    auth.get(request_options([b]))
    assert auth.credentials[a].sign_count == 2
    assert auth.credentials[b].sign_count == 1
    forced = auth.get(request_options([a]), sign_count=1)
    assert struct.unpack(">I", b64url_decode(forced["response"]["authenticatorData"])[33:37]) == (1,)
    assert auth.credentials[a].sign_count == 2


def test_origin_and_rp_overrides_change_only_what_they_name() -> None:
    auth = SoftAuthenticator(origin=ORIGIN)
    reg = register(auth)
    assertion = auth.get(request_options([reg.credential_id]), origin="https://evil.example", rp_id="evil.example")
    client_data = json.loads(b64url_decode(assertion["response"]["clientDataJSON"]))
    assert client_data["origin"] == "https://evil.example"
    assert b64url_decode(assertion["response"]["authenticatorData"])[:32] == sha256(b"evil.example")
