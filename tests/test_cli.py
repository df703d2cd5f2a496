"""The ``idwall`` command line as a whole (:mod:`idwall.cli`): ``main`` hands ``demo`` the rest of the command
line, parses everything else, and every failure ends in one line on stderr and its exit code.

The commands themselves: test_cli_local.py (init, serve, keys rotate, audit) and test_cli_client.py
(device enroll and kill, against a gateway double over real TLS); the verbs and flags: test_cli_parser.py;
the one-line errors and exit codes: test_cli_output.py.
"""

from __future__ import annotations

import sys

import pytest

from idwall import cli


def test_demo_gets_the_rest_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    stand_in = types.ModuleType("idwall.demo")
    stand_in.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "idwall.demo", stand_in)
    monkeypatch.delattr("idwall.demo", raising=False)
    assert cli.main(["demo", "--port", "5", "--help", "x"]) == 3
    assert seen == [["--port", "5", "--help", "x"]]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["kill", "--user", "a", "--all", "--reason", "r", "--gateway", "https://x",
                     "--token-file", "t"]) == 2
    assert cli.main(["--help"]) == 0
