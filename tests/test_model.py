"""idwall.model: the records the parts pass each other. Records are frozen values (a connection keeps its
``Resolved`` for its whole life, so nothing may change it behind its back); optional fields default to "not yet"
(not revoked, not used, no session); the effects of a signed action are a closed set.

Tested on hand-built records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from idwall.model import (
    ActionEffect,
    ActivateEffect,
    AdminEffect,
    Ceremony,
    Credential,
    Event,
    IncidentEffect,
    Invite,
    InviteEffect,
    KillResult,
    LedgerDraft,
    ManagerEffect,
    NewDevice,
    RejectEffect,
    RenewEffect,
    Resolved,
    Session,
    Signer,
    Token,
    TokenEffect,
    WorkerRow,
)
from tests.helpers.records import NOW, device, enrollment, invite, session, user

RECORDS: list[Any] = [
    user(), device(), Credential(b"c", "alice", "dev-1", b"k", -7, 0, NOW), session(), invite(), enrollment(),
    Ceremony("ch", "login", bytes(32), bytes(32), None, None, None, NOW), Token("t", "n", b"h", ("kill",), "a", NOW, NOW),
    LedgerDraft("kill", "alice", "bob", {}), NewDevice(user(), device(), Credential(b"c", "a", "d", b"k", -7, 0, NOW)),
    KillResult((), (), (), 1), Event(1, "kill", {}, NOW), WorkerRow("w", "h", 1, None, NOW, NOW), Resolved(device(), user()),
    Signer("alice", b"c", 0, 1, True), InviteEffect(invite()), AdminEffect("bob", True),
    TokenEffect(Token("t", "n", b"h", ("kill",), "a", NOW, NOW)),
    ActivateEffect("dev-1", "enr-1", "alice", bytes(32), "PEM", NOW, "alice"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_are_frozen(record: Any) -> None:
    field = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, getattr(record, field))


@pytest.mark.parametrize("record", [user(), device(), session(), Resolved(device(), user()),
                                    Credential(b"c", "alice", "dev-1", b"k", -7, 0, NOW)], ids=lambda r: type(r).__name__)
def test_records_a_live_connection_keeps_have_no_instance_dict(record: Any) -> None:
    """Every connection holds these for its whole life: slots keep them small and closed to new attributes."""
    assert not hasattr(record, "__dict__")
    with pytest.raises((AttributeError, TypeError)):
        record.extra = 1


def test_records_compare_by_value() -> None:
    assert user("bob", groups=("eng",)) == user("bob", groups=("eng",)) != user("bob", groups=("ops",))
    assert hash(session()) == hash(session())  # usable as keys and in sets


def test_optional_fields_default_to_not_yet() -> None:
    ses = Session("s", "u", "d", b"c", bytes(32), ("hwk",), NOW, NOW, NOW + 1, NOW)
    assert (ses.revoked_at, ses.revoke_reason) == (None, None)
    assert Invite("i", "u", "U", "", (), False, False, "a", NOW, NOW + 1).used_at is None
    assert Token("t", "n", b"h", ("kill",), "a", NOW, NOW + 1).revoked_at is None
    assert LedgerDraft("kill", "a", "s", {}).approval is None
    resolved = Resolved(device(), user())
    assert (resolved.credentials, resolved.session) == ((), None)


def test_the_effects_of_a_signed_action_are_a_closed_set() -> None:
    assert set(get_args(ActionEffect)) == {InviteEffect, AdminEffect, TokenEffect, ActivateEffect, RejectEffect,
                                           ManagerEffect, RenewEffect, IncidentEffect}


