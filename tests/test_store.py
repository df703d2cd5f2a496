"""idwall.store: ``sqlite_path`` reads the file out of a ``sqlite:///abs/path`` URL (the form the config normalises
every SQLite store to); ``open_store`` opens (creating and migrating) the store a config names, SQLite or
PostgreSQL by the URL's scheme, and refuses any other URL with a StoreError that says which forms it takes, before
it touches anything; a URL's password appears in no error.

Tested on real files in a temporary directory and on the PostgreSQL server at 127.0.0.1:5432.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall import pki
from idwall.config import load_config
from idwall.store import PostgresStore, SQLiteStore, StoreError, is_postgres, open_store, sqlite_path
from tests.helpers.cli import init_gwdir
from tests.helpers.store import closed_port, draft


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///var/lib/idwall/idwall.db", "/var/lib/idwall/idwall.db"),
    ("sqlite:////var/lib/idwall.db", "/var/lib/idwall.db"),  # SQLAlchemy's four slashes: the same file
    ("sqlite:///a b/x #1.db", "/a b/x #1.db"),
])
def test_sqlite_path_of_an_absolute_sqlite_url(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)


@pytest.mark.parametrize("url", ["sqlite:idwall.db", "sqlite://host/idwall.db", "sqlite:/x.db", "SQLITE:///x.db",
                                 "postgresql://idwall@db/idwall", "", "/var/lib/idwall.db"])
def test_sqlite_path_of_anything_else_is_none(url: str) -> None:
    assert sqlite_path(url) is None


async def test_open_store_creates_and_migrates_a_new_file(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    store = await open_store(f"sqlite://{db}", ledger_key=pki.generate_p256_key())
    try:
        assert isinstance(store, SQLiteStore) and store.path == db
        assert await store.append_ledger(draft()) == 1
        version = await store.read(lambda c: c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
        assert version == 8
    finally:
        await store.close()
    assert db.is_file()


async def test_open_store_opens_the_store_init_made(tmp_path: Path) -> None:
    config = load_config(init_gwdir(tmp_path) / "idwall.yaml")
    store = await open_store(config.store, ledger_key=None)
    try:
        assert store.path == config.sqlite_path
        # init stored the bootstrap invite and nothing in the ledger
        assert await store.read(lambda c: c.execute("SELECT COUNT(*) FROM invites").fetchone()[0]) == 1
        assert await store.ledger_entries() == []
    finally:
        await store.close()


async def test_a_store_opened_without_the_ledger_key_reads_but_records_no_trust_change(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path / 'x.db'}", ledger_key=None)
    try:
        with pytest.raises(StoreError, match="opened without the ledger key"):
            await store.append_ledger(draft())
        assert await store.ledger_entries() == []
    finally:
        await store.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://idwall@db:5432/idwall", True), ("postgresql://idwall:pw@db/idwall?sslmode=require", True),
    ("postgresql://", False), ("postgres://idwall@db/idwall", False), ("sqlite:///x.db", False), ("", False),
])
def test_is_postgres_names_the_postgresql_urls_the_config_accepts(url: str, expected: bool) -> None:
    assert is_postgres(url) is expected


async def test_open_store_opens_a_postgresql_store_and_migrates_it(postgres_url: str) -> None:
    store = await open_store(postgres_url, ledger_key=pki.generate_p256_key(), pool_size=2)
    try:
        assert isinstance(store, PostgresStore)
        assert await store.append_ledger(draft()) == 1
        versions = await store.read(lambda c: c.fetch("SELECT version FROM schema_version ORDER BY version"))
        assert [r[0] for r in versions] == [1, 2, 3, 4, 5, 6, 7, 8]
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["sqlite:relative.db", "sqlite://host/idwall.db", "mysql://db/idwall", "postgresql://",
                                 "postgres://idwall@db/idwall", ""])
async def test_other_stores_are_refused_before_anything_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as info:
        await open_store(url, ledger_key=None)
    assert "is not supported; use sqlite:///path/to/idwall.db or postgresql://user@host:port/db" in info.value.detail
    assert (info.value.status, info.value.slug) == (503, "store-unavailable")
    assert list(tmp_path.iterdir()) == []  # no file was created, not even a relative one


@pytest.mark.parametrize("url", ["mysql://idwall:hunter2@db.internal/idwall", "postgres://idwall:hunter2@db/idwall"])
async def test_a_refused_store_url_is_not_echoed_with_its_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_store(url, ledger_key=None)
    assert "hunter2" not in str(info.value) and "hunter2" not in info.value.detail
    assert "hunter2" not in info.value.log_detail
    assert "scheme 'm" in info.value.detail or "scheme 'postgres'" in info.value.detail


async def test_an_unreachable_postgresql_store_is_unavailable_without_its_password() -> None:
    with closed_port() as port:
        with pytest.raises(StoreError) as info:
            await open_store(f"postgresql://idwall:hunter2@127.0.0.1:{port}/idwall", ledger_key=None)
    assert (info.value.status, info.value.detail) == (503, "the store is unavailable; nothing was changed")
    assert "hunter2" not in str(info.value) and "hunter2" not in info.value.log_detail
    assert info.value.log_detail.startswith("postgresql: ")
