"""Entry hashing and sealing: the entry format, its hash, the ledger key's signature, the root pin.

An entry is one JSON object (docs/architecture.md "Ledger entries")::

    {seq, time, type, actor, subject, data, [approval], prev, hash, sig}

    hash = SHA-256(prev || canonical_json(entry without "hash" and "sig"))   (prev is in the entry as b64url)
    sig  = ES256 by the ledger key over the 32 hash bytes, raw r||s, base64url
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from idwall.encoding import b64url_decode, b64url_encode, canonical_json, is_b64url, sha256

GENESIS_PREV = bytes(32)

ENTRY_TYPES = (
    "bootstrap",
    "invite.create",
    "device.enroll",
    "device.approve",
    "device.recover",
    "admin.grant",
    "admin.revoke",
    "token.create",
    "token.revoke",
    "session.login",
    "session.logout",
    "kill",
    "signcount.anomaly",
    "key.rotate",
    "device.reject",
    "device.renew",
    "user.set_manager",
    "incident.start",
    "incident.stage",
    "incident.end",
)
_SEALED_KEYS = frozenset({"prev", "hash", "sig"})
_TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")


# --- time ------------------------------------------------------------------------------------------


def format_time(now: float) -> str:
    """Unix seconds to the ledger's RFC 3339 form: UTC, milliseconds, ``Z`` (``2026-11-22T00:33:59.123Z``)."""
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now) or now < 0:
        raise ValueError(f"expected non-negative unix seconds, got {now!r}")
    millis = round(now * 1000)
    moment = datetime.fromtimestamp(millis // 1000, timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


def parse_time(text: str) -> float:
    """The inverse of :func:`format_time`; anything not in exactly that form raises ``ValueError``."""
    match = _TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a time like 2026-11-22T00:33:59.123Z (UTC, milliseconds), got {text!r}")
    year, month, day, hour, minute, second, millis = (int(part) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a real UTC time: {exc}") from None
    return int(moment.timestamp()) + millis / 1000


# --- hashing and sealing -----------------------------------------------------------------------------


def entry_hash(prev: bytes, entry: Mapping[str, Any]) -> bytes:
    """``H(prev || canonical_json(entry without "hash" and "sig"))``.

    ``entry`` must already hold ``prev`` (as base64url), so the previous hash is
    covered twice: as raw bytes in front and inside the canonical JSON.
    Raises ``EncodingError`` when the entry holds values canonical JSON refuses.
    """
    if not isinstance(prev, bytes) or len(prev) != 32:
        raise ValueError(f"prev must be 32 bytes, got {prev!r:.40}")
    body = {key: value for key, value in entry.items() if key not in ("hash", "sig")}
    return sha256(prev, canonical_json(body))


def _sign_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    # RFC 6979 nonces: no dependence on the RNG at signing time, and reproducible vectors.
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def require_p256(key: Any) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ValueError(f"the ledger key must be a P-256 EC key, got {type(key).__name__}")


def seal(entry: Mapping[str, Any], *, prev: bytes, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """A copy of ``entry`` with ``prev``, ``hash`` and ``sig`` set (any old values are replaced)."""
    require_p256(key)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("sealing needs the ledger's private key")
    sealed = {name: value for name, value in entry.items() if name not in _SEALED_KEYS}
    sealed["prev"] = b64url_encode(prev)
    digest = entry_hash(prev, sealed)
    sealed["hash"] = b64url_encode(digest)
    sealed["sig"] = b64url_encode(_sign_raw(key, digest))
    return sealed


def new_entry(
    *,
    seq: int,
    time: datetime | float,
    type: str,  # noqa: A002 - the ledger field is called "type"
    actor: str,
    subject: str,
    data: dict[str, Any],
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An unsealed entry in the documented shape; ``approval`` is left out when None."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"seq must be an integer >= 1, got {seq!r}")
    if type not in ENTRY_TYPES:
        raise ValueError(f"unknown ledger entry type {type!r}; known: {', '.join(ENTRY_TYPES)}")
    if isinstance(time, datetime):
        if time.tzinfo is None:
            raise ValueError("time must be timezone-aware; a naive datetime has no defined instant")
        time = time.timestamp()
    entry: dict[str, Any] = {
        "seq": seq,
        "time": format_time(time),
        "type": type,
        "actor": actor,
        "subject": subject,
        "data": data,
    }
    if approval is not None:
        entry["approval"] = approval
    return entry


def ids_digest(ids: Any) -> str:
    """base64url(SHA-256 of the sorted ids joined by newlines): what a kill records instead of every id it cut,
    so a kill of everyone stays one small entry while the ids (kept in the store) can be checked against it."""
    return b64url_encode(sha256("\n".join(sorted(ids)).encode("utf-8")))


def revokes_passkeys(scope: str, revoke_devices: bool) -> bool:
    """Whether a kill declares its device lost, so the device's passkeys are revoked with its certificate.

    Only a kill of one named device with ``revoke_devices`` does (lost or stolen: whoever holds it holds its
    passkeys too). A kill of a user, group or everyone with ``revoke_devices`` (an incident reset, device keys
    feared stolen) revokes certificates only: the passkeys stay the user's way back in (``device.recover``).
    """
    return scope == "device" and revoke_devices


def root_fingerprint(public_key_cose: bytes) -> str:
    """The root pin: base64url(SHA-256(COSE public key of the genesis admin credential))."""
    return b64url_encode(sha256(public_key_cose))


def ledger_public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK (RFC 7518 §6.2) of the ledger key, as the bootstrap entry records it."""
    require_p256(key)
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def public_key_from_jwk(jwk: Any) -> ec.EllipticCurvePublicKey:
    """Parse the ledger key JWK: exactly ``kty`` EC, ``crv`` P-256, ``x``, ``y``; no private part."""
    if not isinstance(jwk, dict):
        raise ValueError(f"ledger_key must be a JWK object, got {type(jwk).__name__}")
    if "d" in jwk:
        raise ValueError("ledger_key holds a private key ('d'); the ledger must carry only the public key")
    if set(jwk) != {"kty", "crv", "x", "y"}:
        raise ValueError(f"ledger_key must have exactly kty, crv, x, y; got {sorted(jwk)}")
    if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
        raise ValueError(f"ledger_key must be kty EC, crv P-256; got {jwk['kty']!r}, {jwk['crv']!r}")
    if not (is_b64url(jwk["x"]) and is_b64url(jwk["y"])):
        raise ValueError("ledger_key coordinates x and y must be unpadded base64url")
    x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
    if len(x) != 32 or len(y) != 32:
        raise ValueError(f"ledger_key coordinates must be 32 bytes each, got {len(x)} and {len(y)}")
    try:
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise ValueError("ledger_key is not a point on P-256") from None
