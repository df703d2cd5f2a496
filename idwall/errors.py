"""The errors IDWall answers with, one tree for the whole API.

    IDWallError                      500  internal (never carries a stack trace to the client)
    ├── BadRequest                   400  malformed JSON, base64url, CBOR, missing or mistyped field
    │   └── PayloadTooLarge          413  body over the API limit
    ├── Unauthenticated              401  no valid session for this connection (carries login_url)
    ├── NoClientCertificate          403  connection without a device certificate (points at enrollment)
    ├── Forbidden                    403  policy denial, missing role, wrong token scope
    ├── NotFound                     404  unknown enrollment, action, route
    ├── Conflict                     409  credential already registered, challenge already used
    ├── Gone                         410  expired challenge, invite code or enrollment
    ├── WebAuthnRejected             400  the passkey response failed verification
    ├── UpstreamError                502  upstream refused or broke the connection
    ├── UpstreamTimeout              504  upstream too slow
    └── Unavailable                  503  store down: fail closed

Each class maps to exactly one problem+json ``type`` (RFC 9457). ``detail`` is
for the client and must never hold secrets; ``log_detail`` goes to the log only.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://idwall.dev/problems/"


class IDWallError(Exception):
    """Root of every error that is answered as problem+json."""

    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", *, log_detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.log_detail = log_detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body for this error."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class BadRequest(IDWallError):
    status, slug, title = 400, "bad-request", "Bad request"


class PayloadTooLarge(BadRequest):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class Unauthenticated(IDWallError):
    status, slug, title = 401, "login-required", "Login required"


class NoClientCertificate(IDWallError):
    status, slug, title = 403, "no-client-certificate", "Device certificate required"


class Forbidden(IDWallError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(IDWallError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(IDWallError):
    status, slug, title = 409, "conflict", "Conflict"


class Gone(IDWallError):
    status, slug, title = 410, "gone", "Expired or already used"


class WebAuthnRejected(IDWallError):
    """``check`` names the check of :func:`idwall.passkeys.verify_assertion` that failed (None for the others)
    and ``received`` what the response held there, for a caller that explains it in its own words (ledger replay).
    """

    status, slug, title = 400, "webauthn-rejected", "Passkey response rejected"

    def __init__(self, detail: str = "", *, check: str | None = None, received: Any = None,
                 log_detail: str = "", **extra: Any) -> None:
        super().__init__(detail, log_detail=log_detail, **extra)
        self.check = check
        self.received = received


class UpstreamError(IDWallError):
    status, slug, title = 502, "bad-gateway", "Upstream unavailable"


class UpstreamTimeout(IDWallError):
    status, slug, title = 504, "gateway-timeout", "Upstream timed out"


class Unavailable(IDWallError):
    status, slug, title = 503, "unavailable", "Service unavailable"
