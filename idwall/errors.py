"""The errors IDWall answers with: the whole tree, every class wherever it is defined.

Each class maps to exactly one problem+json ``type`` (RFC 9457), ``PROBLEM_BASE`` + slug.
A subclass without a slug of its own is the same problem to a client as its parent
and only names the cause for code and logs. ``detail`` is for the client and must
never hold secrets; ``log_detail`` goes to the log only::

    IDWallError                      500 internal              errors: root, never carries a stack trace
    ├── BadRequest                   400 bad-request           errors: malformed JSON, base64url, CBOR, field
    │   ├── PayloadTooLarge          413 payload-too-large     errors: body over the API limit
    │   ├── AmbiguousPath            400 ambiguous-path        httpnorm: a target two servers could read apart
    │   ├── CSRError                 400 bad-csr               pki: device CSR unusable (key, signature, shape)
    │   └── InvalidRequestURL        400 invalid-request-url   assertion: htu cannot be made canonical
    ├── Unauthenticated              401 login-required        errors: no valid session (carries login_url)
    │   ├── InvalidToken             401 invalid-token         tokens: malformed, unknown, expired, revoked
    │   └── InvalidAssertion         401 invalid-assertion     upstream: the assertion cannot be trusted
    │       ├── MissingAssertion     401 invalid-assertion     upstream: no assertion header
    │       ├── MalformedAssertion   401 invalid-assertion     upstream: not a JWS of JSON objects, too long
    │       ├── UnsupportedAlgorithm 401 invalid-assertion     upstream: alg other than ES256, non-P-256 key
    │       ├── UnknownKey           401 invalid-assertion     upstream: kid not in the JWKS after a refresh
    │       ├── BadSignature         401 invalid-assertion     upstream: signature does not verify
    │       ├── WrongIssuer          401 invalid-assertion     upstream: iss is not exactly the gateway
    │       ├── WrongAudience        401 invalid-assertion     upstream: aud does not name this service
    │       ├── AssertionExpired     401 invalid-assertion     upstream: exp passed (beyond the leeway)
    │       ├── NotYetValid          401 invalid-assertion     upstream: iat or nbf in the future
    │       ├── RequestMismatch      401 invalid-assertion     upstream: htm/htu name another request
    │       └── MissingClaim         401 invalid-assertion     upstream: required claim absent or mistyped
    ├── NoClientCertificate          403 no-client-certificate errors: no device certificate (see enrollment)
    ├── Forbidden                    403 forbidden             errors: policy denial, missing role
    │   ├── CrossSiteRefused         403 cross-site-refused    access: state change from another site's page
    │   ├── InsufficientScope        403 insufficient-scope    tokens: token lacks the scope
    │   ├── SuspectPasskey           403 passkey-suspect       errors: an incident marked the signing passkey suspect
    │   └── EnrollmentBlocked        403 enrollment-blocked    errors: an incident blocks enrollment by invite code
    ├── NotFound                     404 not-found             errors: unknown enrollment, action, route
    │   └── Missing                  404 not-found             store: no such record
    ├── Conflict                     409 conflict              errors: already registered, already used
    │   ├── AlreadyUsed              409 conflict              store: single-use thing used before
    │   ├── LastAdmin                409 conflict              store: would leave no administrator
    │   └── InitRefused              409 init-refused          bootstrap: target directory not empty
    ├── Gone                         410 gone                  errors: expired challenge, code, enrollment
    │   └── Expired                  410 gone                  store: past its lifetime
    ├── Misdirected                  421 misdirected-request   access: host this connection was not made for
    ├── TooManyRequests              429 too-many-requests     errors: a bound on pending work was reached
    │   └── LimitReached             429 limit-reached         store: open enrollments, waiting devices
    ├── WebAuthnRejected             400 webauthn-rejected     errors: passkey response failed verification
    │   └── SignCountRegression      400 webauthn-rejected     passkeys: counter went back: a cloned key
    ├── UpstreamError                502 bad-gateway           errors: upstream refused or broke the connection
    ├── UpstreamTimeout              504 gateway-timeout       errors: upstream too slow
    ├── Unavailable                  503 unavailable           errors: a dependency is down: fail closed
    │   ├── StoreError               503 store-unavailable     store: outage, corruption, unsupported URL
    │   └── JWKSUnavailable          503 jwks-unavailable      upstream: JWKS unfetchable when needed
    ├── AssertionKeyError            500 assertion-key         assertion: signing key unreadable or wrong
    ├── LedgerViolation              500 ledger-invalid        audit: an entry failed verification (seq N)
    └── DemoError                    500 internal              demo: a demo step got an unexpected answer

Errors that never become a problem+json answer: each has its own audience::

    ConfigError                      config: one line per problem naming file, key and fix
    CLIError                         cli: one line on stderr and an exit code
    └── GatewayUnreachable           cli: the gateway did not answer (address, TLS, refused)
    EncodingError                    encoding: bad base64url; callers turn it into BadRequest
    DuplicateKey                     encoding: a JSON object names a key twice; callers turn it into BadRequest
    CoseKeyError                     cose: a passkey's public key is unusable; callers turn it into their refusal
    Stop                             engine.h1: stops llhttp from inside a callback (control flow)
    NoClientConnection               web.context: a request for no live client connection; dropped unanswered
    Reject                           audit: one check of an entry failed; replay turns it into LedgerViolation
    ProxyHeaderError                 proxy_protocol: not one well-formed PROXY v2 header; the relay closes it
    Replayed                         relay: an assertion's jti came a second time; the relay closes the connection
    AuthenticatorError               testing.authenticator: the soft authenticator's DOMException names
    ├── InvalidStateError            testing.authenticator: credential already registered here
    ├── NotAllowedError              testing.authenticator: no matching credential, user declined
    └── NotSupportedError            testing.authenticator: no supported algorithm offered

``tests/test_errors.py`` holds this drawing to the code: every class, its parent, status and slug.
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


class SuspectPasskey(Forbidden):
    """An incident marked this passkey suspect: it cannot vouch for a new device (``device.recover``)."""

    status, slug, title = 403, "passkey-suspect", "Passkey marked suspect"


class EnrollmentBlocked(Forbidden):
    """An active incident blocks enrollment by invite code for this user."""

    status, slug, title = 403, "enrollment-blocked", "Enrollment blocked during an incident"


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


class TooManyRequests(IDWallError):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class UpstreamError(IDWallError):
    status, slug, title = 502, "bad-gateway", "Upstream unavailable"


class UpstreamTimeout(IDWallError):
    status, slug, title = 504, "gateway-timeout", "Upstream timed out"


class Unavailable(IDWallError):
    status, slug, title = 503, "unavailable", "Service unavailable"
