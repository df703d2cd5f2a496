"""Durations and sizes as people write them: ``90s``, ``15m``, ``12h``, ``30d``; ``8k``, ``1m``, ``64m``.

Neutral ground: the YAML config, the signed actions and the ledger verifier all read these notations, so
they live here rather than in any one of them. A bare non-negative integer is seconds or bytes. Every
``ValueError`` says what arrived and ends with the hint (:data:`DURATION_HINT`, :data:`SIZE_HINT`) that
says what is accepted, so a caller can report the hint on its own.
"""

from __future__ import annotations

import re

__all__ = ["DAY", "DURATION_HINT", "HOUR", "MAX_DURATION", "MINUTE", "SIZE_HINT", "parse_duration", "parse_size"]

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Far beyond any sane lifetime, and small enough that datetime arithmetic never overflows.
MAX_DURATION = 100 * 365 * DAY

_DURATION_RE = re.compile(r"([0-9]{1,12})([smhd])")
_UNITS = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY}
DURATION_HINT = "write a whole number followed by s, m, h or d (90s, 15m, 12h, 30d), or a bare number of seconds"


def parse_duration(text: str | int) -> int:
    """Turn ``"90s"``, ``"15m"``, ``"12h"``, ``"30d"`` or a non-negative int into seconds.

    >>> parse_duration("15m")
    900
    >>> parse_duration(90)
    90

    Anything else (``"10 minutes"``, ``"-5m"``, ``"1.5h"``, ``""``, ``"15M"``, floats, booleans)
    raises ``ValueError`` saying what arrived and what is accepted.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"expected a duration, got {type(text).__name__}; {DURATION_HINT}")
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a duration; {DURATION_HINT}")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"{text!r} is negative; {DURATION_HINT}")
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years; {DURATION_HINT}")
    return seconds


_SIZE_RE = re.compile(r"([0-9]{1,12})([kmg]?)")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}
SIZE_HINT = "write a whole number of bytes, or one followed by k, m or g (8k, 1m, 64m; binary units)"


def parse_size(text: str | int) -> int:
    """Turn ``"8k"``, ``"1m"``, ``"64m"``, ``"2g"`` (binary units) or a non-negative int into bytes.

    >>> parse_size("64m")
    67108864
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"expected a size, got {type(text).__name__}; {SIZE_HINT}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; {SIZE_HINT}")
        return text
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; {SIZE_HINT}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
