"""idwall.policy: route decisions, browser detection, and the login redirect's ``next``.

The safe_next table is a list of open-redirect attacks; each must land on "/".
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idwall.policy import Decision, Identity, decide, login_redirect, safe_next, wants_html

NOW = 1_772_366_400.0
ALICE = Identity(user_id="alice", groups=("eng", "oncall"), admin=False, auth_time=NOW - 60)
ROOT = Identity(user_id="root", groups=(), admin=True, auth_time=NOW - 60)


def _decide(identity=ALICE, users=None, groups=None, fresh_auth=None, now=NOW) -> Decision:
    return decide(identity=identity, allow_users=users, allow_groups=groups, fresh_auth=fresh_auth, now=now)


# --- decide -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "users", "groups", "fresh_auth", "outcome"),
    [
        (None, None, None, None, "login"),
        (None, ("alice",), None, 900, "login"),
        (ALICE, None, None, None, "allow"),  # no allow list: any user with a session
        (ALICE, ("alice",), None, None, "allow"),
        (ALICE, None, ("eng",), None, "allow"),
        (ALICE, ("bob",), ("oncall",), None, "allow"),  # user OR group
        (ALICE, ("bob",), None, None, "deny"),
        (ALICE, None, ("ops",), None, "deny"),
        (ALICE, ("bob",), ("ops",), None, "deny"),
        (ALICE, (), (), None, "deny"),  # empty lists admit nobody
        (ALICE, (), None, None, "deny"),
        (ALICE, ("Alice",), ("ENG",), None, "deny"),  # ids and groups are exact, not case-folded
        (ALICE, ("alic",), ("en",), None, "deny"),  # no prefix or substring matching
        (ROOT, ("alice",), ("eng",), None, "deny"),  # admin grants nothing on routes
        (ROOT, None, None, None, "allow"),
        (ALICE, None, None, 900, "allow"),
        (ALICE, None, None, 60, "step_up"),  # exactly fresh_auth old: stale
        (ALICE, None, None, 30, "step_up"),
        (ALICE, ("bob",), None, 30, "deny"),  # never ask for a passkey only to refuse afterwards
    ],
)
def test_decide(identity, users, groups, fresh_auth, outcome) -> None:
    decision = _decide(identity, users, groups, fresh_auth)
    assert decision.outcome == outcome
    assert decision.reason


def test_step_up_clears_once_reauthenticated() -> None:
    stale = Identity("alice", ("eng",), False, auth_time=NOW - 3600)
    assert _decide(stale, fresh_auth=900).outcome == "step_up"
    assert _decide(stale, fresh_auth=900, now=NOW - 3600 + 899).outcome == "allow"
    fresh = Identity("alice", ("eng",), False, auth_time=NOW - 5)
    assert _decide(fresh, fresh_auth=900).outcome == "allow"


def test_deny_reason_does_not_leak_the_allow_list() -> None:
    reason = _decide(users=("secret-user",), groups=("secret-group",)).reason
    assert "secret" not in reason and "alice" in reason


# --- wants_html -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Chromium navigation
        ("text/html", True),
        ("TEXT/HTML", True),
        ("  text/html ; charset=utf-8 ", True),
        ("application/json, text/html;q=0.1", True),
        ("text/html;q=1", True),
        ("text/html;q=1.000", True),
        ("text/html;Q=0.5", True),
        (None, False),
        ("", False),
        ("*/*", False),  # curl
        ("application/json", False),
        ("text/*", False),
        ("text/html;q=0", False),  # RFC 9110 §12.4.2: q=0 means "not acceptable"
        ("text/html;q=0.000", False),
        ("text/html;q=abc", False),
        ("text/html;q=2", False),
        ("text/html;q=1.5", False),
        ("text/html;q=-1", False),
        ("text/htmlx", False),
        ("application/text/html", False),
    ],
)
def test_wants_html(accept, expected) -> None:
    assert wants_html(accept) is expected


# --- safe_next ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "/",
        "/wiki",
        "/wiki/Main_Page?action=edit&x=1#top",
        "/a/b/../c",
        "/caf%C3%A9",  # encoded UTF-8 is a fine path
        "/search?q=a%2Fb",
        "/%252F%252Fevil.com",  # decodes once to "/%2F%2F...": still a path
        "/javascript:alert(1)",  # a path segment with a colon, not a scheme
        "/@evil.com",
    ],
)
def test_safe_next_keeps_same_origin_paths(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil.com",  # protocol-relative
        "///evil.com",
        "/\\evil.com",  # browsers treat "\" as "/"
        "\\\\evil.com",
        "/\\/evil.com",
        "/wiki\\..\\..\\",
        "https://evil.com",
        "http:evil.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "evil.com",
        "wiki",
        " /wiki",
        "\t//evil.com",  # browsers strip tab/newline: "//evil.com"
        "/\t/evil.com",
        "/\n/evil.com",
        "/\r\n/evil.com",
        "/wiki\r\nSet-Cookie: a=b",
        "/wiki\x00",
        "/wiki\x7f",
        "/wiki page",
        "/%2F%2Fevil.com",  # decision: refused, a decoding app behind us would see "//evil.com"
        "/%2fevil.com",
        "/%5Cevil.com",
        "/%5cevil.com",
        "/wiki%0D%0ASet-Cookie:%20a=b",  # encoded CRLF
        "/wiki%0a",
        "/wiki%00",
        "/%09/evil.com",
        "/caf\u00e9",  # raw non-ASCII: not a valid Location value
        "/\u2215\u2215evil.com",
        "/\uff0f\uff0fevil.com",
        "/" + "a" * 2048,  # over the length cap
    ],
)
def test_safe_next_refuses_open_redirects(value) -> None:
    assert safe_next(value) == "/"


def test_safe_next_length_cap_is_inclusive() -> None:
    at_cap = "/" + "a" * 2047
    assert safe_next(at_cap) == at_cap


def _browser_view(location: str) -> str:
    """What a WHATWG URL parser does before looking at the authority."""
    stripped = location.strip("".join(map(chr, range(0x21))))
    stripped = "".join(c for c in stripped if c not in "\t\n\r")
    return stripped.replace("\\", "/")


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(),
    st.text(alphabet="/\\%2F5Cc0aAdD:.@ \t\r\nevil", max_size=20),
    st.builds(lambda s: "/" + s, st.text(alphabet="/\\%2F5Cc0aAdD:.@ \t\r\nevil", max_size=20)),
))
def test_safe_next_output_never_leaves_the_origin(value: str) -> None:
    out = safe_next(value)
    assert out == "/" or out == value
    for view in (_browser_view(out), _browser_view(unquote(out))):
        parts = urlsplit(view)
        assert parts.scheme == "" and parts.netloc == ""
        assert view.startswith("/") and not view.startswith("//")


# --- login_redirect -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_path", "expected_next"),
    [
        ("/wiki/Main_Page?action=edit&x=1#top", "/wiki/Main_Page?action=edit&x=1#top"),
        ("/caf%C3%A9?q=a%2Fb", "/caf%C3%A9?q=a%2Fb"),
        ("//evil.com", "/"),
        ("https://evil.com", "/"),
    ],
)
def test_login_redirect_round_trips(next_path: str, expected_next: str) -> None:
    url = login_redirect(next_path)
    parts = urlsplit(url)
    assert parts.path == "/idwall/login" and not parts.netloc and not parts.fragment
    assert parse_qs(parts.query, strict_parsing=True) == {"next": [expected_next]}


def test_login_redirect_encodes_query_characters() -> None:
    url = login_redirect("/app?a=1&next=//evil.com")
    assert url == "/idwall/login?next=/app%3Fa%3D1%26next%3D//evil.com"
