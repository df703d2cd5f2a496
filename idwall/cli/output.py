"""What every ``idwall`` command shares on the way out: the one-line error, untrusted text made printable,
and the exit code each failure ends in (0 ok, 1 failed, 2 usage or config, 130 interrupted)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable

from ..errors import IDWallError

#: control characters (C0, DEL, C1): what a hostile or broken gateway could drive the terminal with
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class CLIError(Exception):
    """A failure the CLI reports as one line; ``exit_code`` 1 (operation failed) or 2 (usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def usage(message: str) -> CLIError:
    return CLIError(message, 2)


def clean(text: Any, limit: int = 500) -> str:
    """One printable line from untrusted text (control characters become spaces)."""
    return CONTROL.sub(" ", str(text)).strip()[:limit]


def error_text(exc: BaseException) -> str:
    if isinstance(exc, IDWallError):
        text = exc.detail + (f" ({exc.log_detail})" if exc.log_detail else "")
    else:
        text = str(exc) or type(exc).__name__
    return clean(text, 1000)


def guarded(run: Callable[[], int]) -> int:
    """Run a command: CLIError as one line, no traceback for anything else unless IDWALL_DEBUG=1."""
    try:
        return run()
    except CLIError as exc:
        print(f"idwall: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("idwall: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `idwall audit export | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if os.environ.get("IDWALL_DEBUG") == "1":
            raise
        print(f"idwall: error: {error_text(exc)}", file=sys.stderr)
        return 1
