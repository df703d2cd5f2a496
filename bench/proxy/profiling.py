"""py-spy around the gateway during a measurement (py-spy is a dev tool, not a dependency of IDWall)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def start_profiler(directory: Path, name: str, pid: int, seconds: float, native: bool,
                   subprocesses: bool) -> subprocess.Popen[bytes]:
    """py-spy ``pid`` (and its workers with ``subprocesses``) into ``directory/<name>.txt`` (collapsed stacks).

    Without ``native`` the sampler never stops the gateway, so only Python frames are seen (time in C
    lands on the calling Python frame). ``native`` adds C frames (syscalls, OpenSSL, the ECDSA code)
    but py-spy must then pause the process for every sample, which lowers that run's throughput.
    """
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy on PATH (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
           "--format", "raw", "--output", str(directory / f"{name}.txt")]
    cmd.append("--native" if native else "--nonblocking")
    if subprocesses:
        cmd.append("--subprocesses")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(directory / f"{name}.log", "w"))


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """The functions with the most samples on the stack (inclusive) and at the top (self), in %."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{total} samples"]
    lines += [f"self {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += [f"incl {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return lines
