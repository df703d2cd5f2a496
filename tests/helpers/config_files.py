"""Config files for the tests of idwall.config: the minimal file BASE, whose line numbers the tests cite, a
directory of placeholder key files for it, and helpers that load a file and check the ConfigError it raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.config import ConfigError, load_config

__all__ = ["BASE", "CERT_FILES", "assert_error", "config_tree", "error", "write"]

CERT_FILES = ("server.pem", "server-key.pem", "device-ca.pem", "device-ca-key.pem", "assertion-key.pem", "ledger-key.pem")

# Line numbers below refer to this text: 1 public_url, 2 tls, 3 tls.cert, 4 tls.key, 5 device_ca,
# 6 device_ca.cert, 7 device_ca.key, 8 assertion, 9 assertion.key, 10 ledger, 11 ledger.key,
# 12 store, 13 routes, 14 routes[0] / name, 15 match, 16 upstream.
BASE = """\
public_url: https://localhost:8443
tls:
  cert: certs/server.pem
  key: certs/server-key.pem
device_ca:
  cert: certs/device-ca.pem
  key: certs/device-ca-key.pem
assertion:
  key: certs/assertion-key.pem
ledger:
  key: certs/ledger-key.pem
store: sqlite:idwall.db
routes:
  - name: app
    match: {host: App.Example.COM, path: /app}
    upstream: http://127.0.0.1:9001
"""


def config_tree(tmp_path: Path) -> Path:
    """A config directory whose certs/ holds every file BASE references (content is irrelevant here)."""
    (tmp_path / "certs").mkdir()
    for name in CERT_FILES:
        (tmp_path / "certs" / name).write_text("not checked by config\n")
    return tmp_path


def write(tree: Path, text: str) -> Path:
    path = tree / "idwall.yaml"
    path.write_text(text)
    return path


def error(tree: Path, text: str) -> ConfigError:
    path = write(tree, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def assert_error(exc: ConfigError, tree: Path, line: int | None, key: str, *fragments: str) -> None:
    """The one-line form, the attributes, and every fragment (problem and hint) in the message."""
    text = str(exc)
    where = f"{tree / 'idwall.yaml'}" + (f":{line}" if line is not None else "")
    assert text.startswith(f"{where}: {key}: " if key else f"{where}: "), text
    assert "\n" not in text and "Traceback" not in text
    assert (exc.line, exc.key) == (line, key)
    assert "; " in exc.message, "message must say what is wrong and what would be valid"
    for fragment in fragments:
        assert fragment in text, (fragment, text)
