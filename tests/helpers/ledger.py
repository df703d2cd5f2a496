"""The committed ledger vectors (``tests/vectors/ledger/``) and their generator, for the tests of ``idwall.audit``."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from idwall.audit import entries_from_jsonl, verify_ledger

from .vectors import VECTORS, read_json, vector_files

__all__ = ["LEDGER_KEY", "LEDGER_VECTORS", "fails", "full_ledger", "gen", "ledger_vectors"]

LEDGER_VECTORS = VECTORS / "ledger"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("ledger_make_vectors", LEDGER_VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
LEDGER_KEY = gen.derived_key("ledger/main")  # the committed vectors are sealed with this (public) test key


def full_ledger() -> list[dict[str, Any]]:
    """``valid/full.jsonl``: a ledger with every entry type, parsed afresh."""
    return entries_from_jsonl((LEDGER_VECTORS / "valid" / "full.jsonl").read_text(encoding="utf-8"))


def fails(entries: list[dict[str, Any]], seq: int, reason: str, **pins: Any) -> None:
    """Assert that :func:`~idwall.audit.verify_ledger` refuses ``entries`` at ``seq`` with ``reason`` in its text."""
    result = verify_ledger(entries, **pins)
    assert not result.ok, "expected a failure"
    assert result.seq == seq, result.reason
    assert reason in result.reason, result.reason


def ledger_vectors(kind: str) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """``(file name, entries, manifest entry)`` for every ledger of ``valid/`` or ``invalid/``."""
    manifest = read_json(LEDGER_VECTORS / kind / "manifest.json")
    files = vector_files(f"ledger/{kind}", "*.jsonl")
    assert sorted(p.name for p in files) == sorted(manifest), f"{kind}: files and manifest.json disagree"
    return [(p.name, entries_from_jsonl(p.read_text(encoding="utf-8")), manifest[p.name]) for p in files]
