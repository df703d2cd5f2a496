"""Signed actions in words, as the terminal and the signing page show them."""

from __future__ import annotations

import pytest

from idwall.action_words import describe

ENVELOPE = {"actor": "admin", "nonce": "n" * 43, "not_after": 1_800_000_300}

CASES = [
    ({"type": "invite.create", "user": "bob", "name": "Bob", "email": "bob@example.com", "groups": [], "admin": False},
     "Invite Bob <bob@example.com> as user bob, in no group."),
    ({"type": "invite.create", "user": "bob", "name": "Bob", "email": "b@x.io", "groups": ["eng", "ops"],
      "admin": True, "manager": "alice"},
     "Invite Bob <b@x.io> as user bob, in groups eng, ops, as an administrator, with manager alice."),
    ({"type": "invite.create", "user": "bob", "name": "Bob", "email": "b@x.io", "groups": ["eng"], "admin": False,
      "manager": None}, "Invite Bob <b@x.io> as user bob, in group eng."),
    ({"type": "device.approve", "device_id": "dev-7"}, "Approve the pending device dev-7: it gets its certificate."),
    ({"type": "device.recover", "enrollment_id": "enr-2"}, "Approve your own new device of enrollment enr-2."),
    ({"type": "admin.grant", "user": "bob"}, "Make bob an administrator."),
    ({"type": "admin.revoke", "user": "bob"}, "Take administrator rights away from bob."),
    ({"type": "token.create", "name": "soar", "scopes": ["kill"], "ttl": "1h"},
     'Create the automation token "soar" with scope kill, valid for 1h.'),
    ({"type": "token.create", "name": "soar", "scopes": ["kill", "read"], "ttl": "30d"},
     'Create the automation token "soar" with scopes kill, read, valid for 30d.'),
]


@pytest.mark.parametrize(("action", "words"), CASES, ids=[c[0]["type"] for c in CASES])
def test_each_type_in_words(action: dict, words: str) -> None:
    assert describe({**action, **ENVELOPE}) == words


def test_a_type_without_words_still_shows_every_field() -> None:
    action = {"type": "user.set_manager", "user": "bob", "manager": None, **ENVELOPE}
    assert describe(action) == 'Sign user.set_manager: manager = null; user = "bob".'
    assert describe({"type": "x.y", **ENVELOPE}) == "Sign x.y: no fields."
