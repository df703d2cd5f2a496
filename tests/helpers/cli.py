"""The ``idwall`` command line in tests: as a subprocess the way a user runs it, without the caller's
``IDWALL_*`` settings, and on a freshly initialised gateway directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idwall import cli

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "Spawned", "init_gwdir", "run_cli", "spawn_cli", "start_cli_until_url", "unset_idwall_env"]


def _env(env: dict[str, str] | None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return full_env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m idwall ARGS`` in a subprocess, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "idwall", *args], cwd=cwd, env=_env(env), capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Spawned:
    """A long-running ``idwall`` command (``connect``, ``relay``): its process and the file of its output."""

    process: asyncio.subprocess.Process
    output: Path

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def json_lines(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of ``event`` printed so far."""
        found = []
        for line in self.lines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    async def wait_for(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        """Until ``text`` appears in ``count`` lines of the output (failing if the process ends first)."""
        async with asyncio.timeout(timeout):
            while sum(text in line for line in self.lines()) < count:
                assert self.process.returncode is None, self.output.read_text()
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def spawn_cli(*args: str, output: Path, env: dict[str, str] | None = None) -> Spawned:
    """Start ``python -m idwall ARGS`` with stdout and stderr going to ``output``."""
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(sys.executable, "-u", "-m", "idwall", *args, env=_env(env),
                                                       stdout=sink, stderr=subprocess.STDOUT,
                                                       stdin=subprocess.DEVNULL)
    return Spawned(process, output)


async def start_cli_until_url(*args: str, printed: bytes) -> tuple[Any, str]:
    """``python -m idwall ARGS`` as an asyncio subprocess (so a gateway in this loop keeps serving), read until it
    prints ``Open URL <printed>``; returns the running process and the URL."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "idwall", *args, cwd=str(REPO), env=_env(None),
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
