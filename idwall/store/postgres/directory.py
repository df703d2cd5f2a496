"""The admin console's reads, in PostgreSQL: users with their devices, passkeys and last login; devices by status;
ledger entries searched by type and user. The same pages, filters and errors as
:mod:`idwall.store.sqlite.directory`.

Every list is a page ordered by a unique key (user id, device id, ledger seq) and continued with ``after``
(exclusive). Each read is one snapshot (``REPEATABLE READ``), so a user's devices, passkeys and last login are
read as of one moment even while other nodes write. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...model import DirectoryCredential, DirectoryDevice, DirectoryUser
from ..sqlite.core import user_from_row
# the same device query and record as SQLite's: plain SQL, and rows read by column name
from ..sqlite.directory import _DEVICE_COLUMNS, DEVICE_STATUSES, _device
from .core import Conn, PostgresCore

# the ledger entry's fields a search reads: entries are stored as the JSON text that was sealed
_TYPE = "(entry::json ->> 'type')"
_NAMES = ("(entry::json ->> 'actor')", "(entry::json ->> 'subject')", "(entry::json -> 'data' ->> 'user')",
          "(entry::json -> 'data' ->> 'target')")
_DEVICE_NAMES = ("(entry::json ->> 'subject')", "(entry::json -> 'data' ->> 'device_id')",
                 "(entry::json -> 'data' ->> 'target')")


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


class DirectoryRecords(PostgresCore):
    """Read-only pages of users, devices and ledger entries for the admin console."""

    async def directory_users(self, *, after: str = "", limit: int = 100) -> list[DirectoryUser]:
        """Up to ``limit`` users with ids after ``after``, each with devices, passkeys and last passkey login."""
        _check_limit(limit)

        async def read(conn: Conn) -> list[DirectoryUser]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                users = await conn.fetch("SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
                if not users:
                    return []
                ids = [row["id"] for row in users]
                devices: dict[str, list[DirectoryDevice]] = {}
                for row in await conn.fetch(f"{_DEVICE_COLUMNS} WHERE d.user_id = ANY($1::text[])"
                                            " ORDER BY d.enrolled_at, d.id", ids):
                    devices.setdefault(row["user_id"], []).append(_device(row))
                credentials: dict[str, list[DirectoryCredential]] = {}
                for row in await conn.fetch("SELECT id, user_id, device_id, created_at, sign_count FROM credentials"
                                            " WHERE user_id = ANY($1::text[]) ORDER BY created_at, id", ids):
                    credentials.setdefault(row["user_id"], []).append(
                        DirectoryCredential(bytes(row["id"]), row["device_id"], row["created_at"], row["sign_count"]))
                last_login = {row["user_id"]: row["last"] for row in await conn.fetch(
                    "SELECT user_id, MAX(auth_time) AS last FROM sessions WHERE user_id = ANY($1::text[])"
                    " GROUP BY user_id", ids)}
            return [DirectoryUser(user_from_row(row), row["manager"], tuple(devices.get(row["id"], ())),
                                  tuple(credentials.get(row["id"], ())), last_login.get(row["id"]))
                    for row in users]

        return await self.read(read)

    async def directory_devices(self, *, status: str | None = None, after: str = "",
                                limit: int = 100) -> list[DirectoryDevice]:
        """Up to ``limit`` devices with ids after ``after``, only those in ``status`` when given."""
        if status is not None and status not in DEVICE_STATUSES:
            raise ValueError(f"status must be one of {DEVICE_STATUSES}, got {status!r}")
        _check_limit(limit)
        rows = await self._fetch(f"{_DEVICE_COLUMNS} WHERE d.id > $1 AND ($2::text IS NULL OR d.status = $2)"
                                 " ORDER BY d.id LIMIT $3", after, status, limit)
        return [_device(row) for row in rows]

    async def reports_of(self, manager: str) -> list[str]:
        """The ids of the users whose manager is ``manager``, in order."""
        rows = await self._fetch("SELECT id FROM users WHERE manager = $1 ORDER BY id", manager)
        return [row["id"] for row in rows]

    async def pending_of_reports(self, manager: str, *, after: str = "", limit: int = 100) -> list[DirectoryDevice]:
        """Up to ``limit`` devices waiting for approval (ids after ``after``) whose owner's manager is ``manager``,
        the manager read in the same query (as SQLite's)."""
        _check_limit(limit)
        rows = await self._fetch(f"{_DEVICE_COLUMNS} WHERE d.status = 'pending_approval' AND u.manager = $1"
                                 " AND d.id > $2 ORDER BY d.id LIMIT $3", manager, after, limit)
        return [_device(row) for row in rows]

    async def search_ledger(self, *, type: str | None = None, user: str | None = None, after: int = 0,
                            limit: int = 100) -> list[dict[str, Any]]:
        """Ledger entries after seq ``after``, oldest first, at most ``limit``, as stored.

        ``type`` keeps entries of exactly that type; ``user`` keeps entries that user acted in or was the
        subject or target of (``actor``, ``subject``, ``data.user``, ``data.target``), and those about one of the
        user's devices (its id as ``subject``, ``data.device_id`` or ``data.target``).
        """
        _check_limit(limit)
        # the user by name, or one of their devices (approvals, renewals and kills name the device)
        sql = (f"SELECT entry FROM ledger WHERE seq > $1 AND ($2::text IS NULL OR {_TYPE} = $2)"
               f" AND ($3::text IS NULL OR $3 IN ({', '.join(_NAMES)}) OR EXISTS (SELECT 1 FROM devices d"
               f" WHERE d.user_id = $3 AND d.id IN ({', '.join(_DEVICE_NAMES)}))) ORDER BY seq LIMIT $4")
        rows = await self._fetch(sql, after, type, user, limit)
        return [json.loads(row["entry"]) for row in rows]

    async def ledger_of_types(self, types: Sequence[str], *, after: int = 0,
                              limit: int = 1000) -> list[dict[str, Any]]:
        """Ledger entries of any of ``types`` after seq ``after``, oldest first, at most ``limit``, as stored."""
        _check_limit(limit)
        if not types:
            return []
        rows = await self._fetch(f"SELECT entry FROM ledger WHERE seq > $1 AND {_TYPE} = ANY($2::text[])"
                                 " ORDER BY seq LIMIT $3", after, list(types), limit)
        return [json.loads(row["entry"]) for row in rows]
