"""idwall.config.checks (Ctx): a key of the wrong type, out of range, not a duration or size, unknown (with a
suggestion) or missing is an error naming file, line and key with the valid form; key files must be readable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from idwall.config import ConfigError, load_config
from tests.helpers.config_files import BASE, CERT_FILES, assert_error, config_tree, error, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


def test_unknown_top_level_key_exact_message(tree: Path) -> None:
    exc = error(tree, BASE + "routse: []\n")
    assert str(exc) == (
        f"{tree / 'idwall.yaml'}:17: routse: unknown key; did you mean 'routes'? valid keys here: public_url, listen, tls, "
        "device_ca, webauthn, session, assertion, ledger, store, devices, routes, limits, admin, privileged, incident, "
        "cluster"
    )


def test_bad_duration_exact_message(tree: Path) -> None:
    exc = error(tree, BASE + "session:\n  max_age: 10 minutes\n")
    assert str(exc) == (
        f"{tree / 'idwall.yaml'}:18: session.max_age: '10 minutes' is not a duration; write a whole number followed by "
        "s, m, h or d (90s, 15m, 12h, 30d), or a bare number of seconds"
    )


@pytest.mark.parametrize(
    ("key", "file", "line"),
    [
        ("tls.cert", "server.pem", 3),
        ("tls.key", "server-key.pem", 4),
        ("device_ca.cert", "device-ca.pem", 6),
        ("device_ca.key", "device-ca-key.pem", 7),
        ("assertion.key", "assertion-key.pem", 9),
        ("ledger.key", "ledger-key.pem", 11),
    ],
)
def test_missing_key_and_certificate_files(tree: Path, key: str, file: str, line: int) -> None:
    target = tree / "certs" / file
    target.unlink()
    assert_error(error(tree, BASE), tree, line, key, f"file not found: {target}", f"relative paths are relative to {tree}")
    target.mkdir()
    assert_error(error(tree, BASE), tree, line, key, f"{target} is a directory, not a file")


def load_as_nobody(path: Path) -> str:
    """str() of the ConfigError that load_config raises in a forked child running as uid 65534."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                load_config(path)
                message = "loaded without error"
            except ConfigError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return output


def test_unreadable_key_file() -> None:
    tree = Path(tempfile.mkdtemp(prefix="idwall-config-"))
    try:
        tree.chmod(0o755)
        (tree / "certs").mkdir(mode=0o755)
        for name in CERT_FILES:
            (tree / "certs" / name).write_text("x")
            (tree / "certs" / name).chmod(0o644)
        target = tree / "certs" / "ledger-key.pem"
        target.chmod(0o600 if os.geteuid() == 0 else 0)
        write(tree, BASE.replace("sqlite:idwall.db", "sqlite:///tmp/idwall.db")).chmod(0o644)
        if os.geteuid() == 0:  # root reads any file: check as "nobody"
            message = load_as_nobody(tree / "idwall.yaml")
        else:
            with pytest.raises(ConfigError) as info:
                load_config(tree / "idwall.yaml")
            message = str(info.value)
        assert message.startswith(f"{tree / 'idwall.yaml'}:11: ledger.key: {target} is not readable by this user; "), message
    finally:
        shutil.rmtree(tree)


def test_missing_upstream_tls_files(tree: Path) -> None:
    text = BASE.replace("upstream: http://127.0.0.1:9001", "upstream: https://127.0.0.1:9001\n    upstream_tls:\n      ca: certs/nope.pem")
    assert_error(error(tree, text), tree, 18, "routes[0].upstream_tls.ca", f"file not found: {tree / 'certs' / 'nope.pem'}")


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragments"),
    [
        # unknown keys, with the closest valid key suggested
        ("store:", "listn: {port: 1}\nstore:", 12, "listn", ("unknown key", "did you mean 'listen'?", "valid keys here: public_url, listen")),
        ("  cert: certs/server.pem", "  crt: certs/server.pem", 3, "tls.crt", ("unknown key", "did you mean 'cert'?", "valid keys here: cert, key")),
        ("    upstream:", "    upstrem: x\n    upstream:", 16, "routes[0].upstrem", ("did you mean 'upstream'?",)),
        ("store:", "zzz: 1\nstore:", 12, "zzz", ("unknown key; valid keys here: public_url",)),
        ("match: {host", "match: {hots: a, host", 15, "routes[0].match.hots", ("did you mean 'host'?",)),
        ("store:", "limits: {keepalive: 75s}\nstore:", 12, "limits.keepalive", ("unknown key", "keepalive_timeout")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    cross_site: {hosts: [a]}", 17,
         "routes[0].cross_site.hosts", ("unknown key", "origins")),
        # wrong types, and empty values where a value is needed
        ("store:", "listen: {port: '8443'}\nstore:", 12, "listen.port", ("expected an integer, got a string ('8443')", "whole number from 0 to 65535")),
        ("store:", "listen: 8443\nstore:", 12, "listen", ("expected a mapping, got an integer (8443)", "host, port")),
        ("store:", "listen: {port: true}\nstore:", 12, "listen.port", ("expected an integer, got a boolean (true)",)),
        ("store:", "listen: {port: 8443.0}\nstore:", 12, "listen.port", ("expected an integer, got a number",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    websockets: sure", 17, "routes[0].websockets", ("expected true or false, got a string ('sure')", "write true or false")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {users: alice}", 17, "routes[0].allow.users", ("expected a list, got a string", "[alice, bob]")),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    allow: {users: [alice, 7]}", 17, "routes[0].allow.users[1]", ("expected a non-empty string, got an integer (7)",)),
        ("  - name: app", "  - name: 12", 14, "routes[0].name", ("expected a non-empty string, got an integer (12)",)),
        ("  - name: app", "  - name: 'app'\n    audience: ''", 15, "routes[0].audience", ("expected a non-empty string, got a string ('')",)),
        ("  key: certs/server-key.pem", "  key:", 4, "tls.key", ("expected a non-empty string, got an empty value",)),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn: {rp_name: 5}", 2, "webauthn.rp_name", ("expected a non-empty string",)),
        ("path: /app}", "path: ''}", 15, "routes[0].match.path", ("expected a non-empty string",)),
        ("public_url: https://localhost:8443", "public_url: 443", 1, "public_url", ("expected a non-empty string, got an integer",)),
        # sizes and numbers out of range
        ("store:", "limits: {api_body: 100}\nstore:", 12, "limits.api_body", ("100 is out of range", "from 4096 to")),
        ("store:", "limits: {header_size: 64kb}\nstore:", 12, "limits.header_size", ("'64kb' is not a size", "8k, 1m, 64m")),
        ("store:", "limits: {max_body: -1m}\nstore:", 12, "limits.max_body", ("'-1m' is not a size",)),
        ("store:", "limits: {max_headers: 2}\nstore:", 12, "limits.max_headers", ("2 is out of range", "from 8 to")),
        ("store:", "limits: {connections_without_certificate: 0}\nstore:", 12,
         "limits.connections_without_certificate", ("0 is out of range",)),
        ("    upstream: http://127.0.0.1:9001", "    upstream: http://127.0.0.1:9001\n    max_body: lots", 17,
         "routes[0].max_body", ("'lots' is not a size", "8k, 1m, 64m")),
        # bad durations, each at the line of its key
        ("store:", "limits: {body_timeout: forever}\nstore:", 12, "limits.body_timeout", ("'forever' is not a duration",)),
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
        # missing required keys: the line of the mapping that should hold them
        ("ledger:\n  key: certs/ledger-key.pem\n", "", 1, "ledger", ("missing required key", "add 'ledger:' to the top level")),
        ("public_url: https://localhost:8443\n", "", 1, "public_url", ("missing required key",)),
        ("  key: certs/server-key.pem\n", "", 2, "tls.key", ("missing required key", "add 'key:' to tls")),
        ("assertion:\n  key: certs/assertion-key.pem", "assertion: {ttl: 60s}", 8, "assertion.key", ("missing required key",)),
        ("    upstream: http://127.0.0.1:9001\n", "", 14, "routes[0].upstream", ("missing required key", "add 'upstream:' to routes[0]")),
        ("  - name: app\n    match", "  - match", 14, "routes[0].name", ("missing required key",)),
        # enumerations and ranges
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  user_verification: always", 3, "webauthn.user_verification", ("'always' is not allowed", "use one of: required | preferred | discouraged")),
        ("public_url: https://localhost:8443", "public_url: https://localhost:8443\nwebauthn:\n  user_verification: true", 3, "webauthn.user_verification", ("a boolean (true) is not allowed",)),
        ("store:", "devices: {approval: manager_or_admin}\nstore:", 12, "devices.approval", ("'manager_or_admin' is not allowed", "use one of: none | manager | admin")),
        ("store:", "listen: {port: 65536}\nstore:", 12, "listen.port", ("65536 is out of range", "whole number from 0 to 65535")),
        ("store:", "listen: {port: -1}\nstore:", 12, "listen.port", ("-1 is out of range",)),
    ],
)
def test_errors_name_file_line_key_and_fix(tree: Path, old: str, new: str, line: int, key: str, fragments: tuple[str, ...]) -> None:
    assert old in BASE
    assert_error(error(tree, BASE.replace(old, new, 1)), tree, line, key, *fragments)

