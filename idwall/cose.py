"""COSE public keys (RFC 9052/9053) of passkeys: the one check of what a registered key must be.

Registration (:mod:`idwall.passkeys`) and ledger replay (:mod:`idwall.audit.schemas`) both call
:func:`check_public_key`, so a key the gateway registers and a key the ledger verifier accepts are the same
set: ES256 on P-256 with its point on the curve, EdDSA on Ed25519, RS256 of at least 2048 bits. With
attestation "none" py_webauthn never loads the key, so without this a point off the curve, a string where
bytes belong or a 512-bit modulus would be stored and only fail (or worse, verify weakly) at login.

Pure: bytes in, the algorithm out, :class:`CoseKeyError` (a ``ValueError``) naming the problem otherwise.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["EDDSA", "ES256", "MIN_RSA_BITS", "RS256", "SUPPORTED_ALGORITHMS", "CoseKeyError", "check_public_key"]

ES256, EDDSA, RS256 = -7, -8, -257
#: preference order sent to clients: ES256 is what nearly every passkey provider makes
SUPPORTED_ALGORITHMS: tuple[int, ...] = (ES256, EDDSA, RS256)
MIN_RSA_BITS = 2048


class CoseKeyError(ValueError):
    """A COSE key that is malformed, of an algorithm we do not accept, or that does not load."""


def _coordinate(key: dict[Any, Any], label: int, name: str, size: int | None) -> bytes:
    value = key.get(label)
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        expected = f"{size} bytes" if size is not None else "bytes"
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise CoseKeyError(f"credential public key {name} (label {label}) is {got}, expected {expected}")
    return value


def _decode(cose: bytes) -> dict[Any, Any]:
    stream = io.BytesIO(cose)
    try:
        key = cbor2.CBORDecoder(stream, allow_duplicate_keys=False).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, and lower errors on hostile tags
        raise CoseKeyError(f"credential public key is not CBOR: {exc}"[:300]) from None
    if stream.tell() != len(cose):
        raise CoseKeyError(f"credential public key has {len(cose) - stream.tell()} bytes after its CBOR map")
    if not isinstance(key, dict):
        raise CoseKeyError(f"credential public key is a CBOR {type(key).__name__}, expected a map")
    return key


def check_public_key(cose: bytes) -> int:
    """The algorithm of a COSE key that loads as a usable public key of an accepted kind."""
    key = _decode(cose)
    kty, alg, crv = key.get(1), key.get(3), key.get(-1)
    try:
        if alg == ES256:
            if (kty, crv) != (2, 1):
                raise CoseKeyError(f"ES256 key has kty {kty!r} and crv {crv!r}, expected EC2 (2) on P-256 (1)")
            x = _coordinate(key, -2, "x", 32)
            y = _coordinate(key, -3, "y", 32)
            point = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
            point.public_key()  # refuses a point that is not on the curve
        elif alg == EDDSA:
            if (kty, crv) != (1, 6):
                raise CoseKeyError(f"EdDSA key has kty {kty!r} and crv {crv!r}, expected OKP (1) on Ed25519 (6)")
            ed25519.Ed25519PublicKey.from_public_bytes(_coordinate(key, -2, "x", 32))
        elif alg == RS256:
            if kty != 3:
                raise CoseKeyError(f"RS256 key has kty {kty!r}, expected RSA (3)")
            n = int.from_bytes(_coordinate(key, -1, "n", None), "big")
            e = int.from_bytes(_coordinate(key, -2, "e", None), "big")
            if n.bit_length() < MIN_RSA_BITS:
                raise CoseKeyError(f"RS256 modulus is {n.bit_length()} bits, expected at least {MIN_RSA_BITS}")
            rsa.RSAPublicNumbers(e, n).public_key()
        else:
            raise CoseKeyError(f"credential public key alg {alg!r} is not one of {list(SUPPORTED_ALGORITHMS)}")
    except CoseKeyError:
        raise
    except ValueError as exc:
        raise CoseKeyError(f"credential public key does not load: {exc}") from None
    return int(alg)
