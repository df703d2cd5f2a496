"""idwall.store.sqlite.trust: who and what is trusted, each change committed with its ledger entry or not at all.
Invites are used once, enrollments finish once, and both are bounded while open; finishing one writes user,
device and credential together and refuses a passkey or certificate registered before; no change may leave the
gateway without an administrator, not even two at once; a signed action's effect commits only with the signer's
compare-and-set sign count, while the signer's device is active (and the signer an admin when it must be).

Tested on a real SQLite file in ``tmp_path`` (helpers/store.py); a refused change is shown to leave every table
as it was, and races are run between two stores on the same file, as two worker processes would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from idwall.errors import Conflict, Forbidden, SuspectPasskey
from idwall.store import StoreError
from idwall.model import (
    ActivateEffect,
    AdminEffect,
    InviteEffect,
    LedgerDraft,
    ManagerEffect,
    NewDevice,
    RejectEffect,
    Signer,
    TokenEffect,
)
from idwall.store.base import AlreadyUsed, Expired, LastAdmin, LimitReached, Missing
from idwall.store.sqlite import SQLiteStore
from idwall.tokens import new_token
from tests.helpers.records import NOW, enrollment, invite
from tests.helpers.store import BACKENDS, draft, dump, enroll, new_device, opened, place


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


async def entries(store: SQLiteStore) -> list[str]:
    return [e["type"] for e in await store.ledger_entries()]


async def unchanged(store: SQLiteStore, error: type[BaseException], call: Any, match: str | None = None) -> None:
    """``call()`` raises ``error`` (matching ``match``) and every table is as it was before."""
    before = await dump(store)
    with pytest.raises(error, match=match):
        await call()
    assert await dump(store) == before


# --------------------------------------------------------------------------- invites and users


async def test_an_invite_is_stored_with_its_ledger_entry(store: SQLiteStore) -> None:
    made = invite("inv-1", user_id="bob", groups=("eng", "ops"), admin=True)
    assert await store.create_invite(made, draft("invite.create", "bob")) == 1
    assert await store.get_invite("inv-1") == made
    assert await entries(store) == ["invite.create"]
    assert await store.get_invite("inv-2") is None


async def test_the_bootstrap_invite_is_stored_without_an_entry(store: SQLiteStore) -> None:
    assert await store.create_invite(invite("boot", user_id="admin", admin=True, bootstrap=True), None) is None
    assert (await store.get_invite("boot")).bootstrap is True  # type: ignore[union-attr]
    assert await entries(store) == []


async def test_an_invite_id_is_taken_once(store: SQLiteStore) -> None:
    await store.create_invite(invite("inv-1"), draft("invite.create", "bob"))
    await unchanged(store, StoreError, lambda: store.create_invite(invite("inv-1", user_id="eve"),
                                                                   draft("invite.create", "eve")))
    assert (await store.get_invite("inv-1")).user_id == "bob"  # type: ignore[union-attr]


async def test_users_and_the_first_admin(store: SQLiteStore) -> None:
    assert not await store.has_admin() and await store.list_users() == []
    await enroll(store, "carol")
    assert not await store.has_admin()
    alice = await enroll(store, "alice", admin=True, groups=("admins",))
    assert await store.has_admin()
    assert await store.get_user("alice") == alice.user and await store.get_user("nobody") is None
    assert [u.id for u in await store.list_users()] == ["alice", "carol"]


# --------------------------------------------------------------------------- beginning enrollments


async def test_an_enrollment_reads_back_as_it_was_stored(store: SQLiteStore) -> None:
    begun = enrollment("enr-1", user_id="bob", invite_id="inv-1", groups=("eng",), admin=True)
    await store.create_enrollment(begun)
    assert await store.get_enrollment("enr-1") == begun and await store.get_enrollment("enr-2") is None


async def test_open_enrollments_per_code_are_bounded(store: SQLiteStore) -> None:
    for n in range(2):
        await store.create_enrollment(enrollment(f"enr-{n}", invite_id="inv-1"), max_open=2)
    await unchanged(store, LimitReached, lambda: store.create_enrollment(
        enrollment("enr-x", invite_id="inv-1"), max_open=2), "2 enrollments are already open for this code")
    await store.create_enrollment(enrollment("enr-other", invite_id="inv-2"), max_open=2)  # another code's own count
    # once the open ones expire they no longer count
    await store.create_enrollment(enrollment("enr-later", invite_id="inv-1", created_at=NOW + 301,
                                             expires_at=NOW + 601), max_open=2)


async def test_open_self_service_enrollments_are_bounded_per_user(store: SQLiteStore) -> None:
    await store.create_enrollment(enrollment("enr-1", user_id="bob"), max_open=1)
    await unchanged(store, LimitReached, lambda: store.create_enrollment(
        enrollment("enr-2", user_id="bob"), max_open=1), "for this user")
    await store.create_enrollment(enrollment("enr-3", user_id="carol"), max_open=1)
    await store.create_enrollment(enrollment("enr-4", user_id="bob", invite_id="inv-1"), max_open=1)


async def test_expired_begun_enrollments_are_forgotten(store: SQLiteStore) -> None:
    await store.create_enrollment(enrollment("enr-old", expires_at=NOW - 7200))
    await store.create_enrollment(enrollment("enr-recent", expires_at=NOW - 60))
    done = await enroll(store, "carol", now=NOW - 9000)  # finished long ago: kept
    await store.create_enrollment(enrollment("enr-new"), forget_before=NOW - 3600)
    assert await store.get_enrollment("enr-old") is None
    assert await store.get_enrollment("enr-recent") is not None
    assert await store.get_enrollment(done.device.enrollment_id) is not None


async def test_self_service_enrollments_wait_behind_a_bound_of_pending_devices(store: SQLiteStore) -> None:
    for _ in range(2):
        await enroll(store, "bob", status="pending_approval")
    await unchanged(store, LimitReached, lambda: store.create_enrollment(
        enrollment("enr-x", user_id="bob"), max_pending_devices=2), "2 devices of this user are already waiting")
    await store.create_enrollment(enrollment("enr-invited", user_id="bob", invite_id="inv-1"), max_pending_devices=2)


# --------------------------------------------------------------------------- finishing enrollments


async def finish(store: SQLiteStore, enrollment_id: str, new: NewDevice, *, now: float = NOW,
                 max_pending_devices: int | None = None) -> int:
    return await store.complete_enrollment(enrollment_id=enrollment_id, new=new, now=now,
                                           draft=draft("device.enroll", new.device.id),
                                           max_pending_devices=max_pending_devices)


async def test_finishing_writes_user_device_and_credential_with_the_entry(store: SQLiteStore) -> None:
    await store.create_invite(invite("inv-1", user_id="bob", groups=("eng",)), draft("invite.create", "bob"))
    await store.create_enrollment(enrollment("enr-1", user_id="bob", invite_id="inv-1"))
    new = new_device("bob", "dev-1", "enr-1", groups=("eng",))
    assert await finish(store, "enr-1", new) == 2
    assert await store.get_user("bob") == new.user
    assert await store.get_device("dev-1") == new.device
    assert await store.get_credential(new.credential.id) == new.credential
    assert await store.credential_exists(new.credential.id) and not await store.credential_exists(b"other")
    done = await store.get_enrollment("enr-1")
    assert (done.status, done.device_id) == ("active", "dev-1")  # type: ignore[union-attr]
    assert (await store.get_invite("inv-1")).used_at == NOW  # type: ignore[union-attr]
    assert await entries(store) == ["invite.create", "device.enroll"]


async def test_an_enrollment_finishes_once(store: SQLiteStore) -> None:
    await store.create_enrollment(enrollment("enr-1", user_id="bob"))
    await finish(store, "enr-1", new_device("bob", "dev-1", "enr-1", status="pending_approval"))
    await unchanged(store, AlreadyUsed, lambda: finish(store, "enr-1", new_device("bob", "dev-2", "enr-1")),
                    "already completed")
    await unchanged(store, Missing, lambda: finish(store, "enr-none", new_device("bob", "dev-3", "enr-none")))


async def test_an_expired_enrollment_does_not_finish(store: SQLiteStore) -> None:
    await store.create_enrollment(enrollment("enr-1", expires_at=NOW + 300))
    await unchanged(store, Expired, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1"), now=NOW + 300))


async def test_an_invite_is_used_once_and_not_after_it_expired(store: SQLiteStore) -> None:
    await store.create_invite(invite("inv-1"), None)
    await store.create_invite(invite("inv-old", expires_at=NOW + 10), None)
    for n in range(2):
        await store.create_enrollment(enrollment(f"enr-{n}", invite_id="inv-1"))
    await store.create_enrollment(enrollment("enr-old", invite_id="inv-old"))
    await finish(store, "enr-0", new_device("bob", "dev-0", "enr-0"))
    await unchanged(store, AlreadyUsed, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1")),
                    "code was already used or has expired")
    await unchanged(store, AlreadyUsed, lambda: finish(store, "enr-old", new_device("bob", "dev-2", "enr-old"),
                                                       now=NOW + 10))


async def test_a_passkey_registered_before_is_refused_and_the_invite_stays_unused(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    await store.create_invite(invite("inv-1"), None)
    await store.create_enrollment(enrollment("enr-1", invite_id="inv-1"))
    # the invite is consumed before the credential is checked: the refusal must undo that too
    await unchanged(store, Conflict, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1",
                                                                         credential_id=alice.credential.id)),
                    "this passkey is already registered")
    assert (await store.get_invite("inv-1")).used_at is None  # type: ignore[union-attr]
    await finish(store, "enr-1", new_device("bob", "dev-1", "enr-1"))  # with a passkey of its own it goes through


async def test_a_certificate_belongs_to_one_device(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    await store.create_enrollment(enrollment("enr-1", user_id="bob"))
    await unchanged(store, StoreError, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1",
                                                                           cert_sha256=alice.device.cert_sha256)))
    assert (await store.get_enrollment("enr-1")).status == "begun"  # type: ignore[union-attr]


async def test_a_device_status_outside_the_three_is_refused(store: SQLiteStore) -> None:
    await store.create_enrollment(enrollment("enr-1", user_id="bob"))
    await unchanged(store, StoreError, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1", status="trusted")))


async def test_an_invite_sets_who_an_existing_user_is_and_self_service_does_not(store: SQLiteStore) -> None:
    await enroll(store, "alice", admin=True)
    first = await enroll(store, "bob")
    await store.create_enrollment(enrollment("enr-self", user_id="bob"))
    await finish(store, "enr-self", new_device("bob", "dev-self", "enr-self", status="pending_approval", admin=True,
                                         groups=("root",)))
    assert await store.get_user("bob") == first.user
    await store.create_invite(invite("inv-1"), None)
    await store.create_enrollment(enrollment("enr-inv", user_id="bob", invite_id="inv-1"))
    promoted = new_device("bob", "dev-inv", "enr-inv", admin=True, groups=("eng",))
    await finish(store, "enr-inv", promoted)
    assert await store.get_user("bob") == dataclasses.replace(first.user, admin=True, groups=("eng",))


async def test_an_invite_cannot_demote_the_last_admin(store: SQLiteStore) -> None:
    await enroll(store, "alice", admin=True)
    await store.create_invite(invite("inv-1", user_id="alice", admin=False), None)
    await store.create_enrollment(enrollment("enr-1", user_id="alice", invite_id="inv-1"))
    await unchanged(store, LastAdmin, lambda: finish(store, "enr-1", new_device("alice", "dev-2", "enr-1")),
                    "this would leave no administrator")
    assert (await store.get_user("alice")).admin is True  # type: ignore[union-attr]


async def test_self_service_devices_finishing_at_once_stay_within_the_bound(store: SQLiteStore) -> None:
    await enroll(store, "bob", status="pending_approval")
    for n in range(2):
        await store.create_enrollment(enrollment(f"enr-{n}", user_id="bob"))
    await finish(store, "enr-0", new_device("bob", "dev-0", "enr-0", status="pending_approval"), max_pending_devices=2)
    await unchanged(store, LimitReached, lambda: finish(store, "enr-1", new_device("bob", "dev-1", "enr-1",
                                                                             status="pending_approval"),
                                                        max_pending_devices=2))


async def test_two_processes_finishing_with_one_invite_use_it_once(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as one, opened(tmp_path / "idwall.db") as other:
        await one.create_invite(invite("inv-1"), None)
        for n in range(8):
            await one.create_enrollment(enrollment(f"enr-{n}", invite_id="inv-1"))
        results = await asyncio.gather(*(
            finish(store, f"enr-{n}", new_device("bob", f"dev-{n}", f"enr-{n}"))
            for n, store in zip(range(8), [one, other] * 4)), return_exceptions=True)
        assert sum(isinstance(r, int) for r in results) == 1
        assert all(isinstance(r, AlreadyUsed) for r in results if not isinstance(r, int))
        assert await one.read(lambda c: c.execute("SELECT COUNT(*) FROM devices").fetchone()[0]) == 1
        assert await entries(one) == ["device.enroll"]


async def test_user_credentials_are_those_of_active_devices(store: SQLiteStore) -> None:
    laptop = await enroll(store, "bob")
    await enroll(store, "bob", status="pending_approval")
    await enroll(store, "carol")
    assert await store.user_credentials("bob") == [laptop.credential]


async def mark_suspect(store: SQLiteStore, credential_id: bytes, incident: str | None) -> None:
    """What an incident stage's suspect_passkeys step leaves on one passkey (without running a whole incident)."""
    if isinstance(store, SQLiteStore):
        await store.write(lambda c: c.execute("UPDATE credentials SET suspect = ? WHERE id = ?",
                                              (incident, credential_id)))
    else:
        await store.write(lambda c: c.execute("UPDATE credentials SET suspect = $1 WHERE id = $2", incident,
                                              credential_id))


async def test_user_passkeys_are_those_of_devices_once_active_with_their_state(store: SQLiteStore) -> None:
    laptop = await enroll(store, "bob")
    phone = await enroll(store, "bob")
    lost = await enroll(store, "bob")
    await enroll(store, "bob", status="pending_approval")  # never active: its passkey vouches for nothing
    await enroll(store, "carol")
    # an incident reset revokes bob's certificates, not his passkeys; then one device is declared lost
    await store.kill(scope="user", target="bob", revoke_devices=True, now=NOW + 1, draft=draft("kill", "bob"))
    await store.kill(scope="device", target=lost.device.id, revoke_devices=True, now=NOW + 2,
                     draft=draft("kill", lost.device.id))
    await mark_suspect(store, phone.credential.id, "inc-1")
    passkeys = await store.user_passkeys("bob")
    assert [(c.id, c.suspect, c.revoked_at) for c in passkeys] == [
        (laptop.credential.id, None, None), (phone.credential.id, "inc-1", None), (lost.credential.id, None, NOW + 2)]
    assert await store.user_credentials("bob") == []  # other actions still need an active device


async def test_a_recovery_signer_needs_a_passkey_once_active_not_revoked_nor_suspect(store: SQLiteStore) -> None:
    laptop = await enroll(store, "bob")
    lost = await enroll(store, "bob")
    await store.kill(scope="user", target="bob", revoke_devices=True, now=NOW, draft=draft("kill", "bob"))
    await store.kill(scope="device", target=lost.device.id, revoke_devices=True, now=NOW, draft=draft("kill", "x"))
    never = await enroll(store, "bob", status="pending_approval")
    target = (await enroll(store, "bob", status="pending_approval")).device  # the new device, after the reset
    effect = ActivateEffect(target.id, target.enrollment_id, "bob", b"r" * 32, "PEM-NEW", NOW + 86400, "bob")

    def recovering(new: NewDevice) -> Signer:
        return dataclasses.replace(signer(new, must_be_admin=False), recovery=True)

    await unchanged(store, Forbidden, lambda: act(store, recovering(lost), effect, "device.recover"),
                    "revoked with its lost device")
    await unchanged(store, Forbidden, lambda: act(store, recovering(never), effect, "device.recover"),
                    "never approved")
    await mark_suspect(store, laptop.credential.id, "inc-2")
    await unchanged(store, SuspectPasskey, lambda: act(store, recovering(laptop), effect, "device.recover"),
                    "incident inc-2 marked the signing passkey suspect")
    await mark_suspect(store, laptop.credential.id, None)
    # without the recovery flag the same passkey, on a revoked device, signs nothing
    await unchanged(store, Forbidden, lambda: act(store, signer(laptop, must_be_admin=False), effect,
                                                  "device.recover"), "not on an active device")
    await act(store, recovering(laptop), effect, "device.recover")
    assert (await store.get_device(target.id)).status == "active"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- admins and tokens


async def test_set_admin_changes_the_user_with_an_entry_and_an_event(store: SQLiteStore) -> None:
    await enroll(store, "bob")
    seq = await store.set_admin("bob", True, draft("admin.grant", "bob"))
    assert (await store.get_user("bob")).admin is True  # type: ignore[union-attr]
    assert (await store.ledger_entries())[-1]["seq"] == seq
    assert [(e.kind, e.payload) for e in await store.events_after(0)][-1] == ("user.changed", {"user": "bob"})
    await unchanged(store, Missing, lambda: store.set_admin("nobody", True, draft("admin.grant", "nobody")))


def _token(name: str = "soar", *, now: float = NOW) -> Any:
    return new_token(name=name, scopes=["kill"], ttl=3600, created_by="alice", now=now).record


async def test_tokens_are_stored_by_hash_listed_and_revoked_once(store: SQLiteStore) -> None:
    first, second = _token("first", now=NOW), _token("second", now=NOW + 1)
    await store.create_token(second, draft("token.create", second.id))
    await store.create_token(first, draft("token.create", first.id))
    assert await store.get_token_by_hash(first.hash) == first and await store.get_token_by_hash(b"x" * 32) is None
    assert await store.list_tokens() == [first, second]  # by creation time
    await store.revoke_token(first.id, now=NOW + 5, draft=draft("token.revoke", first.id))
    assert (await store.get_token_by_hash(first.hash)).revoked_at == NOW + 5  # type: ignore[union-attr]
    await unchanged(store, Missing, lambda: store.revoke_token(first.id, now=NOW + 6,
                                                               draft=draft("token.revoke", first.id)))
    await unchanged(store, Missing, lambda: store.revoke_token("tok-none", now=NOW, draft=draft("token.revoke", "x")))
    assert await entries(store) == ["token.create", "token.create", "token.revoke"]


async def test_a_token_hash_is_unique(store: SQLiteStore) -> None:
    first = _token()
    await store.create_token(first, draft("token.create", first.id))
    twin = dataclasses.replace(_token("twin"), hash=first.hash)
    await unchanged(store, StoreError, lambda: store.create_token(twin, draft("token.create", twin.id)))


# --------------------------------------------------------------------------- signed actions


def signer(new: NewDevice, *, expected: int = 0, must_be_admin: bool = True) -> Signer:
    return Signer(new.user.id, new.credential.id, expected, expected + 1, must_be_admin)


def act(store: SQLiteStore, who: Signer, effect: Any, type: str = "invite.create") -> Any:
    return store.perform_action(signer=who, effect=effect, now=NOW,
                                draft=LedgerDraft(type, who.user_id, "x", {}, {"signature": "sig"}))


async def test_an_action_commits_its_effect_sign_count_and_entry_together(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    seq = await act(store, signer(alice), InviteEffect(invite("inv-1")))
    assert await store.get_invite("inv-1") == invite("inv-1")
    assert (await store.get_credential(alice.credential.id)).sign_count == 1  # type: ignore[union-attr]
    last = (await store.ledger_entries())[-1]
    assert (last["seq"], last["type"], last["approval"]) == (seq, "invite.create", {"signature": "sig"})


async def test_a_stale_sign_count_commits_nothing(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    await act(store, signer(alice), InviteEffect(invite("inv-1")))
    await unchanged(store, AlreadyUsed, lambda: act(store, signer(alice, expected=0), InviteEffect(invite("inv-2"))),
                    "signature counter changed")


async def test_who_may_sign_is_checked_inside_the_transaction(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    bob = await enroll(store, "bob")
    pending = await enroll(store, "alice", status="pending_approval")
    await unchanged(store, Forbidden, lambda: act(store, signer(bob), InviteEffect(invite())), "not an administrator")
    await unchanged(store, Forbidden, lambda: act(store, signer(pending), InviteEffect(invite())),
                    "not on an active device")
    stolen = dataclasses.replace(signer(bob), user_id="alice")  # bob's passkey claimed as alice's
    await unchanged(store, Forbidden, lambda: act(store, stolen, InviteEffect(invite())), "not on an active device")
    await store.kill(scope="device", target=alice.device.id, revoke_devices=True, now=NOW, draft=draft("kill", "x"))
    await unchanged(store, Forbidden, lambda: act(store, signer(alice), InviteEffect(invite())),
                    "not on an active device")
    # a user's own action needs no admin
    await act(store, signer(bob, must_be_admin=False), TokenEffect(_token()), "token.create")


async def test_granting_and_revoking_admin(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    await enroll(store, "bob")
    await act(store, signer(alice), AdminEffect("bob", True), "admin.grant")
    assert (await store.get_user("bob")).admin is True  # type: ignore[union-attr]
    await act(store, signer(alice, expected=1), AdminEffect("bob", False), "admin.revoke")
    assert [e.payload for e in await store.events_after(0) if e.kind == "user.changed"] == [{"user": "bob"}] * 2
    await unchanged(store, LastAdmin, lambda: act(store, signer(alice, expected=2), AdminEffect("alice", False)))
    await unchanged(store, Missing, lambda: act(store, signer(alice, expected=2), AdminEffect("nobody", True)))


@pytest.mark.parametrize(("alice_revokes", "bob_revokes", "loser"), [
    # the API's last-admin check runs before the transaction: two admins who step down at once both pass it
    ("alice", "bob", "LastAdmin"),
    # whoever commits first has revoked the other, whose signature no longer carries an admin's weight
    ("bob", "alice", "Forbidden"),
])
async def test_two_admins_revoking_at_once_leave_one(tmp_path: Path, alice_revokes: str, bob_revokes: str,
                                                     loser: str) -> None:
    async with opened(tmp_path / "idwall.db") as one, opened(tmp_path / "idwall.db") as other:
        alice = await enroll(one, "alice", admin=True)
        bob = await enroll(one, "bob", admin=True)
        results = await asyncio.gather(act(one, signer(alice), AdminEffect(alice_revokes, False), "admin.revoke"),
                                       act(other, signer(bob), AdminEffect(bob_revokes, False), "admin.revoke"),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == [loser, "int"]
        assert [u.id for u in await one.list_users() if u.admin] in (["alice"], ["bob"])


async def test_approving_a_pending_device_activates_it_once(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    pending = await enroll(store, "bob", status="pending_approval")
    device = pending.device
    approve = ActivateEffect(device.id, device.enrollment_id, "bob", b"c" * 32, "PEM-NEW", NOW + 86400, "alice")
    await act(store, signer(alice), approve, "device.approve")
    now_active = await store.get_device(device.id)
    assert dataclasses.replace(device, status="active", cert_sha256=b"c" * 32, cert_pem="PEM-NEW",
                               not_after=NOW + 86400, approved_by="alice") == now_active
    assert (await store.get_enrollment(device.enrollment_id)).status == "active"  # type: ignore[union-attr]
    assert [e.payload for e in await store.events_after(0) if e.kind == "device.changed"] == [
        {"device": device.id, "user": "bob"}]
    await unchanged(store, AlreadyUsed, lambda: act(store, signer(alice, expected=1), approve, "device.approve"),
                    "is not pending approval")


async def test_an_approval_names_the_device_enrollment_and_user_it_is_for(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    device = (await enroll(store, "bob", status="pending_approval")).device
    for wrong in ({"enrollment_id": "enr-other"}, {"user_id": "carol"}):
        effect = dataclasses.replace(ActivateEffect(device.id, device.enrollment_id, "bob", b"c" * 32, "PEM",
                                                    NOW, "alice"), **wrong)
        await unchanged(store, AlreadyUsed, lambda: act(store, signer(alice), effect, "device.approve"))


async def test_an_effect_of_an_unknown_kind_commits_nothing(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    await unchanged(store, TypeError, lambda: act(store, signer(alice), json.loads("{}")), "unknown action effect")


# --------------------------------------------------------------------------- managers and rejections


async def test_an_invite_gives_the_user_its_manager_and_self_service_keeps_it(store: SQLiteStore) -> None:
    await enroll(store, "alice", admin=True)
    await store.create_invite(dataclasses.replace(invite("inv-1", user_id="bob"), manager="alice"),
                              draft("invite.create", "bob"))
    assert (await store.get_invite("inv-1")).manager == "alice"  # type: ignore[union-attr]
    await enroll(store, "bob", invite_id="inv-1")
    assert (await store.get_user("bob")).manager == "alice"  # type: ignore[union-attr]
    await enroll(store, "bob", status="pending_approval")  # a self-service device changes nobody's manager
    assert (await store.get_user("bob")).manager == "alice"  # type: ignore[union-attr]
    # a new invite for bob says who he is from now on, his manager included
    await store.create_invite(invite("inv-2", user_id="bob"), draft("invite.create", "bob"))
    await enroll(store, "bob", invite_id="inv-2")
    assert (await store.get_user("bob")).manager is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("manager", "words"), [("nobody", "no user 'nobody' to be the manager"),
                                                ("bob", "bob cannot be their own manager")])
async def test_an_invite_naming_an_impossible_manager_stores_nothing(store: SQLiteStore, manager: str,
                                                                     words: str) -> None:
    alice = await enroll(store, "alice", admin=True)
    bad = dataclasses.replace(invite("inv-1", user_id="bob"), manager=manager)
    await unchanged(store, Conflict, lambda: act(store, signer(alice), InviteEffect(bad)), words)


async def test_set_manager_changes_the_user_with_an_event(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", admin=True)
    await enroll(store, "bob")
    await act(store, signer(alice), ManagerEffect("bob", "alice"), "user.set_manager")
    assert (await store.get_user("bob")).manager == "alice"  # type: ignore[union-attr]
    await act(store, signer(alice, expected=1), ManagerEffect("bob", None), "user.set_manager")
    assert (await store.get_user("bob")).manager is None  # type: ignore[union-attr]
    assert [e.payload for e in await store.events_after(0) if e.kind == "user.changed"] == [{"user": "bob"}] * 2
    for effect, error, words in ((ManagerEffect("nobody", "alice"), Missing, "no user 'nobody'"),
                                 (ManagerEffect("bob", "nobody"), Conflict, "no user 'nobody' to be the manager"),
                                 (ManagerEffect("bob", "bob"), Conflict, "bob cannot be their own manager")):
        await unchanged(store, error, lambda: act(store, signer(alice, expected=2), effect, "user.set_manager"),
                        words)


async def test_the_owners_manager_may_sign_an_approval_only_while_manager(store: SQLiteStore) -> None:
    """The API's check ran before the transaction; a user.set_manager that commits in between wins."""
    alice = await enroll(store, "alice", admin=True)
    bob = await enroll(store, "bob")
    carol = await enroll(store, "carol")
    await act(store, signer(alice), ManagerEffect("carol", "bob"), "user.set_manager")
    pending = (await enroll(store, "carol", status="pending_approval")).device
    reject = RejectEffect(pending.id, pending.enrollment_id, "carol")
    as_manager = dataclasses.replace(signer(bob), or_manager_of="carol")
    # not carol's manager: refused inside the transaction (carol herself, and bob once he is replaced)
    await unchanged(store, Forbidden, lambda: act(store, dataclasses.replace(signer(carol), or_manager_of="carol"),
                                                  reject, "device.reject"), "neither an administrator nor the manager")
    await act(store, signer(alice, expected=1), ManagerEffect("carol", "alice"), "user.set_manager")
    await unchanged(store, Forbidden, lambda: act(store, as_manager, reject, "device.reject"),
                    "user bob is neither an administrator nor the manager of carol")
    await act(store, signer(alice, expected=2), ManagerEffect("carol", "bob"), "user.set_manager")
    await act(store, as_manager, reject, "device.reject")
    device = await store.get_device(pending.id)
    assert (device.status, device.revoked_at) == ("revoked", NOW)  # type: ignore[union-attr]
    assert (await store.get_enrollment(pending.enrollment_id)).status == "rejected"  # type: ignore[union-attr]
    await unchanged(store, AlreadyUsed, lambda: act(store, signer(alice, expected=3), reject, "device.reject"),
                    "is not pending approval")
