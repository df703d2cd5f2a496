"""idwall.sessions: expiry, idle timeout, revocation and step-up freshness, with time as a parameter."""

from __future__ import annotations

import dataclasses

import pytest

from idwall.sessions import SessionState, is_fresh, new_expiry, session_status

T0 = 1_772_366_400.0
MAX_AGE = 12 * 3600
IDLE = 3600


def _state(**changes) -> SessionState:
    base = SessionState(session_id="s1", auth_time=T0, created_at=T0, last_seen=T0,
                        expires_at=new_expiry(now=T0, max_age=MAX_AGE), revoked=False)
    return dataclasses.replace(base, **changes)


def test_state_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _state().revoked = True  # type: ignore[misc]


def test_new_expiry() -> None:
    assert new_expiry(now=T0, max_age=MAX_AGE) == T0 + MAX_AGE
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_age"):
            new_expiry(now=T0, max_age=bad)


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [
        ({}, T0, "active"),
        ({}, T0 + IDLE - 0.001, "active"),
        ({}, T0 + IDLE, "idle"),  # half-open: exactly idle_timeout after last use is idle
        ({"last_seen": T0 + 5 * IDLE}, T0 + 6 * IDLE - 1, "active"),  # activity keeps it alive
        ({"last_seen": T0 + 11 * IDLE}, T0 + MAX_AGE - 0.001, "active"),
        ({"last_seen": T0 + 11.5 * IDLE}, T0 + MAX_AGE, "expired"),  # activity never extends max_age
        ({"last_seen": T0 + 11.5 * IDLE}, T0 + MAX_AGE + 1e6, "expired"),
        ({}, T0 + MAX_AGE, "expired"),  # both expired and idle: the absolute limit is reported
        ({"revoked": True}, T0, "revoked"),
        ({"revoked": True}, T0 + MAX_AGE + 1, "revoked"),  # the kill switch is reported as such
        ({"revoked": True}, T0 + IDLE, "revoked"),
    ],
)
def test_session_status(changes: dict, now: float, expected: str) -> None:
    assert session_status(_state(**changes), now=now, idle_timeout=IDLE) == expected


def test_idle_rule_can_be_disabled() -> None:
    assert session_status(_state(), now=T0 + MAX_AGE - 1, idle_timeout=None) == "active"
    assert session_status(_state(), now=T0 + MAX_AGE, idle_timeout=None) == "expired"


@pytest.mark.parametrize("bad", [0, -5])
def test_idle_timeout_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        session_status(_state(), now=T0, idle_timeout=bad)


@pytest.mark.parametrize(
    ("auth_time", "now", "max_age", "fresh"),
    [
        (T0, T0, 900, True),
        (T0, T0 + 899.999, 900, True),
        (T0, T0 + 900, 900, False),  # an assertion exactly max_age old is stale
        (T0, T0 + 10_000, 900, False),
        (T0, T0 + 10_000, None, True),  # no step-up demanded
        (T0 + 5000, T0 + 5100, 900, True),  # a later step-up refreshed auth_time
    ],
)
def test_is_fresh(auth_time: float, now: float, max_age: int | None, fresh: bool) -> None:
    assert is_fresh(_state(auth_time=auth_time), now=now, max_age=max_age) is fresh


def test_is_fresh_looks_at_auth_time_not_activity() -> None:
    """Using a session keeps it alive, but does not make the passkey assertion any fresher."""
    state = _state(last_seen=T0 + 2000)
    assert is_fresh(state, now=T0 + 2000, max_age=900) is False


@pytest.mark.parametrize("bad", [0, -1])
def test_is_fresh_max_age_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_age"):
        is_fresh(_state(), now=T0, max_age=bad)
