"""idwall.audit.jsonl: ledger exports as JSON lines."""

from __future__ import annotations

from typing import Any

import pytest

from idwall.audit import entries_from_jsonl, entry_to_jsonl
from idwall.errors import BadRequest
from tests.helpers.ledger import full_ledger


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return full_ledger()


# --- JSON lines -----------------------------------------------------------------------------------------


def test_jsonl_round_trip(full: list[dict[str, Any]]) -> None:
    text = "\n".join(entry_to_jsonl(e) for e in full) + "\n\n"
    assert entries_from_jsonl(text) == full


@pytest.mark.parametrize(("text", "problem"), [
    ('{"seq": 1, "seq": 2}', "duplicate key 'seq'"),
    ('{"seq": NaN}', "NaN is not JSON"),
    ('{"seq": Infinity}', "Infinity is not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"seq": 1', "not a JSON object"),
])
def test_jsonl_refuses(text: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem) as caught:
        entries_from_jsonl('{"ok": true}\n' + text)
    assert caught.value.detail.startswith("line 2: ")
