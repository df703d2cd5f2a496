"""Storage: one interface (:mod:`.base`), an embedded SQLite backend, a PostgreSQL backend for several nodes,
migrations for each."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .base import Store, StoreError
from .postgres import DEFAULT_POOL_SIZE, PostgresStore, shown_url
from .sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "PostgresStore", "SQLiteStore", "is_postgres", "open_store", "shown_url",
           "sqlite_path"]

_POSTGRES_PREFIX = "postgresql://"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///abs/path`` URL, else None."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return Path("/" + url[len(prefix):].lstrip("/"))
    return None


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL store (``postgresql://user@host:port/db``)."""
    return url.startswith(_POSTGRES_PREFIX) and len(url) > len(_POSTGRES_PREFIX)


def _describe(url: str) -> str:
    # Never echo the URL: a database URL may carry a password, and this text reaches logs and terminals.
    scheme = url.partition(":")[0] if ":" in url else ""
    if scheme == "sqlite":
        return "a sqlite store URL without an absolute path (three slashes)"
    return f"a store URL with scheme {scheme!r}" if scheme else "an empty or scheme-less store URL"


async def open_store(url: str, *, ledger_key: ec.EllipticCurvePrivateKey | None,
                     pool_size: int = DEFAULT_POOL_SIZE) -> SQLiteStore | PostgresStore:
    """Open (creating and migrating) the store a config names: ``sqlite:///path`` or ``postgresql://…``.

    ``pool_size`` (``cluster.pool_size``) bounds the connections a PostgreSQL store opens. Anything else is a
    :class:`StoreError` that names the forms accepted, never the URL (it may hold a password).
    """
    store: SQLiteStore | PostgresStore
    if is_postgres(url):
        store = PostgresStore(url, ledger_key=ledger_key, pool_size=pool_size)
    else:
        path = sqlite_path(url)
        if path is None:
            raise StoreError(f"{_describe(url)} is not supported; use sqlite:///path/to/idwall.db or "
                             "postgresql://user@host:port/db")
        store = SQLiteStore(path, ledger_key=ledger_key)
    await store.open()
    return store
