"""Route policy: who may use a route, and how to answer those who may not.

Pure decisions; the web layer turns them into responses:

    login    no session            browsers: 302 to login_redirect(), others: 401 with login_url
    step_up  session too old       the same, the login page asks for a fresh passkey assertion
    deny     not on the allow list 403
    allow    proxy the request

Admin status grants nothing on proxied routes: a route's ``allow`` list is the
whole truth, so the SOC console's admins are not silently let into every app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALLOW, LOGIN, STEP_UP, DENY = "allow", "login", "step_up", "deny"
LOGIN_PATH = "/idwall/login"
# Longer next values are no path a user was really on; they only serve to
# carry payloads through the login page.
MAX_NEXT_LENGTH = 2048
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")


@dataclass(frozen=True)
class Identity:
    """The user behind a connection's session, as policy sees it."""

    user_id: str
    groups: tuple[str, ...]
    admin: bool
    auth_time: float


@dataclass(frozen=True)
class Decision:
    """``outcome`` is one of allow, login, step_up, deny; ``reason`` is for logs and problem details."""

    outcome: str
    reason: str


def decide(
    *,
    identity: Identity | None,
    allow_users: tuple[str, ...] | None,
    allow_groups: tuple[str, ...] | None,
    fresh_auth: int | None,
    now: float,
) -> Decision:
    """Decide a request on a route.

    Without allow lists any user with a session is admitted; with them, the
    user must be listed or belong to a listed group (an empty list admits
    nobody through it). Denial is decided before freshness so nobody is asked
    for a passkey only to be refused afterwards.
    """
    if identity is None:
        return Decision(LOGIN, "no valid session on this connection")
    if allow_users is not None or allow_groups is not None:
        by_user = identity.user_id in (allow_users or ())
        by_group = any(group in (allow_groups or ()) for group in identity.groups)
        if not (by_user or by_group):
            return Decision(DENY, f"user {identity.user_id!r} is not allowed on this route")
    if fresh_auth is not None:
        age = now - identity.auth_time
        if age >= fresh_auth:
            return Decision(
                STEP_UP, f"last passkey assertion is {int(age)}s old; this route needs one within {fresh_auth}s"
            )
    return Decision(ALLOW, "allowed")


def wants_html(accept_header: str | None) -> bool:
    """Whether the client is a browser: its Accept lists ``text/html`` with q > 0.

    ``*/*`` and ``text/*`` do not count: curl and API clients send those and
    must get a 401 they can parse, not a login page.
    """
    if not accept_header:
        return False
    for media_range in accept_header.split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != "text/html":
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                # A malformed q makes the whole range unusable rather than q=1.
                quality = float(value) if _QVALUE.fullmatch(value) else 0.0
        if quality > 0:
            return True
    return False


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or ord(char) == 0x7F


def _unsafe_raw(path: str) -> bool:
    if not path.startswith("/") or path.startswith("//"):
        return True
    # Printable ASCII only: browsers strip tabs and newlines inside URLs
    # ("/\t/evil" becomes "//evil"), treat "\" as "/", and a Location header
    # must be ASCII anyway. A space is left out too: real paths encode it.
    return any(not 0x21 <= ord(char) <= 0x7E or char == "\\" for char in path)


def _unsafe_decoded(path: str) -> bool:
    # Non-ASCII is fine once decoded (an encoded UTF-8 path); what must not
    # appear is a second leading slash, a backslash or a control character
    # such as an encoded CR/LF that a decoding app would put in a header.
    return path.startswith("//") or "\\" in path or any(_is_control(char) for char in path)


def safe_next(next_value: str | None) -> str:
    """``next_value`` if it is a same-origin absolute path, else ``"/"``.

    Refused: anything not starting with exactly one ``/`` (so no scheme,
    ``//host`` or ``/\\host``), backslashes, control characters, white space
    and raw non-ASCII. The value is also checked once percent-decoded, so
    ``/%2F%2Fevil.com``, ``/%5Cevil.com`` and ``/%0D%0ASet-Cookie:...`` are
    refused too: a browser would treat the first two as paths, but an app
    behind the gateway that decodes and redirects would not, and no real page
    lives at such a path. Pass the raw (still percent-encoded) path and query.
    """
    if not isinstance(next_value, str) or not next_value or len(next_value) > MAX_NEXT_LENGTH:
        return "/"
    if _unsafe_raw(next_value) or _unsafe_decoded(unquote(next_value)):
        return "/"
    return next_value


def login_redirect(next_path: str) -> str:
    """The login page URL that returns to ``next_path`` (made safe) afterwards."""
    return f"{LOGIN_PATH}?next={quote(safe_next(next_path), safe='/')}"
