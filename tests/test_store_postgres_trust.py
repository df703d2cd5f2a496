"""idwall.store.postgres.trust: what only several nodes on one database can get wrong, and what only PostgreSQL
does. A database becomes a gateway's once (``idwall init --store``): a claim is refused while any user, invite or
ledger entry is there, a replacing claim leaves nothing of the old gateway, and claims made at once make one
gateway; an invite is used once, the last administrator stays one, a pending device is approved or rejected but
not both, a device's certificate is renewed once from the certificate it was signed over, and a manager replaced
on one node can no longer approve on another, when the racing writes come from two nodes.

(The trust rules themselves run against this backend in tests/test_store_sqlite_trust.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from idwall.errors import Forbidden
from idwall.model import (
    ActivateEffect,
    AdminEffect,
    LedgerDraft,
    ManagerEffect,
    NewDevice,
    RejectEffect,
    RenewEffect,
    Signer,
)
from idwall.store.base import AlreadyUsed, LastAdmin
from tests.helpers.records import NOW, enrollment, invite
from tests.helpers.store import draft, dump, enroll, login, new_device, opened


def act(store: Any, who: NewDevice, effect: Any, type: str, *, expected: int = 0, or_manager_of: str | None = None,
        must_be_admin: bool = True) -> Any:
    """``who`` signs ``effect`` (their passkey's counter from ``expected``) on ``store``'s node."""
    return store.perform_action(signer=Signer(who.user.id, who.credential.id, expected, expected + 1, must_be_admin,
                                              or_manager_of),
                                effect=effect, now=NOW, draft=LedgerDraft(type, who.user.id, "x", {}))


# --------------------------------------------------------------------------- claiming a database


async def test_an_empty_database_is_claimed_with_its_bootstrap_invite(pg_url: str) -> None:
    async with opened(pg_url, ledger_key=None) as store:
        await store.create_bootstrap_invite(invite("inv-boot", bootstrap=True), replace=False)
        assert (await store.get_invite("inv-boot")).bootstrap  # type: ignore[union-attr]
        assert await store.ledger_entries() == [] and await store.list_users() == []


@pytest.mark.parametrize("held_by", ["invite", "user", "ledger"])
async def test_a_database_that_holds_a_gateway_is_not_claimed_again(pg_url: str, held_by: str) -> None:
    async with opened(pg_url) as store:
        if held_by == "invite":
            await store.create_invite(invite("inv-old"), None)
        elif held_by == "user":
            await enroll(store, "alice")
            await store.write(lambda c: c.execute("DELETE FROM invites; DELETE FROM ledger"))
        else:
            await store.append_ledger(draft())
        before = await dump(store)
        with pytest.raises(AlreadyUsed, match="already holds a gateway; use --force"):
            await store.create_bootstrap_invite(invite("inv-new", bootstrap=True), replace=False)
        assert await dump(store) == before


async def test_replacing_a_gateway_leaves_nothing_of_it(pg_url: str) -> None:
    async with opened(pg_url) as store:
        alice = await enroll(store, "alice", admin=True)
        await login(store, alice)
        await store.kill(scope="all", target=None, revoke_devices=True, now=NOW, draft=draft("kill", "*"))
        await store.create_bootstrap_invite(invite("inv-new", bootstrap=True), replace=True)
        rows = await dump(store)
        assert {name for name, table in rows.items() if table} == {"invites", "schema_version"}
        assert [r[0] for r in rows["invites"]] == ["inv-new"]
        assert await store.append_ledger(draft()) == 1  # a new chain
        await login(store, await enroll(store, "root-admin", admin=True))
        assert [e.id for e in await store.events_after(0)] == [1]  # and event ids start afresh


async def test_claims_made_at_once_make_one_gateway(pg_url: str) -> None:
    async with opened(pg_url, ledger_key=None) as one, opened(pg_url, ledger_key=None) as other:
        results = await asyncio.gather(*(store.create_bootstrap_invite(invite(f"inv-{n}", bootstrap=True),
                                                                       replace=False)
                                         for n, store in enumerate([one, other] * 3)), return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, AlreadyUsed) for r in results if r is not None)
        assert len((await dump(one))["invites"]) == 1


# --------------------------------------------------------------------------- races between nodes


async def test_two_nodes_finishing_with_one_invite_use_it_once(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        await one.create_invite(invite("inv-1"), None)
        for n in range(8):
            await one.create_enrollment(enrollment(f"enr-{n}", invite_id="inv-1"))

        def finish(store: Any, n: int) -> Any:
            new: NewDevice = new_device("bob", f"dev-{n}", f"enr-{n}")
            return store.complete_enrollment(enrollment_id=f"enr-{n}", new=new, now=NOW,
                                             draft=draft("device.enroll", new.device.id))

        results = await asyncio.gather(*(finish(store, n) for n, store in zip(range(8), [one, other] * 4)),
                                       return_exceptions=True)
        assert sum(isinstance(r, int) for r in results) == 1
        assert all(isinstance(r, AlreadyUsed) for r in results if not isinstance(r, int))
        assert len((await dump(other))["devices"]) == 1


@pytest.mark.parametrize(("alice_revokes", "bob_revokes", "loser"), [
    ("alice", "bob", LastAdmin),  # both step down at once: the second commit would leave no administrator
    ("bob", "alice", Forbidden),  # whoever commits first has revoked the other signer
])
async def test_two_admins_revoking_at_once_on_two_nodes_leave_one(pg_url: str, alice_revokes: str, bob_revokes: str,
                                                                  loser: type) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        alice = await enroll(one, "alice", admin=True)
        bob = await enroll(one, "bob", admin=True)

        def revoke(store: Any, who: NewDevice, user: str) -> Any:
            return store.perform_action(signer=Signer(who.user.id, who.credential.id, 0, 1, True),
                                        effect=AdminEffect(user, False), now=NOW,
                                        draft=LedgerDraft("admin.revoke", who.user.id, user, {}))

        results = await asyncio.gather(revoke(one, alice, alice_revokes), revoke(other, bob, bob_revokes),
                                       return_exceptions=True)
        assert sorted((type(r).__name__ for r in results), key=str) == sorted([loser.__name__, "int"], key=str)
        assert [u.id for u in await other.list_users() if u.admin] in (["alice"], ["bob"])


async def test_a_pending_device_approved_and_rejected_at_once_on_two_nodes_is_one_of_them(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        alice = await enroll(one, "alice", admin=True)
        bob = await enroll(one, "bob", admin=True)
        pending = (await enroll(one, "carol", status="pending_approval")).device
        approve = ActivateEffect(pending.id, pending.enrollment_id, "carol", b"C" * 32, "PEM", NOW + 86400, "alice")
        reject = RejectEffect(pending.id, pending.enrollment_id, "carol")
        results = await asyncio.gather(act(one, alice, approve, "device.approve"),
                                       act(other, bob, reject, "device.reject"), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["AlreadyUsed", "int"]
        device = await other.get_device(pending.id)
        status = (await other.get_enrollment(pending.enrollment_id)).status  # type: ignore[union-attr]
        assert (device.status, status) in (("active", "active"), ("revoked", "rejected"))  # type: ignore[union-attr]
        assert [e["type"] for e in await other.ledger_entries()][-1] in ("device.approve", "device.reject")
        assert len(await other.ledger_entries()) == 4  # three enrollments, one decision


async def test_a_device_renewed_at_once_on_two_nodes_gets_one_new_certificate(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        laptop = await enroll(one, "alice")
        phone = await enroll(one, "alice")  # another passkey of hers: the counters do not decide the race
        session = await login(one, laptop)
        old = laptop.device.cert_sha256
        assert old is not None

        def renew(store: Any, who: NewDevice, cert: bytes, expected: int) -> Any:
            effect = RenewEffect(laptop.device.id, "alice", old, cert, f"PEM-{cert[:1].decode()}", NOW + 86400,
                                 b"K" * 32)
            return act(store, who, effect, "device.renew", expected=expected, must_be_admin=False)

        results = await asyncio.gather(renew(one, laptop, b"A" * 32, 1), renew(other, phone, b"B" * 32, 0),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["AlreadyUsed", "int"]
        assert all("no longer has the certificate" in str(r) for r in results if not isinstance(r, int))
        winner = b"A" * 32 if isinstance(results[0], int) else b"B" * 32
        assert (await other.get_device(laptop.device.id)).cert_sha256 == winner  # type: ignore[union-attr]
        resolved = await other.resolve_certificate(winner, now=NOW)
        assert resolved is not None and resolved.session is not None and resolved.session.id == session.id
        assert await other.resolve_certificate(old, now=NOW) is None
        assert [e["type"] for e in await other.ledger_entries()].count("device.renew") == 1


async def test_a_manager_replaced_on_one_node_cannot_approve_on_another(pg_url: str) -> None:
    """The other node's API checked bob was carol's manager before the change committed; the write rechecks."""
    async with opened(pg_url) as one, opened(pg_url) as other:
        alice = await enroll(one, "alice", admin=True)
        bob = await enroll(one, "bob")
        await enroll(one, "carol")
        await act(one, alice, ManagerEffect("carol", "bob"), "user.set_manager")
        pending = (await enroll(one, "carol", status="pending_approval")).device
        approve = ActivateEffect(pending.id, pending.enrollment_id, "carol", b"C" * 32, "PEM", NOW + 86400, "bob")
        await act(one, alice, ManagerEffect("carol", "alice"), "user.set_manager", expected=1)
        before = await dump(other)
        with pytest.raises(Forbidden, match="user bob is neither an administrator nor the manager of carol"):
            await act(other, bob, approve, "device.approve", or_manager_of="carol")
        assert await dump(other) == before
        await act(one, alice, ManagerEffect("carol", "bob"), "user.set_manager", expected=2)
        await act(other, bob, approve, "device.approve", or_manager_of="carol")
        assert (await one.get_device(pending.id)).status == "active"  # type: ignore[union-attr]
