"""The ``idwall`` command line in tests: as a subprocess the way a user runs it, without the caller's
``IDWALL_*`` settings, and on a freshly initialised gateway directory."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from idwall import cli

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "init_gwdir", "run_cli", "start_cli_until_url", "unset_idwall_env"]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m idwall ARGS`` in a subprocess, as a user would run it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "idwall", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


async def start_cli_until_url(*args: str, printed: bytes) -> tuple[Any, str]:
    """``python -m idwall ARGS`` as an asyncio subprocess (so a gateway in this loop keeps serving), read until it
    prints ``Open URL <printed>``; returns the running process and the URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "idwall", *args, cwd=str(REPO), env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    found = re.search(rb"Open (https://\S+) " + re.escape(printed), line)
    if not found:
        _, err = await process.communicate()
        raise AssertionError(f"idwall {' '.join(args)} printed no page URL: {line!r} {err!r}")
    return process, found.group(1).decode()


def unset_idwall_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the command line reads, so that the caller's settings do not leak into a test."""
    for name in ("IDWALL_CONFIG", "IDWALL_CA", "IDWALL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def init_gwdir(tmp_path: Path) -> Path:
    """``idwall init --json`` into ``tmp_path/gw`` (port 9555); returns the directory."""
    directory = tmp_path / "gw"
    assert cli.main(["init", "--dir", str(directory), "--json", "--port", "9555"]) == 0
    return directory
