"""The PostgreSQL backend, for several gateway nodes on one database: a pool of asyncpg connections, every trust
change with its ledger entry in one transaction, and trust writes serialised in the database by an advisory
lock, so the nodes share one ledger chain.

    core       the pool, the write lock, migrations under their own lock, failures as StoreError, the ledger append
    trust      invites, users, enrollments, devices, credentials, admins, tokens, signed actions' effects
    sessions   certificates resolved, ceremonies, sessions, kills, trust events, ledger pages
    workers    the workers table and kill acknowledgements
"""

from __future__ import annotations

from .core import DEFAULT_POOL_SIZE, migrate
from .sessions import SessionRecords
from .trust import TrustRecords
from .workers import WorkerRecords


class PostgresStore(TrustRecords, SessionRecords, WorkerRecords):
    """The :class:`~idwall.store.base.Store` on one PostgreSQL database, shared by every node."""


__all__ = ["DEFAULT_POOL_SIZE", "PostgresStore", "migrate"]
