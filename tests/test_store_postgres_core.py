"""idwall.store.postgres.core: one PostgreSQL database shared by every node. A new database is migrated to the
latest schema (the same version numbers as SQLite's, two files claiming one version refused) and an old one
brought up to it, each migration all or nothing, and nodes starting at once migrate it exactly once; trust writes
are serialised in the database, so two stores appending at once leave one chain that ``verify_ledger`` accepts;
the pool never opens more connections than its size; every failure of the database, at open or mid-transaction,
is a 503 StoreError that changed nothing, after which the store recovers by itself; and the URL's password is in
no error, log detail or repr.

Tested on the PostgreSQL server at 127.0.0.1:5432: a database of this test session's own, a schema per test, a
second store on the same schema standing for another node; outages through a TCP relay that is cut, and a port
where nothing listens. An unreachable server fails these tests.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from idwall import pki
from idwall.audit import GENESIS_PREV, entry_hash, ledger_public_jwk, verify_ledger
from idwall.encoding import b64url_encode, sha256
from idwall.store import PostgresStore, StoreError
from idwall.model import LedgerDraft
from idwall.store.postgres.core import MIGRATE_LOCK, migrations, shown_url, url_secrets
from idwall.tokens import new_token
from tests.helpers.ledger import gen
from tests.helpers.records import NOW
from tests.helpers.store import Relay, closed_port, draft, dump, enroll, login, opened

TABLES = {"schema_version", "users", "devices", "credentials", "sessions", "invites", "enrollments", "ceremonies",
          "tokens", "ledger", "events", "workers", "event_acks", "renewals", "sign_requests",
          "incidents", "incident_stages", "incident_restrictions", "kill_revocations", "kill_pending"}
LATEST = [1, 2, 3, 4, 5, 6, 7, 8]



async def _tables(conn: asyncpg.Connection) -> set[str]:
    return {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}


async def _versions(store: PostgresStore) -> list[int]:
    return [r[0] for r in await store.read(lambda c: c.fetch("SELECT version FROM schema_version ORDER BY version"))]


def _migration(name: str) -> str:
    return (resources.files("idwall.store") / "migrations" / "postgres" / name).read_text("utf-8")


async def _at_version_1(pg_url: str) -> None:
    """A database as the first release left it: migration 0001 applied, nothing after."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(_migration("0001_initial.sql"))
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version"
                           " VALUES (1); INSERT INTO users VALUES ('alice', 'Alice', '', '[]', TRUE, 0)")
    finally:
        await conn.close()


async def _at_version_2(pg_url: str) -> None:
    """A database as the release before managers left it (migrations 0001 and 0002), with a user, an invite and a
    device of theirs in it."""
    await _at_version_1(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(_migration("0002_workers.sql"))
        await conn.execute("INSERT INTO schema_version VALUES (2);"
                           " INSERT INTO users VALUES ('bob', 'Bob', 'bob@example.com', '[\"eng\"]', FALSE, 1);"
                           " INSERT INTO invites VALUES ('inv-1', 'carol', 'Carol', '', '[]', FALSE, FALSE, 'alice', 1,"
                           " 2, NULL);"
                           " INSERT INTO devices VALUES ('dev-1', 'bob', 'laptop', 'active', '\\x00', NULL, 1, 9,"
                           " 'alice', NULL, 'enr-1')")
    finally:
        await conn.close()


# --------------------------------------------------------------------------- migrations


def test_the_migrations_have_the_version_numbers_sqlite_has() -> None:
    sqlite = sorted(int(item.name.split("_", 1)[0]) for item in (resources.files("idwall.store") / "migrations").iterdir()
                    if item.name.endswith(".sql"))
    assert [version for version, _ in migrations()] == sqlite == LATEST


def test_two_postgresql_migrations_claiming_one_version_are_refused(tmp_path: Path) -> None:
    # a branch's 0003 merged beside another's would otherwise be skipped on every PostgreSQL database
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (tmp_path / "0003_managers_renewals.sql").write_text("CREATE TABLE b (x INTEGER);\n")
    (tmp_path / "0003_sign_requests.sql").write_text("CREATE TABLE c (x INTEGER);\n")
    with pytest.raises(StoreError, match="migrations 0003_managers_renewals.sql and 0003_sign_requests.sql both claim"
                                         " version 3; renumber one of them"):
        migrations(tmp_path)
    (tmp_path / "0003_sign_requests.sql").rename(tmp_path / "0004_sign_requests.sql")
    assert [version for version, _ in migrations(tmp_path)] == [1, 3, 4]


def test_the_shipped_postgresql_migrations_name_the_same_files_as_sqlite() -> None:
    folder = resources.files("idwall.store") / "migrations"
    names = sorted(item.name for item in folder.iterdir() if item.name.endswith(".sql"))
    assert sorted(item.name for item in (folder / "postgres").iterdir() if item.name.endswith(".sql")) == names



async def test_a_new_database_is_migrated_to_the_latest_schema(pg_url: str) -> None:
    async with opened(pg_url) as store:
        assert await store.read(_tables) == TABLES
        assert await _versions(store) == LATEST


async def test_migrating_again_changes_nothing(pg_url: str) -> None:
    async with opened(pg_url) as store:
        await store.append_ledger(draft())
        before = await dump(store)
    async with opened(pg_url) as store:
        assert await dump(store) == before


async def test_an_old_database_is_brought_up_to_date_and_keeps_its_rows(pg_url: str) -> None:
    await _at_version_1(pg_url)
    async with opened(pg_url) as store:
        assert await store.read(_tables) == TABLES
        assert (await store.get_user("alice")).admin is True  # type: ignore[union-attr]
        assert await store.live_workers(since=0) == []  # the table migration 2 made works
        assert await _versions(store) == LATEST


async def test_a_database_from_before_managers_gets_them_and_renewals(pg_url: str) -> None:
    await _at_version_2(pg_url)
    async with opened(pg_url) as store:
        assert await _versions(store) == LATEST and await store.read(_tables) == TABLES
        # every row is kept, and nobody has a manager until an admin names one
        assert [(u.id, u.manager) for u in await store.list_users()] == [("alice", None), ("bob", None)]
        assert (await store.get_invite("inv-1")).manager is None  # type: ignore[union-attr]
        assert (await store.get_device("dev-1")).name == "laptop"  # type: ignore[union-attr]
        await store.write(lambda c: c.execute("UPDATE users SET manager = 'alice' WHERE id = 'bob'"))
        assert (await store.get_user("bob")).manager == "alice"  # type: ignore[union-attr]
        assert await store.get_renewal("ren-x") is None and await store.get_sign_request("sgn-x") is None


async def test_a_manager_must_be_a_user(pg_url: str) -> None:
    """The column references users: even a write that skipped every check cannot name a stranger."""
    await _at_version_2(pg_url)
    async with opened(pg_url) as store:
        with pytest.raises(StoreError) as info:
            await store.write(lambda c: c.execute("UPDATE users SET manager = 'mallory' WHERE id = 'bob'"))
        assert "ForeignKeyViolationError" in info.value.log_detail
        assert (await store.get_user("bob")).manager is None  # type: ignore[union-attr]


async def test_a_migration_that_fails_half_way_leaves_the_database_as_it_was(pg_url: str) -> None:
    await _at_version_1(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE event_acks (x INTEGER)")  # migration 2's third statement fails on it
        with pytest.raises(StoreError) as info:
            async with opened(pg_url):
                pass
        assert 'relation "event_acks" already exists' in info.value.log_detail
        assert info.value.problem()["status"] == 503 and "postgres" not in str(info.value.problem())
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version")] == [1]
        assert "workers" not in await _tables(conn)  # what the migration had made before it failed is gone
        assert [r[0] for r in await conn.fetch("SELECT id FROM users")] == ["alice"]
    finally:
        await conn.close()


async def test_nodes_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, ledger_key=None, pool_size=1) for _ in range(6)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        assert await _versions(stores[0]) == LATEST  # each migration recorded once
        assert await stores[-1].read(_tables) == TABLES
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_node_starting_while_another_migrates_waits_for_it(pg_url: str) -> None:
    holder = await asyncpg.connect(pg_url)  # stands for a node in the middle of a migration
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        store = PostgresStore(pg_url, ledger_key=None, pool_size=1)
        opening = asyncio.create_task(store.open())
        await asyncio.sleep(0.5)
        assert not opening.done()  # it waits for the lock rather than migrating beside the other node
        assert "schema_version" not in await _tables(holder)
        await tx.rollback()
        await asyncio.wait_for(opening, 30)
        try:
            assert await _versions(store) == LATEST
        finally:
            await store.close()
    finally:
        await holder.close()


# --------------------------------------------------------------------------- transactions


async def test_a_write_that_raises_leaves_nothing_behind(pg_url: str) -> None:
    async with opened(pg_url) as store:
        before = await dump(store)

        async def half(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO events (kind, payload, time) VALUES ('x', '{}', 0)")
            raise ValueError("the second half failed")

        with pytest.raises(ValueError, match="the second half failed"):  # our own errors pass through as they are
            await store.write(half)
        assert await dump(store) == before

        async def broken(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO events (kind, payload, time) VALUES ('x', '{}', 0)")
            await conn.execute("INSERT INTO no_such_table VALUES (1)")

        with pytest.raises(StoreError, match="nothing was changed") as info:
            await store.write(broken)
        assert 'relation "no_such_table" does not exist' in info.value.log_detail
        assert await dump(store) == before
        await store.write(lambda c: c.execute("INSERT INTO events (kind, payload, time) VALUES ('y', '{}', 0)"))
        assert [e.kind for e in await store.events_after(0)] == ["y"]  # the pool is still usable


@pytest.mark.parametrize("bad", [
    LedgerDraft("no.such.type", "alice", "x", {}),  # the ledger refuses an unknown type
    LedgerDraft("token.create", "alice", "x", {"ratio": 0.5}),  # and a value canonical JSON has no form for
])
async def test_a_trust_change_whose_ledger_entry_cannot_be_sealed_does_not_happen(pg_url: str, bad: LedgerDraft) -> None:
    async with opened(pg_url) as store:
        before = await dump(store)
        issued = new_token(name="ci", scopes=["kill"], ttl=3600, created_by="alice", now=NOW)
        with pytest.raises(ValueError):
            await store.create_token(issued.record, bad)
        assert await dump(store) == before
        assert await store.get_token_by_hash(issued.record.hash) is None


async def test_a_store_opened_without_the_ledger_key_reads_but_records_no_trust_change(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key) as store:
        await store.append_ledger(draft())
        entries = await store.ledger_entries()
    async with opened(pg_url, ledger_key=None) as store:
        assert await store.ledger_entries() == entries  # what was committed is there after reopening
        with pytest.raises(StoreError, match="opened without the ledger key"):
            await store.append_ledger(draft())
        assert await store.ledger_entries() == entries


# --------------------------------------------------------------------------- one chain across nodes


async def test_two_nodes_appending_at_once_never_fork_the_chain(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key) as one, opened(pg_url, ledger_key=key) as other:
        seqs = await asyncio.gather(*(store.append_ledger(draft(subject=f"kid-{i}"))
                                      for i in range(25) for store in (one, other)))
        entries = await other.ledger_entries()
    assert sorted(seqs) == list(range(1, 51)) == [e["seq"] for e in entries]
    prev = GENESIS_PREV
    for entry in entries:
        assert entry["prev"] == b64url_encode(prev)
        prev = entry_hash(prev, entry)


def _bootstrap(key: pki.ec.EllipticCurvePrivateKey) -> LedgerDraft:
    """The genesis entry of a real ledger: the first administrator's passkey and device."""
    alice = gen.Person("alice", "Alice Admin", ["soc"], True)
    cert = gen.device_certificate("pg/dev-alice")
    return LedgerDraft("bootstrap", "alice", "alice", {
        **alice.user_fields(), **alice.register("dev-alice"), "cert_sha256": b64url_encode(sha256(cert)),
        "rp_id": gen.RP_ID, "origins": [gen.ORIGIN], "user_verification": "required",
        "ledger_key": ledger_public_jwk(key)})


async def test_concurrent_actions_on_two_nodes_leave_one_chain_that_verifies(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key, pool_size=3) as one, opened(pg_url, ledger_key=key, pool_size=3) as other:
        await one.append_ledger(_bootstrap(key))

        def kill(store: PostgresStore, i: int):  # type: ignore[no-untyped-def]
            user = f"user-{i % 5}"
            return store.kill(scope="user", target=user, revoke_devices=False, now=NOW, draft=LedgerDraft(
                "kill", "alice", user, {"scope": "user", "target": user, "reason": f"drill {i}",
                                        "revoke_devices": False}))

        calls = [kill(store, i) for i in range(15) for store in (one, other)]
        calls += [store.append_ledger(draft(subject=f"kid-{i}-{n}")) for i in range(10) for n, store in enumerate((one, other))]
        await asyncio.gather(*calls)
        entries = await other.ledger_entries()
    assert len(entries) == 1 + 30 + 20
    result = verify_ledger(entries, ledger_public_key=key.public_key())
    assert result.ok, result.reason
    assert (result.entries, result.seq) == (51, 51)


async def test_a_session_killed_on_two_nodes_at_once_is_cut_once(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        victims = [await login(one, await enroll(one, f"user-{i}")) for i in range(6)]
        results = await asyncio.gather(*(store.kill(
            scope="user", target=v.user_id, revoke_devices=True, now=NOW,
            draft=LedgerDraft("kill", "alice", v.user_id, {})) for v in victims for store in (one, other)))
        assert sorted(s for r in results for s in r.sessions) == sorted(v.id for v in victims)
        assert sorted(d for r in results for d in r.devices) == sorted(v.device_id for v in victims)
        assert await other.live_sessions(now=NOW) == []
        kill_events = [e for e in await one.events_after(0) if e.kind == "kill"]
        assert [e.payload["audit_seq"] for e in kill_events] == sorted(r.audit_seq for r in results)


# --------------------------------------------------------------------------- the pool


async def test_the_pool_never_opens_more_connections_than_its_size(pg_url: str) -> None:
    async with opened(pg_url, pool_size=2) as store:
        pids = await asyncio.gather(*(store.read(lambda c: c.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))
                                      for _ in range(12)))
        assert len(set(pids)) <= 2  # twelve calls at once shared two connections; none was refused


async def test_writes_from_one_store_do_not_wait_on_each_other_for_a_connection_forever(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key, pool_size=1) as store:  # the smallest pool still serves every call
        seqs = await asyncio.gather(*(store.append_ledger(draft(subject=f"kid-{i}")) for i in range(10)))
    assert sorted(seqs) == list(range(1, 11))


# --------------------------------------------------------------------------- outages: fail closed, then recover


async def test_a_database_that_is_not_there_is_a_503_store_error() -> None:
    with closed_port() as port:
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/idwall", ledger_key=None)
        with pytest.raises(StoreError) as info:
            await store.open()
    body = info.value.problem()
    assert (body["status"], body["detail"]) == (503, "the store is unavailable; nothing was changed")
    assert info.value.log_detail.startswith("postgresql: ") and "postgres" not in str(body)
    with pytest.raises(StoreError):  # not open: every call fails closed, none crashes
        await store.get_user("alice")


async def test_a_connection_lost_inside_a_write_changes_nothing_and_the_store_recovers(pg_url: str) -> None:
    async with opened(pg_url) as store:
        before = await dump(store)

        async def dies(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO events (kind, payload, time) VALUES ('x', '{}', 0)")
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # the server ends this connection

        with pytest.raises(StoreError, match="nothing was changed"):
            await store.write(dies)
        assert await dump(store) == before
        assert await store.append_ledger(draft()) == 1  # a new connection: the store works again


async def test_a_database_cut_off_is_a_store_error_until_it_is_back(pg_url: str) -> None:
    relay = Relay()
    await relay.start()
    key = pki.generate_p256_key()
    async with opened(relay.url(pg_url), ledger_key=key, pool_size=2) as store:
        assert await store.append_ledger(draft(subject="kid-a")) == 1
        await relay.cut()
        for call in (lambda: store.append_ledger(draft(subject="kid-b")), lambda: store.get_user("alice"),
                     lambda: store.events_after(0)):
            with pytest.raises(StoreError) as info:
                await asyncio.wait_for(call(), 30)  # fails at once, never hangs a request
            assert info.value.status == 503
        await relay.start()
        assert await store.append_ledger(draft(subject="kid-c")) == 2  # nothing was half-written while cut off
        assert [e["subject"] for e in await store.ledger_entries()] == ["kid-a", "kid-c"]


# --------------------------------------------------------------------------- the password


async def test_the_password_of_the_url_is_in_no_error_log_detail_or_repr(pg_url: str) -> None:
    with closed_port() as port:
        store = PostgresStore(f"postgresql://postgres:hunter2@127.0.0.1:{port}/idwall", ledger_key=None)
        with pytest.raises(StoreError) as info:
            await store.open()
    assert "hunter2" not in f"{info.value} {info.value.detail} {info.value.log_detail} {store!r}"
    # trust auth takes any password, so a real connection shows it is carried and still never shown
    with_password = pg_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    async with opened(with_password) as store:
        async def fails(conn: asyncpg.Connection) -> None:
            await conn.execute("SELECT 'hunter2'::integer")  # a server error quoting the password's text

        with pytest.raises(StoreError) as info:
            await store.write(fails)
        assert "hunter2" not in f"{info.value} {info.value.log_detail} {store!r}"
        assert "***" in info.value.log_detail


@pytest.mark.parametrize(("url", "shown", "secrets"), [
    ("postgresql://idwall:postgres@db:5432/idwall", "postgresql://idwall:***@db:5432/idwall", {"postgres"}),
    ("postgresql://idwall@db/idwall?password=s%40x&sslmode=require",
     "postgresql://idwall@db/idwall?password=***&sslmode=require", {"s%40x", "s@x"}),
    ("postgresql://idwall:p%2Fq@db/idwall?search_path=t", "postgresql://idwall:***@db/idwall?search_path=t",
     {"p%2Fq", "p/q"}),
    ("postgresql://idwall@db/idwall", "postgresql://idwall@db/idwall", set()),
])
def test_every_spelling_of_a_password_is_known_and_never_shown(url: str, shown: str, secrets: set[str]) -> None:
    assert shown_url(url) == shown and url_secrets(url) == secrets


async def test_a_password_given_as_a_query_parameter_is_not_logged_either(pg_url: str) -> None:
    async with opened(f"{pg_url}&password=hunter2") as store:  # trust auth: any password connects
        async def fails(conn: asyncpg.Connection) -> None:
            await conn.execute("SELECT 'hunter2'::integer")

        with pytest.raises(StoreError) as info:
            await store.write(fails)
    assert "hunter2" not in info.value.log_detail and info.value.log_detail.startswith("postgresql: ")


async def test_an_unparseable_url_is_refused_without_quoting_it() -> None:
    store = PostgresStore("postgresql://postgres:hunter2@127.0.0.1:notaport/idwall", ledger_key=None)
    with pytest.raises(StoreError) as info:
        await store.open()
    assert "cannot be parsed" in info.value.detail
    assert "hunter2" not in f"{info.value} {info.value.log_detail}"


# --------------------------------------------------------------------------- this process's own events


async def test_a_poller_never_sees_an_event_before_the_write_that_made_it_returns(pg_url: str) -> None:
    """A kill marks itself this process's own once ``store.kill`` returns; a poller of the same process that got
    the event first would take it for another process's kill and cut the connection the answer is due on."""
    async with opened(pg_url, pool_size=4) as store:
        early: list[int] = []
        for round in range(15):
            done = asyncio.Event()
            cursor = await store.last_event_id()

            async def poll() -> None:
                while not done.is_set():
                    events = await store.events_after(cursor)
                    if events and not done.is_set():
                        early.append(events[0].id)
                    await asyncio.sleep(0)

            poller = asyncio.create_task(poll())
            await asyncio.sleep(0.01)
            await store.kill(scope="all", target=None, revoke_devices=False, now=NOW,
                             draft=LedgerDraft("kill", "alice", "*", {"round": round}))
            done.set()  # at once, as killswitch.kill marks the kill its own: no await in between
            await poller
            assert [e.kind for e in await store.events_after(cursor)] == ["kill"]  # and now it is there
    assert early == []


async def test_migration_7_revokes_the_passkeys_of_devices_earlier_kills_declared_lost(pg_url: str) -> None:
    """As SQLite's: a kill of one device with revoke_devices from before version 7 revokes its passkeys; a reset's
    kill does not."""
    async with opened(pg_url) as store:
        lost, kept = await enroll(store, "bob"), await enroll(store, "bob")
        await store.kill(scope="device", target=lost.device.id, revoke_devices=True, now=NOW + 1,
                         draft=draft("kill", lost.device.id, scope="device", target=lost.device.id,
                                     revoke_devices=True))
        await store.kill(scope="user", target="bob", revoke_devices=True, now=NOW + 2,
                         draft=draft("kill", "bob", scope="user", target="bob", revoke_devices=True))
        await store.write(lambda c: c.execute("ALTER TABLE credentials DROP COLUMN revoked_at;"
                                              " ALTER TABLE enrollments DROP COLUMN source;"
                                              " DROP TABLE kill_pending;"
                                              " DELETE FROM schema_version WHERE version >= 7"))
    async with opened(pg_url) as store:
        assert {c.device_id: c.revoked_at for c in await store.user_passkeys("bob")} == {
            lost.device.id: NOW + 1, kept.device.id: None}
