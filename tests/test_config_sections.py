"""idwall.config.sections: the rules of each section and ``build_config``, which makes the whole Config: the
documented defaults, every field read and normalised (store paths, origins, routes), and the rules that belong to
one section or span its keys (reserved route paths, unique route names and matches, ``assertion.overlap`` at
least ``ttl``, origins on the RP ID, store URLs). Tested by loading real files that differ from BASE
(helpers/config_files.py) in one place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.config import AssertionConfig, Limits, Listen, Route, UpstreamTLS, load_config
from tests.helpers.config_files import BASE, assert_error, config_tree, error, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


# --------------------------------------------------------------------------- a good file


def test_minimal_file_gets_documented_defaults(tree: Path) -> None:
    config = load_config(write(tree, BASE))
    assert config.source == tree / "idwall.yaml"
    assert config.public_url == "https://localhost:8443"
    assert config.listen == Listen("127.0.0.1", 8443)
    assert config.tls.cert == tree / "certs" / "server.pem" and config.tls.cert.is_absolute()
    assert config.device_ca.key == tree / "certs" / "device-ca-key.pem"
    assert config.device_ca.cert_ttl == 30 * 86400
    assert config.webauthn.rp_id == "localhost"
    assert config.webauthn.origins == ("https://localhost:8443",)
    assert (config.webauthn.rp_name, config.webauthn.user_verification, config.webauthn.timeout) == ("IDWall", "required", 300)
    assert (config.session.max_age, config.session.idle_timeout) == (43200, 3600)
    assert config.assertion == AssertionConfig(header="X-IDWall-Assertion", key=tree / "certs" / "assertion-key.pem", ttl=60, overlap=604800)
    assert config.ledger.key == tree / "certs" / "ledger-key.pem" and config.ledger.root is None
    assert config.store == f"sqlite://{tree}/idwall.db"
    assert config.sqlite_path == tree / "idwall.db"
    assert config.devices.approval == "none"
    assert config.limits == Limits(api_body=65536, drain_timeout=10, upstream_timeout=30, header_size=8192,
                                   head_size=32768, max_headers=100, handshake_timeout=10, head_timeout=30,
                                   body_timeout=60, keepalive_timeout=75, max_body=1024 * 1024,
                                   connections_without_certificate=64)
    assert config.admin.fresh_auth == 900
    assert config.routes == (
        Route(name="app", host="app.example.com", path="/app", upstream="http://127.0.0.1:9001", allow_users=None,
              allow_groups=None, fresh_auth=None, websockets=False, bind_request=True, audience=None, timeout=None,
              upstream_tls=None),
    )


def test_every_field_set(tree: Path) -> None:
    (tree / "certs" / "up-ca.pem").write_text("x")
    (tree / "certs" / "up.pem").write_text("x")
    (tree / "certs" / "up-key.pem").write_text("x")
    text = BASE.replace("public_url: https://localhost:8443", "public_url: https://IDWall.Example.com:443/") + """\
    allow: {users: [alice, alice], groups: [eng]}
    fresh_auth: 10m
    websockets: true
    bind_request: false
    audience: app-backend
    timeout: 2m
  - name: api
    match: {path: /api/v1}
    upstream: https://api.internal:8443/base
    allow: {groups: [ops]}
    upstream_tls: {ca: certs/up-ca.pem, cert: certs/up.pem, key: certs/up-key.pem}
listen: {host: 0.0.0.0, port: 0}
webauthn:
  rp_id: example.com
  rp_name: Example Corp
  origins: [https://idwall.example.com, "https://Login.Example.com:8443/", https://idwall.example.com:443]
  user_verification: preferred
  timeout: 90s
session: {max_age: 8h, idle_timeout: 20m}
devices: {approval: manager}
limits: {api_body: 131072, drain_timeout: 0, upstream_timeout: 45, header_size: 16384}
admin: {fresh_auth: 5m}
"""
    text = text.replace("assertion:\n  key: certs/assertion-key.pem", "assertion:\n  key: certs/assertion-key.pem\n  header: x-idwall-identity\n  ttl: 2m\n  overlap: 1d")
    text = text.replace("device_ca:\n", "device_ca:\n  cert_ttl: 7d\n")
    config = load_config(write(tree, text))
    assert config.public_url == "https://idwall.example.com"
    assert config.listen == Listen(host="0.0.0.0", port=0)
    assert config.device_ca.cert_ttl == 7 * 86400
    assert config.webauthn.rp_id == "example.com"
    assert config.webauthn.rp_name == "Example Corp"
    assert config.webauthn.origins == ("https://idwall.example.com", "https://login.example.com:8443")
    assert (config.webauthn.user_verification, config.webauthn.timeout) == ("preferred", 90)
    assert (config.session.max_age, config.session.idle_timeout) == (8 * 3600, 1200)
    assert (config.assertion.header, config.assertion.ttl, config.assertion.overlap) == ("x-idwall-identity", 120, 86400)
    assert config.devices.approval == "manager"
    assert (config.limits.api_body, config.limits.drain_timeout, config.limits.upstream_timeout, config.limits.header_size) == (131072, 0, 45, 16384)
    assert config.admin.fresh_auth == 300
    app, api = config.routes
    assert (app.allow_users, app.allow_groups, app.fresh_auth, app.websockets, app.bind_request, app.audience, app.timeout) == (
        ("alice",), ("eng",), 600, True, False, "app-backend", 120)
    assert (api.host, api.path, api.upstream) == (None, "/api/v1", "https://api.internal:8443/base")
    assert (api.allow_users, api.allow_groups) == ((), ("ops",))
    assert api.upstream_tls == UpstreamTLS(ca=tree / "certs" / "up-ca.pem", cert=tree / "certs" / "up.pem", key=tree / "certs" / "up-key.pem")


def test_nested_prefixes_and_same_path_on_other_hosts_are_not_overlaps(tree: Path) -> None:
    text = BASE + """\
  - {name: sub, match: {host: app.example.com, path: /app/sub}, upstream: http://127.0.0.1:9002}
  - {name: anyhost, match: {path: /app}, upstream: http://127.0.0.1:9003}
  - {name: other, match: {host: other.example.com, path: /app}, upstream: http://127.0.0.1:9004}
  - {name: slash, match: {host: app.example.com, path: /app/}, upstream: http://127.0.0.1:9005}
  - {name: idwallet, match: {path: /idwallet}, upstream: http://127.0.0.1:9006}
  - {name: wellknown, match: {path: /.well-known/other}, upstream: http://127.0.0.1:9007}
  - {name: root, upstream: http://127.0.0.1:9008}
"""
    routes = load_config(write(tree, text)).routes
    assert [(r.name, r.host, r.path) for r in routes] == [
        ("app", "app.example.com", "/app"),
        ("sub", "app.example.com", "/app/sub"),
        ("anyhost", None, "/app"),
        ("other", "other.example.com", "/app"),
        ("slash", "app.example.com", "/app/"),
        ("idwallet", None, "/idwallet"),
        ("wellknown", None, "/.well-known/other"),
        ("root", None, "/"),
    ]


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("sqlite:idwall.db", "{tree}/idwall.db"),
        ("sqlite:data/../idwall.db", "{tree}/idwall.db"),
        # {tree} starts with "/": these are sqlite:///abs, SQLAlchemy's sqlite:////abs and sqlite:/abs
        ("sqlite://{tree}/abs.db", "{tree}/abs.db"),
        ("sqlite:///{tree}/abs.db", "{tree}/abs.db"),
        ("sqlite:{tree}/abs.db", "{tree}/abs.db"),
    ],
)
def test_sqlite_store_is_normalised_to_an_absolute_path(tree: Path, store: str, expected: str) -> None:
    (tree / "data").mkdir()
    config = load_config(write(tree, BASE.replace("sqlite:idwall.db", store.format(tree=tree))))
    assert config.store == "sqlite://" + expected.format(tree=tree)
    assert config.sqlite_path == Path(expected.format(tree=tree))


def test_postgresql_store_is_kept_as_written(tree: Path) -> None:
    url = "postgresql://idwall:secret@db.internal:5432/idwall?sslmode=verify-full"
    config = load_config(write(tree, BASE.replace("sqlite:idwall.db", url)))
    assert config.store == url
    assert config.sqlite_path is None


# --------------------------------------------------------------------------- errors of a section


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragments"),
    [
        # rules of one section or across its keys: allow, routes, names, origins, limits, cross_site, overlap,
        # upstream_tls
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {}", 17, "routes[0].allow", ("would admit nobody", "remove allow to admit every signed-in user")),
        (BASE[BASE.index("routes:"):], "routes: {name: app}\n", 13, "routes", ("expected a list, got a mapping",)),
        ("  - name: app", "  - name: 'a b'", 14, "routes[0].name", ("'a b' is not a valid route name", "letters, digits")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {origins: https://localhost:8443}", 2, "webauthn.origins", ("expected a non-empty list", "list of https origins")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {origins: []}", 2, "webauthn.origins", ("expected a non-empty list",)),
        ("store:", "limits: {head_size: 4k, header_size: 8k}\nstore:", 12, "limits.head_size",
         ("4096 is smaller than header_size (8192)", "at least one full header line")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    cross_site: {origins: portal}",
         17, "routes[0].cross_site.origins", ("expected a list, got a string", "https://portal.example.com")),
        ("    upstream: http://127.0.0.1:9001",
         "    upstream: http://127.0.0.1:9001\n    cross_site:\n      origins: [https://portal.example/app]", 18,
         "routes[0].cross_site.origins[0]", ("has a path", "scheme, host and port only")),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  ttl: 60\n  overlap: 30s", 11, "assertion.overlap", ("30s is shorter than assertion.ttl (60s)",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:9001\n    upstream_tls: {ca: certs/server.pem}", 17, "routes[0].upstream_tls", ("is not https", "remove upstream_tls")),
        ("upstream: http://127.0.0.1:9001", "upstream: https://127.0.0.1:9001\n    upstream_tls: {cert: certs/server.pem}", 17, "routes[0].upstream_tls", ("only one of cert and key",)),
        # route paths
        ("path: /app}", "path: app}", 15, "routes[0].match.path", ("'app' does not start with '/'", "absolute path prefix")),
        ("path: /app}", "path: /a/../idwall}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /a//b}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /%69dwall}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: '/a?b'}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /idwall}", 15, "routes[0].match.path", ("'/idwall' is reserved", "the gateway owns /idwall/ and /.well-known/idwall/")),
        ("path: /app}", "path: /idwall/api}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /IDWall/admin}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /.well-known/idwall/jwks.json}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /.well-known/idwall}", 15, "routes[0].match.path", ("is reserved",)),
        # webauthn origins must be on the RP ID
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [https://evil.example]", 3, "webauthn.origins[0]", ("host 'evil.example' is neither rp_id 'localhost' nor a subdomain of it",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  rp_id: example.com", 2, "webauthn.origins[0]", ("host 'localhost' is neither rp_id 'example.com'",)),
        # the assertion header namespace
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X-Identity", 10, "assertion.header", ("'X-Identity' is not an X-IDWall-* header name", "strips that namespace from client requests")),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X-IDWall-", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X_IDWall_Assertion", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: 'X-IDWall-A B'", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
        # the ledger's pinned root
        ("  key: certs/ledger-key.pem", "  key: certs/ledger-key.pem\n  root: not-a-fingerprint", 12, "ledger.root",
         ("'not-a-fingerprint' is not a root fingerprint", "43 characters of base64url")),
        ("  key: certs/ledger-key.pem", "  key: certs/ledger-key.pem\n  root: 42", 12, "ledger.root",
         ("expected a non-empty string",)),
        # store
        ("store: sqlite:idwall.db", "store: mysql://root:hunter2@db/idwall", 12, "store", ("store URL scheme 'mysql:' is not supported", "sqlite:relative.db, sqlite:///abs/path.db or postgresql://")),
        ("store: sqlite:idwall.db", "store: idwall.db", 12, "store", ("a value without a scheme is not supported",)),
        ("store: sqlite:idwall.db", "store: 'sqlite::memory:'", 12, "store", ("does not name a database file", "in-memory")),
        ("store: sqlite:idwall.db", "store: 'sqlite:'", 12, "store", ("does not name a database file",)),
        ("store: sqlite:idwall.db", "store: sqlite://host/idwall.db", 12, "store", ("has a host part",)),
        ("store: sqlite:idwall.db", "store: sqlite:missing/dir/idwall.db", 12, "store", ("does not exist",)),
        ("store: sqlite:idwall.db", "store: postgresql:idwall", 12, "store", ("must be a postgresql://",)),
    ],
)
def test_errors_name_file_line_key_and_fix(tree: Path, old: str, new: str, line: int, key: str, fragments: tuple[str, ...]) -> None:
    assert old in BASE
    assert_error(error(tree, BASE.replace(old, new, 1)), tree, line, key, *fragments)



def test_the_ledger_root_is_pinned_as_written(tree: Path) -> None:
    pin = "xO4vCG_me9ZI_NrC1pLp2W098MpE_bOUJ01-bf09Axw"
    config = load_config(write(tree, BASE.replace("  key: certs/ledger-key.pem", f"  key: certs/ledger-key.pem\n  root: {pin}")))
    assert config.ledger.root == pin


def test_store_errors_never_echo_a_password(tree: Path) -> None:
    exc = error(tree, BASE.replace("sqlite:idwall.db", "mysql://root:hunter2@db/idwall"))
    assert "hunter2" not in str(exc)


def test_overlapping_routes_name_both(tree: Path) -> None:
    text = BASE + "  - name: shadow\n    match: {host: app.example.com, path: /app}\n    upstream: http://127.0.0.1:9009\n"
    exc = error(tree, text)
    assert str(exc) == (
        f"{tree / 'idwall.yaml'}:18: routes[1].match: route 'shadow' has the same host (app.example.com) and path (/app) "
        "as routes[0] 'app'; give each route a distinct host or path; the longest matching path prefix wins, so /app "
        "and /app/sub may coexist"
    )


def test_overlapping_any_host_routes(tree: Path) -> None:
    text = BASE + "  - {name: a, upstream: http://h}\n  - {name: b, match: {path: /}, upstream: http://i}\n"
    assert_error(error(tree, text), tree, 18, "routes[2].match", "route 'b' has the same host (any) and path (/) as routes[1] 'a'")


def test_duplicate_route_names(tree: Path) -> None:
    text = BASE + "  - name: app\n    match: {path: /other}\n    upstream: http://127.0.0.1:9009\n"
    assert_error(error(tree, text), tree, 17, "routes[1].name", "'app' is already the name of routes[0]", "unique name")


# --------------------------------------------------------------------------- TCP routes


_TCP = BASE + """\
  - name: db
    upstream: TCP://DB.Internal:5432
    allow: {groups: [dba]}
    fresh_auth: 10m
    proxy_protocol: v2
  - name: ssh
    upstream: tcp://[::1]:22
"""


def test_tcp_routes_are_read_and_normalised(tree: Path) -> None:
    config = load_config(write(tree, _TCP))
    db, ssh = config.routes[1], config.routes[2]
    assert db == Route(name="db", host=None, path="/", upstream="tcp://db.internal:5432", allow_users=(),
                       allow_groups=("dba",), fresh_auth=600, proxy_protocol="v2")
    assert db.is_tcp and ssh.is_tcp and not config.routes[0].is_tcp
    assert ssh.upstream == "tcp://[::1]:22" and ssh.proxy_protocol is None


def test_a_tcp_route_at_the_same_match_as_an_http_route_is_no_conflict(tree: Path) -> None:
    text = BASE.replace("match: {host: App.Example.COM, path: /app}", "match: {path: /}") + (
        "  - {name: db, upstream: 'tcp://127.0.0.1:5432'}\n")
    assert [r.name for r in load_config(write(tree, text)).routes] == ["app", "db"]


@pytest.mark.parametrize(
    "tail, line, key, fragments",
    [
        ("    upstream: tcp://db.internal\n", 18, "routes[1].upstream", ("has no port", "tcp://host:port")),
        ("    upstream: tcp://db.internal:5432/x\n", 18, "routes[1].upstream", ("has a path",)),
        ("    upstream: tcp://db.internal:0\n", 18, "routes[1].upstream", ("port 0",)),
        ("    upstream: ftp://db.internal:21\n", 18, "routes[1].upstream", ("is not an http://", "tcp://host:port")),
        ("    upstream: tcp://db:5432\n    proxy_protocol: v1\n", 19, "routes[1].proxy_protocol", ("'v1' is not allowed", "v2")),
        ("    upstream: tcp://db:5432\n    websockets: true\n", 19, "routes[1].websockets",
         ("does not apply to a TCP route", "/idwall/tunnel/db")),
        ("    upstream: tcp://db:5432\n    match: {path: /db}\n", 19, "routes[1].match", ("remove match",)),
        ("    upstream: tcp://db:5432\n    bind_request: false\n", 19, "routes[1].bind_request", ("does not apply",)),
        ("    upstream: tcp://db:5432\n    allow: {}\n", 19, "routes[1].allow", ("would admit nobody",)),
        ("    upstream: http://127.0.0.1:9002\n    proxy_protocol: v2\n", 19, "routes[1].proxy_protocol",
         ("is not tcp://", "remove proxy_protocol")),
    ],
)
def test_tcp_route_errors_name_file_line_key_and_fix(tree: Path, tail: str, line: int, key: str,
                                                     fragments: tuple[str, ...]) -> None:
    exc = error(tree, BASE + "  - name: db\n" + tail)
    assert_error(exc, tree, line, key, *fragments)
