"""Signed actions and login records: validation, the canonical action, roles, ledger drafts.

Pure: no I/O, time is a parameter. A signed action is what a passkey signs
(DESIGN.md "Signed actions"): the fields the client asked for, checked per
type with nothing extra allowed, plus ``actor`` (the signer), ``nonce``
(base64url of 32 random bytes) and ``not_after`` (unix seconds). Its challenge
is ``action_challenge(action)``, so the assertion kept in the ledger proves
exactly this action and nothing else.

Fields are refused rather than ignored when unknown: the ledger verifier
checks an action's fields exactly, and a field the gateway ignored but the
signer saw would make the signature say more than the effect. An optional
field a client leaves out (``invite.create``'s ``manager``) is filled in with
its default, so the action shown and signed always says it.

Roles: every type but ``device.recover`` and ``device.renew`` (the user's own
business) needs an administrator; ``device.approve`` and ``device.reject`` may
also be signed by the device owner's manager when ``devices.approval`` is
``manager`` (:func:`manages`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from .encoding import EncodingError, b64url_decode, b64url_encode
from .enrollment import USER_ID_RE
from .errors import BadRequest, Forbidden
from .pki import check_csr
from .jsonbody import json_type
from .model import LedgerDraft, Session
from .units import parse_duration

__all__ = [
    "ACTION_TYPES",
    "ADMIN_ACTIONS",
    "MANAGER_ACTIONS",
    "MAX_TOKEN_TTL",
    "TOKEN_SCOPES",
    "action_draft",
    "anomaly_draft",
    "approval_of",
    "build_action",
    "check_role",
    "claimed_challenge",
    "incident_reason",
    "incident_targets",
    "login_draft",
    "logout_draft",
    "manages",
    "token_ttl",
    "validate_action",
]

TOKEN_SCOPES = ("kill", "read", "incident")
MAX_TOKEN_TTL = 365 * 24 * 3600
MAX_NAME = 128
MAX_TOKEN_NAME = 100  # idwall.tokens refuses longer names
MAX_EMAIL = 254
MAX_GROUPS = 64
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_PLAYBOOK_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as idwall.config.incident names them


def _text(value: Any, name: str, *, limit: int, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"action.{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(f"action.{name} is {len(value)} characters, at most {limit} allowed")
    if not value and not allow_empty:
        raise BadRequest(f"action.{name} must not be empty")
    if value and not value.isprintable():
        raise BadRequest(f"action.{name} must not hold control characters")
    return value


def _user(value: Any, name: str = "user") -> str:
    if not isinstance(value, str) or not USER_ID_RE.fullmatch(value):
        shown = repr(value)[:70] if isinstance(value, str) else type(value).__name__
        raise BadRequest(f"action.{name} must match ^[a-z0-9][a-z0-9._-]{{0,63}}$, got {shown}")
    return value


def _ident(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise BadRequest(f"action.{name} must be an id of 1-128 characters of [A-Za-z0-9._-]")
    return value


def _manager(value: Any) -> str | None:
    return None if value is None else _user(value, "manager")


def _csr(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"action.csr_pem must be a PEM string, got {type(value).__name__}")
    check_csr(value)
    return value


def _email(value: Any) -> str:
    email = _text(value, "email", limit=MAX_EMAIL, allow_empty=True)
    if email and (email.count("@") != 1 or " " in email or email.startswith("@") or email.endswith("@")):
        raise BadRequest(f"action.email must be an address such as alice@example.com (or empty), got {email[:70]!r}")
    return email


def _groups(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise BadRequest(f"action.groups must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_GROUPS:
        raise BadRequest(f"action.groups has {len(value)} entries, at most {MAX_GROUPS} allowed")
    for item in value:
        if not isinstance(item, str) or not _GROUP_RE.fullmatch(item):
            shown = repr(item)[:70] if isinstance(item, str) else type(item).__name__
            raise BadRequest(f"action.groups entries must be 1-64 characters of [A-Za-z0-9._:-], got {shown}")
    if len(set(value)) != len(value):
        raise BadRequest("action.groups lists a group twice")
    return list(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"action.{name} must be true or false, got {type(value).__name__}")
    return value


def _scopes(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"action.scopes must be a non-empty list drawn from {', '.join(TOKEN_SCOPES)}")
    if any(s not in TOKEN_SCOPES for s in value) or len(set(value)) != len(value):
        raise BadRequest(f"action.scopes must be distinct values from {', '.join(TOKEN_SCOPES)}, "
                         f"got {json.dumps(value)[:80]}")
    return list(value)


MAX_REASON = 500
MAX_TARGETS = 1000


def _playbook(value: Any) -> str:
    if not isinstance(value, str) or not _PLAYBOOK_RE.fullmatch(value):
        shown = repr(value)[:70] if isinstance(value, str) else type(value).__name__
        raise BadRequest(f"action.playbook must be a playbook name (lower-case letters, digits, dashes), got {shown}")
    return value


def incident_targets(value: Any, where: str = "action.targets") -> dict[str, list[str]]:
    """``{users: [...], devices: [...]}`` (either may be left out): what a ``target`` stage acts on."""
    if value is None:
        value = {}
    if not isinstance(value, dict) or set(value) - {"users", "devices"}:
        raise BadRequest(f"{where} must be an object with users and/or devices (lists of ids)")
    out: dict[str, list[str]] = {}
    for key, check in (("users", _user), ("devices", lambda v: _ident(v, "targets.devices"))):
        items = value.get(key, [])
        if not isinstance(items, list) or len(items) > MAX_TARGETS:
            raise BadRequest(f"{where}.{key} must be a list of at most {MAX_TARGETS} ids")
        checked = [check(item) for item in items]
        if len(set(checked)) != len(checked):
            raise BadRequest(f"{where}.{key} lists an id twice")
        out[key] = checked
    return out


def incident_reason(value: Any, where: str = "action.reason") -> str:
    """Why the incident runs (it goes into every kill's ledger entry): 1-500 printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} is required: say why, it goes into the audit ledger")
    if len(value) > MAX_REASON or not value.isprintable():
        raise BadRequest(f"{where} must be at most {MAX_REASON} printable characters")
    return value


def token_ttl(value: Any) -> int:
    """A token lifetime in seconds from a duration such as ``"1h"``: positive, at most a year."""
    if not isinstance(value, str):
        raise BadRequest(f"action.ttl must be a duration string such as \"1h\", got {type(value).__name__}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise BadRequest(f"action.ttl: {exc}") from None
    if not 0 < seconds <= MAX_TOKEN_TTL:
        raise BadRequest(f"action.ttl must be more than 0 and at most 365d, got {value!r}")
    return seconds


def _ttl_field(value: Any) -> str:
    token_ttl(value)
    return str(value)


_FIELDS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "invite.create": {"user": _user, "name": lambda v: _text(v, "name", limit=MAX_NAME, allow_empty=False),
                      "email": _email, "groups": _groups, "admin": lambda v: _bool(v, "admin"),
                      "manager": _manager},
    "admin.grant": {"user": _user},
    "admin.revoke": {"user": _user},
    "token.create": {"name": lambda v: _text(v, "name", limit=MAX_TOKEN_NAME, allow_empty=False), "scopes": _scopes,
                     "ttl": lambda v: _ttl_field(v)},
    "device.approve": {"device_id": lambda v: _ident(v, "device_id")},
    "device.reject": {"device_id": lambda v: _ident(v, "device_id")},
    "device.recover": {"enrollment_id": lambda v: _ident(v, "enrollment_id")},
    "device.renew": {"device_id": lambda v: _ident(v, "device_id"), "csr_pem": _csr},
    "user.set_manager": {"user": _user, "manager": _manager},
    "incident.start": {"playbook": _playbook, "reason": incident_reason, "dry_run": lambda v: _bool(v, "dry_run"),
                       "targets": incident_targets},
}
#: fields a client may leave out, and what they then are (clients written before the field existed keep working)
_DEFAULTS: dict[str, dict[str, Any]] = {"invite.create": {"manager": None},
                                        "incident.start": {"dry_run": False, "targets": {"users": [], "devices": []}}}
ACTION_TYPES = tuple(_FIELDS)
#: who may sign what: everything but the user's own business (recovery, renewal) needs an administrator
ADMIN_ACTIONS = frozenset(ACTION_TYPES) - {"device.recover", "device.renew"}
#: what the device owner's manager may sign instead of an administrator, under ``devices.approval: manager``
MANAGER_ACTIONS = frozenset({"device.approve", "device.reject"})


def validate_action(raw: Any) -> dict[str, Any]:
    """``{type, ...fields}`` checked for its type: every field present and valid, nothing else.

    Raises :class:`BadRequest` naming the first problem.
    """
    if not isinstance(raw, dict):
        raise BadRequest(f"action must be an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        # a list or an object cannot even be looked up (unhashable): say what arrived instead
        shown = repr(kind[:60]) if isinstance(kind, str) else json_type(kind)
        raise BadRequest(f"action.type must be one of {', '.join(ACTION_TYPES)}; got {shown}")
    schema = _FIELDS[kind]
    extra = sorted(set(raw) - set(schema) - {"type"})
    if extra:
        raise BadRequest(f"action {kind} has unexpected field(s) {', '.join(extra)[:200]}; "
                         f"it takes exactly {', '.join(schema)}")
    raw = {**_DEFAULTS.get(kind, {}), **raw}
    missing = [name for name in schema if name not in raw]
    if missing:
        raise BadRequest(f"action {kind} is missing {', '.join(missing)}")
    action = {"type": kind, **{name: check(raw[name]) for name, check in schema.items()}}
    if "manager" in action and action["manager"] == action["user"]:
        raise BadRequest(f"action.manager must be another user than action.user; {action['user']} cannot be "
                         "their own manager")
    return action


def build_action(fields: dict[str, Any], *, actor: str, nonce: bytes, now: float, timeout: int) -> dict[str, Any]:
    """The full action a passkey signs: the validated fields plus ``actor``, ``nonce`` and ``not_after``."""
    if len(nonce) != 32:
        raise ValueError(f"nonce must be 32 bytes, got {len(nonce)}")
    return {**fields, "actor": actor, "nonce": b64url_encode(nonce), "not_after": int(now) + timeout}


def manages(*, approval: str, owner_manager: str | None, signer: str) -> bool:
    """Whether ``signer`` may approve or reject a device as its owner's manager: only with
    ``devices.approval: manager``, and only while the owner's manager (``owner_manager``) is the signer."""
    return approval == "manager" and owner_manager is not None and owner_manager == signer


def check_role(action: dict[str, Any], *, signer_admin: bool, signer_manages_owner: bool = False) -> None:
    """Refuse (403) an action the signer's role does not allow.

    ``signer_manages_owner`` is :func:`manages` for the device a ``device.approve``/``device.reject`` names.
    """
    kind = action["type"]
    if kind not in ADMIN_ACTIONS or signer_admin:
        return
    if kind in MANAGER_ACTIONS:
        if signer_manages_owner:
            return
        raise Forbidden(f"{kind} must be signed by an administrator or, with devices.approval: manager, by the "
                        f"device owner's manager; {action['actor']} is neither")
    raise Forbidden(f"{kind} must be signed by an administrator; {action['actor']} is not one")


def claimed_challenge(credential: Any) -> bytes:
    """The challenge a WebAuthn response says it answers, read from its ``clientDataJSON``.

    Only used to find the ceremony; verification later checks the same bytes
    against what the gateway derived. Raises :class:`BadRequest` on anything malformed.
    """
    if not isinstance(credential, dict):
        raise BadRequest(f"credential must be an object, got {type(credential).__name__}")
    response = credential.get("response")
    if not isinstance(response, dict):
        raise BadRequest("credential.response must be an object")
    raw = response.get("clientDataJSON")
    if not isinstance(raw, str):
        raise BadRequest("credential.response.clientDataJSON must be a base64url string")
    try:
        client_data = json.loads(b64url_decode(raw).decode("utf-8"))
    except (EncodingError, UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("credential.response.clientDataJSON is not base64url of a UTF-8 JSON object") from None
    if not isinstance(client_data, dict) or not isinstance(client_data.get("challenge"), str):
        raise BadRequest("credential.response.clientDataJSON has no challenge string")
    try:
        challenge = b64url_decode(client_data["challenge"])
    except EncodingError:
        raise BadRequest("clientDataJSON.challenge is not base64url") from None
    if len(challenge) != 32:
        raise BadRequest(f"clientDataJSON.challenge is {len(challenge)} bytes; IDWall challenges are 32")
    return challenge


def action_draft(action: dict[str, Any], *, approval: dict[str, str], subject: str,
                 data: dict[str, Any]) -> LedgerDraft:
    """The ledger entry of a performed action: its effect in ``data`` and the signed action in ``approval``."""
    return LedgerDraft(action["type"], action["actor"], subject, data, {**approval, "action": action})


def approval_of(credential: dict[str, Any], *, credential_id: bytes) -> dict[str, str]:
    """The assertion part of a ledger ``approval``, re-encoded from the decoded bytes (one spelling only).

    Call after verification succeeded: the fields are known to be present and base64url.
    """
    response = credential["response"]
    return {
        "credential_id": b64url_encode(credential_id),
        "authenticator_data": b64url_encode(b64url_decode(response["authenticatorData"])),
        "client_data_json": b64url_encode(b64url_decode(response["clientDataJSON"])),
        "signature": b64url_encode(b64url_decode(response["signature"])),
    }


def login_draft(*, session: Session, approval: dict[str, str], nonce: bytes, sign_count: int) -> LedgerDraft:
    """The ``session.login`` entry: the assertion proves ``login_challenge(nonce, cert)``."""
    nonce_text = b64url_encode(nonce)
    return LedgerDraft(
        "session.login", session.user_id, session.id,
        {"user": session.user_id, "device_id": session.device_id,
         "credential_id": b64url_encode(session.credential_id), "cert_sha256": b64url_encode(session.cert_sha256),
         "nonce": nonce_text, "sign_count": sign_count},
        {**approval, "nonce": nonce_text},
    )


def logout_draft(session: Session) -> LedgerDraft:
    """The ``session.logout`` entry."""
    return LedgerDraft("session.logout", session.user_id, session.id,
                       {"user": session.user_id, "device_id": session.device_id})


def anomaly_draft(*, user_id: str, device_id: str, credential_id: bytes, stored: int, received: int) -> LedgerDraft:
    """The ``signcount.anomaly`` entry: a validly signed assertion whose counter did not go up."""
    cid = b64url_encode(credential_id)
    return LedgerDraft("signcount.anomaly", "system", cid,
                       {"user": user_id, "device_id": device_id, "credential_id": cid,
                        "stored": stored, "received": received})
