"""The admin console's reads, in SQLite: users with their devices, passkeys and last login; devices by status;
ledger entries searched by type and user; and the approvals page's: the users one person manages and their
devices waiting for approval.

Every list is a page ordered by a unique key (user id, device id, ledger seq) and continued with ``after``
(exclusive), so a page costs the same however long the list grows and no row is skipped or shown twice
while rows are added. Nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...model import DirectoryCredential, DirectoryDevice, DirectoryUser
from .core import SQLiteCore, user_from_row

#: the device states a filter may name (the ``devices.status`` CHECK constraint)
DEVICE_STATUSES = ("active", "pending_approval", "revoked")

_DEVICE_COLUMNS = ("SELECT d.id, d.user_id, u.name AS user_name, d.name, d.status, d.enrolled_at, d.not_after,"
                   " d.approved_by, d.revoked_at, (SELECT COUNT(*) FROM credentials c WHERE c.device_id = d.id)"
                   " AS credentials FROM devices d JOIN users u ON u.id = d.user_id")


def _device(row: sqlite3.Row) -> DirectoryDevice:
    return DirectoryDevice(row["id"], row["user_id"], row["user_name"], row["name"], row["status"],
                           row["enrolled_at"], row["not_after"], row["approved_by"], row["revoked_at"],
                           row["credentials"])


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class DirectoryRecords(SQLiteCore):
    """Read-only pages of users, devices and ledger entries for the admin console."""

    async def directory_users(self, *, after: str = "", limit: int = 100) -> list[DirectoryUser]:
        """Up to ``limit`` users with ids after ``after``, each with devices, passkeys and last passkey login.

        ``manager`` is read when the users table has that column (a later schema adds it), else None.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")

        def read(conn: sqlite3.Connection) -> list[DirectoryUser]:
            users = conn.execute("SELECT * FROM users WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
            if not users:
                return []
            ids = [row["id"] for row in users]
            marks = _placeholders(len(ids))
            devices: dict[str, list[DirectoryDevice]] = {}
            for row in conn.execute(f"{_DEVICE_COLUMNS} WHERE d.user_id IN ({marks}) ORDER BY d.enrolled_at, d.id",
                                    ids):
                devices.setdefault(row["user_id"], []).append(_device(row))
            credentials: dict[str, list[DirectoryCredential]] = {}
            for row in conn.execute(f"SELECT id, user_id, device_id, created_at, sign_count FROM credentials"
                                    f" WHERE user_id IN ({marks}) ORDER BY created_at, id", ids):
                credentials.setdefault(row["user_id"], []).append(
                    DirectoryCredential(bytes(row["id"]), row["device_id"], row["created_at"], row["sign_count"]))
            last_login = dict(conn.execute(f"SELECT user_id, MAX(auth_time) FROM sessions WHERE user_id IN ({marks})"
                                           f" GROUP BY user_id", ids).fetchall())
            has_manager = "manager" in users[0].keys()
            return [DirectoryUser(user_from_row(row), row["manager"] if has_manager else None,
                                  tuple(devices.get(row["id"], ())), tuple(credentials.get(row["id"], ())),
                                  last_login.get(row["id"]))
                    for row in users]

        return await self.read(read)

    async def directory_devices(self, *, status: str | None = None, after: str = "",
                                limit: int = 100) -> list[DirectoryDevice]:
        """Up to ``limit`` devices with ids after ``after``, only those in ``status`` when given."""
        if status is not None and status not in DEVICE_STATUSES:
            raise ValueError(f"status must be one of {DEVICE_STATUSES}, got {status!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where, args = "d.id > ?", [after]
        if status is not None:
            where += " AND d.status = ?"
            args.append(status)
        rows = await self.read(lambda c: c.execute(f"{_DEVICE_COLUMNS} WHERE {where} ORDER BY d.id LIMIT ?",
                                                   (*args, limit)).fetchall())
        return [_device(row) for row in rows]

    async def reports_of(self, manager: str) -> list[str]:
        """The ids of the users whose manager is ``manager``, in order."""
        rows = await self.read(lambda c: c.execute("SELECT id FROM users WHERE manager = ? ORDER BY id",
                                                   (manager,)).fetchall())
        return [row["id"] for row in rows]

    async def pending_of_reports(self, manager: str, *, after: str = "", limit: int = 100) -> list[DirectoryDevice]:
        """Up to ``limit`` devices waiting for approval (ids after ``after``) whose owner's manager is ``manager``.

        The owner's manager is read now, in the same query: a ``user.set_manager`` that committed earlier is
        already seen, so a former manager is not shown a device they could no longer approve.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rows = await self.read(lambda c: c.execute(
            f"{_DEVICE_COLUMNS} WHERE d.status = 'pending_approval' AND u.manager = ? AND d.id > ?"
            " ORDER BY d.id LIMIT ?", (manager, after, limit)).fetchall())
        return [_device(row) for row in rows]

    async def search_ledger(self, *, type: str | None = None, user: str | None = None, after: int = 0,
                            limit: int = 100) -> list[dict[str, Any]]:
        """Ledger entries after seq ``after``, oldest first, at most ``limit``, as stored.

        ``type`` keeps entries of exactly that type; ``user`` keeps entries that user acted in or was the
        subject or target of (``actor``, ``subject``, ``data.user``, ``data.target``), and those about one of the
        user's devices (its id as ``subject``, ``data.device_id`` or ``data.target``).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where, args = ["seq > ?"], [after]
        if type is not None:
            where.append("json_extract(entry, '$.type') = ?")
            args.append(type)
        if user is not None:
            # the user by name, or one of their devices (approvals, renewals and kills name the device)
            where.append("(? IN (json_extract(entry, '$.actor'), json_extract(entry, '$.subject'),"
                         " json_extract(entry, '$.data.user'), json_extract(entry, '$.data.target'))"
                         " OR EXISTS (SELECT 1 FROM devices d WHERE d.user_id = ? AND d.id IN"
                         " (json_extract(entry, '$.subject'), json_extract(entry, '$.data.device_id'),"
                         " json_extract(entry, '$.data.target'))))")
            args += [user, user]
        sql = f"SELECT entry FROM ledger WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self.read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [json.loads(row["entry"]) for row in rows]

    async def ledger_of_types(self, types: Sequence[str], *, after: int = 0,
                              limit: int = 1000) -> list[dict[str, Any]]:
        """Ledger entries of any of ``types`` after seq ``after``, oldest first, at most ``limit``, as stored.

        One read for what a reader of several entry types needs (an incident's recovery: its stages, kills and
        the logins and recoveries after it), instead of one search per type.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not types:
            return []
        marks = ", ".join("?" * len(types))
        sql = f"SELECT entry FROM ledger WHERE seq > ? AND json_extract(entry, '$.type') IN ({marks}) ORDER BY seq LIMIT ?"
        rows = await self.read(lambda c: c.execute(sql, (after, *types, limit)).fetchall())
        return [json.loads(row["entry"]) for row in rows]


__all__ = ["DEVICE_STATUSES", "DirectoryRecords"]
