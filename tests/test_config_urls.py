"""idwall.config.urls: host names, URLs and origins as the config accepts them. A URL has a valid host, no
``user:password@``, white space, control characters, port 0, query or fragment; an https origin is normalised the
way browsers serialise it. Tested through the keys that hold them (a file that differs from BASE in one place, so
the error names its line and key) and by calling the functions directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from idwall.config.urls import https_origin, split_url, valid_host
from tests.helpers.config_files import BASE, assert_error, config_tree, error


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragments"),
    [
        # cross-site origins
        ("    upstream: http://127.0.0.1:9001",
         "    upstream: http://127.0.0.1:9001\n    cross_site:\n      origins: [ftp://portal.example]", 18,
         "routes[0].cross_site.origins[0]", ("is not an https:// or an http:// URL",)),
        # upstream URLs
        ("upstream: http://127.0.0.1:9001", "upstream: ftp://127.0.0.1:21", 16, "routes[0].upstream", ("'ftp://127.0.0.1:21' is not an http:// or an https:// URL", "write http://host:port")),
        ("upstream: http://127.0.0.1:9001", "upstream: 127.0.0.1:9001", 16, "routes[0].upstream", ("is not an http:// or an https:// URL",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://", 16, "routes[0].upstream", ("has no valid host name",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://user:pw@127.0.0.1", 16, "routes[0].upstream", ("user:password@",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:99999", 16, "routes[0].upstream", ("invalid port",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:9001/?a=1", 16, "routes[0].upstream", ("query or fragment",)),
        ("upstream: http://127.0.0.1:9001", "upstream: 'http://bad host'", 16, "routes[0].upstream", ("white space",)),
        # host names
        ("host: App.Example.COM", "host: https://app.example.com", 15, "routes[0].match.host", ("is not a host name", "without scheme or port")),
        ("host: App.Example.COM", "host: 'app.example.com:443'", 15, "routes[0].match.host", ("is not a host name",)),
        ("host: App.Example.COM", "host: '*.example.com'", 15, "routes[0].match.host", ("is not a host name",)),
        # webauthn origins and the RP ID
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [http://localhost:8443]", 3, "webauthn.origins[0]", ("'http://localhost:8443' is not an https:// URL", "http origins (even localhost) can never be genuine")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins:\n    - https://localhost:8443\n    - http://localhost", 5, "webauthn.origins[1]", ("is not an https:// URL",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [https://localhost:8443/login]", 3, "webauthn.origins[0]", ("has a path (/login)",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  rp_id: https://localhost", 3, "webauthn.rp_id", ("is not a host name", "no scheme or port")),
        # public_url
        ("public_url: https://localhost:8443", "public_url: http://localhost:8443", 1, "public_url", ("'http://localhost:8443' is not an https:// URL", "the gateway only serves TLS")),
        ("public_url: https://localhost:8443", "public_url: localhost:8443", 1, "public_url", ("is not an https:// URL",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443/app", 1, "public_url", ("has a path",)),
        ("public_url: https://localhost:8443", "public_url: https://", 1, "public_url", ("has no valid host name",)),
    ],
)
def test_errors_name_file_line_key_and_fix(tree: Path, old: str, new: str, line: int, key: str, fragments: tuple[str, ...]) -> None:
    assert old in BASE
    assert_error(error(tree, BASE.replace(old, new, 1)), tree, line, key, *fragments)



# --------------------------------------------------------------------------- the functions themselves


@pytest.mark.parametrize("host", ["localhost", "a-b.example.com", "x1.y2", "127.0.0.1", "::1", "a" * 63 + ".com"])
def test_valid_host_accepts_dns_names_and_ip_addresses(host: str) -> None:
    assert valid_host(host)


@pytest.mark.parametrize("host", [
    "", "Example.com",  # callers lower-case first: an upper-case letter here is a caller's bug
    "-a.com", "a-.com", "a..b", ".a", "a_b", "*.example.com", "a b", "a\x00b", "a" * 64 + ".com",
    ".".join(["abcdefgh"] * 29),  # 260 characters: over DNS's 253
])
def test_valid_host_refuses_anything_else(host: str) -> None:
    assert not valid_host(host)


def test_split_url_lower_cases_the_host_and_drops_a_trailing_dot() -> None:
    parts, host, port = split_url("HTTP://Example.COM.:8080/Base", ("http", "https"))
    assert (host, port, parts.path) == ("example.com", 8080, "/Base")
    assert split_url("https://[::1]/", ("https",))[1:] == ("::1", None)


@pytest.mark.parametrize(("url", "problem"), [
    ("gopher://h", "is not an http:// or an https:// URL"),
    ("h:80", "is not an http:// or an https:// URL"),
    ("http://a b", "contains white space or control characters"),
    ("http://a\tb", "contains white space or control characters"),
    ("http://h/\x7f", "contains white space or control characters"),
    ("http://user@h", "contains user:password@"),
    ("http://:pw@h", "contains user:password@"),
    ("http://", "has no valid host name"),
    ("http://bad_host", "has no valid host name"),
    ("http://h:0", "has port 0"),
    ("http://h:65536", "has an invalid port"),
    ("http://h:-1", "has an invalid port"),
    ("http://h:80a", "has an invalid port"),
    ("http://h/?", "has a query or fragment"),
    ("http://h/#", "has a query or fragment"),
    ("http://h/?a=1", "has a query or fragment"),
    ("http://[::1", "Invalid IPv6 URL"),
])
def test_split_url_refuses(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        split_url(url, ("http", "https"))


@pytest.mark.parametrize(("text", "origin"), [
    ("https://Example.COM:443/", "https://example.com"),
    ("https://example.com.", "https://example.com"),
    ("https://example.com:8443/", "https://example.com:8443"),
    ("https://[::1]:8443", "https://[::1]:8443"),
    ("https://127.0.0.1", "https://127.0.0.1"),
])
def test_https_origin_is_normalised_as_browsers_serialise_it(text: str, origin: str) -> None:
    assert https_origin(text) == origin


@pytest.mark.parametrize(("text", "problem"), [
    ("http://example.com", "is not an https:// URL"),
    ("https://example.com/login", "has a path (/login)"),
    ("https://example.com:443/?next=/", "has a query or fragment"),
    ("https://u:p@example.com", "contains user:password@"),
])
def test_https_origin_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        https_origin(text)
