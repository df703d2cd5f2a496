"""idwall.store.sqlite.directory: the admin console's pages of users, devices and ledger entries, on a real SQLite
file and on a fresh PostgreSQL schema (the same tests on both backends, helpers/store.py). Pages follow each other
without gaps or repeats; filters keep exactly what they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.model import LedgerDraft, ManagerEffect, Signer
from idwall.store.sqlite import SQLiteStore
from tests.helpers.records import NOW
from tests.helpers.store import BACKENDS, draft, dump, enroll, login, opened, place


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


async def test_a_user_comes_with_devices_passkeys_and_last_login(store: SQLiteStore) -> None:
    first = await enroll(store, "alice", device_id="dev-a1", groups=("eng",), admin=True)
    await enroll(store, "alice", device_id="dev-a2", status="pending_approval", now=NOW + 10)
    await login(store, first, auth_time=NOW + 100)
    await login(store, first, auth_time=NOW + 50, sign_count=1)
    await enroll(store, "bob", device_id="dev-b1")
    users = await store.directory_users()
    assert [u.user.id for u in users] == ["alice", "bob"]
    alice = users[0]
    assert alice.user.groups == ("eng",) and alice.user.admin
    assert alice.manager is None  # nobody named one
    assert [(d.id, d.status, d.credentials) for d in alice.devices] == [("dev-a1", "active", 1),
                                                                      ("dev-a2", "pending_approval", 1)]
    assert alice.devices[0].not_after == NOW + 86400 and alice.devices[1].not_after is None
    assert [c.device_id for c in alice.credentials] == ["dev-a1", "dev-a2"]
    assert alice.credentials[0].sign_count == 2
    assert alice.last_login == NOW + 100  # the latest passkey login, not the latest written
    assert users[1].last_login is None and [d.user_name for d in users[1].devices] == ["Bob"]


async def test_user_pages_follow_each_other_without_gaps(store: SQLiteStore) -> None:
    for name in ("carol", "alice", "erin", "bob", "dave"):
        await enroll(store, name)
    seen, after = [], ""
    while page := await store.directory_users(after=after, limit=2):
        assert len(page) <= 2
        seen += [u.user.id for u in page]
        after = page[-1].user.id
    assert seen == ["alice", "bob", "carol", "dave", "erin"]
    with pytest.raises(ValueError, match="limit"):
        await store.directory_users(limit=0)


async def test_devices_filter_by_status_and_page(store: SQLiteStore) -> None:
    await enroll(store, "alice", device_id="dev-1")
    await enroll(store, "alice", device_id="dev-2", status="pending_approval")
    await enroll(store, "bob", device_id="dev-3")
    await store.kill(scope="device", target="dev-3", revoke_devices=True, now=NOW,
                     draft=draft("kill", "dev-3", scope="device"))
    assert [d.id for d in await store.directory_devices()] == ["dev-1", "dev-2", "dev-3"]
    assert [d.id for d in await store.directory_devices(status="pending_approval")] == ["dev-2"]
    revoked = await store.directory_devices(status="revoked")
    assert [d.id for d in revoked] == ["dev-3"] and revoked[0].revoked_at == NOW
    assert [d.id for d in await store.directory_devices(after="dev-1", limit=1)] == ["dev-2"]
    before = await dump(store)
    with pytest.raises(ValueError, match="status"):
        await store.directory_devices(status="lost")
    assert await dump(store) == before


async def test_the_ledger_is_searched_by_type_and_by_user(store: SQLiteStore) -> None:
    await enroll(store, "alice", device_id="dev-1")  # device.enroll, actor system, subject dev-1, data.user alice
    await store.append_ledger(draft("admin.grant", "bob", user="bob"))
    await store.append_ledger(draft("key.rotate", "kid-2"))
    everything = await store.search_ledger()
    assert everything == await store.ledger_entries()  # as stored, hash and signature included
    assert [e["seq"] for e in everything] == [1, 2, 3]
    assert await store.search_ledger(type="no.such") == []
    assert [e["type"] for e in await store.search_ledger(type="admin.grant")] == ["admin.grant"]
    assert [e["seq"] for e in await store.search_ledger(user="alice")] == [1]
    assert [e["seq"] for e in await store.search_ledger(user="bob")] == [2]  # the subject
    assert [e["seq"] for e in await store.search_ledger(user="system")] == [1, 2, 3]  # the actor
    assert await store.search_ledger(type="admin.grant", user="alice") == []
    assert [e["seq"] for e in await store.search_ledger(after=1, limit=1)] == [2]
    # entries that name only one of alice's devices are hers too; another user's device is not
    await enroll(store, "bob", device_id="dev-2")
    await store.append_ledger(draft("device.approve", "dev-1", device_id="dev-1"))
    await store.append_ledger(draft("kill", "", scope="device", target="dev-1"))
    await store.append_ledger(draft("device.approve", "dev-2", device_id="dev-2"))
    assert [e["seq"] for e in await store.search_ledger(user="alice")] == [1, 5, 6]
    assert [e["seq"] for e in await store.search_ledger(user="bob")] == [2, 4, 7]


async def _set_manager(store: SQLiteStore, admin: Signer, user: str, manager: str | None) -> None:
    await store.perform_action(signer=admin, effect=ManagerEffect(user, manager), now=NOW,
                               draft=LedgerDraft("user.set_manager", admin.user_id, user, {}, {"signature": "sig"}))


async def test_a_manager_sees_the_pending_devices_of_the_people_they_manage_and_no_others(store: SQLiteStore) -> None:
    admin = await enroll(store, "admin", admin=True)
    for name in ("dave", "carol", "bob", "erin"):
        await enroll(store, name)
    root = Signer("admin", admin.credential.id, 0, 1, True)
    await _set_manager(store, root, "carol", "dave")
    await _set_manager(store, Signer("admin", admin.credential.id, 1, 2, True), "bob", "dave")
    await enroll(store, "carol", device_id="dev-c2", status="pending_approval")
    await enroll(store, "bob", device_id="dev-b2", status="pending_approval")
    await enroll(store, "carol", device_id="dev-c3", status="pending_approval")
    await enroll(store, "erin", device_id="dev-e2", status="pending_approval")  # nobody manages erin
    assert await store.reports_of("dave") == ["bob", "carol"]
    assert await store.reports_of("erin") == [] and await store.reports_of("nobody") == []
    waiting = await store.pending_of_reports("dave")
    assert [(d.id, d.user_id, d.status) for d in waiting] == [
        ("dev-b2", "bob", "pending_approval"), ("dev-c2", "carol", "pending_approval"),
        ("dev-c3", "carol", "pending_approval")]
    assert [d.id for d in await store.pending_of_reports("dave", after="dev-b2", limit=1)] == ["dev-c2"]
    assert await store.pending_of_reports("erin") == []
    # a manager changed: the former manager sees nothing of that user's at once
    await _set_manager(store, Signer("admin", admin.credential.id, 2, 3, True), "carol", "erin")
    assert [d.id for d in await store.pending_of_reports("dave")] == ["dev-b2"]
    assert [d.id for d in await store.pending_of_reports("erin")] == ["dev-c2", "dev-c3"]
    with pytest.raises(ValueError, match="limit"):
        await store.pending_of_reports("dave", limit=0)


async def test_the_ledger_is_read_by_several_types_at_once(store: SQLiteStore) -> None:
    await enroll(store, "alice", device_id="dev-1")  # 1 device.enroll
    await store.append_ledger(draft("admin.grant", "bob", user="bob"))  # 2
    await store.append_ledger(draft("kill", "*", scope="all", target=None))  # 3
    await store.append_ledger(draft("device.approve", "dev-1", device_id="dev-1"))  # 4
    wanted = ("kill", "device.enroll", "device.approve")
    assert [e["seq"] for e in await store.ledger_of_types(wanted)] == [1, 3, 4]
    assert [e["seq"] for e in await store.ledger_of_types(wanted, after=1, limit=1)] == [3]
    assert await store.ledger_of_types(("no.such", "admin.grant")) == await store.ledger_entries(after=1, limit=1)
    assert await store.ledger_of_types(()) == []
    with pytest.raises(ValueError, match="limit"):
        await store.ledger_of_types(wanted, limit=0)
