"""idwall.units: durations and sizes as written in the config, in signed actions and in the ledger."""

from __future__ import annotations

import pytest

from idwall.units import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("0s", 0), (60, 60), (0, 0), ("007m", 420)],
)
def test_parse_duration_accepts(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["10 minutes", "-5m", "1.5h", "", "15M", "5 m", " 5m", "5m ", "m", "5", "90", "5ms", "1w", "1h30m", "+5m",
     "５m", "99999999999d", -1, 1.5, True, None, [5], "5\nm"],
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)  # type: ignore[arg-type]
    assert "90s, 15m, 12h, 30d" in str(info.value)
