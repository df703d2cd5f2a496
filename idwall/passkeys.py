"""WebAuthn ceremonies on top of py_webauthn: options, verification, typed results.

Pure: no I/O, no state. The caller derives the challenge (``idwall.challenges``),
keeps it single-use, looks the credential up, and stores the new sign count.

What this module adds to py_webauthn (see NOTES.md):

- The response is parsed defensively *before* py_webauthn sees it: a JSON
  object of at most 64 KiB (a string goes through
  :func:`idwall.jsonbody.parse_json_object`), ``id``/``rawId`` strict base64url
  and equal, a credential ID of 1..1023 bytes (WebAuthn §5.1; py_webauthn takes
  longer ones), ``type == "public-key"``, the response fields present and
  base64url. The fields that decide nothing here may be absent, but when
  present they must have their type in WebAuthn Level 3 §5.1
  (``RegistrationResponseJSON``, ``AuthenticationResponseJSON``):
  ``clientExtensionResults`` an object, ``authenticatorAttachment`` a string,
  ``response.transports`` a list of strings, ``response.publicKeyAlgorithm`` an
  integer, ``response.publicKey`` and ``response.authenticatorData`` (copies
  in the registration response) base64url. py_webauthn then gets a clean dict
  rebuilt from the decoded bytes, so the two parsers cannot disagree. Failures
  here are :class:`~idwall.errors.BadRequest`.
- The bytes are checked before py_webauthn parses them, because its parser
  lets leftovers through: ``cbor2.loads`` ignores bytes after the attestation
  object's CBOR map, and it finds the end of the credential public key and of
  the extensions in the authenticator data by *re-encoding* what it decoded, so
  a value it re-encodes longer (a half-precision float) hides as many bytes
  after it. Here every CBOR item is decoded in place, where it starts, and
  ends where its bytes end; duplicate map keys are refused; and nothing may
  follow what the flags (AT, ED) announce; an assertion has no AT, and its
  ``clientDataJSON`` is parsed like an API body (a repeated member, whose last
  copy py_webauthn's ``json.loads`` keeps, is refused) with its challenge in
  the one spelling of its bytes. Failures are
  :class:`~idwall.errors.WebAuthnRejected`, like those of py_webauthn.
- Whatever py_webauthn raises on a hostile response (its own exceptions, and
  CBOR, key, type or value errors from deeper down) becomes
  :class:`~idwall.errors.WebAuthnRejected`, never a 500.
- Registration: the credential ID in ``rawId`` must be the one in the attested
  credential data (py_webauthn does not compare them); the public key must pass
  :func:`idwall.cose.check_public_key` (ES256, EdDSA or RS256, and one that can
  verify later: with attestation "none" py_webauthn never loads it).
- Authentication: :func:`verify_assertion` is the one assertion verifier, of
  logins and signed actions (through :func:`verify_authentication`, which also
  requires the credential the caller expects) and of ledger replay. The sign
  count is checked here, *after* the signature, so
  :class:`SignCountRegression` (which the caller records as a possible cloned
  authenticator) can only be caused by someone holding the private key, never
  by a forged response.

AMR (RFC 8176): a passkey is a hardware-bound key, ``hwk``. When the
authenticator reports user verification (PIN or biometric), the user also
proved something they know or are, ``user``, and the two together are
multi-factor, ``mfa``. Without UV the assertion proves possession only:
``["hwk"]``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Literal

import cbor2
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    COSEAlgorithmIdentifier,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idwall.cose import SUPPORTED_ALGORITHMS, CoseKeyError, check_public_key
from idwall.encoding import EncodingError, b64url_decode, b64url_encode, is_b64url
from idwall.errors import BadRequest, PayloadTooLarge, WebAuthnRejected
from idwall.jsonbody import field, json_type, parse_json_object

__all__ = [
    "MAX_CREDENTIAL_ID_BYTES",
    "MAX_CREDENTIAL_JSON_BYTES",
    "SUPPORTED_ALGORITHMS",
    "SignCountRegression",
    "VerifiedAuthentication",
    "VerifiedRegistration",
    "authentication_options",
    "credential_id_of",
    "registration_options",
    "verify_assertion",
    "verify_authentication",
    "verify_registration",
]

MAX_CREDENTIAL_JSON_BYTES = 64 * 1024
MAX_CREDENTIAL_ID_BYTES = 1023  # WebAuthn Level 3 §5.1 "credential ID ... at most 1023 bytes"
FLAG_UP, FLAG_UV, FLAG_AT, FLAG_ED = 0x01, 0x04, 0x40, 0x80
AUTH_DATA_FIXED = 37  # rpIdHash(32) || flags(1) || signCount(4), WebAuthn §6.1
ATTESTED_FIXED = 18  # aaguid(16) || credentialIdLength(2), WebAuthn §6.5.1

_Kind = Literal["registration", "authentication"]
_REQUIRED_RESPONSE_FIELDS: dict[_Kind, tuple[str, ...]] = {
    "registration": ("clientDataJSON", "attestationObject"),
    "authentication": ("clientDataJSON", "authenticatorData", "signature"),
}
# py_webauthn raises one exception type for every failed check of an assertion; its message says which
# (WebAuthnRejected.check). The checks of clientDataJSON members are named after the member.
_PY_WEBAUTHN_CHECKS = (
    ("Unexpected client data type", "type"),
    ("Client data challenge was not expected challenge", "challenge"),
    ("Unexpected client data origin", "origin"),
    ("Unexpected RP ID hash", "rp_id"),
    ("User was not present", "user_present"),
    ("User verification is required", "user_verified"),
    ("Could not verify authentication signature", "signature"),
)
_CLIENT_DATA_CHECKS = ("type", "challenge", "origin")


class SignCountRegression(WebAuthnRejected):
    """A validly signed assertion whose counter did not go up: possibly a cloned authenticator.

    Distinct so the caller can record the anomaly; ``stored`` and ``received``
    are the two counter values.
    """

    def __init__(self, *, stored: int, received: int) -> None:
        super().__init__(
            f"sign count {received} is not greater than the stored count {stored}; "
            "the authenticator may have been cloned",
            check="sign_count", received=received,
        )
        self.stored = stored


@dataclass(frozen=True)
class VerifiedRegistration:
    """A verified new credential, ready to store."""

    credential_id: bytes
    public_key: bytes  # COSE_Key, CBOR-encoded: what verify_authentication takes back
    sign_count: int
    alg: int
    user_verified: bool
    aaguid: str
    credential_type: str
    backed_up: bool


@dataclass(frozen=True)
class VerifiedAuthentication:
    """A verified assertion. ``new_sign_count`` is what the caller stores."""

    credential_id: bytes
    new_sign_count: int
    user_verified: bool
    user_present: bool
    amr: tuple[str, ...]


def _uv_requirement(user_verification: str) -> UserVerificationRequirement:
    try:
        return UserVerificationRequirement(user_verification)
    except ValueError:
        valid = ", ".join(v.value for v in UserVerificationRequirement)
        raise ValueError(f"user_verification is {user_verification!r}, expected one of: {valid}") from None


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_id: bytes,
    user_name: str,
    display_name: str,
    challenge: bytes,
    timeout_ms: int,
    user_verification: str,
    exclude: list[bytes],
) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptionsJSON`` for a new passkey.

    Attestation ``"none"``, a discoverable credential preferred, algorithms
    limited to :data:`SUPPORTED_ALGORITHMS`; ``exclude`` lists the user's
    existing credential IDs so an authenticator does not register twice.
    ``user_verification`` is ``"required"``, ``"preferred"`` or ``"discouraged"``
    (this only asks the client; ``require_uv`` at verification enforces it).
    """
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_id,
        user_name=user_name,
        user_display_name=display_name,
        challenge=challenge,
        timeout=timeout_ms,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=_uv_requirement(user_verification),
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=cid) for cid in exclude],
        supported_pub_key_algs=[COSEAlgorithmIdentifier(alg) for alg in SUPPORTED_ALGORITHMS],
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def authentication_options(
    *, rp_id: str, challenge: bytes, allow: list[bytes], timeout_ms: int, user_verification: str
) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptionsJSON``; an empty ``allow`` asks for a discoverable credential."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=timeout_ms,
        allow_credentials=[PublicKeyCredentialDescriptor(id=cid) for cid in allow],
        user_verification=_uv_requirement(user_verification),
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def _load(credential: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(credential, str):
        # surrogatepass: a lone surrogate becomes bytes that are not UTF-8, refused as such
        credential = parse_json_object(credential.encode("utf-8", "surrogatepass"),
                                       max_bytes=MAX_CREDENTIAL_JSON_BYTES, what="credential JSON")
    if not isinstance(credential, dict):
        raise BadRequest(f"credential must be a JSON object, got {json_type(credential)}")
    return credential


def _b64url_field(container: dict[str, Any], key: str, path: str) -> bytes:
    if key not in container or container[key] is None:
        raise BadRequest(f"{path}.{key} is missing")
    value = container[key]
    if not isinstance(value, str):
        raise BadRequest(f"{path}.{key} must be a base64url string, got {json_type(value)}")
    if len(value) > MAX_CREDENTIAL_JSON_BYTES:
        raise PayloadTooLarge(f"{path}.{key} is {len(value)} characters, the limit is {MAX_CREDENTIAL_JSON_BYTES}")
    try:
        return b64url_decode(value)
    except EncodingError as exc:
        raise BadRequest(f"{path}.{key} is not base64url: {exc}") from None


def _raw_id(credential: dict[str, Any]) -> bytes:
    raw_id = _b64url_field(credential, "rawId", "credential")
    claimed_id = _b64url_field(credential, "id", "credential")
    if claimed_id != raw_id:
        raise BadRequest("credential.id and credential.rawId name different credentials")
    if not 1 <= len(raw_id) <= MAX_CREDENTIAL_ID_BYTES:
        raise BadRequest(f"credential ID is {len(raw_id)} bytes, expected 1 to {MAX_CREDENTIAL_ID_BYTES}")
    return raw_id


def _check_optional_fields(data: dict[str, Any], response: dict[str, Any], kind: _Kind) -> None:
    """The W3C types of the fields that decide nothing here; null counts as absent (see the module docstring)."""
    field(data, "clientExtensionResults", dict, required=False, where="credential")
    field(data, "authenticatorAttachment", str, required=False, where="credential")
    if kind != "registration":
        return
    transports = field(response, "transports", list, required=False, where="credential.response") or []
    for index, transport in enumerate(transports):
        if not isinstance(transport, str):
            raise BadRequest(f"credential.response.transports[{index}] must be a string, got {json_type(transport)}")
    field(response, "publicKeyAlgorithm", int, required=False, where="credential.response")
    for key in ("publicKey", "authenticatorData"):
        if response.get(key) is not None:
            _b64url_field(response, key, "credential.response")


def _cbor_item(data: bytes, start: int, refusal: str) -> tuple[Any, int]:
    """The CBOR item that begins at ``start`` and the offset where its bytes end (nothing re-encoded).

    ``refusal`` begins the message when the bytes there are not one well-formed item.
    """
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        # py_webauthn refuses duplicate keys too; decoding with the same rule keeps the two parses alike
        value = cbor2.CBORDecoder(stream, allow_duplicate_keys=False).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, and lower errors on hostile tags
        raise WebAuthnRejected(f"{refusal}: {exc}"[:300]) from None
    return value, stream.tell()


def _check_authenticator_data(data: bytes, what: str, *, assertion: bool = False) -> None:
    """Refuse authenticator data (WebAuthn §6.1) with bytes beyond what its AT and ED flags announce.

    With ``assertion``, attested credential data is refused outright (§6.3.3: an assertion has none).
    """
    if len(data) < AUTH_DATA_FIXED:
        raise WebAuthnRejected(f"{what} was {len(data)} bytes, expected at least {AUTH_DATA_FIXED} bytes")
    flags, end = data[32], AUTH_DATA_FIXED
    if flags & FLAG_AT and assertion:
        raise WebAuthnRejected(f"{what} carries attested credential data (flag AT), which an assertion must not")
    if flags & FLAG_AT:
        if len(data) < end + ATTESTED_FIXED:
            raise WebAuthnRejected(f"{what} was {len(data)} bytes, expected at least {end + ATTESTED_FIXED} bytes "
                                   "with attested credential data (flag AT)")
        end += ATTESTED_FIXED + int.from_bytes(data[end + 16 : end + ATTESTED_FIXED], "big")
        _, end = _cbor_item(data, end, f"the credential public key in {what} is not well-formed CBOR")
    if flags & FLAG_ED:
        extensions, end = _cbor_item(data, end, f"the extensions in {what} are not well-formed CBOR")
        if not isinstance(extensions, dict):
            raise WebAuthnRejected(f"the extensions in {what} are a CBOR {type(extensions).__name__}, expected a map")
    if end != len(data):
        raise WebAuthnRejected(f"{what} has bytes left over: its flags (0x{flags:02x}) account for {end} of its "
                               f"{len(data)} bytes, expected all")


def _check_attestation_object(raw: bytes) -> None:
    """One CBOR map and nothing after it, whose ``authData`` passes :func:`_check_authenticator_data`."""
    value, end = _cbor_item(raw, 0, "attestationObject was malformed: not well-formed CBOR")
    if end != len(raw):
        raise WebAuthnRejected(f"attestationObject was malformed: bytes left over, its CBOR item ends after {end} "
                               f"of its {len(raw)} bytes, expected nothing after it")
    if not isinstance(value, dict):
        raise WebAuthnRejected(f"attestationObject was malformed: it is a CBOR {type(value).__name__}, expected a map")
    auth_data = value.get("authData")
    if not isinstance(auth_data, bytes):
        raise WebAuthnRejected("attestationObject was malformed: authData is "
                               f"{'missing' if auth_data is None else 'a CBOR ' + type(auth_data).__name__}, "
                               "expected a byte string")
    _check_authenticator_data(auth_data, "attestationObject.authData")


def _parse(credential: dict[str, Any] | str, kind: _Kind) -> tuple[bytes, dict[str, bytes]]:
    """Check the structure; return the raw ID and the decoded response fields py_webauthn needs.

    A present ``userHandle`` is decoded into the fields (the caller compares it with the owner's); fields
    that influence no decision (``clientExtensionResults``, ``authenticatorAttachment``, ``transports``...)
    are type-checked and left out.
    """
    data = _load(credential)
    raw_id = _raw_id(data)
    if data.get("type") != "public-key":
        raise BadRequest(f'credential.type must be "public-key", got {data.get("type")!r:.40}')
    response = data.get("response")
    if not isinstance(response, dict):
        raise BadRequest(f"credential.response must be an object, got {json_type(response)}")
    fields = {key: _b64url_field(response, key, "credential.response") for key in _REQUIRED_RESPONSE_FIELDS[kind]}
    if kind == "authentication" and response.get("userHandle") is not None:
        fields["userHandle"] = _b64url_field(response, "userHandle", "credential.response")
    _check_optional_fields(data, response, kind)
    if kind == "registration":
        _check_attestation_object(fields["attestationObject"])
    return raw_id, fields


def _for_py_webauthn(raw_id: bytes, fields: dict[str, bytes]) -> dict[str, Any]:
    """The response py_webauthn gets, rebuilt from the decoded bytes, so the two parsers cannot disagree."""
    encoded_id = b64url_encode(raw_id)
    return {"id": encoded_id, "rawId": encoded_id, "type": "public-key",
            "response": {key: b64url_encode(value) for key, value in fields.items()}}


def _check_assertion_bytes(authenticator_data: bytes, client_data_json: bytes) -> dict[str, Any]:
    """Refuse in an assertion what py_webauthn lets through (module docstring); return the parsed client data."""
    _check_authenticator_data(authenticator_data, "authenticatorData", assertion=True)
    try:
        client_data = parse_json_object(client_data_json, max_bytes=MAX_CREDENTIAL_JSON_BYTES, what="clientDataJSON")
    except BadRequest as exc:
        raise WebAuthnRejected(exc.detail) from None
    challenge = client_data.get("challenge")
    if isinstance(challenge, str) and not is_b64url(challenge):
        raise WebAuthnRejected(f"clientDataJSON.challenge {challenge[:60]!r} is not unpadded base64url",
                               check="challenge", received=challenge)
    return client_data


def credential_id_of(credential: dict[str, Any] | str) -> bytes:
    """The credential ID an ``AuthenticationResponseJSON`` claims, checked as strictly as verification does.

    The caller looks the stored credential up with it before calling
    :func:`verify_authentication`; the whole response is checked here, so a
    malformed one is refused before the caller spends its single-use challenge.
    Raises ``BadRequest`` or ``WebAuthnRejected`` when malformed.
    """
    raw_id, fields = _parse(credential, "authentication")
    _check_assertion_bytes(fields["authenticatorData"], fields["clientDataJSON"])
    return raw_id


def _describe(exc: BaseException, *, outermost: bool = True) -> str:
    """py_webauthn's message, with the cause it points at ("See __cause__") spelled out."""
    if not isinstance(exc, WebAuthnException):
        # Something below py_webauthn choked (CBOR shape, ASN.1, base64): say so, briefly.
        text = f"{type(exc).__name__}: {exc}"
        return (f"the passkey response could not be processed: {text}" if outermost else text)[:300]
    message = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and "__cause__" in message:
        message = message.split(". See __cause__")[0] + f": {_describe(cause, outermost=False)}"
    return message


def _rejected(exc: Exception, *, check: str | None = None, received: Any = None) -> WebAuthnRejected:
    return WebAuthnRejected(_describe(exc), check=check, received=received,
                            log_detail=f"{type(exc).__name__}: {exc!r}")


def _failed_check(exc: Exception) -> str | None:
    """The check (of ``_PY_WEBAUTHN_CHECKS``) that py_webauthn's exception reports, if any."""
    if isinstance(exc, WebAuthnException):
        message = str(exc)
        for prefix, check in _PY_WEBAUTHN_CHECKS:
            if message.startswith(prefix):
                return check
    return None


def verify_registration(
    *,
    credential: dict[str, Any] | str,
    expected_challenge: bytes,
    rp_id: str,
    origins: tuple[str, ...],
    require_uv: bool,
) -> VerifiedRegistration:
    """Verify a ``RegistrationResponseJSON`` against the challenge, RP ID and allowed origins.

    Raises ``BadRequest`` for a malformed response and ``WebAuthnRejected`` for
    one that fails verification. Checking that the credential ID is not already
    registered is the caller's job (the store knows).
    """
    raw_id, fields = _parse(credential, "registration")
    try:
        verified = verify_registration_response(
            credential=_for_py_webauthn(raw_id, fields),
            expected_challenge=expected_challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            require_user_presence=True,
            require_user_verification=require_uv,
            supported_pub_key_algs=[COSEAlgorithmIdentifier(alg) for alg in SUPPORTED_ALGORITHMS],
        )
    except Exception as exc:  # py_webauthn lets CBOR, key and type errors escape on hostile input
        raise _rejected(exc) from exc
    if verified.credential_id != raw_id:
        raise WebAuthnRejected("credential.rawId differs from the credential ID in the attested credential data")
    try:
        alg = check_public_key(verified.credential_public_key)
    except CoseKeyError as exc:
        raise WebAuthnRejected(str(exc)) from None
    return VerifiedRegistration(
        credential_id=raw_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        alg=alg,
        user_verified=verified.user_verified,
        aaguid=verified.aaguid,
        credential_type=str(verified.credential_type.value),
        backed_up=verified.credential_backed_up,
    )


def verify_authentication(
    *,
    credential: dict[str, Any] | str,
    expected_challenge: bytes,
    expected_credential_id: bytes,
    rp_id: str,
    origins: tuple[str, ...],
    public_key: bytes,
    stored_sign_count: int,
    require_uv: bool,
    user_handle: bytes,
) -> VerifiedAuthentication:
    """Verify an ``AuthenticationResponseJSON`` made with the stored credential ``expected_credential_id``.

    ``public_key`` and ``stored_sign_count`` are that credential's stored
    values, ``user_handle`` its owner's WebAuthn user handle: a response that
    carries a ``userHandle`` must name that owner (WebAuthn §7.2 step 6), so
    an authenticator that answers for another account is refused. Raises
    ``BadRequest`` (malformed), ``WebAuthnRejected`` (failed verification) or
    ``SignCountRegression`` (valid signature, counter did not go up while
    either count is above zero), as :func:`verify_assertion` does.
    """
    raw_id, fields = _parse(credential, "authentication")
    if raw_id != expected_credential_id:
        raise WebAuthnRejected("the response was made with a different credential than the one expected")
    claimed_handle = fields.get("userHandle")
    if claimed_handle is not None and claimed_handle != user_handle:
        raise WebAuthnRejected("the response's userHandle names another user than the owner of this passkey",
                               check="user_handle")
    return verify_assertion(
        credential_id=raw_id,
        authenticator_data=fields["authenticatorData"],
        client_data_json=fields["clientDataJSON"],
        signature=fields["signature"],
        expected_challenge=expected_challenge,
        rp_id=rp_id,
        origins=origins,
        public_key=public_key,
        stored_sign_count=stored_sign_count,
        require_uv=require_uv,
    )


def verify_assertion(
    *,
    credential_id: bytes,
    authenticator_data: bytes,
    client_data_json: bytes,
    signature: bytes,
    expected_challenge: bytes,
    rp_id: str,
    origins: tuple[str, ...],
    public_key: bytes,
    stored_sign_count: int,
    require_uv: bool,
) -> VerifiedAuthentication:
    """Verify one assertion (WebAuthn §7.2), given as raw bytes: a browser's response or a ledger approval.

    After :func:`_check_assertion_bytes`, py_webauthn checks the client data's
    type (``webauthn.get``), challenge and origin, the rpIdHash, UP, UV when
    ``require_uv``, and the signature over ``authenticatorData ||
    H(clientDataJSON)`` under ``public_key`` (COSE); then the sign count must
    pass ``stored_sign_count``. Raises ``WebAuthnRejected`` with ``check`` one
    of ``"type"``, ``"challenge"``, ``"origin"`` (``received`` is the client
    data's value), ``"rp_id"``, ``"user_present"``, ``"user_verified"``,
    ``"signature"``, or None when something else is wrong; or
    ``SignCountRegression`` (``check`` is ``"sign_count"``).
    """
    client_data = _check_assertion_bytes(authenticator_data, client_data_json)
    response = {"clientDataJSON": client_data_json, "authenticatorData": authenticator_data, "signature": signature}
    try:
        # The count is checked below, after the signature, so a forged low count is a plain rejection.
        verified = verify_authentication_response(
            credential=_for_py_webauthn(credential_id, response),
            expected_challenge=expected_challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=require_uv,
        )
    except Exception as exc:  # py_webauthn lets CBOR, key and type errors escape on hostile input
        check = _failed_check(exc)
        raise _rejected(exc, check=check,
                        received=client_data.get(check) if check in _CLIENT_DATA_CHECKS else None) from exc
    new_count = verified.new_sign_count
    if (stored_sign_count > 0 or new_count > 0) and new_count <= stored_sign_count:
        raise SignCountRegression(stored=stored_sign_count, received=new_count)
    flags = authenticator_data[32]
    user_verified = bool(flags & FLAG_UV)
    return VerifiedAuthentication(
        credential_id=credential_id,
        new_sign_count=new_count,
        user_verified=user_verified,
        user_present=bool(flags & FLAG_UP),
        amr=("hwk", "user", "mfa") if user_verified else ("hwk",),
    )
