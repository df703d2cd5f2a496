"""The PostgreSQL backend, for several gateway nodes on one database: a pool of asyncpg connections, every trust
change with its ledger entry in one transaction, and trust writes serialised in the database by an advisory
lock, so the nodes share one ledger chain.

    core       the pool, the write lock, migrations under their own lock, failures as StoreError, the ledger append
    trust      invites, users, enrollments, devices, credentials, admins, managers, tokens, certificate renewals,
               signed actions' effects
    sessions   certificates resolved, ceremonies, sessions, kills, trust events, ledger pages
    workers    the workers table and kill acknowledgements
    signing    sign requests (an action begun on the command line, signed on a page)
    directory  the admin console's reads: users with devices and passkeys, devices by status, ledger search
    incidents  incident runs, their stages, suspect passkeys, per-user restrictions
    listen     LISTEN for every node's trust events, and a replay on every reconnect
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from .core import DEFAULT_POOL_SIZE, migrate, shown_url
from .directory import DirectoryRecords
from .incidents import IncidentRecords
from .listen import EventListener
from .sessions import SessionRecords
from .signing import SignRequestRecords
from .trust import TrustRecords
from .workers import WorkerRecords


class PostgresStore(IncidentRecords, TrustRecords, SessionRecords, WorkerRecords, SignRequestRecords,
                    DirectoryRecords):
    """The :class:`~idwall.store.base.Store` on one PostgreSQL database, shared by every node."""

    @asynccontextmanager
    async def listening(self, on_event: Callable[[], None]) -> AsyncIterator[EventListener]:
        """Hear every node's trust events while the block runs: ``on_event()`` at each notification and after
        every (re)connect (then the caller reads :meth:`events_after` its cursor, missing nothing)."""
        listener = EventListener(self._url, on_event=on_event, secrets=self._secrets)
        listener.start()
        try:
            yield listener
        finally:
            await listener.close()


__all__ = ["DEFAULT_POOL_SIZE", "EventListener", "PostgresStore", "migrate", "shown_url"]
