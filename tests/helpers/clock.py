"""A clock a test moves by hand (``clock.now += 31``), for whatever takes ``clock=`` instead of reading the time."""

from __future__ import annotations

from dataclasses import dataclass

from .records import NOW

__all__ = ["Clock"]


@dataclass
class Clock:
    """Returns ``now`` when called; starts at :data:`~tests.helpers.records.NOW` unless told otherwise."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now
