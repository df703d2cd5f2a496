"""idwall.store: ``sqlite_path`` reads the file out of a ``sqlite:///abs/path`` URL (the form the config normalises
every SQLite store to); ``open_store`` opens (creating and migrating) the store a config names, and refuses any
other URL with a StoreError that says which form this build takes, before it touches anything.

Tested on real files in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall import pki
from idwall.config import load_config
from idwall.store import SQLiteStore, StoreError, open_store, sqlite_path
from tests.helpers.cli import init_gwdir
from tests.helpers.store import draft


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
        assert version == 5
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


@pytest.mark.parametrize("url", ["postgresql://idwall@db.internal/idwall", "sqlite:relative.db",
                                 "sqlite://host/idwall.db", "mysql://db/idwall", ""])
async def test_other_stores_are_refused_before_anything_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as info:
        await open_store(url, ledger_key=None)
    assert "is not supported by this build; use sqlite:///path/to/idwall.db" in info.value.detail
    assert (info.value.status, info.value.slug) == (503, "store-unavailable")
    assert list(tmp_path.iterdir()) == []  # no file was created, not even a relative one


async def test_a_refused_store_url_is_not_echoed_with_its_password() -> None:
    with pytest.raises(StoreError) as info:
        await open_store("postgresql://idwall:hunter2@db.internal/idwall", ledger_key=None)
    assert "hunter2" not in str(info.value) and "hunter2" not in info.value.detail
    assert "scheme 'postgresql'" in info.value.detail
