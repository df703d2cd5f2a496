"""idwall.config.checks: unknown keys get a suggestion, bad values the valid form, and key files must be readable."""

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
        "device_ca, webauthn, session, assertion, ledger, store, devices, routes, limits, admin"
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
