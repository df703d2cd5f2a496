"""idwall.cli.output: what every command shares on the way out. A failure is one line on stderr (``idwall: ...``)
and an exit code (0 ok, 1 failed, 2 usage, 130 interrupted), never a traceback unless ``IDWALL_DEBUG=1``; a
reader that goes away (``| head``) ends the command quietly; text from a gateway is made one printable line.

Tested through the real command line in a subprocess where the process's exit and its stderr are the promise,
and by calling ``guarded``, ``clean`` and ``error_text`` directly otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from idwall.cli.output import CLIError, clean, error_text, guarded, usage
from idwall.errors import Conflict
from idwall.store import StoreError
from tests.helpers.cli import REPO, init_gwdir, run_cli


@pytest.fixture
def gwdir(tmp_path: Path) -> Path:
    return init_gwdir(tmp_path)


def test_unexpected_error_is_one_line_unless_debug(gwdir: Path) -> None:
    (gwdir / "certs" / "assertion-key.pem").write_text("not a key")
    proc = run_cli("keys", "rotate", "--config", str(gwdir / "idwall.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("idwall: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    debug = run_cli("keys", "rotate", "--config", str(gwdir / "idwall.yaml"), env={"IDWALL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def _fails(exc: BaseException) -> int:
    def run() -> int:
        raise exc
    return guarded(run)


def test_guarded_returns_the_commands_own_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert guarded(lambda: 0) == 0
    assert guarded(lambda: 7) == 7
    assert capsys.readouterr().err == ""


def test_cli_error_is_one_line_with_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert _fails(CLIError("the gateway refused: no such user")) == 1
    assert capsys.readouterr().err == "idwall: the gateway refused: no such user\n"
    assert _fails(usage("--reason must not be empty")) == 2
    assert capsys.readouterr().err == "idwall: --reason must not be empty\n"


def test_interrupt_exits_130_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert _fails(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "idwall: interrupted\n"


def test_unexpected_error_names_the_problem_and_exits_1(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDWALL_DEBUG", raising=False)
    assert _fails(StoreError("the store is unavailable", log_detail="sqlite: disk I/O error")) == 1
    assert capsys.readouterr().err == "idwall: error: the store is unavailable (sqlite: disk I/O error)\n"
    monkeypatch.setenv("IDWALL_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        _fails(ZeroDivisionError("boom"))


def test_a_reader_that_leaves_ends_the_command_quietly() -> None:
    """``idwall audit export | head``: the pipe closes under a writing command; exit 0, nothing on stderr."""
    script = textwrap.dedent("""
        import sys
        from idwall.cli.output import guarded

        def export() -> int:
            sys.stdin.read()  # wait until the test has closed its end of stdout
            for _ in range(10000):
                print("x" * 1000)
            return 0

        sys.exit(guarded(export))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    proc.stdout.close()  # the reader left before the first line
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


@pytest.mark.parametrize(("text", "printed"), [
    ("plain words", "plain words"),
    ("red \x1b[31malert\x1b[0m", "red  [31malert [0m"),  # ESC gone: the terminal is not driven
    ("C1 \x9b2J CSI", "C1  2J CSI"),  # the one-byte CSI too
    ("bell\x07 and DEL\x7f", "bell  and DEL"),
    ("two\r\nlines\n", "two lines"),  # one line, however many the server sent
    ("  padded\t", "padded"),
    (404, "404"),
])
def test_clean_makes_untrusted_text_one_printable_line(text: object, printed: str) -> None:
    assert clean(text) == printed


def test_clean_cuts_at_the_limit() -> None:
    assert clean("x" * 600) == "x" * 500
    assert clean("abcdef", limit=3) == "abc"


def test_error_text_of_our_errors_says_detail_and_log_detail() -> None:
    assert error_text(Conflict("already used")) == "already used"
    assert error_text(StoreError("down", log_detail="sqlite: locked\nagain")) == "down (sqlite: locked again)"
    assert error_text(Conflict()) == "Conflict"  # no detail: the title


def test_error_text_of_other_errors() -> None:
    assert error_text(ValueError("bad value\x1b[2J")) == "bad value [2J"
    assert error_text(ValueError()) == "ValueError"  # an empty message still names something
    assert error_text(RuntimeError("y" * 2000)) == "y" * 1000
