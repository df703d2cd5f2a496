"""Session rules: when a session is usable and when it is fresh enough.

A session is the pair (device certificate, last passkey assertion); these
functions only decide about its times. All intervals are half-open: a session
with ``expires_at == now`` is already expired, one last seen exactly
``idle_timeout`` seconds ago is already idle, and an assertion exactly
``max_age`` seconds old is no longer fresh. Time is always a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVE, EXPIRED, IDLE, REVOKED = "active", "expired", "idle", "revoked"


@dataclass(frozen=True)
class SessionState:
    """The times and flag of a session that the rules look at (unix seconds)."""

    session_id: str
    auth_time: float
    created_at: float
    last_seen: float
    expires_at: float
    revoked: bool


def session_status(state: SessionState, *, now: float, idle_timeout: int | None) -> str:
    """``"active"``, ``"expired"``, ``"idle"`` or ``"revoked"``.

    Revocation wins over everything (the kill switch must be reported as
    such), then the absolute expiry (``session.max_age``), then the idle
    timeout. ``idle_timeout=None`` disables the idle rule.
    """
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be positive seconds or None, got {idle_timeout}")
    if state.revoked:
        return REVOKED
    if now >= state.expires_at:
        return EXPIRED
    if idle_timeout is not None and now - state.last_seen >= idle_timeout:
        return IDLE
    return ACTIVE


def is_fresh(state: SessionState, *, now: float, max_age: int | None) -> bool:
    """Whether the last passkey assertion is younger than ``max_age`` seconds.

    ``max_age=None`` means the route asks for no step-up: always fresh. This
    judges only the assertion's age; call :func:`session_status` for the rest.
    """
    if max_age is None:
        return True
    if max_age <= 0:
        raise ValueError(f"max_age must be positive seconds or None, got {max_age}")
    return now - state.auth_time < max_age


def new_expiry(*, now: float, max_age: int) -> float:
    """The absolute expiry of a session created (or re-authenticated) at ``now``."""
    if max_age <= 0:
        raise ValueError(f"max_age must be positive seconds, got {max_age}")
    return now + max_age
