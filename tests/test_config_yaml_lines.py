"""idwall.config.yaml_lines: YAML syntax, duplicate keys and hostile documents are errors at their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.config_files import BASE, assert_error, config_tree, error


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return config_tree(tmp_path)


def test_bad_yaml_syntax_names_the_line(tree: Path) -> None:
    exc = error(tree, BASE.replace("  key: certs/ledger-key.pem", "  key: [certs/ledger-key.pem"))
    assert_error(exc, tree, 12, "", "invalid YAML", "fix the syntax near this line")


def test_bad_indentation_names_the_line(tree: Path) -> None:
    exc = error(tree, BASE.replace("  key: certs/server-key.pem", "    key: certs/server-key.pem"))
    assert_error(exc, tree, 4, "", "invalid YAML", "mapping values are not allowed")


def test_tab_indentation_names_the_line(tree: Path) -> None:
    exc = error(tree, BASE.replace("  key: certs/ledger-key.pem", "\tkey: certs/ledger-key.pem"))
    assert_error(exc, tree, 11, "", "invalid YAML", "'\\t'")


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        (BASE + "store: sqlite:other.db\n", 17, "store", "duplicate key (first on line 12)"),
        (BASE.replace("  key: certs/server-key.pem", "  key: certs/server-key.pem\n  cert: x"), 5, "tls.cert", "duplicate key (first on line 3)"),
        (BASE + "  - name: b\n    upstream: http://h\n    upstream: http://i\n", 19, "routes[1].upstream", "duplicate key (first on line 18)"),
    ],
)
def test_duplicate_keys_are_errors(tree: Path, text: str, line: int, key: str, fragment: str) -> None:
    assert_error(error(tree, text), tree, line, key, fragment, "each key may appear once")


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("<<: {a: 1}\n", 1, "", "not a plain name"),
        ("1: a\n", 1, "", "key '1' is not a plain name"),
        ("? [a, b]\n: 1\n", 1, "", "key a sequence is not a plain name"),
        ("public_url: !!python/object/apply:os.system [true]\n", 1, "public_url", "unsupported tag"),
        ("public_url: !!python/name:os.system\n", 1, "public_url", "could not determine a constructor"),
        ("tls: !!set {a, b}\n", 1, "tls", "unsupported tag"),
        ("routes: !!omap [a: 1]\n", 1, "routes", "unsupported tag"),
        ("public_url: !custom x\n", 1, "public_url", "could not determine a constructor"),
        ("a: &x [*x]\n", 1, "a[0]", "refers to itself"),
    ],
)
def test_hostile_yaml_is_refused(tree: Path, text: str, line: int, key: str, fragment: str) -> None:
    assert_error(error(tree, text), tree, line, key, fragment)


def test_alias_bomb_is_refused_quickly(tree: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    exc = error(tree, "\n".join(lines) + "\n")
    assert "expands to more than 100000 values" in str(exc)
