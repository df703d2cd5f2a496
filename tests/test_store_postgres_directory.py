"""idwall.store.postgres.directory: the console's pages read on one node while other nodes write. Pages are keyed
by id, not counted by offset, so users another node adds while an admin pages through are never shown twice nor
push an existing one out of sight; a user's devices, passkeys and last login are read in one snapshot; and the
ledger search reads the JSON the entries were sealed as, whatever a field holds, with ids taken as data, never as
patterns.

(The directory's rules themselves run against this backend in tests/test_store_sqlite_directory.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.records import NOW
from tests.helpers.store import draft, enroll, login, opened


async def test_pages_read_on_one_node_while_another_adds_users_show_each_once(pg_url: str) -> None:
    async with opened(pg_url) as reader, opened(pg_url) as writer:
        for name in ("bob", "dave", "frank", "harry"):
            await enroll(writer, name)
        first = await reader.directory_users(limit=2)
        assert [u.user.id for u in first] == ["bob", "dave"]
        # another node adds a user before the cursor and one after it, between two pages
        await enroll(writer, "alice")
        await enroll(writer, "erin")
        seen, after = [u.user.id for u in first], first[-1].user.id
        while page := await reader.directory_users(after=after, limit=2):
            seen += [u.user.id for u in page]
            after = page[-1].user.id
        assert seen == ["bob", "dave", "erin", "frank", "harry"]  # alice is behind the cursor: the next pass shows her


async def test_a_users_devices_passkeys_and_last_login_are_read_in_one_snapshot(pg_url: str) -> None:
    """Another node enrolling and logging in while the console reads: every user read shows a state that was
    committed at one moment (as many devices as passkeys, one per device here, and a login only with a device)."""
    async with opened(pg_url) as reader, opened(pg_url) as writer:
        await enroll(writer, "alice")

        async def write() -> None:
            for n in range(12):
                await login(writer, await enroll(writer, "alice", device_id=f"dev-x{n}", now=NOW + n))

        async def read() -> list[tuple[int, int]]:
            shapes = []
            while not writing.done():
                [alice] = await reader.directory_users()
                shapes.append((len(alice.devices), len(alice.credentials)))
                if alice.last_login is not None:
                    assert len(alice.devices) >= 2
            return shapes

        writing = asyncio.ensure_future(write())
        shapes = await read()
        await writing
        assert shapes and all(devices == credentials for devices, credentials in shapes)


@pytest.mark.parametrize("odd", ["o'brien", "50%", "a_b", "x\\y", "$.actor"])
async def test_a_search_for_a_user_takes_the_id_as_data(pg_url: str, odd: str) -> None:
    async with opened(pg_url) as store:
        await store.append_ledger(draft("admin.grant", odd, user=odd))
        await store.append_ledger(draft("admin.grant", "abc", user="abc"))  # what a pattern would also match
        await store.append_ledger(draft("admin.grant", "o", user="o"))
        assert [e["seq"] for e in await store.search_ledger(user=odd)] == [1]


async def test_a_search_reads_any_shape_of_entry_data_without_failing(pg_url: str) -> None:
    async with opened(pg_url) as store:
        await store.append_ledger(draft("kill", "*", scope="all", target=None, revoke_devices=False))
        await store.append_ledger(draft("key.rotate", "kid-2", kind="assertion", kid=["not", "a", "name"]))
        await store.append_ledger(draft("admin.grant", "bob", user={"id": "bob"}))
        assert [e["seq"] for e in await store.search_ledger(user="bob")] == [3]  # the subject, not the object
        assert [e["seq"] for e in await store.search_ledger(type="kill")] == [1]
        assert await store.search_ledger(user="null") == []
