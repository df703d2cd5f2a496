"""Entry schemas: the fields of the envelope, of each entry type's ``data``, of approvals and signed actions.

Each field has a check and the words of what it must be; :func:`check_fields`
refuses anything missing, extra or not as described with :class:`Reject`,
which :meth:`~idwall.audit.replay.LedgerState.apply` turns into a
:class:`~idwall.audit.replay.LedgerViolation` naming the entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


from idwall.audit.sealing import parse_time
from idwall.cose import SUPPORTED_ALGORITHMS, CoseKeyError, check_public_key
from idwall.encoding import is_b64url
from idwall.passkeys import MAX_CREDENTIAL_ID_BYTES

ENVELOPE_KEYS = frozenset({"seq", "time", "type", "actor", "subject", "data", "prev", "hash", "sig"})


class Reject(Exception):
    """One check failed; :meth:`~idwall.audit.replay.LedgerState.apply` adds the seq."""


_Check = tuple[str, Callable[[Any], bool]]


def is_int(value: Any) -> bool:
    """An integer that is not a boolean (Python's ``bool`` is an ``int``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_instant(value: Any) -> bool:
    if is_int(value):
        return value >= 0
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def instant(value: int | str) -> float:
    """Unix seconds of a value that passed the ``_INSTANT`` check."""
    return float(value) if isinstance(value, int) else parse_time(value)


_ID: _Check = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
_STR: _Check = ("a string", lambda v: isinstance(v, str))
_BOOL: _Check = ("a boolean", lambda v: isinstance(v, bool))
_INT: _Check = ("an integer", is_int)
_COUNT: _Check = ("an integer from 0 to 2^32-1", lambda v: is_int(v) and 0 <= v < 2**32)
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
_OPT_ID: _Check = ("a non-empty string or null", lambda v: v is None or (isinstance(v, str) and v != ""))
_SCOPES: _Check = (
    "a non-empty list of distinct scopes from kill, read, incident",
    lambda v: isinstance(v, list) and bool(v) and len(set(map(str, v))) == len(v)
    and all(i in ("kill", "read", "incident") for i in v),
)
_OPT_SECONDS: _Check = ("a positive integer (seconds) or null", lambda v: v is None or (is_int(v) and v > 0))
_SEQS: _Check = ("a list of positive integers (ledger seqs)", lambda v: isinstance(v, list) and all(is_int(i) and i > 0 for i in v))
_STAGE_NUMBER: _Check = ("an integer from 1", lambda v: is_int(v) and v >= 1)
_TARGETS: _Check = (
    "an object {users: [...], devices: [...]} of strings",
    lambda v: isinstance(v, dict) and set(v) == {"users", "devices"}
    and all(isinstance(v[k], list) and all(isinstance(i, str) for i in v[k]) for k in v),
)


def _one_of(*choices: Any) -> _Check:
    return (" or ".join(repr(c) for c in choices), lambda v: any(v == c and type(v) is type(c) for c in choices))


USER_FIELDS: dict[str, _Check] = {"user": _ID, "name": _STR, "email": _STR, "groups": _STRS, "admin": _BOOL}
_KEY_FIELDS: dict[str, _Check] = {
    "device_id": _ID,
    "device_name": _STR,
    "credential_id": _CRED_ID,
    "public_key": _B64,
    "alg": _INT,
}

DATA_SCHEMAS: dict[str, dict[str, _Check]] = {
    "bootstrap": {
        **USER_FIELDS,
        **_KEY_FIELDS,
        "cert_sha256": _HASH32,
        "rp_id": _ID,
        "origins": _ORIGINS,
        "user_verification": _one_of("required", "preferred", "discouraged"),
        "ledger_key": _OBJ,
    },
    "invite.create": {"invite_id": _HASH32, **USER_FIELDS, "manager": _OPT_ID, "expires_at": _INSTANT},
    "device.enroll": {
        **USER_FIELDS,
        **_KEY_FIELDS,
        "cert_sha256": _OPT_HASH32,
        "invite_id": _OPT_HASH32,
        "enrollment_id": _ID,
        "status": _one_of("active", "pending_approval"),
    },
    "device.approve": {"device_id": _ID, "enrollment_id": _ID, "status": _one_of("active")},
    "device.recover": {"device_id": _ID, "enrollment_id": _ID, "status": _one_of("active")},
    "device.reject": {"device_id": _ID, "enrollment_id": _ID, "status": _one_of("revoked")},
    "device.renew": {"device_id": _ID, "cert_sha256": _HASH32, "not_after": _INSTANT},
    "user.set_manager": {"user": _ID, "manager": _OPT_ID},
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
        # every id cut, in the entry itself (kills written before KILL_COUNTED)
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
    "incident.start": {"incident_id": _ID, "playbook": _ID, "reason": _STR, "targets": _TARGETS, "stages": _COUNT},
    "incident.stage": {
        "incident_id": _ID,
        "number": _STAGE_NUMBER,
        "part": _one_of("privileged", "others", "target"),
        "steps": _STRS,
        "users": _STRS,
        "devices": _STRS,
        "kills": _SEQS,
        "devices_reapproval": _STRS,
        "credentials_suspect": _STRS,
        "tokens_revoked": _STRS,
        "fresh_auth": _OPT_SECONDS,
        "block_code_enrollment": _BOOL,
    },
    "incident.end": {"incident_id": _ID},
}

_ACTION_BASE: dict[str, _Check] = {"type": _ID, "actor": _ID, "nonce": _NONCE, "not_after": _INT}
_ACTION_FIELDS: dict[str, dict[str, _Check]] = {
    "invite.create": {**USER_FIELDS, "manager": _OPT_ID},
    "device.approve": {"device_id": _ID},
    "device.reject": {"device_id": _ID},
    "device.recover": {"enrollment_id": _ID},
    "device.renew": {"device_id": _ID, "csr_pem": _STR},
    "user.set_manager": {"user": _ID, "manager": _OPT_ID},
    "admin.grant": {"user": _ID},
    "admin.revoke": {"user": _ID},
    "token.create": {"name": _STR, "scopes": _SCOPES, "ttl": _TTL},
    "token.revoke": {"token_id": _ID},
    "incident.start": {"playbook": _ID, "reason": _STR, "dry_run": _BOOL, "targets": _TARGETS},
}
_ASSERTION_FIELDS: dict[str, _Check] = {
    "credential_id": _CRED_ID,
    "authenticator_data": _B64,
    "client_data_json": _B64,
    "signature": _B64,
}
ACTION_SCHEMAS: dict[str, dict[str, _Check]] = {
    type_: {**_ACTION_BASE, **fields} for type_, fields in _ACTION_FIELDS.items()
}
ACTION_APPROVAL: dict[str, _Check] = {**_ASSERTION_FIELDS, "action": _OBJ}
LOGIN_APPROVAL: dict[str, _Check] = {**_ASSERTION_FIELDS, "nonce": _NONCE}
#: fields an entry written before they existed lacks (absent reads as null): invites before managers
#: a kill as the store writes it now: how many sessions and devices it cut and a digest of their sorted ids
#: (audit.ids_digest), the ids themselves kept in the store; a kill with ``sessions_revoked`` is read with this
KILL_COUNTED: dict[str, _Check] = {
    **{name: rule for name, rule in DATA_SCHEMAS["kill"].items() if name not in ("sessions", "devices")},
    "sessions_revoked": _COUNT,
    "sessions_sha256": _HASH32,
    "devices_revoked": _COUNT,
    "devices_sha256": _HASH32,
    # the passkeys revoked with a lost device (kills written before them do not say; the replay derives them)
    "passkeys_revoked": _COUNT,
    "passkeys_sha256": _HASH32,
}
OPTIONAL_DATA: dict[str, frozenset[str]] = {"invite.create": frozenset({"manager"}),
                                            "kill": frozenset({"passkeys_revoked", "passkeys_sha256"})}
OPTIONAL_ACTION: dict[str, frozenset[str]] = {"invite.create": frozenset({"manager"})}
#: an incident started by an automation token (scope incident) carries no approval; by an admin it must
APPROVAL_REQUIRED = frozenset({*_ACTION_FIELDS, "session.login"}) - {"token.revoke", "incident.start"}
APPROVAL_OPTIONAL = frozenset({"token.revoke", "incident.start"})
SYSTEM_TYPES = frozenset({"signcount.anomaly", "key.rotate"})


def check_fields(value: Any, schema: Mapping[str, _Check], where: str,
                 optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``value`` if it is an object with exactly the fields of ``schema``, each passing its check; ``where`` names it.

    A field in ``optional`` may be absent (entries written before it existed); present, it is checked.
    """
    if not isinstance(value, dict):
        raise Reject(f"{where} must be an object, got {type(value).__name__}")
    missing = [name for name in schema if name not in value and name not in optional]
    if missing:
        raise Reject(f"{where} is missing {', '.join(missing)}")
    extra = sorted(set(value) - set(schema))
    if extra:
        raise Reject(f"{where} has unexpected field(s) {', '.join(extra)}; expected exactly {', '.join(schema)}")
    for name, (description, ok) in schema.items():
        if name in value and not ok(value[name]):
            raise Reject(f"{where}.{name} must be {description}, got {show(value[name])}")
    return value


def show(value: Any) -> str:
    """A value for a reason text: JSON, at most 80 characters."""
    text = json.dumps(value, ensure_ascii=True) if _is_jsonable(value) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def check_cose_key(public_key: bytes, alg: int) -> None:
    """Refuse a registered COSE key that :func:`idwall.cose.check_public_key` refuses, or of another ``alg``."""
    if alg not in SUPPORTED_ALGORITHMS:
        raise Reject(f"alg {alg} is not one of ES256 (-7), EdDSA (-8), RS256 (-257)")
    try:
        key_alg = check_public_key(public_key)
    except CoseKeyError as exc:
        raise Reject(f"public_key is not a usable COSE key: {exc}") from None
    if key_alg != alg:
        raise Reject(f"public_key is a COSE key for alg {key_alg}, but alg says {alg}")
