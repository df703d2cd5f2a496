"""Storage: one interface (:mod:`.base`), an embedded SQLite backend, migrations."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .base import Store, StoreError
from .sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "SQLiteStore", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///abs/path`` URL, else None."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return Path("/" + url[len(prefix):].lstrip("/"))
    return None


def _describe(url: str) -> str:
    # Never echo the URL: a database URL may carry a password, and this text reaches logs and terminals.
    scheme = url.partition(":")[0] if ":" in url else ""
    if scheme == "sqlite":
        return "a sqlite store URL without an absolute path (three slashes)"
    return f"a store URL with scheme {scheme!r}" if scheme else "an empty or scheme-less store URL"


async def open_store(url: str, *, ledger_key: ec.EllipticCurvePrivateKey | None) -> SQLiteStore:
    """Open the store a config names; PostgreSQL comes with several-node support."""
    path = sqlite_path(url)
    if path is None:
        raise StoreError(f"{_describe(url)} is not supported by this build; use sqlite:///path/to/idwall.db")
    store = SQLiteStore(path, ledger_key=ledger_key)
    await store.open()
    return store
