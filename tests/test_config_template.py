"""idwall.config.template: the annotated file idwall init writes loads, carries its arguments and refuses bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.config import Route, default_config_text, load_config
from tests.helpers.config_files import config_tree, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


def test_default_config_text_loads_and_matches_its_arguments(tree: Path) -> None:
    text = default_config_text(public_url="https://localhost:9443", port=9443, store_path="idwall.db", admin="root-admin")
    config = load_config(write(tree, text))
    assert config.public_url == "https://localhost:9443"
    assert config.listen.port == 9443
    assert config.webauthn.origins == ("https://localhost:9443",) and config.webauthn.rp_id == "localhost"
    assert config.sqlite_path == tree / "idwall.db"
    assert config.routes == (
        Route(name="whoami", host=None, path="/", upstream="http://127.0.0.1:9001", allow_users=None, allow_groups=None,
              fresh_auth=None, websockets=True, bind_request=True),
    )
    assert "root-admin" in text
    # annotated: every section has a comment right above it
    lines = text.splitlines()
    for section in ("public_url:", "listen:", "tls:", "device_ca:", "webauthn:", "session:", "assertion:", "ledger:", "store:", "devices:", "limits:", "admin:", "routes:"):
        index = next(i for i, line in enumerate(lines) if line.startswith(section))
        assert lines[index - 1].startswith("#"), section


def test_default_config_text_absolute_store_and_odd_values(tree: Path) -> None:
    db = tree / "data dir" / "x #1.db"
    db.parent.mkdir()
    text = default_config_text(public_url="https://gw.example.com", port=443, store_path=str(db), admin="o'neil: #1")
    config = load_config(write(tree, text))
    assert config.sqlite_path == db
    assert config.public_url == "https://gw.example.com" and config.webauthn.rp_id == "gw.example.com"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"public_url": "http://localhost:8443"},
        {"public_url": "https://localhost:8443/x"},
        {"port": 70000},
        {"admin": "a\nroutes: []"},
        {"admin": ""},
    ],
)
def test_default_config_text_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"public_url": "https://localhost:8443", "port": 8443, "store_path": "idwall.db", "admin": "admin"}
    args.update(kwargs)
    with pytest.raises(ValueError):
        default_config_text(**args)  # type: ignore[arg-type]
