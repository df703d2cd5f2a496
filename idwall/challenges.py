"""WebAuthn challenge derivation (DESIGN.md "Challenges").

A challenge is never a bare random value: it commits to what the passkey is
vouching for, so an assertion made for one TLS key, one connection or one
action is worthless for any other.

    enroll:  H("idwall/enroll/v1" || nonce || H(DER SubjectPublicKeyInfo of the CSR))
    login:   H("idwall/login/v1"  || nonce || H(DER of the client certificate))
    action:  H("idwall/action/v1" || canonical_json(action))

The domain-separation prefixes keep the three kinds apart: no enrollment
challenge can ever equal a login or action challenge. ``nonce`` is 32 random
bytes the gateway keeps, single use, until the ceremony ends.
"""

from __future__ import annotations

from typing import Any

from idwall.encoding import canonical_json, sha256

ENROLL, LOGIN, ACTION = b"idwall/enroll/v1", b"idwall/login/v1", b"idwall/action/v1"
NONCE_BYTES = 32


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes):
        raise ValueError(f"nonce must be bytes, got {type(nonce).__name__}")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce was {len(nonce)} bytes, expected exactly {NONCE_BYTES}")


def _check_der(value: bytes, what: str) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be DER bytes, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} was empty, expected DER bytes")


def enroll_challenge(nonce: bytes, spki_der: bytes) -> bytes:
    """The enrollment challenge: binds the new passkey to the CSR's public key."""
    _check_nonce(nonce)
    _check_der(spki_der, "spki_der")
    return sha256(ENROLL, nonce, sha256(spki_der))


def login_challenge(nonce: bytes, cert_der: bytes) -> bytes:
    """The login challenge: binds the assertion to the certificate on this connection."""
    _check_nonce(nonce)
    _check_der(cert_der, "cert_der")
    return sha256(LOGIN, nonce, sha256(cert_der))


def action_challenge(action: dict[str, Any]) -> bytes:
    """The challenge over a signed action's canonical JSON.

    Raises ValueError (``EncodingError``) when the action is not a JSON object
    of canonical types (floats, for instance, have no unique text form).
    """
    if not isinstance(action, dict):
        raise ValueError(f"action must be a JSON object, got {type(action).__name__}")
    return sha256(ACTION, canonical_json(action))
