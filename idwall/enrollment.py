"""Enrollment rules: invite codes, who may begin an enrollment, and what a finished one records.

Pure: no I/O, time is a parameter. The web handlers (``idwall.web.api_enroll``)
fetch the records, call these functions, and hand the results to the store.

- An invite code is ``secrets.token_urlsafe(24)`` (192 bits); the store keeps
  only ``b64url(SHA-256(code))``, so a stolen database yields no usable code.
- An unknown code and a used code get the same answer, so the answer never
  says whether a guessed code ever existed.
- The bootstrap invite makes the first administrator and nothing else: once an
  admin exists it is refused even while unused.
- Begin needs no client certificate, so what it stores is bounded: at most
  :data:`MAX_OPEN_ENROLLMENTS` unexpired begun enrollments per code (or, for
  self-service, per user), at most :data:`MAX_PENDING_DEVICES` self-service
  devices of a user waiting for approval, and begun enrollments are forgotten
  :data:`KEEP_EXPIRED_ENROLLMENT` seconds after they expired. Someone who knows
  a user id can thereby hold up that user's self-service enrollments (not
  invited ones) until an administrator revokes the waiting devices; that is the
  price of a store that an anonymous client cannot fill.
- A self-service enrollment (``user`` instead of ``code``) is always
  ``pending_approval``; an invited one is too when ``devices.approval`` is not
  ``none``. Only the bootstrap is active at once regardless of policy.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from .config import WebAuthnConfig
from .encoding import b64url_encode, sha256
from .errors import BadRequest, Conflict, Gone, NotFound
from .passkeys import VerifiedRegistration
from .model import Enrollment, Invite, LedgerDraft

__all__ = [
    "INVITE_TTL",
    "KEEP_EXPIRED_ENROLLMENT",
    "MAX_CODE_CHARS",
    "MAX_DEVICE_NAME",
    "MAX_OPEN_ENROLLMENTS",
    "MAX_PENDING_DEVICES",
    "NewCode",
    "check_code",
    "check_device_name",
    "check_invite",
    "check_user_id",
    "enrollment_draft",
    "initial_status",
    "invite_id_of",
    "new_device_id",
    "new_enrollment_id",
    "new_invite_code",
    "public_status",
    "user_handle",
]

INVITE_TTL = 24 * 3600
MAX_DEVICE_NAME = 64
MAX_CODE_CHARS = 256
USER_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: enrollments begun and not yet expired, per invite code or (self-service) per user: begin needs no
#: client certificate, so this is what bounds the rows an anonymous client can make the store keep
MAX_OPEN_ENROLLMENTS = 5
#: self-service devices waiting for approval, per user (each one costs a ledger entry that stays forever)
MAX_PENDING_DEVICES = 3
#: how long an expired, never finished enrollment is kept (so the polling CLI can still read "expired")
KEEP_EXPIRED_ENROLLMENT = 3600
UNKNOWN_CODE = "unknown or already used enrollment code; ask an administrator for a new invite"


@dataclass(frozen=True)
class NewCode:
    """A fresh invite code (shown once) and the id it is stored under."""

    code: str
    invite_id: str


def invite_id_of(code: str) -> str:
    """The id an invite code is stored under: ``b64url(SHA-256(code))``."""
    return b64url_encode(sha256(code.encode("utf-8")))


def new_invite_code() -> NewCode:
    """A new single-use enrollment code of 192 random bits."""
    code = secrets.token_urlsafe(24)
    return NewCode(code, invite_id_of(code))


def new_enrollment_id() -> str:
    """An unguessable enrollment id: it names the ceremony in URLs the device polls."""
    return "enr-" + secrets.token_urlsafe(18)


def new_device_id() -> str:
    """A device id: ``dev-`` and 64 random bits (it appears in certificates and logs, it is no secret)."""
    return "dev-" + secrets.token_hex(8)


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle for ``user_id``: stable, opaque, 16 bytes (no personal data in it)."""
    return sha256(b"idwall/user-handle/v1", user_id.encode("utf-8"))[:16]


def check_user_id(value: Any, *, field: str = "user") -> str:
    """A user id: 1-64 characters of ``[a-z0-9._-]``, starting with a letter or digit."""
    if not isinstance(value, str) or not USER_ID_RE.fullmatch(value):
        shown = repr(value)[:70] if isinstance(value, str) else type(value).__name__
        raise BadRequest(f"{field} must be 1-64 characters of a-z, 0-9, '.', '_', '-' starting with a letter "
                         f"or digit; got {shown}")
    return value


def check_device_name(value: Any) -> str:
    """A device name: 1-64 printable characters, not only white space."""
    if not isinstance(value, str):
        raise BadRequest(f"device_name must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_DEVICE_NAME:
        raise BadRequest(f"device_name must be 1-{MAX_DEVICE_NAME} characters, got {len(value)}")
    if not value.isprintable() or not value.strip():
        raise BadRequest("device_name must be printable characters (no control characters, not only spaces)")
    return value


def check_code(value: Any) -> str:
    """An enrollment code as typed: a non-empty string of sane length (its hash is what is looked up)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("code must be a non-empty string")
    if len(value) > MAX_CODE_CHARS:
        raise BadRequest(f"code is {len(value)} characters; codes are at most {MAX_CODE_CHARS}")
    return value.strip()


def check_invite(invite: Invite | None, *, now: float, admin_exists: bool) -> Invite:
    """The invite a code names, if it can start an enrollment now.

    Unknown and used codes get the same :class:`NotFound`; an expired one gets
    :class:`Gone`; the bootstrap invite once an admin exists gets :class:`Conflict`.
    """
    if invite is None or invite.used_at is not None:
        raise NotFound(UNKNOWN_CODE)
    if invite.expires_at <= now:
        raise Gone("this enrollment code has expired; ask an administrator for a new invite")
    if invite.bootstrap and admin_exists:
        raise Conflict("the first administrator is already enrolled; the bootstrap code is no longer valid, "
                       "ask an administrator for an invite")
    return invite


def initial_status(*, bootstrap: bool, invited: bool, approval: str) -> str:
    """``active`` or ``pending_approval`` for a device that just finished enrolling."""
    if bootstrap:
        return "active"
    if not invited or approval != "none":
        return "pending_approval"
    return "active"


def public_status(enrollment: Enrollment, *, now: float) -> str:
    """What ``GET /idwall/api/enroll/{id}`` reports: begun, pending_approval, active, rejected or expired.

    A rejection (a signed ``device.reject``) is told as such, so the waiting ``idwall device enroll`` stops
    and says so instead of waiting for an approval that will not come.
    """
    if enrollment.status == "begun":
        return "expired" if enrollment.expires_at <= now else "begun"
    return enrollment.status


def enrollment_draft(*, enrollment: Enrollment, device_id: str, registration: VerifiedRegistration,
                     cert_sha256: bytes | None, status: str, webauthn: WebAuthnConfig,
                     ledger_key_jwk: dict[str, str]) -> LedgerDraft:
    """The ledger entry of a finished enrollment: ``bootstrap`` for the first admin, else ``device.enroll``.

    Shapes as docs/architecture.md "Ledger entries"; the bootstrap entry also
    pins the relying party (RP ID, origins, UV policy) and the ledger key that
    every later entry is verified against.
    """
    data: dict[str, Any] = {
        "user": enrollment.user_id,
        "name": enrollment.name,
        "email": enrollment.email,
        "groups": list(enrollment.groups),
        "admin": enrollment.admin,
        "device_id": device_id,
        "device_name": enrollment.device_name,
        "credential_id": b64url_encode(registration.credential_id),
        "public_key": b64url_encode(registration.public_key),
        "alg": registration.alg,
        "cert_sha256": b64url_encode(cert_sha256) if cert_sha256 is not None else None,
    }
    if enrollment.bootstrap:
        if cert_sha256 is None or status != "active":
            raise ValueError("the bootstrap enrollment is always active with a certificate")
        data.update(rp_id=webauthn.rp_id, origins=list(webauthn.origins),
                    user_verification=webauthn.user_verification, ledger_key=ledger_key_jwk)
        return LedgerDraft("bootstrap", enrollment.user_id, enrollment.user_id, data)
    data.update(invite_id=enrollment.invite_id, enrollment_id=enrollment.id, status=status)
    return LedgerDraft("device.enroll", enrollment.user_id, device_id, data)
