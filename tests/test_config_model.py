"""idwall.config.model: the records are frozen, and a ConfigError is always one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from idwall.config import load_config
from tests.helpers.config_files import BASE, config_tree, error, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


def test_config_is_frozen(tree: Path) -> None:
    config = load_config(write(tree, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.store = "sqlite:///tmp/other.db"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes[0].upstream = "http://evil"  # type: ignore[misc]


def test_error_is_one_line_even_with_control_characters(tree: Path) -> None:
    exc = error(tree, BASE + '"evil\\nkey\\r\\u001b[31m": 1\n')
    assert "\n" not in str(exc) and "\r" not in str(exc) and "\x1b" not in str(exc)
    assert exc.line == 17 and "unknown key" in str(exc)
    exc = error(tree, BASE.replace("name: app", 'name: "a\\nb"'))
    assert "\n" not in str(exc) and "'a\\nb' is not a valid route name" in str(exc)
