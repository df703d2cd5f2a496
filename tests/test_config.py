"""idwall.config: typed config, and errors that name file, line, key and what would be valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idwall.config import (
    AssertionConfig,
    Config,
    ConfigError,
    Limits,
    Listen,
    Route,
    UpstreamTLS,
    config_from_mapping,
    load_config,
)
from tests.helpers.config_files import BASE, CERT_FILES, assert_error, config_tree, error, write

REPO = Path(__file__).resolve().parent.parent


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
    assert config.ledger.key == tree / "certs" / "ledger-key.pem"
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


def test_paths_resolve_against_the_config_directory_not_the_cwd(tree: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(write(tree, BASE))
    assert config.tls.key == tree / "certs" / "server-key.pem"


def test_config_from_mapping_without_lines(tree: Path) -> None:
    data = {
        "public_url": "https://localhost:8443",
        "tls": {"cert": "certs/server.pem", "key": "certs/server-key.pem"},
        "device_ca": {"cert": "certs/device-ca.pem", "key": "certs/device-ca-key.pem"},
        "assertion": {"key": str(tree / "certs" / "assertion-key.pem")},
        "ledger": {"key": "certs/ledger-key.pem"},
        "store": "sqlite:idwall.db",
    }
    config = config_from_mapping(data, source=tree / "idwall.yaml", base_dir=tree)
    assert isinstance(config, Config) and config.routes == ()
    assert config.assertion.key == tree / "certs" / "assertion-key.pem"
    data["routes"] = [{"name": "x", "upstream": "gopher://h"}]
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, source=tree / "idwall.yaml", base_dir=tree)
    assert info.value.line is None
    assert str(info.value).startswith(f"{tree / 'idwall.yaml'}: routes[0].upstream: 'gopher://h' is not an http:// or an https:// URL; ")


# --------------------------------------------------------------------------- file-level errors


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", None, "the file is empty"),
        ("# only a comment\n", None, "the file is empty"),
        ("- a\n- b\n", 1, "expected a mapping, got a list"),
        ("just a string\n", 1, "expected a mapping, got a string"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
    ],
)
def test_the_whole_file_must_be_one_mapping(tree: Path, text: str, line: int | None, fragment: str) -> None:
    exc = error(tree, text)
    assert (exc.line, exc.key) == (line, "")
    assert fragment in str(exc) and "\n" not in str(exc)


def test_missing_and_unreadable_config_file(tree: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tree / "nope.yaml")
    assert str(info.value) == f"{tree / 'nope.yaml'}: cannot read the config file: No such file or directory; pass --config with a readable YAML file"
    with pytest.raises(ConfigError) as info:
        load_config(tree)
    assert "cannot read the config file" in str(info.value)


def test_non_utf8_file_names_the_line(tree: Path) -> None:
    path = tree / "idwall.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 17 and "not UTF-8" in str(info.value)


# --------------------------------------------------------------------------- key-level errors


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragments"),
    [
        # unknown keys, with the closest valid key suggested
        ("store:", "listn: {port: 1}\nstore:", 12, "listn", ("unknown key", "did you mean 'listen'?", "valid keys here: public_url, listen")),
        ("  cert: certs/server.pem", "  crt: certs/server.pem", 3, "tls.crt", ("unknown key", "did you mean 'cert'?", "valid keys here: cert, key")),
        ("    upstream:", "    upstrem: x\n    upstream:", 16, "routes[0].upstrem", ("did you mean 'upstream'?",)),
        ("store:", "zzz: 1\nstore:", 12, "zzz", ("unknown key; valid keys here: public_url",)),
        ("match: {host", "match: {hots: a, host", 15, "routes[0].match.hots", ("did you mean 'host'?",)),
        # wrong types
        ("store:", "listen: {port: '8443'}\nstore:", 12, "listen.port", ("expected an integer, got a string ('8443')", "whole number from 0 to 65535")),
        ("store:", "listen: 8443\nstore:", 12, "listen", ("expected a mapping, got an integer (8443)", "host, port")),
        ("store:", "listen: {port: true}\nstore:", 12, "listen.port", ("expected an integer, got a boolean (true)",)),
        ("store:", "listen: {port: 8443.0}\nstore:", 12, "listen.port", ("expected an integer, got a number",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    websockets: sure", 17, "routes[0].websockets", ("expected true or false, got a string ('sure')", "write true or false")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {users: alice}", 17, "routes[0].allow.users", ("expected a list, got a string", "[alice, bob]")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {users: [alice, 7]}", 17, "routes[0].allow.users[1]", ("expected a non-empty string, got an integer (7)",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {}", 17, "routes[0].allow", ("would admit nobody", "remove allow to admit every signed-in user")),
        (BASE[BASE.index("routes:"):], "routes: {name: app}\n", 13, "routes", ("expected a list, got a mapping",)),
        ("  - name: app", "  - name: 12", 14, "routes[0].name", ("expected a non-empty string, got an integer (12)",)),
        ("  - name: app", "  - name: 'a b'", 14, "routes[0].name", ("'a b' is not a valid route name", "letters, digits")),
        ("  - name: app", "  - name: 'app'\n    audience: ''", 15, "routes[0].audience", ("expected a non-empty string, got a string ('')",)),
        ("  key: certs/server-key.pem", "  key:", 4, "tls.key", ("expected a non-empty string, got an empty value",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {rp_name: 5}", 2, "webauthn.rp_name", ("expected a non-empty string",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {origins: https://localhost:8443}", 2, "webauthn.origins", ("expected a non-empty list", "list of https origins")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {origins: []}", 2, "webauthn.origins", ("expected a non-empty list",)),
        ("store:", "limits: {api_body: 100}\nstore:", 12, "limits.api_body", ("100 is out of range", "from 4096 to")),
        ("store:", "limits: {header_size: 64kb}\nstore:", 12, "limits.header_size", ("'64kb' is not a size", "8k, 1m, 64m")),
        ("store:", "limits: {max_body: -1m}\nstore:", 12, "limits.max_body", ("'-1m' is not a size",)),
        ("store:", "limits: {head_size: 4k, header_size: 8k}\nstore:", 12, "limits.head_size",
         ("4096 is smaller than header_size (8192)", "at least one full header line")),
        ("store:", "limits: {max_headers: 2}\nstore:", 12, "limits.max_headers", ("2 is out of range", "from 8 to")),
        ("store:", "limits: {body_timeout: forever}\nstore:", 12, "limits.body_timeout", ("'forever' is not a duration",)),
        ("store:", "limits: {connections_without_certificate: 0}\nstore:", 12,
         "limits.connections_without_certificate", ("0 is out of range",)),
        ("store:", "limits: {keepalive: 75s}\nstore:", 12, "limits.keepalive", ("unknown key", "keepalive_timeout")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    max_body: lots", 17,
         "routes[0].max_body", ("'lots' is not a size", "8k, 1m, 64m")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    cross_site: {origins: portal}",
         17, "routes[0].cross_site.origins", ("expected a list, got a string", "https://portal.example.com")),
        ("    upstream: http://127.0.0.1:9001",
         "    upstream: http://127.0.0.1:9001\n    cross_site:\n      origins: [https://portal.example/app]", 18,
         "routes[0].cross_site.origins[0]", ("has a path", "scheme, host and port only")),
        ("    upstream: http://127.0.0.1:9001",
         "    upstream: http://127.0.0.1:9001\n    cross_site:\n      origins: [ftp://portal.example]", 18,
         "routes[0].cross_site.origins[0]", ("is not an https:// or an http:// URL",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    cross_site: {hosts: [a]}", 17,
         "routes[0].cross_site.hosts", ("unknown key", "origins")),
        # bad durations, each at the line of its key
        ("store:", "session: {max_age: 10 minutes}\nstore:", 12, "session.max_age", ("'10 minutes' is not a duration", "90s, 15m, 12h, 30d")),
        ("store:", "session:\n  idle_timeout: -5m\nstore:", 13, "session.idle_timeout", ("'-5m' is not a duration",)),
        ("store:", "session: {max_age: 1.5h}\nstore:", 12, "session.max_age", ("'1.5h' is not a duration",)),
        ("store:", "session: {max_age: ''}\nstore:", 12, "session.max_age", ("'' is not a duration",)),
        ("store:", "session: {max_age: 1.5}\nstore:", 12, "session.max_age", ("a number (1.5) is not a duration",)),
        ("store:", "session: {max_age: 0s}\nstore:", 12, "session.max_age", ("'0s' is too short", "at least 1s")),
        ("store:", "admin: {fresh_auth: }\nstore:", 12, "admin.fresh_auth", ("an empty value is not a duration",)),
        ("  key: certs/device-ca-key.pem", "  key: certs/device-ca-key.pem\n  cert_ttl: 1 month", 8, "device_ca.cert_ttl", ("'1 month' is not a duration",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    fresh_auth: 15 min", 17, "routes[0].fresh_auth", ("'15 min' is not a duration",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    timeout: 5M", 17, "routes[0].timeout", ("'5M' is not a duration",)),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  ttl: 60\n  overlap: 30s", 11, "assertion.overlap", ("30s is shorter than assertion.ttl (60s)",)),
        # missing required keys: the line of the mapping that should hold them
        ("ledger:\n  key: certs/ledger-key.pem\n", "", 1, "ledger", ("missing required key", "add 'ledger:' to the top level")),
        ("public_url: https://localhost:8443\n", "", 1, "public_url", ("missing required key",)),
        ("  key: certs/server-key.pem\n", "", 2, "tls.key", ("missing required key", "add 'key:' to tls")),
        ("assertion:\n  key: certs/assertion-key.pem", "assertion: {ttl: 60s}", 8, "assertion.key", ("missing required key",)),
        ("    upstream: http://127.0.0.1:9001\n", "", 14, "routes[0].upstream", ("missing required key", "add 'upstream:' to routes[0]")),
        ("  - name: app\n    match", "  - match", 14, "routes[0].name", ("missing required key",)),
        # upstream URLs
        ("upstream: http://127.0.0.1:9001", "upstream: ftp://127.0.0.1:21", 16, "routes[0].upstream", ("'ftp://127.0.0.1:21' is not an http:// or an https:// URL", "write http://host:port")),
        ("upstream: http://127.0.0.1:9001", "upstream: 127.0.0.1:9001", 16, "routes[0].upstream", ("is not an http:// or an https:// URL",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://", 16, "routes[0].upstream", ("has no valid host name",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://user:pw@127.0.0.1", 16, "routes[0].upstream", ("user:password@",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:99999", 16, "routes[0].upstream", ("invalid port",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:9001/?a=1", 16, "routes[0].upstream", ("query or fragment",)),
        ("upstream: http://127.0.0.1:9001", "upstream: 'http://bad host'", 16, "routes[0].upstream", ("white space",)),
        ("upstream: http://127.0.0.1:9001", "upstream: http://127.0.0.1:9001\n    upstream_tls: {ca: certs/server.pem}", 17, "routes[0].upstream_tls", ("is not https", "remove upstream_tls")),
        ("upstream: http://127.0.0.1:9001", "upstream: https://127.0.0.1:9001\n    upstream_tls: {cert: certs/server.pem}", 17, "routes[0].upstream_tls", ("only one of cert and key",)),
        # route paths and hosts
        ("path: /app}", "path: app}", 15, "routes[0].match.path", ("'app' does not start with '/'", "absolute path prefix")),
        ("path: /app}", "path: ''}", 15, "routes[0].match.path", ("expected a non-empty string",)),
        ("path: /app}", "path: /a/../idwall}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /a//b}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /%69dwall}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: '/a?b'}", 15, "routes[0].match.path", ("is not a normalised path",)),
        ("path: /app}", "path: /idwall}", 15, "routes[0].match.path", ("'/idwall' is reserved", "the gateway owns /idwall/ and /.well-known/idwall/")),
        ("path: /app}", "path: /idwall/api}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /IDWall/admin}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /.well-known/idwall/jwks.json}", 15, "routes[0].match.path", ("is reserved",)),
        ("path: /app}", "path: /.well-known/idwall}", 15, "routes[0].match.path", ("is reserved",)),
        ("host: App.Example.COM", "host: https://app.example.com", 15, "routes[0].match.host", ("is not a host name", "without scheme or port")),
        ("host: App.Example.COM", "host: 'app.example.com:443'", 15, "routes[0].match.host", ("is not a host name",)),
        ("host: App.Example.COM", "host: '*.example.com'", 15, "routes[0].match.host", ("is not a host name",)),
        # webauthn
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [http://localhost:8443]", 3, "webauthn.origins[0]", ("'http://localhost:8443' is not an https:// URL", "http origins (even localhost) can never be genuine")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins:\n    - https://localhost:8443\n    - http://localhost", 5, "webauthn.origins[1]", ("is not an https:// URL",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [https://localhost:8443/login]", 3, "webauthn.origins[0]", ("has a path (/login)",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  origins: [https://evil.example]", 3, "webauthn.origins[0]", ("host 'evil.example' is neither rp_id 'localhost' nor a subdomain of it",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  rp_id: example.com", 2, "webauthn.origins[0]", ("host 'localhost' is neither rp_id 'example.com'",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  rp_id: https://localhost", 3, "webauthn.rp_id", ("is not a host name", "no scheme or port")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  user_verification: always", 3, "webauthn.user_verification", ("'always' is not allowed", "use one of: required | preferred | discouraged")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  user_verification: true", 3, "webauthn.user_verification", ("a boolean (true) is not allowed",)),
        # other enumerations and ranges
        ("store:", "devices: {approval: manager_or_admin}\nstore:", 12, "devices.approval", ("'manager_or_admin' is not allowed", "use one of: none | manager | admin")),
        ("store:", "listen: {port: 65536}\nstore:", 12, "listen.port", ("65536 is out of range", "whole number from 0 to 65535")),
        ("store:", "listen: {port: -1}\nstore:", 12, "listen.port", ("-1 is out of range",)),
        # public_url
        ("public_url: https://localhost:8443", "public_url: http://localhost:8443", 1, "public_url", ("'http://localhost:8443' is not an https:// URL", "the gateway only serves TLS")),
        ("public_url: https://localhost:8443", "public_url: localhost:8443", 1, "public_url", ("is not an https:// URL",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443/app", 1, "public_url", ("has a path",)),
        ("public_url: https://localhost:8443", "public_url: https://", 1, "public_url", ("has no valid host name",)),
        ("public_url: https://localhost:8443", "public_url: 443", 1, "public_url", ("expected a non-empty string, got an integer",)),
        # the assertion header namespace
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X-Identity", 10, "assertion.header", ("'X-Identity' is not an X-IDWall-* header name", "strips that namespace from client requests")),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X-IDWall-", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: X_IDWall_Assertion", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
        ("  key: certs/assertion-key.pem", "  key: certs/assertion-key.pem\n  header: 'X-IDWall-A B'", 10, "assertion.header", ("is not an X-IDWall-* header name",)),
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


# --------------------------------------------------------------------------- the example file


def test_example_config_parses(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "idwall.example.yaml", tmp_path / "idwall.yaml")
    (tmp_path / "certs").mkdir()
    for name in CERT_FILES + ("wiki-ca.pem", "wiki-client.pem", "wiki-client-key.pem"):
        (tmp_path / "certs" / name).write_text("x")
    config = load_config(tmp_path / "idwall.yaml")
    whoami, wiki = config.routes
    assert (whoami.name, whoami.websockets, whoami.path) == ("whoami", True, "/")
    assert (wiki.host, wiki.allow_users, wiki.allow_groups, wiki.fresh_auth, wiki.bind_request) == (
        "wiki.localhost", ("alice",), ("eng",), 900, True)
    assert wiki.upstream_tls == UpstreamTLS(
        ca=tmp_path / "certs" / "wiki-ca.pem", cert=tmp_path / "certs" / "wiki-client.pem", key=tmp_path / "certs" / "wiki-client-key.pem")
    # without the files it references, the example fails on the first one, by line
    (tmp_path / "certs" / "server.pem").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "idwall.yaml")
    assert info.value.key == "tls.cert" and info.value.line is not None
