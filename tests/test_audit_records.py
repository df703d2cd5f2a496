"""idwall.audit.records: what :class:`~idwall.audit.LedgerState` knows after replaying a ledger, one frozen
record per user, device, credential, invite, token and session, each naming the entry (``seq``) that made it.

Tested by replaying the committed ledger vector ``valid/full.jsonl`` (helpers/ledger.py), whole and entry by
entry, and comparing every record with what the entries themselves say: the replay may only ever show what the
ledger recorded.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest

from idwall.audit import LedgerState
from idwall.audit.records import (CredentialRecord, DeviceRecord, InviteRecord, SessionRecord, TokenRecord,
                                  UserRecord)
from idwall.audit.sealing import parse_time
from idwall.encoding import b64url_decode
from tests.helpers.ledger import full_ledger


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return full_ledger()


def replay(entries: list[dict[str, Any]], upto: int | None = None) -> LedgerState:
    """The state after the entries up to and including seq ``upto`` (all when None)."""
    state = LedgerState()
    for entry in entries[:upto]:
        state.apply(entry)
    return state


def of_type(entries: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["type"] in types]


def test_users_are_what_their_first_entry_says_with_the_admin_flag_of_the_last_change(
        full: list[dict[str, Any]]) -> None:
    state = replay(full)
    made = {}
    for entry in of_type(full, "bootstrap", "device.enroll"):
        made.setdefault(entry["data"]["user"], entry)
    admin = {user: entry["data"]["admin"] for user, entry in made.items()}
    for entry in of_type(full, "admin.grant", "admin.revoke"):
        admin[entry["data"]["user"]] = entry["data"]["admin"]
    assert set(state.users) == set(made) == {"alice", "bob", "carol", "dave", "erin"}
    for user, entry in made.items():
        d = entry["data"]
        assert dataclasses.replace(state.users[user], manager=None) == UserRecord(
            user, d["name"], d["email"], tuple(d["groups"]), admin[user], entry["seq"])
    assert admin == {"alice": True, "bob": False, "carol": False, "dave": False, "erin": False}


def test_a_users_manager_comes_from_their_invite_then_from_user_set_manager(full: list[dict[str, Any]]) -> None:
    (invited,) = [e for e in of_type(full, "invite.create") if e["data"].get("manager")]
    enrolled = next(e for e in of_type(full, "device.enroll") if e["data"]["invite_id"] == invited["data"]["invite_id"])
    (changed,) = of_type(full, "user.set_manager")
    user = invited["data"]["user"]
    assert user not in replay(full, invited["seq"]).users  # an invite makes no user yet
    assert replay(full, enrolled["seq"]).users[user].manager == invited["data"]["manager"] == "bob"
    assert replay(full, changed["seq"] - 1).users[user].manager == "bob"
    assert replay(full, changed["seq"]).users[user].manager == changed["data"]["manager"] == "dave"
    # a self-service enrollment in between changed nobody's manager; nobody else has one
    assert {u.id: u.manager for u in replay(full).users.values() if u.manager} == {"erin": "dave"}


def test_an_admin_change_keeps_the_seq_that_made_the_user(full: list[dict[str, Any]]) -> None:
    granted = of_type(full, "admin.grant")[0]
    revoked = of_type(full, "admin.revoke")[0]
    before, after_grant = replay(full, granted["seq"] - 1), replay(full, granted["seq"])
    after_revoke = replay(full, revoked["seq"])
    carol = before.users["carol"]
    assert carol.admin is False
    assert after_grant.users["carol"] == dataclasses.replace(carol, admin=True)
    assert after_revoke.users["carol"] == carol


def _counter(approval: dict[str, Any]) -> int:
    """The signature counter in an approval's authenticator data (WebAuthn §6.1: 4 bytes after rpIdHash, flags)."""
    return int(struct.unpack(">I", b64url_decode(approval["authenticator_data"])[33:37])[0])


def test_devices_and_credentials_are_what_enrollment_registered(full: list[dict[str, Any]]) -> None:
    state = replay(full)
    enrolled = of_type(full, "bootstrap", "device.enroll")
    assert set(state.devices) == {e["data"]["device_id"] for e in enrolled}
    assert set(state.credentials) == {e["data"]["credential_id"] for e in enrolled}
    for entry in enrolled:
        d = entry["data"]
        device = state.devices[d["device_id"]]
        # the bootstrap names no enrollment: its device gets one of its own, never reused
        enrollment_id = d.get("enrollment_id", f"bootstrap:{d['device_id']}")
        assert (device.id, device.user, device.enrollment_id, device.seq) == (
            d["device_id"], d["user"], enrollment_id, entry["seq"])
        assert state.enrollments[enrollment_id] == device.id
        credential = state.credentials[d["credential_id"]]
        counters = [_counter(e["approval"]) for e in full
                    if e.get("approval", {}).get("credential_id") == d["credential_id"]]
        suspect = any(d["credential_id"] in e["data"]["credentials_suspect"] for e in of_type(full, "incident.stage"))
        # revoked with its device when a kill declared that one device lost
        lost = any(k["data"]["scope"] == "device" and k["data"]["target"] == d["device_id"] and
                   k["data"]["revoke_devices"] for k in of_type(full, "kill"))
        assert credential == CredentialRecord(d["credential_id"], d["user"], d["device_id"],
                                              b64url_decode(d["public_key"]), d["alg"], max(counters, default=0),
                                              entry["seq"], suspect, lost)


def test_device_status_follows_approval_recovery_and_kills(full: list[dict[str, Any]]) -> None:
    final = replay(full)
    assert {device.id: device.status for device in final.devices.values()} == {
        "dev-alice-laptop": "active", "dev-bob-laptop": "revoked", "dev-carol-laptop": "active",
        "dev-bob-phone": "revoked", "dev-dave-laptop": "active", "dev-erin-laptop": "active",
        "dev-erin-phone": "revoked", "dev-erin-tablet": "active"}
    for entry in of_type(full, "device.approve", "device.recover", "device.reject"):
        device_id = entry["data"]["device_id"]
        assert replay(full, entry["seq"] - 1).devices[device_id].status == "pending_approval"
        assert replay(full, entry["seq"]).devices[device_id].status == entry["data"]["status"]
    kills = of_type(full, "kill")
    assert sorted(k["data"]["revoke_devices"] for k in kills) == [False, False, True, True]
    for entry in kills:
        before, after = replay(full, entry["seq"] - 1), replay(full, entry["seq"])
        revoked = set(entry["data"]["devices"]) if entry["data"]["revoke_devices"] else set()
        # a kill that revokes devices revokes exactly those it names; one that does not leaves every device be
        assert {d for d, device in after.devices.items() if device.status != before.devices[d].status} == revoked
        assert all(after.devices[d].status == "revoked" for d in revoked)


def test_a_pending_device_gets_its_certificate_from_its_first_login(full: list[dict[str, Any]]) -> None:
    pending = [e for e in of_type(full, "device.enroll") if e["data"]["cert_sha256"] is None]
    assert pending, "the vector has a device enrolled without a certificate"
    for entry in pending:
        device_id = entry["data"]["device_id"]
        logins = [e for e in of_type(full, "session.login") if e["data"]["device_id"] == device_id]
        if not logins:
            continue  # rejected before it ever logged in
        login = logins[0]
        assert replay(full, login["seq"] - 1).devices[device_id].cert_sha256 is None
        state = replay(full, login["seq"])
        assert state.devices[device_id].cert_sha256 == login["data"]["cert_sha256"]
        assert state.certificates[login["data"]["cert_sha256"]] == device_id


def test_a_renewal_moves_the_device_to_its_new_certificate(full: list[dict[str, Any]]) -> None:
    (renewal,) = of_type(full, "device.renew")
    d = renewal["data"]
    before, after = replay(full, renewal["seq"] - 1), replay(full, renewal["seq"])
    old = before.devices[d["device_id"]]
    assert old.cert_sha256 is not None and old.cert_sha256 != d["cert_sha256"] and old.not_after is None
    assert after.devices[d["device_id"]] == dataclasses.replace(old, cert_sha256=d["cert_sha256"],
                                                                not_after=float(d["not_after"]))
    # both thumbprints stay taken by this device: neither can be registered to another one
    assert after.certificates[d["cert_sha256"]] == after.certificates[old.cert_sha256] == d["device_id"]


def test_invites_are_what_invite_create_said_and_name_the_enrollment_that_used_them(
        full: list[dict[str, Any]]) -> None:
    state = replay(full)
    created = of_type(full, "invite.create")
    assert set(state.invites) == {e["data"]["invite_id"] for e in created}
    for entry in created:
        d = entry["data"]
        used_by = next(e["seq"] for e in of_type(full, "device.enroll") if e["data"]["invite_id"] == d["invite_id"])
        assert replay(full, used_by - 1).invites[d["invite_id"]].used_by is None
        assert state.invites[d["invite_id"]] == InviteRecord(
            d["invite_id"], d["user"], d["name"], d["email"], tuple(d["groups"]), d["admin"],
            float(d["expires_at"]) if isinstance(d["expires_at"], int) else parse_time(d["expires_at"]),
            entry["seq"], used_by, d.get("manager"))


def test_tokens_carry_their_scopes_expiry_and_the_revoking_entry(full: list[dict[str, Any]]) -> None:
    (created, _), (revoked,) = of_type(full, "token.create"), of_type(full, "token.revoke")
    d = created["data"]
    expires_at = float(d["expires_at"]) if isinstance(d["expires_at"], int) else parse_time(d["expires_at"])
    record = TokenRecord(d["token_id"], tuple(d["scopes"]), expires_at, created["seq"])
    assert replay(full, revoked["seq"] - 1).tokens == {d["token_id"]: record}
    assert replay(full).tokens[d["token_id"]] == dataclasses.replace(record, revoked_by=revoked["seq"])


def test_sessions_are_the_logins_and_outlive_a_logout(full: list[dict[str, Any]]) -> None:
    state = replay(full)
    logins = of_type(full, "session.login")
    assert state.sessions == {
        e["subject"]: SessionRecord(e["subject"], e["data"]["user"], e["data"]["device_id"], e["seq"]) for e in logins}
    # a logout ends the session live, but the record of who started it stays for later entries to check
    (logout,) = of_type(full, "session.logout")
    assert logout["subject"] in state.sessions


@pytest.mark.parametrize("record", [
    UserRecord("u", "U", "", (), False, 1),
    DeviceRecord("d", "u", "e", None, "active", 1),
    CredentialRecord("c", "u", "d", b"k", -7, 0, 1),
    InviteRecord("i", "u", "U", "", (), False, 0.0, 1),
    TokenRecord("t", ("kill",), 0.0, 1),
    SessionRecord("s", "u", "d", 1),
])
def test_records_are_frozen(record: Any) -> None:
    """A state handed out (to ``verify_ledger``'s callers, say) cannot be edited behind the replay's back."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.seq = 99


def test_a_record_taken_earlier_does_not_change_as_the_replay_goes_on(full: list[dict[str, Any]]) -> None:
    state = replay(full, 9)  # carol was just made an admin; bob's laptop is still active
    carol_then, device_then = state.users["carol"], state.devices["dev-bob-laptop"]
    for entry in full[9:]:
        state.apply(entry)
    assert (carol_then.admin, device_then.status) == (True, "active")
    assert (state.users["carol"].admin, state.devices["dev-bob-laptop"].status) == (False, "revoked")
