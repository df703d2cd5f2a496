"""idwall.store.sqlite.core: one SQLite file, one connection on one thread. A new file is migrated to the latest
schema and an old one brought up to it, each migration all or nothing; the file is opened in WAL mode with
``synchronous=FULL`` and foreign keys on; every write is one ``BEGIN IMMEDIATE`` transaction that rolls back
on any exception; SQLite failures become a StoreError that tells the client nothing changed and keeps SQLite's
words for the log; and the ledger append seals each entry onto the head of one chain, even when two processes
write at once.

Tested on real files in ``tmp_path``; a second store on the same file is a second process's connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from idwall import pki
from idwall.audit import GENESIS_PREV, entry_hash, format_time
from idwall.audit.sealing import verify_raw
from idwall.encoding import b64url_decode, b64url_encode
from idwall.store import StoreError
from idwall.model import LedgerDraft
from idwall.store.sqlite import migrate
from idwall.store.sqlite.core import migration_files
from idwall.tokens import new_token
from tests.helpers.records import NOW
from tests.helpers.clock import Clock
from tests.helpers.store import draft, dump, enroll, opened

TABLES = {"schema_version", "users", "devices", "credentials", "sessions", "invites", "enrollments", "ceremonies",
          "tokens", "ledger", "events", "workers", "event_acks", "sign_requests", "renewals",
          "incidents", "incident_stages", "incident_restrictions", "kill_revocations", "kill_pending"}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                       " AND name NOT LIKE 'sqlite_%'")}


def _at_version_1(path: Path) -> sqlite3.Connection:
    """A database as the first release left it: migration 0001 applied, nothing after."""
    sql = (resources.files("idwall.store") / "migrations" / "0001_initial.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sql)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO users VALUES ('alice', 'Alice', '', '[]', 1, 0)")
    return conn


# --------------------------------------------------------------------------- migrations


async def test_a_new_file_is_migrated_to_the_latest_schema(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as store:
        assert await store.read(_tables) == TABLES
        versions = await store.read(lambda c: [r[0] for r in c.execute("SELECT version FROM schema_version")])
    assert versions == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_migrating_again_changes_nothing(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as store:
        await store.append_ledger(draft())
        before = await dump(store)
    conn = sqlite3.connect(tmp_path / "idwall.db", isolation_level=None)
    assert migrate(conn) == 8
    conn.close()
    async with opened(tmp_path / "idwall.db") as store:
        assert await dump(store) == before


async def test_an_old_database_is_brought_up_to_date_and_keeps_its_rows(tmp_path: Path) -> None:
    _at_version_1(tmp_path / "idwall.db").close()
    async with opened(tmp_path / "idwall.db") as store:
        assert await store.read(_tables) == TABLES
        assert (await store.get_user("alice")).admin is True  # type: ignore[union-attr]
        assert await store.live_workers(since=0) == []  # the table migration 2 made works


def _at_version_2(path: Path) -> None:
    """A database as the release before managers left it (migrations 0001 and 0002), with a user, an invite
    and a device of theirs in it."""
    conn = _at_version_1(path)
    sql = (resources.files("idwall.store") / "migrations" / "0002_workers.sql").read_text(encoding="utf-8")
    conn.executescript(sql)
    conn.execute("INSERT INTO schema_version (version) VALUES (2)")
    conn.execute("INSERT INTO users VALUES ('bob', 'Bob', 'bob@example.com', '[\"eng\"]', 0, 1)")
    conn.execute("INSERT INTO invites VALUES ('inv-1', 'carol', 'Carol', '', '[]', 0, 0, 'alice', 1, 2, NULL)")
    conn.execute("INSERT INTO devices VALUES ('dev-1', 'bob', 'laptop', 'active', x'00', NULL, 1, 9, 'alice', NULL,"
                 " 'enr-1')")
    conn.close()


async def test_a_database_from_before_managers_gets_them_and_renewals(tmp_path: Path) -> None:
    _at_version_2(tmp_path / "idwall.db")
    async with opened(tmp_path / "idwall.db") as store:
        versions = await store.read(lambda c: [r[0] for r in c.execute("SELECT version FROM schema_version")])
        assert versions == [1, 2, 3, 4, 5, 6, 7, 8] and await store.read(_tables) == TABLES
        # every row is kept, and nobody has a manager until an admin names one
        assert [(u.id, u.manager) for u in await store.list_users()] == [("alice", None), ("bob", None)]
        assert (await store.get_invite("inv-1")).manager is None  # type: ignore[union-attr]
        assert (await store.get_device("dev-1")).name == "laptop"  # type: ignore[union-attr]
        await store.write(lambda c: c.execute("UPDATE users SET manager = 'alice' WHERE id = 'bob'"))
        assert (await store.get_user("bob")).manager == "alice"  # type: ignore[union-attr]
        assert await store.get_renewal("ren-x") is None


async def test_a_manager_must_be_a_user(tmp_path: Path) -> None:
    """The column references users: even a write that skipped every check cannot name a stranger."""
    _at_version_2(tmp_path / "idwall.db")
    async with opened(tmp_path / "idwall.db") as store:
        with pytest.raises(StoreError) as info:
            await store.write(lambda c: c.execute("UPDATE users SET manager = 'mallory' WHERE id = 'bob'"))
        assert "FOREIGN KEY" in info.value.log_detail
        assert (await store.get_user("bob")).manager is None  # type: ignore[union-attr]


async def test_a_migration_that_fails_half_way_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    conn = _at_version_1(tmp_path / "idwall.db")
    # migration 2 makes workers, then its index, then event_acks: a table in the way fails its third statement
    conn.execute("CREATE TABLE event_acks (x)")
    conn.close()
    with pytest.raises(StoreError) as info:
        async with opened(tmp_path / "idwall.db"):
            pass
    assert "event_acks already exists" in info.value.log_detail
    conn = sqlite3.connect(tmp_path / "idwall.db")
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [1]
    assert "workers" not in _tables(conn)  # what the migration had made before it failed is gone
    assert conn.execute("SELECT id FROM users").fetchall() == [("alice",)]


def test_two_migrations_claiming_one_version_are_refused(tmp_path: Path) -> None:
    # Before, the second file was silently skipped: a merged branch's schema change would never have run.
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE a (x);\n")
    (tmp_path / "0002_workers.sql").write_text("CREATE TABLE b (x);\n")
    (tmp_path / "0002_sign_requests.sql").write_text("CREATE TABLE c (x);\n")
    with pytest.raises(StoreError, match="migrations 0002_sign_requests.sql and 0002_workers.sql both claim version 2"):
        migration_files(tmp_path)
    (tmp_path / "0002_sign_requests.sql").rename(tmp_path / "0003_sign_requests.sql")
    assert [version for version, _ in migration_files(tmp_path)] == [1, 2, 3]


def test_the_shipped_migrations_have_one_file_per_version() -> None:
    versions = [version for version, _ in migration_files()]
    assert versions == list(range(1, len(versions) + 1))


# --------------------------------------------------------------------------- the connection


async def test_the_file_is_opened_durable_and_with_foreign_keys(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as store:
        pragmas = await store.read(lambda c: [c.execute(f"PRAGMA {p}").fetchone()[0]
                                              for p in ("journal_mode", "synchronous", "foreign_keys")])
    assert pragmas == ["wal", 2, 1]  # synchronous 2 is FULL: a committed ledger entry survives power loss


async def test_what_was_committed_is_there_after_reopening(tmp_path: Path) -> None:
    key = pki.generate_p256_key()
    async with opened(tmp_path / "idwall.db", ledger_key=key) as store:
        await store.append_ledger(draft())
        entries = await store.ledger_entries()
    async with opened(tmp_path / "idwall.db", ledger_key=None) as store:
        assert await store.ledger_entries() == entries


async def test_a_file_that_is_not_a_database_is_a_store_error_and_stays_untouched(tmp_path: Path) -> None:
    path = tmp_path / "idwall.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError) as info:
        async with opened(path):
            pass
    body = info.value.problem()
    assert body["status"] == 503 and body["detail"] == "the store is unavailable; nothing was changed"
    assert info.value.log_detail.startswith("sqlite: ") and "sqlite" not in str(body)
    assert path.read_bytes() == b"these are my notes, not a database\n" * 200


# --------------------------------------------------------------------------- transactions


async def test_a_write_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as store:
        before = await dump(store)

        def half(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO events (kind, payload, time) VALUES ('x', '{}', 0)")
            raise ValueError("the second half failed")

        with pytest.raises(ValueError, match="the second half failed"):  # our own errors pass through as they are
            await store.write(half)
        assert await dump(store) == before

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO events (kind, payload, time) VALUES ('x', '{}', 0)")
            conn.execute("INSERT INTO no_such_table VALUES (1)")

        with pytest.raises(StoreError, match="nothing was changed"):
            await store.write(broken)
        assert await dump(store) == before
        await store.write(lambda c: c.execute("INSERT INTO events (kind, payload, time) VALUES ('y', '{}', 0)"))
        assert [e.kind for e in await store.events_after(0)] == ["y"]  # the connection is still usable


@pytest.mark.parametrize("bad", [
    LedgerDraft("no.such.type", "alice", "x", {}),  # the ledger refuses an unknown type
    LedgerDraft("token.create", "alice", "x", {"ratio": 0.5}),  # and a value canonical JSON has no form for
])
async def test_a_trust_change_whose_ledger_entry_cannot_be_sealed_does_not_happen(tmp_path: Path,
                                                                                  bad: LedgerDraft) -> None:
    async with opened(tmp_path / "idwall.db") as store:
        before = await dump(store)
        issued = new_token(name="ci", scopes=["kill"], ttl=3600, created_by="alice", now=NOW)
        with pytest.raises(ValueError):
            await store.create_token(issued.record, bad)
        assert await dump(store) == before
        assert await store.get_token_by_hash(issued.record.hash) is None


# --------------------------------------------------------------------------- the ledger chain


async def test_each_entry_is_sealed_onto_the_head_of_the_chain(tmp_path: Path) -> None:
    key, clock = pki.generate_p256_key(), Clock()
    async with opened(tmp_path / "idwall.db", ledger_key=key, clock=clock) as store:
        seqs = []
        for step in range(3):
            clock.now = NOW + step * 1.5
            seqs.append(await store.append_ledger(draft(subject=f"kid-{step + 2}")))
        entries = await store.ledger_entries()
        hashes = await store.read(lambda c: [bytes(r[0]) for r in c.execute("SELECT hash FROM ledger ORDER BY seq")])
    assert seqs == [1, 2, 3] == [e["seq"] for e in entries]
    prev = GENESIS_PREV
    for step, entry in enumerate(entries):
        assert entry["prev"] == b64url_encode(prev)
        digest = entry_hash(prev, entry)
        assert entry["hash"] == b64url_encode(digest) and hashes[step] == digest
        assert verify_raw(key.public_key(), b64url_decode(entry["sig"]), digest)
        assert entry["time"] == format_time(NOW + step * 1.5)
        assert (entry["type"], entry["actor"], entry["subject"]) == ("key.rotate", "system", f"kid-{step + 2}")
        prev = digest


async def test_two_processes_appending_at_once_never_fork_the_chain(tmp_path: Path) -> None:
    key = pki.generate_p256_key()
    async with opened(tmp_path / "idwall.db", ledger_key=key) as one, \
            opened(tmp_path / "idwall.db", ledger_key=key) as other:
        seqs = await asyncio.gather(*(store.append_ledger(draft(subject=f"kid-{i}"))
                                      for i in range(20) for store in (one, other)))
        entries = await one.ledger_entries()
    assert sorted(seqs) == list(range(1, 41)) == [e["seq"] for e in entries]
    prev = GENESIS_PREV
    for entry in entries:
        assert entry["prev"] == b64url_encode(prev)
        prev = entry_hash(prev, entry)


async def test_migration_7_revokes_the_passkeys_of_devices_earlier_kills_declared_lost(tmp_path: Path) -> None:
    """Before version 7 a kill of one device revoked its certificate only; the ledger replay now reads such a kill
    as revoking the device's passkeys too, and the migrated store says the same (a reset's kill does not)."""
    async with opened(tmp_path / "idwall.db") as store:
        lost, kept = await enroll(store, "bob"), await enroll(store, "bob")
        await store.kill(scope="device", target=lost.device.id, revoke_devices=True, now=NOW + 1,
                         draft=draft("kill", lost.device.id, scope="device", target=lost.device.id,
                                     revoke_devices=True))
        await store.kill(scope="user", target="bob", revoke_devices=True, now=NOW + 2,
                         draft=draft("kill", "bob", scope="user", target="bob", revoke_devices=True))

        def as_version_6(conn: sqlite3.Connection) -> None:
            conn.execute("ALTER TABLE credentials DROP COLUMN revoked_at")
            conn.execute("ALTER TABLE enrollments DROP COLUMN source")
            conn.execute("DROP TABLE kill_pending")
            conn.execute("DELETE FROM schema_version WHERE version >= 7")

        await store.write(as_version_6)
    async with opened(tmp_path / "idwall.db") as store:
        assert {c.device_id: c.revoked_at for c in await store.user_passkeys("bob")} == {
            lost.device.id: NOW + 1, kept.device.id: None}
        assert (await store.get_enrollment(lost.device.enrollment_id)).source is None  # type: ignore[union-attr]
