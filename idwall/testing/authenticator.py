"""A software passkey authenticator for tests and integrators.

It plays both the browser (it writes ``clientDataJSON``) and the authenticator
(it writes ``authenticatorData`` and signs), and answers with the W3C JSON forms
(``RegistrationResponseJSON``, ``AuthenticationResponseJSON``) that
``PublicKeyCredential.toJSON()`` gives, so its output goes to the gateway exactly
as a browser's would.

What it builds (WebAuthn Level 3 §6.1, §6.5, §8.7):

- ``authenticatorData = rpIdHash(32) || flags(1) || signCount(4, big-endian)
  [|| aaguid(16) || credIdLen(2) || credId || COSE key]``; ``rpIdHash`` is
  SHA-256 of the RP ID (not of the origin); flags UP 0x01, UV 0x04, AT 0x40
  (AT only at registration).
- attestation ``"none"``: ``{"fmt": "none", "attStmt": {}, "authData": ...}``.
- the assertion signature covers ``authenticatorData || SHA-256(clientDataJSON)``:
  DER ECDSA-SHA256 for ES256 (-7), raw Ed25519 for EdDSA (-8),
  RSASSA-PKCS1-v1_5 SHA-256 for RS256 (-257).
- the counter starts at 0 and goes up by one at every assertion.

The knobs (``origin``, ``rp_id``, ``uv``, ``up``, ``client_data``,
``credential_id``, ``sign_count``) let a test make a response that is wrong in
exactly one way, with a signature that is still valid.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from idwall.encoding import b64url_decode, b64url_encode, sha256

ES256, EDDSA, RS256 = -7, -8, -257
SUPPORTED_ALGS = (ES256, EDDSA, RS256)

FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40

# A fixed, recognisable AAGUID: "IDWall soft auth" is 16 ASCII bytes.
SOFT_AAGUID = b"IDWall soft auth"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class AuthenticatorError(Exception):
    """Base of the refusals a real client would report as a DOMException."""


class InvalidStateError(AuthenticatorError):
    """``create()`` was asked to exclude a credential this authenticator holds."""


class NotAllowedError(AuthenticatorError):
    """``get()`` found no credential it holds that the options allow."""


class NotSupportedError(AuthenticatorError):
    """``create()`` options offer no algorithm this authenticator is set to use."""


@dataclass
class SoftCredential:
    """One credential held by the authenticator. Mutable: the counter moves."""

    credential_id: bytes
    private_key: PrivateKey
    rp_id: str
    user_handle: bytes | None
    sign_count: int
    alg: int


def _generate_key(alg: int) -> PrivateKey:
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if alg == RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise NotSupportedError(f"algorithm {alg} is not one of {SUPPORTED_ALGS}")


def _cose_key(private_key: PrivateKey, alg: int) -> bytes:
    """The COSE_Key (RFC 9053) of the public half, CBOR-encoded."""
    if alg == ES256:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        numbers = private_key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )
    if alg == EDDSA:
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cbor2.dumps({1: 1, 3: EDDSA, -1: 6, -2: raw})
    assert isinstance(private_key, rsa.RSAPrivateKey)
    rsa_numbers = private_key.public_key().public_numbers()
    n = rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")
    e = rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")
    return cbor2.dumps({1: 3, 3: RS256, -1: n, -2: e})


def _sign(private_key: PrivateKey, alg: int, message: bytes) -> bytes:
    if alg == ES256:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        return private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    if alg == EDDSA:
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)
        return private_key.sign(message)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _client_data(kind: str, challenge: str, origin: str, overrides: dict[str, Any] | None) -> bytes:
    data: dict[str, Any] = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
    data.update(overrides or {})
    # Browsers serialise compactly; the verifier must not depend on it, but matching it keeps vectors realistic.
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


class SoftAuthenticator:
    """A software passkey authenticator (ES256 by default; also EdDSA -8 and RS256 -257).

    Attestation ``"none"``, one sign counter per credential. ``origin`` is what
    the "browser" puts in ``clientDataJSON``; ``rp_id``, when given, overrides
    the RP ID of the options (to model a client that lies about it); otherwise
    the options' RP ID is used, then the origin's host.

    Example (options as ``idwall.passkeys`` or ``json.loads(options_to_json(...))`` give them)::

        device = SoftAuthenticator(origin="https://localhost:8443")
        registration = device.create(creation_options)    # RegistrationResponseJSON
        assertion = device.get(request_options)           # AuthenticationResponseJSON
    """

    def __init__(self, *, origin: str, rp_id: str | None = None, user_verified: bool = True, alg: int = ES256) -> None:
        if alg not in SUPPORTED_ALGS:
            raise NotSupportedError(f"algorithm {alg} is not one of {SUPPORTED_ALGS}")
        self.origin = origin
        self.rp_id = rp_id
        self.user_verified = user_verified
        self.alg = alg
        self.credentials: dict[bytes, SoftCredential] = {}

    def _effective_rp_id(self, override: str | None, from_options: str | None) -> str:
        rp_id = override or self.rp_id or from_options or urlsplit(self.origin).hostname
        if not rp_id:
            raise AuthenticatorError("no RP ID in the options and none derivable from the origin")
        return rp_id

    def _flags(self, *, up: bool, uv: bool | None, attested: bool) -> int:
        flags = FLAG_UP if up else 0
        if self.user_verified if uv is None else uv:
            flags |= FLAG_UV
        if attested:
            flags |= FLAG_AT
        return flags

    def public_key_cose(self, credential_id: bytes) -> bytes:
        """The CBOR COSE public key of a credential this authenticator holds."""
        cred = self.credentials[credential_id]
        return _cose_key(cred.private_key, cred.alg)

    def sign(self, credential_id: bytes, message: bytes) -> bytes:
        """Sign arbitrary bytes with a held credential: for tests that forge a validly signed bad response."""
        cred = self.credentials[credential_id]
        return _sign(cred.private_key, cred.alg, message)

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool | None = None,
        up: bool = True,
        client_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make a new credential for ``PublicKeyCredentialCreationOptionsJSON``; answer ``RegistrationResponseJSON``.

        Raises ``NotSupportedError`` when ``pubKeyCredParams`` does not offer
        ``self.alg`` and ``InvalidStateError`` when ``excludeCredentials`` names a
        credential this authenticator holds, as a browser would.
        """
        offered = [p.get("alg") for p in options.get("pubKeyCredParams", []) if p.get("type") == "public-key"]
        if self.alg not in offered:
            raise NotSupportedError(f"options offer algorithms {offered}, this authenticator uses {self.alg}")
        for descriptor in options.get("excludeCredentials") or []:
            if b64url_decode(descriptor["id"]) in self.credentials:
                raise InvalidStateError("an excluded credential is already registered on this authenticator")

        effective_rp = self._effective_rp_id(rp_id, options.get("rp", {}).get("id"))
        user_id = options.get("user", {}).get("id")
        credential_id = os.urandom(32)
        private_key = _generate_key(self.alg)
        self.credentials[credential_id] = SoftCredential(
            credential_id=credential_id,
            private_key=private_key,
            rp_id=effective_rp,
            user_handle=b64url_decode(user_id) if user_id else None,
            sign_count=0,
            alg=self.alg,
        )
        auth_data = (
            sha256(effective_rp.encode("utf-8"))
            + bytes([self._flags(up=up, uv=uv, attested=True)])
            + struct.pack(">I", 0)
            + SOFT_AAGUID
            + struct.pack(">H", len(credential_id))
            + credential_id
            + _cose_key(private_key, self.alg)
        )
        attestation_object = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data_json = _client_data("webauthn.create", options["challenge"], origin or self.origin, client_data)
        encoded_id = b64url_encode(credential_id)
        return {
            "id": encoded_id,
            "rawId": encoded_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url_encode(client_data_json),
                "attestationObject": b64url_encode(attestation_object),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def _pick(self, options: dict[str, Any], credential_id: bytes | None, rp_id: str) -> SoftCredential:
        if credential_id is not None:
            # Deliberately not checked against allowCredentials: tests use this to play a misbehaving client.
            if credential_id not in self.credentials:
                raise NotAllowedError("this authenticator does not hold the requested credential")
            return self.credentials[credential_id]
        allowed = options.get("allowCredentials") or []
        for descriptor in allowed:
            cred = self.credentials.get(b64url_decode(descriptor["id"]))
            if cred is not None:
                return cred
        if not allowed:
            # Discoverable credentials: the most recently created one for this RP.
            for cred in reversed(list(self.credentials.values())):
                if cred.rp_id == rp_id:
                    return cred
        raise NotAllowedError("no credential held by this authenticator matches the options")

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool | None = None,
        credential_id: bytes | None = None,
        sign_count: int | None = None,
        up: bool = True,
        client_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make an assertion for ``PublicKeyCredentialRequestOptionsJSON``; answer ``AuthenticationResponseJSON``.

        Picks the first held credential in ``allowCredentials`` (or, when that is
        empty, the newest held one for the RP) and increments its counter.
        ``sign_count`` reports that value instead and leaves the counter alone, so a
        test can force a regression. Raises ``NotAllowedError`` when nothing matches.
        """
        options_rp = options.get("rpId")
        cred = self._pick(options, credential_id, options_rp or self._effective_rp_id(None, None))
        effective_rp = rp_id or self.rp_id or options_rp or cred.rp_id
        if sign_count is None:
            cred.sign_count += 1
            reported = cred.sign_count
        else:
            reported = sign_count
        auth_data = (
            sha256(effective_rp.encode("utf-8"))
            + bytes([self._flags(up=up, uv=uv, attested=False)])
            + struct.pack(">I", reported)
        )
        client_data_json = _client_data("webauthn.get", options["challenge"], origin or self.origin, client_data)
        signature = _sign(cred.private_key, cred.alg, auth_data + sha256(client_data_json))
        encoded_id = b64url_encode(cred.credential_id)
        response: dict[str, Any] = {
            "clientDataJSON": b64url_encode(client_data_json),
            "authenticatorData": b64url_encode(auth_data),
            "signature": b64url_encode(signature),
        }
        if cred.user_handle is not None:
            response["userHandle"] = b64url_encode(cred.user_handle)
        return {
            "id": encoded_id,
            "rawId": encoded_id,
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
