"""The embedded SQLite backend: one file, one connection on one thread, every trust change with its ledger
entry in one ``BEGIN IMMEDIATE`` transaction.

    core       the connection, its thread, transactions, migrations, rows to records, the ledger append
    trust      invites, users, enrollments, devices, credentials, admins, managers, tokens, signed actions' effects
    renewals   certificate renewal requests, and a renewal's effect (new certificate, sessions carried over)
    sessions   certificates resolved, ceremonies, sessions, kills, trust events, ledger pages
    workers    the workers table and kill acknowledgements
    signing    sign requests (an action begun on the command line, signed on a page)
    directory  the admin console's reads: users with devices and passkeys, devices by status, ledger search
    incidents  incident runs, their stages, suspect passkeys, per-user restrictions while an incident is active
"""

from __future__ import annotations

from .core import SQLiteCore, migrate
from .directory import DirectoryRecords
from .incidents import IncidentRecords
from .sessions import KILL_SCOPES, SessionRecords
from .signing import SignRequestRecords
from .trust import TrustRecords
from .workers import WorkerRecords


class SQLiteStore(IncidentRecords, TrustRecords, SessionRecords, WorkerRecords, SignRequestRecords, DirectoryRecords, SQLiteCore):
    """The :class:`~idwall.store.base.Store` on one SQLite file."""


__all__ = ["KILL_SCOPES", "SQLiteStore", "migrate"]
