"""Sign requests: a signed action begun where no passkey is (the command line) and signed on a one-time page.

Pure: no I/O, time is a parameter. The command line begins an action over its device's mTLS session; the
gateway keeps a sign request naming that action and answers with two secrets:

- the **link secret**, in the fragment of ``/idwall/sign/<request id>#<secret>``: the page that knows it may
  show the action and hand back the passkey's assertion, once (the fragment never reaches a server log);
- the **poll secret**, which never leaves the command line: only it collects the assertion, then finishes
  the action itself (``actions/finish``) and so is the only one ever to see the result (code, token).

The store keeps only SHA-256 of each secret. A request belongs to the certificate and user that began it:
a page on any other session is refused, and that refusal cancels the request (the link has leaked).

States, each move a compare-and-set in the store::

    waiting ──open──> opened ──approve──> signed ──collect──> collected
       │                 │
       │                 └──decline──> declined
       └────────── open or approve from another session ──> refused
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from .encoding import sha256
from .errors import Forbidden, Gone, NotFound
from .model import SignRequest

__all__ = [
    "MAX_OPEN_PER_DEVICE",
    "REQUEST_ID_RE",
    "SECRET_RE",
    "NewSecrets",
    "UNKNOWN",
    "check_code",
    "check_live",
    "check_secret",
    "holder_of",
    "new_secrets",
    "refusal",
    "secret_hash",
    "sign_link",
]

#: sign requests a device may have open at once; beyond this, begin is refused (429) until one ends
MAX_OPEN_PER_DEVICE = 8
REQUEST_ID_RE = re.compile(r"sgn-[A-Za-z0-9_-]{22}")
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_HASH_LABEL = b"idwall/sign-secret/v1"
#: the one answer for an unknown id and a wrong secret alike, so neither can be probed
UNKNOWN = "no sign request has this link (or its secret is wrong); copy the whole link the terminal printed"


@dataclass(frozen=True)
class NewSecrets:
    """A new request's id and its two secrets (the secrets are handed out once and stored only hashed)."""

    request_id: str
    link_secret: str
    poll_secret: str


def new_secrets() -> NewSecrets:
    """A fresh request id (128 random bits) and two 256-bit secrets, base64url."""
    return NewSecrets("sgn-" + secrets.token_urlsafe(16), secrets.token_urlsafe(32), secrets.token_urlsafe(32))


def secret_hash(secret: str) -> bytes:
    """What the store keeps of a secret."""
    return sha256(_HASH_LABEL, secret.encode("utf-8"))


def sign_link(public_url: str, request_id: str, link_secret: str) -> str:
    """The page to open: the secret rides in the fragment, which browsers never send to a server."""
    return f"{public_url.rstrip('/')}/idwall/sign/{request_id}#{link_secret}"


def check_code(challenge: bytes) -> str:
    """Eight characters the terminal and the page both show, so a person sees they sign the same action."""
    return challenge[:2].hex().upper() + "-" + challenge[2:4].hex().upper()


def check_secret(request: SignRequest | None, which: Literal["link", "poll"], secret: str) -> SignRequest:
    """``request`` if ``secret`` is its link or poll secret; else the same 404 as for an unknown id."""
    if request is None or not SECRET_RE.fullmatch(secret):
        raise NotFound(UNKNOWN)
    expected = request.link_hash if which == "link" else request.poll_hash
    if not hmac.compare_digest(expected, secret_hash(secret)):
        raise NotFound(UNKNOWN)
    return request


def holder_of(request: SignRequest, *, cert_sha256: bytes | None, user_id: str) -> bool:
    """Whether a connection is the session the request began in: the same certificate and user."""
    return (cert_sha256 is not None and hmac.compare_digest(request.binding, cert_sha256)
            and request.user_id == user_id)


def check_live(request: SignRequest, *, now: float) -> None:
    """Refuse a request that is past its action's ``not_after`` (410)."""
    if request.expires_at <= now:
        raise Gone("this sign request has expired (its action's signature window passed); run the command again")


def refusal(*, user_id: str, device_id: str) -> tuple[str, Forbidden]:
    """What the terminal is told, and what the page gets, when another session opens a request's link."""
    told = (f"the signing link was opened by another session (user {user_id}, device {device_id}); "
            "the request was cancelled and nothing was signed")
    return told, Forbidden("this signing link belongs to another session: only the browser signed in with the "
                           "device certificate the command runs with may open it. The request has been cancelled.")

