"""idwall.config.load: ``load_config`` reads one UTF-8 YAML file and validates it, relative paths resolving
against the file's directory; ``config_from_mapping`` validates data built in code, without line numbers. Either
raises ConfigError only. Tested on real files in a temporary config directory (helpers/config_files.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idwall.config import Config, ConfigError, UpstreamTLS, config_from_mapping, load_config
from tests.helpers.config_files import BASE, CERT_FILES, config_tree, error, write

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


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



# --------------------------------------------------------------------------- the example file


def test_example_config_parses(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "idwall.example.yaml", tmp_path / "idwall.yaml")
    (tmp_path / "certs").mkdir()
    for name in CERT_FILES + ("wiki-ca.pem", "wiki-client.pem", "wiki-client-key.pem"):
        (tmp_path / "certs" / name).write_text("x")
    config = load_config(tmp_path / "idwall.yaml")
    assert [p.name for p in config.incident.playbooks] == ["org-wide-reset", "one-user", "lost-device", "ransomware"]
    assert config.privileged.groups == ("sre",) and config.incident.notice is not None
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
