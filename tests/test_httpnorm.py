"""idwall.httpnorm: path normal form and route matching (pure, no sockets)."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st

from idwall.config import Route
from idwall.errors import BadRequest
from idwall.httpnorm import AmbiguousPath, RouteTable, host_without_port, is_reserved, match_route, normalise_path
from idwall.testing.fixtures import raw_https
from tests.helpers.http_wire import status_of


# --- normalise_path ----------------------------------------------------------

ACCEPTED = [
    # (raw, normal form, why)
    ("/", "/", "root"),
    ("/app/x", "/app/x", "plain"),
    ("/app/x/", "/app/x/", "trailing slash kept"),
    ("/%61dmin", "/admin", "RFC 3986 §6.2.2.2: unreserved escapes decoded"),
    ("/%7Ealice/%2D%2e%5F", "/~alice/-._", "unreserved punctuation decoded"),
    ("/a%2cb", "/a%2Cb", "RFC 3986 §6.2.2.1: reserved escapes kept, hex upper-cased"),
    ("/caf%c3%a9", "/caf%C3%A9", "UTF-8 escapes kept"),
    ("/a|b^c", "/a%7Cb%5Ec", "raw characters outside pchar are encoded"),
    ('/q"<>`{}[]', "/q%22%3C%3E%60%7B%7D%5B%5D", "browser-raw characters encoded"),
    ("//admin", "/admin", "merged like nginx merge_slashes"),
    ("/a///b//", "/a/b/", "every run merged"),
    ("/a/.b/..c/...", "/a/.b/..c/...", "dots inside names are not dot segments"),
    ("/a%2eb", "/a.b", "%2e inside a name is fine"),
    ("/a;jsessionid=1/b", "/a;jsessionid=1/b", "path parameters kept"),
    ("/100%25", "/100%25", "a literal percent sign"),
    ("/%25zz", "/%25zz", "%25 not followed by two hex digits is a literal percent"),
    ("/!$&'()*+,;=:@", "/!$&'()*+,;=:@", "sub-delims, ':' and '@' stay raw"),
]


@pytest.mark.parametrize(("raw", "expected", "why"), ACCEPTED, ids=[row[0] for row in ACCEPTED])
def test_normal_form(raw: str, expected: str, why: str) -> None:
    assert normalise_path(raw) == expected, why


REFUSED = [
    # (raw, words the reason must contain, the rule attacked)
    ("", "empty", "RFC 9112 §3.2.1 origin-form"),
    ("admin", "starting with '/'", "RFC 9112 §3.2.1"),
    ("http://evil/a", "starting with '/'", "absolute-form is not for a gateway"),
    ("*", "starting with '/'", "asterisk-form"),
    ("/a%2fb", "encoded slash", "RFC 3986 §2.2: %2F is data, upstreams split on it"),
    ("/a%2Fb", "encoded slash", "RFC 3986 §2.2"),
    ("/a%5cb", "encoded backslash", "IIS/Windows separator"),
    ("/a\\..\\admin", "backslash", "WHATWG URL treats \\ as / for http(s)"),
    ("/a/../admin", "dot segment", "RFC 3986 §5.2.4"),
    ("/a/./b", "dot segment", "RFC 3986 §5.2.4"),
    ("/..", "dot segment", "RFC 3986 §5.2.4"),
    ("/a/%2e%2e/admin", "dot segment", "RFC 3986 §2.3: %2e is '.'"),
    ("/a/%2E./admin", "dot segment", "mixed encoding"),
    ("/a/.%2e", "dot segment", "mixed encoding"),
    ("/a/%2e", "dot segment", "single encoded dot"),
    ("/public/..;/admin", "dot segment", "Tomcat path parameter on '..'"),
    ("/public/.;x=1/admin", "dot segment", "Tomcat path parameter on '.'"),
    ("/a/%252e%252e/admin", "double percent-encoding", "double decoding upstream"),
    ("/a%252f", "double percent-encoding", "double decoding upstream"),
    # found by the fixed-point property: decoding the unreserved escape %41 turns "%25%41a" into "%25Aa"
    ("/%25%41a", "double percent-encoding", "double decoding upstream, hidden behind an unreserved escape"),
    ("/%25%32%66", "double percent-encoding", "an encoded slash behind two escapes"),
    ("/a%00.html", "control character", "NUL truncation in C upstreams"),
    ("/a%0d%0aSet-Cookie:x", "control character", "response splitting"),
    ("/a%1f", "control character", "C0 controls"),
    ("/a%7f", "control character", "DEL"),
    ("/a\x00", "control character", "raw NUL"),
    ("/a\tb", "control character", "raw tab"),
    ("/a b", "raw space", "RFC 9112 §3: space ends the target"),
    ("/a#frag", "fragment", "RFC 9112 §3.2"),
    ("/a%zz", "invalid percent-escape", "RFC 3986 §2.1"),
    ("/a%4", "invalid percent-escape", "truncated escape"),
    ("/a%", "invalid percent-escape", "trailing percent"),
    ("/caf\u00e9", "raw non-ASCII", "RFC 3986 §2: characters outside ASCII must be encoded"),
    ("/%c0%ae%c0%ae/admin", "not valid UTF-8", "overlong UTF-8 dots (IIS CVE-2000-0884)"),
    ("/%ff", "not valid UTF-8", "lone byte"),
    ("/%ef%bc%8e%ef%bc%8e/admin", "NFKC", "full-width dots fold to '..'"),
    ("/a%ef%bc%8fadmin", "NFKC", "full-width solidus folds to '/'"),
]


@pytest.mark.parametrize(("raw", "reason", "rule"), REFUSED, ids=[repr(row[0]) for row in REFUSED])
def test_refused_paths(raw: str, reason: str, rule: str) -> None:
    with pytest.raises(AmbiguousPath) as info:
        normalise_path(raw)
    assert reason in info.value.detail, rule
    assert isinstance(info.value, BadRequest) and info.value.status == 400


_PATH_CHARS = st.sampled_from(
    list("abcAZ09-._~!$&'()*+,;=:@/|^[]{}\"<>`#\\ %") + ["%2e", "%2E", "%2f", "%5c", "%25", "%41", "%7e",
                                                        "%c3%a9", "%ef%bc%8e", "%00", ".", "..", "//", ";"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PATH_CHARS, max_size=24).map(lambda parts: "/" + "".join(parts)))
def test_normal_form_is_a_fixed_point_and_unambiguous(raw: str) -> None:
    try:
        path = normalise_path(raw)
    except AmbiguousPath:
        return
    assert normalise_path(path) == path
    assert path.startswith("/") and "//" not in path and "\\" not in path
    decoded = urllib.parse.unquote(path)
    for segment in decoded.split("/"):
        assert segment.split(";", 1)[0] not in (".", "..")
    assert "%2F" not in path.upper() and "%5C" not in path.upper()
    assert not re.search(r"%25[0-9A-Fa-f]{2}", path)
    assert all(0x20 < ord(c) < 0x7F for c in path)


_PLAIN_CHARS = st.sampled_from(list("abcAZ09-._~!$&'()*+,;=:@/") + [".", "..", "//", ";", ".;x"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PLAIN_CHARS, max_size=24).map("".join))
def test_plain_paths_get_the_same_answer_as_escaped_ones(rest: str) -> None:
    # "/x..." takes the fast path for escape-free paths; "/%78..." (the same path) the full one.
    outcomes = []
    for raw in ("/x" + rest, "/%78" + rest):
        try:
            outcomes.append(normalise_path(raw))
        except AmbiguousPath as exc:
            outcomes.append(f"refused: {exc.detail}")
    assert outcomes[0] == outcomes[1]


# --- routes ------------------------------------------------------------------


def _route(name: str, path: str, host: str | None = None) -> Route:
    return Route(name=name, host=host, path=path, upstream="http://127.0.0.1:9")


ROUTES = [
    _route("root", "/"),
    _route("app", "/app"),
    _route("app-api", "/app/api/"),
    _route("wiki-root", "/", host="wiki.example"),
    _route("wiki-app", "/app", host="wiki.example"),
    _route("admin", "/admin"),
]

MATCHES = [
    # (host, path, expected route name or None)
    (None, "/", "root"),
    ("other.example", "/app", "app"),
    ("other.example", "/app/x", "app"),
    ("other.example", "/apple", "root"),
    ("other.example", "/app/api", "app-api"),
    ("other.example", "/app/api/v1", "app-api"),
    ("other.example", "/app/apix", "app"),
    ("wiki.example", "/x", "wiki-root"),
    ("wiki.example", "/app/x", "wiki-app"),
    ("WIKI.Example:8443", "/app", "wiki-app"),
    ("wiki.example.", "/app", "wiki-app"),
    ("wiki.example", "/app/api/x", "app-api"),
    ("wiki.example.evil", "/app", "app"),
    ("other.example", "/admin;jsessionid=1", "admin"),
    ("other.example", "/admin;x/secret", "admin"),
    ("other.example", "/idwall/api/login/begin", None),
    ("other.example", "/idwall", None),
    ("other.example", "/IDWall/api", None),
    ("other.example", "/idwall;x/api", None),
    ("wiki.example", "/.well-known/idwall/jwks.json", None),
    ("other.example", "/idwallet", "root"),
    ("other.example", "/.well-known/openid-configuration", "root"),
]


@pytest.mark.parametrize(("host", "path", "expected"), MATCHES)
def test_match_route(host: str | None, path: str, expected: str | None) -> None:
    route = match_route(ROUTES, host, path)
    assert (route.name if route else None) == expected


def test_no_route_without_catch_all() -> None:
    routes = [_route("app", "/app", host="wiki.example")]
    assert match_route(routes, "other.example", "/app") is None
    assert match_route(routes, None, "/app") is None
    assert match_route(routes, "wiki.example", "/apple") is None


def test_first_route_wins_a_full_tie() -> None:
    first, second = _route("first", "/x"), _route("second", "/x/")
    assert match_route([first, second], "h", "/x/y") is first


@pytest.mark.parametrize(
    ("path", "reserved"),
    [("/idwall", True), ("/idwall/", True), ("/idwall/login", True), ("/.well-known/idwall/jwks.json", True),
     ("/IDWALL/x", True), ("/idwall;p=1/x", True), ("/idwallx", False), ("/.well-known/idwallx", False),
     ("/app/idwall", False), ("/", False)],
)
def test_is_reserved(path: str, reserved: bool) -> None:
    assert is_reserved(path) is reserved


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Wiki.Example", "wiki.example"), ("wiki.example:8443", "wiki.example"), ("[::1]:8443", "[::1]"),
     ("[::1]", "[::1]"), ("wiki.example.:443", "wiki.example"), (None, None), ("127.0.0.1:80", "127.0.0.1")],
)
def test_host_without_port(value: str | None, expected: str | None) -> None:
    assert host_without_port(value) == expected


@dataclass(frozen=True)
class _Bare:
    host: str | None
    path: str


def test_match_route_takes_any_route_shape() -> None:
    routes = [_Bare(None, "/"), _Bare("h", "/x")]
    assert match_route(routes, "H:1", "/x/y") is routes[1]


def _ranked_by_hand(routes: list[_Bare], host: str | None, path: str) -> _Bare | None:
    """The ranking match_route documents, written out the slow way: the longest prefix, then host-specific,
    then configuration order."""
    best, best_rank = None, None
    for index, route in enumerate(routes):
        prefix = route.path.rstrip("/")
        if route.host is not None and route.host != host:
            continue
        if prefix and path != prefix and not path.startswith(prefix + "/"):
            continue
        rank = (len(prefix), route.host is not None, -index)
        if best_rank is None or rank > best_rank:
            best, best_rank = route, rank
    return best


_SEGMENT = st.sampled_from(["a", "ab", "b", "app", "apple"])
_PREFIX = st.lists(_SEGMENT, max_size=3).map(lambda parts: "/" + "/".join(parts))
_HOST = st.sampled_from([None, "wiki.example", "other.example"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(_Bare, _HOST, _PREFIX), min_size=1, max_size=6), _HOST, _PREFIX)
def test_route_table_ranks_as_documented(routes: list[_Bare], host: str | None, path: str) -> None:
    assert RouteTable(routes).match(host, path) is _ranked_by_hand(routes, host, path)


# --- hostile Host headers on the wire (security review) -------------------------------------------


@pytest.mark.parametrize("host", [
    b"[::1", b"localhost:99999", b"localhost:-1", b"local host", b"localhost:abc", b"a/b", b"@", b"",
    b"[::1]x", b"\xff\xfe", b"localhost:" + b"9" * 50,
])
async def test_hostile_host_headers_get_4xx_never_5xx(gateway, host: bytes) -> None:
    device = await gateway.device("alice")
    request = b"GET /app HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    answer = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device), request, read_timeout=3)
    status = status_of(answer)
    assert 0 < status < 500 or status == 0, answer[:300]
    assert b"Traceback" not in answer
