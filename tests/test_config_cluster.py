"""idwall.config.cluster: the ``cluster`` section (several nodes on one PostgreSQL database), read from real files.
It is optional; ``pool_size`` defaults to 10 connections per process and must be a whole number from 1 to 200,
``max_staleness`` to 30 seconds;
every mistake names the file, line and key and says what would be valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.config import load_config
from idwall.config.model import ClusterConfig
from tests.helpers.config_files import BASE, assert_error, config_tree, error, write

POSTGRES = BASE.replace("store: sqlite:idwall.db", "store: postgresql://idwall@127.0.0.1:5432/idwall")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


def test_the_section_is_optional(tree: Path) -> None:
    assert load_config(write(tree, POSTGRES)).cluster == ClusterConfig(pool_size=10, max_staleness=30)


def test_max_staleness_is_a_duration(tree: Path) -> None:
    assert load_config(write(tree, POSTGRES + "cluster:\n  max_staleness: 2m\n")).cluster.max_staleness == 120


@pytest.mark.parametrize("size", [1, 25, 200])
def test_the_pool_size_is_read(tree: Path, size: int) -> None:
    config = load_config(write(tree, POSTGRES + f"cluster:\n  pool_size: {size}\n"))
    assert config.cluster.pool_size == size
    assert config.store == "postgresql://idwall@127.0.0.1:5432/idwall"


# BASE has 16 lines: "cluster:" is line 17, its keys line 18.
@pytest.mark.parametrize(("section", "line", "key", "fragments"), [
    ("cluster:\n  pool_size: 0\n", 18, "cluster.pool_size", ("0 is out of range", "from 1 to 200")),
    ("cluster:\n  pool_size: 201\n", 18, "cluster.pool_size", ("201 is out of range", "connections per process")),
    ("cluster:\n  pool_size: ten\n", 18, "cluster.pool_size", ("expected an integer, got a string",)),
    ("cluster:\n  pool_size: true\n", 18, "cluster.pool_size", ("expected an integer",)),
    ("cluster:\n  pool: 5\n", 18, "cluster.pool", ("unknown key", "pool_size")),
    ("cluster: [pool_size]\n", 17, "cluster", ("expected a mapping",)),
    ("cluster:\n  max_staleness: soon\n", 18, "cluster.max_staleness", ("'soon' is not a duration",)),
    ("cluster:\n  max_staleness: 0s\n", 18, "cluster.max_staleness", ("'0s' is too short", "at least 1s")),
])
def test_errors_name_file_line_key_and_fix(tree: Path, section: str, line: int, key: str,
                                           fragments: tuple[str, ...]) -> None:
    assert_error(error(tree, POSTGRES + section), tree, line, key, *fragments)


def test_a_misspelt_section_is_named(tree: Path) -> None:
    assert_error(error(tree, POSTGRES + "clustre:\n  pool_size: 5\n"), tree, 17, "clustre",
                 "unknown key", "did you mean 'cluster'?")
