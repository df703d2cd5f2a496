"""Automation tokens: the bearer credentials a SOAR playbook uses to pull the kill switch.

DESIGN.md principle 3: granting access needs a passkey, removing it can be
automated. A token therefore only ever carries the scopes ``kill``, ``read``
and ``incident``, never anything that grants access.

Scopes do not imply each other:

    kill   POST /idwall/api/admin/kill                      (take access away)
    read   GET  /idwall/api/admin/sessions, audit, kills,   (look, change nothing)
           tokens, /idwall/metrics
    incident POST /idwall/api/admin/incidents, .../ID/end,   (run a playbook: every step
           .../ID/resume; GET /idwall/api/admin/incidents   only takes access away)

A playbook that must list sessions before cutting one asks for both scopes.
Keeping ``kill`` narrow means a leaked kill token reveals nothing about who is
online, and a leaked read token cannot cut anyone.

Only the SHA-256 of a token is stored. The token itself is shown once, when
it is created, and never logged. Everything here is pure: time is ``now``.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

from .encoding import b64url_encode, sha256
from .errors import BadRequest, Forbidden, Unauthenticated
from .model import Token

SCOPES = ("kill", "read", "incident")
#: tokens start with this so secret scanners (and people) recognise them
PREFIX = "idw_"
SECRET_BYTES = 32
#: no token we issue is longer; longer values are refused before any lookup
MAX_TOKEN_LENGTH = 128
#: RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 9110 §11.1: the scheme is case-insensitive; one or more spaces before the credentials.
_BEARER = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*) +(\S+)")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


class InvalidToken(Unauthenticated):
    """The bearer token is malformed, unknown, expired or revoked (one answer for all: no oracle)."""

    slug, title = "invalid-token", "Invalid token"


class InsufficientScope(Forbidden):
    """The token is valid but does not carry the scope this endpoint needs."""

    slug, title = "insufficient-scope", "Insufficient scope"


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``secret`` is shown to its creator once; ``record`` (hash only) goes to the store."""

    secret: str
    record: Token


def token_hash(secret: str) -> bytes:
    """What the store keeps and looks tokens up by: SHA-256 of the token's UTF-8 text."""
    return sha256(secret.encode("utf-8"))


def check_scopes(scopes: object) -> tuple[str, ...]:
    """A token's scopes as a sorted tuple; raises BadRequest unless a non-empty list drawn from SCOPES."""
    if not isinstance(scopes, (list, tuple)) or not scopes:
        raise BadRequest(f"scopes must be a non-empty list drawn from {list(SCOPES)}, got {scopes!r}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise BadRequest(f"unknown token scope(s) {unknown!r}; valid: {list(SCOPES)}")
    if len(set(scopes)) != len(scopes):
        raise BadRequest(f"scopes must not repeat, got {list(scopes)!r}")
    return tuple(sorted(scopes))


def new_token(*, name: str, scopes: Iterable[str], ttl: int, created_by: str, now: float) -> IssuedToken:
    """Make a token: ``idw_`` + 32 random bytes (base64url), id ``tok-`` + 8 random bytes in hex.

    ``expires_at`` is whole unix seconds (it goes into the ledger, whose canonical JSON has no floats).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest("token name must be 1 to 100 characters without control characters")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise BadRequest(f"token ttl must be a positive number of seconds, got {ttl!r}")
    checked = check_scopes(list(scopes))
    secret = PREFIX + b64url_encode(secrets.token_bytes(SECRET_BYTES))
    record = Token(id="tok-" + secrets.token_hex(8), name=name, hash=token_hash(secret), scopes=checked,
                   created_by=created_by, created_at=now, expires_at=int(now) + ttl)
    return IssuedToken(secret, record)


def parse_authorization(values: list[str]) -> str | None:
    """The bearer token in the ``Authorization`` header values, or None when there is none.

    Raises :class:`InvalidToken` for anything else: another scheme, several
    headers, an empty or over-long token, characters outside RFC 6750's b64token.
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidToken(f"expected one Authorization header, got {len(values)}")
    match = _BEARER.fullmatch(values[0].strip(" "))
    if match is None:
        raise InvalidToken("expected 'Authorization: Bearer <token>'")
    scheme, credentials = match.groups()
    if scheme.lower() != "bearer":
        raise InvalidToken(f"expected the Bearer scheme, got {scheme[:20]!r}")
    if len(credentials) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"the bearer token is longer than {MAX_TOKEN_LENGTH} characters")
    if not _B64TOKEN.fullmatch(credentials):
        raise InvalidToken("the bearer token has characters RFC 6750 does not allow")
    return credentials


def authorize(stored: Token | None, *, secret: str, scope: str, now: float) -> Token:
    """Check a presented token against the record its hash found; return the record.

    Unknown, expired (``now >= expires_at``) and revoked tokens all raise
    :class:`InvalidToken` with the same detail, so the answer does not tell an
    attacker which one a stolen value is. A valid token without ``scope``
    raises :class:`InsufficientScope`.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    # The lookup was by hash already; comparing again in constant time keeps
    # the check correct even for a store whose lookup is not exact.
    if stored is None or not hmac.compare_digest(stored.hash, token_hash(secret)):
        raise InvalidToken("the bearer token is unknown, expired or revoked", log_detail="unknown token")
    if stored.revoked_at is not None or now >= stored.expires_at:
        raise InvalidToken("the bearer token is unknown, expired or revoked",
                           log_detail=f"token {stored.id} is {'revoked' if stored.revoked_at else 'expired'}")
    if scope not in stored.scopes:
        raise InsufficientScope(f"this token has scopes {list(stored.scopes)}; this endpoint needs {scope!r}")
    return stored


def status(token: Token, *, now: float) -> str:
    """``"revoked"``, ``"expired"`` or ``"active"``."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if now >= token.expires_at else "active"


def public_view(token: Token, *, now: float) -> dict[str, Any]:
    """What the tokens list shows: everything but the hash."""
    return {"id": token.id, "name": token.name, "scopes": list(token.scopes), "created_by": token.created_by,
            "created_at": token.created_at, "expires_at": token.expires_at, "revoked_at": token.revoked_at,
            "status": status(token, now=now)}
