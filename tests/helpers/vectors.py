"""The one loader of the committed vector sets under ``tests/vectors/<set>/``.

Every set is read through :func:`vector_files`, so a set whose files went missing or were renamed fails its
tests instead of parametrizing nothing; JSON is read strictly (a key twice is an error, not "last wins").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from idwall.encoding import unique_members

__all__ = ["VECTORS", "read_json", "read_jsonl", "vector_files"]

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def vector_files(name: str, pattern: str) -> list[Path]:
    """The files of ``tests/vectors/<name>`` matching ``pattern``, sorted; none at all is an error."""
    files = sorted((VECTORS / name).glob(pattern))
    if not files:
        raise FileNotFoundError(f"tests/vectors/{name}: no file matches {pattern!r}")
    return files


def read_json(path: Path) -> Any:
    """One JSON document, with duplicate keys refused."""
    return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_members)


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<file>:<line>", row)`` for every non-blank line of a JSON-lines file, duplicate keys refused."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield f"{path.name}:{number}", json.loads(line, object_pairs_hook=unique_members)
