"""Ledger exports as JSON lines: one canonical JSON object per entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from idwall.encoding import canonical_json, unique_members
from idwall.errors import BadRequest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str | bytes) -> Any:
    # a repeated key is a DuplicateKey (a ValueError): the hash would cover a value the reader never saw
    return json.loads(text, object_pairs_hook=unique_members, parse_constant=_refuse_constant)


def entries_from_jsonl(text: str) -> list[dict[str, Any]]:
    """Parse an export (one JSON object a line; blank lines ignored). Raises ``BadRequest`` naming the line."""
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except ValueError as exc:
            raise BadRequest(f"line {number}: not a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest(f"line {number}: expected a JSON object, got {type(value).__name__}")
        entries.append(value)
    return entries


def entry_to_jsonl(entry: Mapping[str, Any]) -> str:
    """One entry as one canonical JSON line (no newline)."""
    return canonical_json(dict(entry)).decode("utf-8")
