"""The committed ledger vectors (``tests/vectors/ledger/``) and their generator, for the tests of ``idwall.audit``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from idwall.audit import entries_from_jsonl, verify_ledger

__all__ = ["LEDGER_KEY", "VECTORS", "fails", "full_ledger", "gen"]

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ledger"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("ledger_make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
LEDGER_KEY = gen.derived_key("ledger/main")  # the committed vectors are sealed with this (public) test key


def full_ledger() -> list[dict[str, Any]]:
    """``valid/full.jsonl``: a ledger with every entry type, parsed afresh."""
    return entries_from_jsonl((VECTORS / "valid" / "full.jsonl").read_text(encoding="utf-8"))


def fails(entries: list[dict[str, Any]], seq: int, reason: str, **pins: Any) -> None:
    """Assert that :func:`~idwall.audit.verify_ledger` refuses ``entries`` at ``seq`` with ``reason`` in its text."""
    result = verify_ledger(entries, **pins)
    assert not result.ok, "expected a failure"
    assert result.seq == seq, result.reason
    assert reason in result.reason, result.reason
