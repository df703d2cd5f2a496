"""The tamper-evident audit ledger: canonical hashing, sealing, and the full verifier.

An entry is one JSON object (docs/architecture.md "Ledger entries")::

    {seq, time, type, actor, subject, data, [approval], prev, hash, sig}

    hash = SHA-256(prev || canonical_json(entry without "hash" and "sig"))   (prev is in the entry as b64url)
    sig  = ES256 by the ledger key over the 32 hash bytes, raw r||s, base64url

:func:`verify_ledger` replays the ledger into a :class:`LedgerState` and stops at
the first entry that fails, naming its ``seq`` and why. It checks:

- the envelope: exactly the documented fields, each of the documented type;
  time never goes back more than ``MAX_CLOCK_STEP_BACK`` seconds (nodes' clocks
  differ a little; an entry cannot be backdated past an expiry);
- ``seq`` starts at 1 and goes up by one (deletion, reordering, insertion and
  truncation in the middle all break it), ``prev`` is the previous ``hash``,
  ``hash`` is the hash of the contents, ``sig`` verifies under the ledger key
  (the JWK in the bootstrap entry unless the caller pins one);
- ``bootstrap`` at seq 1 and nowhere else; with ``root``, the genesis admin
  credential's fingerprint equals the pin, so a wholly replaced ledger fails;
- every approval: a ``webauthn.get`` assertion whose challenge is the action's
  challenge (or, for ``session.login``, ``H(LOGIN || nonce || cert_sha256)``),
  whose origin is one of the bootstrap's origins, whose ``rpIdHash`` is
  ``H(rp_id)``, with UP (and UV when the bootstrap requires it), signed by a
  credential the ledger registered earlier to the actor, on a device that is
  active at that point, with a sign count that only goes up (checked by
  :func:`idwall.passkeys.verify_assertion`, as logins and actions are when
  they happen); the action names the entry's type and actor, has not expired at the entry's time, its nonce is
  used once, and its fields are the entry's effect;
- roles: admin for ``invite.create``, ``admin.grant``/``admin.revoke``,
  ``token.create``/``token.revoke``, ``device.approve`` and kills by a user;
  ``device.recover`` by the pending device's own user with another active
  credential; a kill token must have been created with the ``kill`` scope;
- enrollments: an invited ``device.enroll`` names an invite a valid
  ``invite.create`` made earlier, unused and unexpired, and copies its user,
  name, email, groups and admin flag; an enrollment without an invite is for a
  known user, changes none of their attributes and stays ``pending_approval``;
  device, enrollment and credential ids are never registered twice;
- unknown entry types fail (closed).

What the ledger alone cannot show, and how to close it:

- Truncation at the end: a ledger cut after seq N is a valid ledger of N
  entries. Pin the head (``expected_last`` and ``expected_last_hash``, e.g. a
  copy kept off the gateway) to detect it.
- Whoever holds the ledger key can rewrite entries that carry no passkey
  approval (``kill``, ``session.logout``, ``signcount.anomaly``, ``key.rotate``)
  and reseal the chain; every check above still holds for them. Dropping a
  ``kill`` is only visible against a head pin or an exported copy.
- ``device.enroll`` carries no passkey signature: the invite authorises it. A
  ledger-key holder who rewrites the public key of an existing enrollment is
  caught as soon as that user's real passkey signs anything later (the
  signature no longer verifies), but not before.
- A device enrolled as ``pending_approval`` has no certificate yet, so its
  ``cert_sha256`` is null; its first ``session.login`` pins the certificate the
  passkey vouched for, and later logins must use the same one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from webauthn.helpers import decode_credential_public_key, decoded_public_key_to_cryptography
from webauthn.helpers.exceptions import WebAuthnException

from idwall.challenges import LOGIN, action_challenge
from idwall.config import parse_duration
from idwall.encoding import (
    EncodingError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    is_b64url,
    sha256,
    unique_members,
)
from idwall.errors import BadRequest, IDWallError, WebAuthnRejected
from idwall.passkeys import MAX_CREDENTIAL_ID_BYTES, verify_assertion

__all__ = [
    "GENESIS_PREV",
    "LedgerState",
    "LedgerViolation",
    "VerifyResult",
    "entries_from_jsonl",
    "entry_hash",
    "entry_to_jsonl",
    "format_time",
    "ledger_public_jwk",
    "new_entry",
    "parse_time",
    "public_key_from_jwk",
    "root_fingerprint",
    "seal",
    "verify_ledger",
]

GENESIS_PREV = bytes(32)

ES256, EDDSA, RS256 = -7, -8, -257
# Several gateway nodes stamp entries with their own clocks, so time may step back a little; more than this
# would let a ledger-key holder backdate an entry past an invite's or an action's expiry.
MAX_CLOCK_STEP_BACK = 60

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
)
_ENVELOPE_KEYS = frozenset({"seq", "time", "type", "actor", "subject", "data", "prev", "hash", "sig"})
_SEALED_KEYS = frozenset({"prev", "hash", "sig"})
_TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")


class LedgerViolation(IDWallError):
    """An entry failed verification. ``seq`` names it; ``str()`` is ``"seq N: why"``."""

    status, slug, title = 500, "ledger-invalid", "Audit ledger failed verification"

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"seq {seq}: {problem}", seq=seq)
        self.seq = seq
        self.problem_text = problem


class _Reject(Exception):
    """Internal: one check failed; :meth:`LedgerState.apply` adds the seq."""


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


def _verify_raw(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _require_p256(key: Any) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ValueError(f"the ledger key must be a P-256 EC key, got {type(key).__name__}")


def seal(entry: Mapping[str, Any], *, prev: bytes, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """A copy of ``entry`` with ``prev``, ``hash`` and ``sig`` set (any old values are replaced)."""
    _require_p256(key)
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


def root_fingerprint(public_key_cose: bytes) -> str:
    """The root pin: base64url(SHA-256(COSE public key of the genesis admin credential))."""
    return b64url_encode(sha256(public_key_cose))


def ledger_public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK (RFC 7518 §6.2) of the ledger key, as the bootstrap entry records it."""
    _require_p256(key)
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


# --- JSON lines --------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str | bytes) -> Any:
    # a repeated key is a DuplicateKey (a ValueError): the hash would cover a value the reader never saw
    return json.loads(text, object_pairs_hook=unique_members, parse_constant=_refuse_constant)


def entries_from_jsonl(text: str) -> list[dict[str, Any]]:
    """Parse an export (one JSON object a line; blank lines ignored). Raises ``BadRequest`` naming the line."""
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except ValueError as exc:
            raise BadRequest(f"line {number}: not a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest(f"line {number}: expected a JSON object, got {type(value).__name__}")
        entries.append(value)
    return entries


def entry_to_jsonl(entry: Mapping[str, Any]) -> str:
    """One entry as one canonical JSON line (no newline)."""
    return canonical_json(dict(entry)).decode("utf-8")


# --- field checks ------------------------------------------------------------------------------------

_Check = tuple[str, Callable[[Any], bool]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_instant(value: Any) -> bool:
    if _is_int(value):
        return value >= 0
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def _instant(value: int | str) -> float:
    return float(value) if isinstance(value, int) else parse_time(value)


_ID: _Check = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
_STR: _Check = ("a string", lambda v: isinstance(v, str))
_BOOL: _Check = ("a boolean", lambda v: isinstance(v, bool))
_INT: _Check = ("an integer", _is_int)
_COUNT: _Check = ("an integer from 0 to 2^32-1", lambda v: _is_int(v) and 0 <= v < 2**32)
_STRS: _Check = ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v))
_ORIGINS: _Check = (
    "a non-empty list of strings",
    lambda v: isinstance(v, list) and bool(v) and all(isinstance(i, str) and i for i in v),
)
_B64: _Check = ("non-empty base64url without padding", is_b64url)
_HASH32: _Check = ("base64url of 32 bytes", lambda v: is_b64url(v, 32))
_OPT_HASH32: _Check = ("base64url of 32 bytes, or null", lambda v: v is None or is_b64url(v, 32))
_NONCE: _Check = ("base64url of 32 bytes", lambda v: is_b64url(v, 32))
_CRED_ID: _Check = (
    f"base64url of 1 to {MAX_CREDENTIAL_ID_BYTES} bytes",
    lambda v: is_b64url(v, max_size=MAX_CREDENTIAL_ID_BYTES),
)
_OBJ: _Check = ("an object", lambda v: isinstance(v, dict))
_INSTANT: _Check = ("unix seconds (integer) or an RFC 3339 UTC time", _is_instant)
_TTL: _Check = ("a duration such as 1h", lambda v: isinstance(v, str | int) and not isinstance(v, bool))
_OPT_STR: _Check = ("a string or null", lambda v: v is None or isinstance(v, str))
_SCOPES: _Check = (
    "a non-empty list of distinct scopes from kill, read",
    lambda v: isinstance(v, list) and bool(v) and len(set(map(str, v))) == len(v)
    and all(i in ("kill", "read") for i in v),
)


def _one_of(*choices: Any) -> _Check:
    return (" or ".join(repr(c) for c in choices), lambda v: any(v == c and type(v) is type(c) for c in choices))


_USER_FIELDS: dict[str, _Check] = {"user": _ID, "name": _STR, "email": _STR, "groups": _STRS, "admin": _BOOL}
_KEY_FIELDS: dict[str, _Check] = {
    "device_id": _ID,
    "device_name": _STR,
    "credential_id": _CRED_ID,
    "public_key": _B64,
    "alg": _INT,
}

_DATA_SCHEMAS: dict[str, dict[str, _Check]] = {
    "bootstrap": {
        **_USER_FIELDS,
        **_KEY_FIELDS,
        "cert_sha256": _HASH32,
        "rp_id": _ID,
        "origins": _ORIGINS,
        "user_verification": _one_of("required", "preferred", "discouraged"),
        "ledger_key": _OBJ,
    },
    "invite.create": {"invite_id": _HASH32, **_USER_FIELDS, "expires_at": _INSTANT},
    "device.enroll": {
        **_USER_FIELDS,
        **_KEY_FIELDS,
        "cert_sha256": _OPT_HASH32,
        "invite_id": _OPT_HASH32,
        "enrollment_id": _ID,
        "status": _one_of("active", "pending_approval"),
    },
    "device.approve": {"device_id": _ID, "enrollment_id": _ID, "status": _one_of("active")},
    "device.recover": {"device_id": _ID, "enrollment_id": _ID, "status": _one_of("active")},
    "admin.grant": {"user": _ID, "admin": _one_of(True)},
    "admin.revoke": {"user": _ID, "admin": _one_of(False)},
    "token.create": {"token_id": _ID, "name": _STR, "scopes": _SCOPES, "expires_at": _INSTANT},
    "token.revoke": {"token_id": _ID},
    "session.login": {
        "user": _ID,
        "device_id": _ID,
        "credential_id": _CRED_ID,
        "cert_sha256": _HASH32,
        "nonce": _NONCE,
        "sign_count": _COUNT,
    },
    "session.logout": {"user": _ID, "device_id": _ID},
    "kill": {
        "scope": _one_of("session", "device", "user", "group", "all"),
        "target": _OPT_STR,
        "reason": _STR,
        "revoke_devices": _BOOL,
        "sessions": _STRS,
        "devices": _STRS,
    },
    "signcount.anomaly": {
        "user": _ID,
        "device_id": _ID,
        "credential_id": _CRED_ID,
        "stored": _COUNT,
        "received": _COUNT,
    },
    "key.rotate": {"kind": _one_of("assertion"), "kid": _ID, "previous_kid": _ID},
}

_ACTION_BASE: dict[str, _Check] = {"type": _ID, "actor": _ID, "nonce": _NONCE, "not_after": _INT}
_ACTION_FIELDS: dict[str, dict[str, _Check]] = {
    "invite.create": dict(_USER_FIELDS),
    "device.approve": {"device_id": _ID},
    "device.recover": {"enrollment_id": _ID},
    "admin.grant": {"user": _ID},
    "admin.revoke": {"user": _ID},
    "token.create": {"name": _STR, "scopes": _SCOPES, "ttl": _TTL},
    "token.revoke": {"token_id": _ID},
}
_ASSERTION_FIELDS: dict[str, _Check] = {
    "credential_id": _CRED_ID,
    "authenticator_data": _B64,
    "client_data_json": _B64,
    "signature": _B64,
}
_APPROVAL_REQUIRED = frozenset({*_ACTION_FIELDS, "session.login"}) - {"token.revoke"}
_APPROVAL_OPTIONAL = frozenset({"token.revoke"})
_SYSTEM_TYPES = frozenset({"signcount.anomaly", "key.rotate"})


def _check_fields(value: Any, schema: Mapping[str, _Check], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Reject(f"{where} must be an object, got {type(value).__name__}")
    missing = [name for name in schema if name not in value]
    if missing:
        raise _Reject(f"{where} is missing {', '.join(missing)}")
    extra = sorted(set(value) - set(schema))
    if extra:
        raise _Reject(f"{where} has unexpected field(s) {', '.join(extra)}; expected exactly {', '.join(schema)}")
    for name, (description, ok) in schema.items():
        if not ok(value[name]):
            raise _Reject(f"{where}.{name} must be {description}, got {_show(value[name])}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if _is_jsonable(value) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# --- replayed state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRecord:
    """A user as the ledger knows them at some point."""

    id: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    seq: int  # the entry that created them


@dataclass(frozen=True)
class DeviceRecord:
    """A device; ``status`` is active, pending_approval or revoked."""

    id: str
    user: str
    enrollment_id: str
    cert_sha256: str | None
    status: str
    seq: int


@dataclass(frozen=True)
class CredentialRecord:
    """A registered passkey: its owner, device, COSE key and highest sign count seen."""

    id: str
    user: str
    device_id: str
    public_key: bytes
    alg: int
    sign_count: int
    seq: int


@dataclass(frozen=True)
class InviteRecord:
    """An invite made by a valid ``invite.create``; ``used_by`` is the enrolling seq."""

    id: str
    user: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    expires_at: float
    seq: int
    used_by: int | None = None


@dataclass(frozen=True)
class TokenRecord:
    """An API token made by a valid ``token.create``."""

    id: str
    scopes: tuple[str, ...]
    expires_at: float
    seq: int
    revoked_by: int | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A session started by a ``session.login``."""

    id: str
    user: str
    device_id: str
    seq: int


@dataclass(frozen=True)
class _Envelope:
    seq: int
    time: float
    type: str
    actor: str
    subject: str
    data: dict[str, Any]
    approval: dict[str, Any] | None


_KEY_TYPES: dict[int, type] = {
    ES256: ec.EllipticCurvePublicKey,
    EDDSA: ed25519.Ed25519PublicKey,
    RS256: rsa.RSAPublicKey,
}


def _check_cose_key(public_key: bytes, alg: int) -> None:
    """Refuse a registered COSE key that does not load, or whose algorithm or curve we do not accept."""
    if alg not in _KEY_TYPES:
        raise _Reject(f"alg {alg} is not one of ES256 (-7), EdDSA (-8), RS256 (-257)")
    try:
        decoded = decode_credential_public_key(public_key)
        key = decoded_public_key_to_cryptography(decoded)
    except (WebAuthnException, KeyError, ValueError, TypeError, IndexError) as exc:
        raise _Reject(f"public_key is not a usable COSE key: {exc}") from None
    if int(decoded.alg) != alg:
        raise _Reject(f"public_key is a COSE key for alg {int(decoded.alg)}, but alg says {alg}")
    if not isinstance(key, _KEY_TYPES[alg]) or (alg == ES256 and not isinstance(key.curve, ec.SECP256R1)):
        raise _Reject(f"public_key does not fit alg {alg}")


@dataclass(eq=False)
class LedgerState:
    """The trust state replayed from the ledger, one entry at a time.

    ``apply`` checks an entry against everything before it (chain, signature,
    approval, roles, effect) and folds it in, or raises :class:`LedgerViolation`;
    after a violation the state is no longer meaningful (verification stops there).
    ``root`` pins the genesis credential fingerprint; ``ledger_public_key``
    pins the ledger key (otherwise the bootstrap's JWK is trusted, which is
    safe only together with ``root``).
    """

    root_pin: str | None = None
    ledger_public_key: ec.EllipticCurvePublicKey | None = None
    root: str | None = field(default=None, init=False)
    last_seq: int = field(default=0, init=False)
    last_hash: bytes = field(default=GENESIS_PREV, init=False)
    last_time: float = field(default=0.0, init=False)
    rp_id: str = field(default="", init=False)
    origins: tuple[str, ...] = field(default=(), init=False)
    require_uv: bool = field(default=True, init=False)
    users: dict[str, UserRecord] = field(default_factory=dict, init=False)
    devices: dict[str, DeviceRecord] = field(default_factory=dict, init=False)
    enrollments: dict[str, str] = field(default_factory=dict, init=False)  # enrollment id -> device id
    credentials: dict[str, CredentialRecord] = field(default_factory=dict, init=False)
    certificates: dict[str, str] = field(default_factory=dict, init=False)  # cert_sha256 -> device id
    invites: dict[str, InviteRecord] = field(default_factory=dict, init=False)
    tokens: dict[str, TokenRecord] = field(default_factory=dict, init=False)
    sessions: dict[str, SessionRecord] = field(default_factory=dict, init=False)
    nonces: dict[str, int] = field(default_factory=dict, init=False)  # action and login nonces -> seq

    # -- the chain --

    def apply(self, entry: Any) -> None:
        """Verify one entry (the next in order) and fold it into the state."""
        expected = self.last_seq + 1
        label = entry.get("seq") if isinstance(entry, dict) and _is_int(entry.get("seq")) else expected
        try:
            env = self._envelope(entry, expected)
            digest = self._check_chain(entry, env)
            handler = getattr(self, "_apply_" + env.type.replace(".", "_"))
            handler(env)
        except _Reject as exc:
            raise LedgerViolation(label, str(exc)) from None
        self.last_seq = env.seq
        self.last_hash = digest
        self.last_time = max(self.last_time, env.time)

    def _envelope(self, entry: Any, expected: int) -> _Envelope:
        if not isinstance(entry, dict):
            raise _Reject(f"an entry must be a JSON object, got {type(entry).__name__}")
        missing = sorted(_ENVELOPE_KEYS - set(entry))
        if missing:
            raise _Reject(f"entry is missing {', '.join(missing)}")
        extra = sorted(set(entry) - _ENVELOPE_KEYS - {"approval"})
        if extra:
            raise _Reject(f"entry has unexpected field(s) {', '.join(extra)}")
        seq = entry["seq"]
        if not _is_int(seq):
            raise _Reject(f"seq must be an integer, got {_show(seq)}")
        if seq != expected:
            after = f"after seq {expected - 1}" if expected > 1 else "at the start"
            raise _Reject(
                f"expected seq {expected} {after}; entries were deleted, reordered or inserted"
            )
        for name in ("type", "actor", "subject"):
            if not isinstance(entry[name], str) or not entry[name]:
                raise _Reject(f"{name} must be a non-empty string, got {_show(entry[name])}")
        try:
            time = parse_time(entry["time"])
        except ValueError as exc:
            raise _Reject(str(exc)) from None
        if time < self.last_time - MAX_CLOCK_STEP_BACK:
            raise _Reject(
                f"time {entry['time']} is more than {MAX_CLOCK_STEP_BACK} s before the latest earlier entry "
                f"({format_time(self.last_time)})"
            )
        if entry["type"] not in ENTRY_TYPES:
            raise _Reject(f"unknown entry type {_show(entry['type'])}; refusing what we cannot check")
        approval = entry.get("approval")
        if approval is not None and not isinstance(approval, dict):
            raise _Reject(f"approval must be an object or absent, got {type(approval).__name__}")
        return _Envelope(seq, time, entry["type"], entry["actor"], entry["subject"], entry["data"], approval)

    def _check_chain(self, entry: dict[str, Any], env: _Envelope) -> bytes:
        if not is_b64url(entry["prev"], 32) or b64url_decode(entry["prev"]) != self.last_hash:
            if self.last_seq == 0:
                raise _Reject("prev must be 32 zero bytes for the first entry")
            raise _Reject(f"prev does not match the hash of seq {self.last_seq}")
        try:
            digest = entry_hash(self.last_hash, entry)
        except EncodingError as exc:
            raise _Reject(f"entry is not canonical JSON: {exc}") from None
        if not isinstance(entry["hash"], str) or entry["hash"] != b64url_encode(digest):
            raise _Reject("hash does not match its contents")
        if env.seq == 1:
            if env.type != "bootstrap":
                raise _Reject(f"the first entry must be a bootstrap, got {env.type}")
            self._adopt_ledger_key(env.data)
        assert self.ledger_public_key is not None  # set by the bootstrap or pinned by the caller
        signature = b64url_decode(entry["sig"]) if is_b64url(entry["sig"], 64) else b""
        if not _verify_raw(self.ledger_public_key, signature, digest):
            raise _Reject("ledger signature does not verify under the ledger key")
        return digest

    def _adopt_ledger_key(self, data: Any) -> None:
        jwk = data.get("ledger_key") if isinstance(data, dict) else None
        try:
            announced = public_key_from_jwk(jwk)
        except ValueError as exc:
            raise _Reject(f"bootstrap data.ledger_key: {exc}") from None
        if self.ledger_public_key is None:
            self.ledger_public_key = announced
        elif ledger_public_jwk(self.ledger_public_key) != ledger_public_jwk(announced):
            raise _Reject("bootstrap ledger_key is not the ledger public key given to the verifier")

    # -- shared checks --

    def _data(self, env: _Envelope) -> dict[str, Any]:
        data = _check_fields(env.data, _DATA_SCHEMAS[env.type], "data")
        if env.approval is None and env.type in _APPROVAL_REQUIRED:
            raise _Reject(f"{env.type} needs an approval (a passkey assertion) and has none")
        if env.approval is not None and env.type not in _APPROVAL_REQUIRED | _APPROVAL_OPTIONAL:
            raise _Reject(f"{env.type} must not carry an approval")
        if env.type in _SYSTEM_TYPES and env.actor != "system":
            raise _Reject(f"actor of {env.type} must be 'system', got {_show(env.actor)}")
        return data

    def _require_admin(self, user_id: str, what: str) -> None:
        user = self.users.get(user_id)
        if user is None or not user.admin:
            raise _Reject(f"{what} {user_id} is not an admin at this point")

    def _subject_is(self, env: _Envelope, value: str, what: str) -> None:
        if env.subject != value:
            raise _Reject(f"subject is {_show(env.subject)}, expected the {what} {_show(value)}")

    def _verify_action(self, env: _Envelope) -> tuple[dict[str, Any], CredentialRecord]:
        """Check the approval's action, its challenge and assertion; return the action and the signer's credential."""
        approval = _check_fields(env.approval, {**_ASSERTION_FIELDS, "action": _OBJ}, "approval")
        action = _check_fields(approval["action"], {**_ACTION_BASE, **_ACTION_FIELDS[env.type]}, "approval.action")
        if action["type"] != env.type:
            raise _Reject(f"approval action type {_show(action['type'])} does not match entry type {env.type}")
        if action["actor"] != env.actor:
            raise _Reject(f"approval action actor {_show(action['actor'])} does not match entry actor {env.actor}")
        if action["not_after"] < env.time:
            raise _Reject(
                f"approval action expired at not_after {action['not_after']}, before the entry time {format_time(env.time)}"
            )
        credential = self._verify_assertion(env, approval, action_challenge(action), "action")
        self._use_nonce(action["nonce"], "action", env.seq)
        return action, credential

    def _use_nonce(self, nonce: str, kind: str, seq: int) -> None:
        if nonce in self.nonces:
            raise _Reject(f"{kind} nonce {nonce} was already used by seq {self.nonces[nonce]}")
        self.nonces[nonce] = seq

    def _verify_assertion(
        self, env: _Envelope, approval: dict[str, Any], challenge: bytes, kind: str
    ) -> CredentialRecord:
        """Check an approval's assertion against the credential the ledger registered; return it with its new sign count.

        The assertion itself goes through :func:`~idwall.passkeys.verify_assertion`, like a live login or action;
        :meth:`_assertion_reason` words its refusal for the ledger.
        """
        credential_id = approval["credential_id"]
        credential = self.credentials.get(credential_id)
        if credential is None:
            raise _Reject(f"approval credential {credential_id} was never registered")
        if credential.user != env.actor:
            raise _Reject(
                f"approval credential {credential_id} belongs to user {credential.user}, not to the actor {env.actor}"
            )
        device = self.devices[credential.device_id]
        if device.status != "active":
            raise _Reject(f"approval credential {credential_id} is on device {device.id}, which is {device.status}")

        try:
            verified = verify_assertion(
                credential_id=b64url_decode(credential_id),
                authenticator_data=b64url_decode(approval["authenticator_data"]),
                client_data_json=b64url_decode(approval["client_data_json"]),
                signature=b64url_decode(approval["signature"]),
                expected_challenge=challenge,
                rp_id=self.rp_id,
                origins=self.origins,
                public_key=credential.public_key,
                stored_sign_count=credential.sign_count,
                require_uv=self.require_uv,
            )
        except WebAuthnRejected as exc:
            raise _Reject(self._assertion_reason(exc, credential, kind)) from None
        credential = self.credentials[credential_id] = replace(credential, sign_count=verified.new_sign_count)
        return credential

    def _assertion_reason(self, exc: WebAuthnRejected, credential: CredentialRecord, kind: str) -> str:
        """What :func:`~idwall.passkeys.verify_assertion` refused, in the ledger's words."""
        match exc.check:
            case "type":
                return f"approval client_data_json type is {_show(exc.received)}, expected webauthn.get"
            case "challenge":
                return f"approval challenge is not the challenge of this {kind}"
            case "origin":
                return (f"approval origin {_show(exc.received)} is not one of the bootstrap origins "
                        f"{', '.join(self.origins)}")
            case "rp_id":
                return f"approval rpIdHash is not SHA-256 of the rp_id {self.rp_id}"
            case "user_present":
                return "approval authenticator_data lacks the user-present (UP) flag"
            case "user_verified":
                return "approval authenticator_data lacks the user-verified (UV) flag, which the bootstrap requires"
            case "signature":
                return f"approval signature does not verify under credential {credential.id} of user {credential.user}"
            case "sign_count":
                return (f"approval sign count {exc.received} does not go past {credential.sign_count} for credential "
                        f"{credential.id} (a cloned authenticator or a replayed assertion)")
        return f"approval assertion fails verification: {exc.detail}"

    def _match(self, action: dict[str, Any], name: str, expected: Any, where: str) -> None:
        if action[name] != expected:
            raise _Reject(f"approval action {name} is {_show(action[name])}, but the entry's {where} is {_show(expected)}")

    def _register_key(self, env: _Envelope, data: dict[str, Any]) -> None:
        """Register the device and credential an enrollment (or the bootstrap) records."""
        for taken, ident, what in (
            (self.devices, data["device_id"], "device"),
            (self.credentials, data["credential_id"], "credential"),
        ):
            if ident in taken:
                raise _Reject(f"{what} {ident} was already registered by seq {taken[ident].seq}")
        enrollment_id = data.get("enrollment_id", f"bootstrap:{data['device_id']}")
        if enrollment_id in self.enrollments:
            raise _Reject(f"enrollment {enrollment_id} was already completed by device {self.enrollments[enrollment_id]}")
        cert = data["cert_sha256"]
        if cert is not None and cert in self.certificates:
            raise _Reject(f"cert_sha256 {cert} is already the certificate of device {self.certificates[cert]}")
        public_key = b64url_decode(data["public_key"])
        _check_cose_key(public_key, data["alg"])
        status = data.get("status", "active")
        self.devices[data["device_id"]] = DeviceRecord(
            data["device_id"], data["user"], enrollment_id, cert, status, env.seq
        )
        self.enrollments[enrollment_id] = data["device_id"]
        if cert is not None:
            self.certificates[cert] = data["device_id"]
        self.credentials[data["credential_id"]] = CredentialRecord(
            data["credential_id"], data["user"], data["device_id"], public_key, data["alg"], 0, env.seq
        )

    def _set_user(self, data: dict[str, Any], seq: int) -> None:
        existing = self.users.get(data["user"])
        self.users[data["user"]] = UserRecord(
            data["user"], data["name"], data["email"], tuple(data["groups"]), data["admin"],
            existing.seq if existing else seq,
        )

    # -- one handler per entry type --

    def _apply_bootstrap(self, env: _Envelope) -> None:
        if env.seq != 1:
            raise _Reject("bootstrap is only allowed at seq 1")
        data = self._data(env)
        if data["admin"] is not True:
            raise _Reject("the bootstrap user must be an admin")
        if env.actor != data["user"]:
            raise _Reject(f"actor is {_show(env.actor)}, expected the bootstrap user {_show(data['user'])}")
        self._subject_is(env, data["user"], "bootstrap user")
        fingerprint = root_fingerprint(b64url_decode(data["public_key"]))
        if self.root_pin is not None and fingerprint != self.root_pin:
            raise _Reject(
                f"genesis credential fingerprint does not match --root (the ledger's is {fingerprint}, "
                f"the pin is {self.root_pin})"
            )
        self.rp_id = data["rp_id"]
        self.origins = tuple(data["origins"])
        self.require_uv = data["user_verification"] == "required"
        self._register_key(env, data)
        self._set_user(data, env.seq)
        self.root = fingerprint

    def _apply_invite_create(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["user"], "invited user")
        action, _ = self._verify_action(env)
        for name in _USER_FIELDS:
            self._match(action, name, data[name], f"data.{name}")
        self._require_admin(env.actor, "signer")
        if data["invite_id"] in self.invites:
            raise _Reject(f"invite {data['invite_id']} was already created by seq {self.invites[data['invite_id']].seq}")
        self.invites[data["invite_id"]] = InviteRecord(
            data["invite_id"], data["user"], data["name"], data["email"], tuple(data["groups"]), data["admin"],
            _instant(data["expires_at"]), env.seq,
        )

    def _apply_device_enroll(self, env: _Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise _Reject(f"actor is {_show(env.actor)}, expected the enrolled user {_show(data['user'])}")
        self._subject_is(env, data["device_id"], "device")
        if data["cert_sha256"] is None and data["status"] == "active":
            raise _Reject("an active device must record its certificate (cert_sha256 is null)")
        invite_id = data["invite_id"]
        if invite_id is not None:
            invite = self.invites.get(invite_id)
            if invite is None:
                raise _Reject(f"invite {invite_id} was never created by a valid invite.create")
            if invite.used_by is not None:
                raise _Reject(f"invite {invite_id} was already used by seq {invite.used_by}")
            if env.time > invite.expires_at:
                raise _Reject(
                    f"invite {invite_id} expired at {format_time(invite.expires_at)}, before this enrollment"
                )
            granted = {"user": invite.user, "name": invite.name, "email": invite.email,
                       "groups": list(invite.groups), "admin": invite.admin}
            for name, value in granted.items():
                if data[name] != value:
                    raise _Reject(f"data.{name} is {_show(data[name])}, but invite {invite_id} says {_show(value)}")
        else:
            user = self.users.get(data["user"])
            if user is None:
                raise _Reject(f"an enrollment without an invite must be for a known user; {data['user']} is unknown")
            if data["status"] != "pending_approval":
                raise _Reject("an enrollment without an invite must be pending_approval until a signed approval")
            known = {"name": user.name, "email": user.email, "groups": list(user.groups), "admin": user.admin}
            for name, value in known.items():
                if data[name] != value:
                    raise _Reject(f"data.{name} is {_show(data[name])}, but an enrollment without an invite "
                                  f"cannot change user {user.id}'s {name} ({_show(value)})")
        self._register_key(env, data)
        self._set_user(data, env.seq)
        if invite_id is not None:
            self.invites[invite_id] = replace(self.invites[invite_id], used_by=env.seq)

    def _pending_device(self, data: dict[str, Any]) -> DeviceRecord:
        device = self.devices.get(data["device_id"])
        if device is None:
            raise _Reject(f"device {data['device_id']} was never enrolled")
        if device.enrollment_id != data["enrollment_id"]:
            raise _Reject(f"device {device.id} came from enrollment {device.enrollment_id}, not {data['enrollment_id']}")
        if device.status != "pending_approval":
            raise _Reject(f"device {device.id} is {device.status}, not pending_approval")
        return device

    def _apply_device_approve(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        action, _ = self._verify_action(env)
        self._match(action, "device_id", data["device_id"], "data.device_id")
        self._require_admin(env.actor, "signer")
        device = self._pending_device(data)
        self.devices[device.id] = replace(device, status="active")

    def _apply_device_recover(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        action, credential = self._verify_action(env)
        self._match(action, "enrollment_id", data["enrollment_id"], "data.enrollment_id")
        device = self._pending_device(data)
        if env.actor != device.user:
            raise _Reject(f"signer {env.actor} is not the user {device.user} of the pending device {device.id}")
        if credential.device_id == device.id:
            raise _Reject("device.recover must be signed with a credential on another, active device")
        self.devices[device.id] = replace(device, status="active")

    def _apply_admin_grant(self, env: _Envelope) -> None:
        self._apply_admin_change(env)

    def _apply_admin_revoke(self, env: _Envelope) -> None:
        self._apply_admin_change(env)

    def _apply_admin_change(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["user"], "user")
        action, _ = self._verify_action(env)
        self._match(action, "user", data["user"], "data.user")
        self._require_admin(env.actor, "signer")
        user = self.users.get(data["user"])
        if user is None:
            raise _Reject(f"user {data['user']} does not exist")
        self.users[user.id] = replace(user, admin=data["admin"])

    def _apply_token_create(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["token_id"], "token id")
        action, _ = self._verify_action(env)
        self._match(action, "name", data["name"], "data.name")
        self._match(action, "scopes", data["scopes"], "data.scopes")
        try:
            ttl = parse_duration(action["ttl"])
        except ValueError as exc:
            raise _Reject(f"approval action ttl: {exc}") from None
        expires_at = _instant(data["expires_at"])
        # The gateway computes expires_at when it performs the action, at most a moment before the entry's time.
        if expires_at > env.time + ttl + 1:
            raise _Reject(f"data.expires_at {format_time(expires_at)} is later than the signed ttl {action['ttl']} allows")
        self._require_admin(env.actor, "signer")
        if data["token_id"] in self.tokens:
            raise _Reject(f"token {data['token_id']} was already created by seq {self.tokens[data['token_id']].seq}")
        self.tokens[data["token_id"]] = TokenRecord(data["token_id"], tuple(data["scopes"]), expires_at, env.seq)

    def _apply_token_revoke(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["token_id"], "token id")
        if env.approval is not None:
            action, _ = self._verify_action(env)
            self._match(action, "token_id", data["token_id"], "data.token_id")
        self._require_admin(env.actor, "actor")
        token = self.tokens.get(data["token_id"])
        if token is None:
            raise _Reject(f"token {data['token_id']} was never created")
        if token.revoked_by is not None:
            raise _Reject(f"token {token.id} was already revoked by seq {token.revoked_by}")
        self.tokens[token.id] = replace(token, revoked_by=env.seq)

    def _apply_session_login(self, env: _Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise _Reject(f"actor is {_show(env.actor)}, expected the user {_show(data['user'])}")
        if env.subject in self.sessions:
            raise _Reject(f"session {env.subject} was already started by seq {self.sessions[env.subject].seq}")
        approval = _check_fields(env.approval, {**_ASSERTION_FIELDS, "nonce": _NONCE}, "approval")
        if approval["credential_id"] != data["credential_id"]:
            raise _Reject("approval credential_id is not data.credential_id")
        if approval["nonce"] != data["nonce"]:
            raise _Reject("approval nonce is not data.nonce")
        credential = self.credentials.get(data["credential_id"])
        if credential is not None and credential.device_id != data["device_id"]:
            raise _Reject(
                f"credential {credential.id} is bound to device {credential.device_id}, not {data['device_id']}"
            )
        device = self.devices.get(data["device_id"])
        if device is not None and device.cert_sha256 not in (None, data["cert_sha256"]):
            raise _Reject(f"data.cert_sha256 is not the certificate the ledger recorded for device {device.id}")
        challenge = sha256(LOGIN, b64url_decode(data["nonce"]), b64url_decode(data["cert_sha256"]))
        signed_count = self._verify_assertion(env, approval, challenge, "login").sign_count
        if data["sign_count"] != signed_count:
            raise _Reject(f"data.sign_count {data['sign_count']} is not the signed counter {signed_count}")
        self._use_nonce(data["nonce"], "login", env.seq)
        assert device is not None  # _verify_assertion found the credential's device
        if device.cert_sha256 is None:
            if data["cert_sha256"] in self.certificates:
                raise _Reject(f"cert_sha256 {data['cert_sha256']} belongs to device {self.certificates[data['cert_sha256']]}")
            self.devices[device.id] = replace(device, cert_sha256=data["cert_sha256"])
            self.certificates[data["cert_sha256"]] = device.id
        self.sessions[env.subject] = SessionRecord(env.subject, data["user"], data["device_id"], env.seq)

    def _apply_session_logout(self, env: _Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise _Reject(f"actor is {_show(env.actor)}, expected the user {_show(data['user'])}")
        session = self.sessions.get(env.subject)
        if session is None:
            raise _Reject(f"session {env.subject} was never started")
        if (session.user, session.device_id) != (data["user"], data["device_id"]):
            raise _Reject(f"session {session.id} belongs to {session.user} on {session.device_id}")

    def _apply_kill(self, env: _Envelope) -> None:
        data = self._data(env)
        if data["target"] is None and data["scope"] != "all":
            raise _Reject(f"a kill with scope {data['scope']} needs a target")
        if data["target"] is not None:
            self._subject_is(env, data["target"], "kill target")
        if env.actor.startswith("token:"):
            token = self.tokens.get(env.actor.removeprefix("token:"))
            if token is None or token.revoked_by is not None or "kill" not in token.scopes:
                raise _Reject(f"actor {env.actor} is not a live token with the kill scope")
            if env.time > token.expires_at:
                raise _Reject(f"actor {env.actor} expired at {format_time(token.expires_at)}")
        else:
            self._require_admin(env.actor, "actor")
        if data["revoke_devices"]:
            for device_id in data["devices"]:
                if device_id not in self.devices:
                    raise _Reject(f"kill revokes device {device_id}, which was never enrolled")
            for device_id in data["devices"]:
                self.devices[device_id] = replace(self.devices[device_id], status="revoked")

    def _apply_signcount_anomaly(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["credential_id"], "credential")
        credential = self.credentials.get(data["credential_id"])
        if credential is None:
            raise _Reject(f"credential {data['credential_id']} was never registered")
        if (credential.user, credential.device_id) != (data["user"], data["device_id"]):
            raise _Reject(f"credential {credential.id} belongs to {credential.user} on {credential.device_id}")
        if data["received"] > data["stored"]:
            raise _Reject(f"received {data['received']} > stored {data['stored']} is not an anomaly")

    def _apply_key_rotate(self, env: _Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["kid"], "new kid")
        if data["kid"] == data["previous_kid"]:
            raise _Reject("key.rotate kid equals previous_kid")


# --- whole-ledger verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_ledger`.

    On failure ``seq`` is the first failing entry and ``reason`` reads
    ``"seq N: why"``; on success ``seq`` is the last entry's seq. ``entries`` is
    how many entries verified; ``root`` the genesis fingerprint (once seen);
    ``head`` the base64url hash of the last verified entry (pin it to detect
    truncation later).
    """

    ok: bool
    seq: int | None
    reason: str
    entries: int
    root: str | None
    head: str | None = None


def verify_ledger(
    entries: Iterable[Any],
    *,
    root: str | None = None,
    ledger_public_key: ec.EllipticCurvePublicKey | dict[str, Any] | None = None,
    expected_last: int | None = None,
    expected_last_hash: str | None = None,
) -> VerifyResult:
    """Verify a whole ledger in order; stop at the first failure and name its seq.

    ``root`` pins the genesis admin credential (``idwall audit verify --root``);
    ``ledger_public_key`` (key or JWK) pins the ledger key instead of trusting
    the bootstrap's. ``expected_last`` says the ledger reaches at least that
    seq (truncation at the end is otherwise invisible) and
    ``expected_last_hash`` what that entry's hash is.
    """
    if expected_last_hash is not None and expected_last is None:
        raise ValueError("expected_last_hash needs expected_last: it is the hash of that entry")
    if isinstance(ledger_public_key, dict):
        ledger_public_key = public_key_from_jwk(ledger_public_key)
    elif ledger_public_key is not None:
        _require_p256(ledger_public_key)
    state = LedgerState(root_pin=root, ledger_public_key=ledger_public_key)
    count = 0
    for entry in entries:
        try:
            state.apply(entry)
        except LedgerViolation as exc:
            return VerifyResult(False, exc.seq, exc.detail, count, state.root, _head(state))
        count += 1
        if state.last_seq == expected_last and expected_last_hash is not None:
            if b64url_encode(state.last_hash) != expected_last_hash:
                return VerifyResult(
                    False, state.last_seq,
                    f"seq {state.last_seq}: hash does not match the pinned head hash {expected_last_hash}",
                    count, state.root, _head(state),
                )
    if count == 0:
        return VerifyResult(False, 1, "seq 1: the ledger is empty; it must start with a bootstrap entry", 0, None)
    if expected_last is not None and state.last_seq < expected_last:
        missing = state.last_seq + 1
        return VerifyResult(
            False, missing,
            f"seq {missing}: missing; the ledger ends at seq {state.last_seq} but the head pin says it reaches "
            f"seq {expected_last} (truncated)",
            count, state.root, _head(state),
        )
    return VerifyResult(True, state.last_seq, f"verified {count} entries", count, state.root, _head(state))


def _head(state: LedgerState) -> str | None:
    return b64url_encode(state.last_hash) if state.last_seq else None
