"""Incidents in SQLite: a run's start, each stage as it commits, its end, and the restrictions in force meanwhile.

Every change comes with its ledger entry in one transaction (``incident.start``, ``incident.stage``,
``incident.end``). The kills of a stage are not made here: they go through the kill switch first (so every
worker cuts its connections), and the stage's transaction then does the rest and records it. A stage
commits only as the next one of a live incident, so a resumed run can neither skip a stage nor run one twice.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from ...encoding import b64url_encode
from ...errors import Conflict
from ...model import (
    ActionEffect,
    Incident,
    IncidentEffect,
    IncidentSnapshot,
    IncidentStageRow,
    LedgerDraft,
    StageCommit,
    StageWork,
)
from ..base import Missing
from .core import SQLiteCore, user_from_row
from .sessions import NOT_KILLED, SessionRecords

_ACTIVE = "SELECT 1 FROM incidents i WHERE i.id = r.incident_id AND i.ended_at IS NULL"


def _incident_from_row(row: sqlite3.Row) -> Incident:
    return Incident(row["id"], row["playbook"], row["reason"], row["actor"], row["started_at"],
                    json.loads(row["plan_json"]), row["stages_total"], row["stages_committed"], row["audit_seq"],
                    row["ended_at"], row["ended_by"])


def _counts(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute(sql, args).fetchall()}


class IncidentRecords(SessionRecords, SQLiteCore):
    """Incident runs, their stages, suspect passkeys and per-user restrictions."""

    async def incident_snapshot(self, *, now: float) -> IncidentSnapshot:
        """Users, devices, live tokens and per-user holdings, read in one transaction."""

        def read(conn: sqlite3.Connection) -> IncidentSnapshot:
            conn.execute("BEGIN")
            try:
                users = tuple(user_from_row(r) for r in conn.execute("SELECT * FROM users ORDER BY id").fetchall())
                owners = {r[0]: r[1] for r in conn.execute(
                    "SELECT id, user_id FROM devices WHERE status != 'revoked'").fetchall()}
                tokens = {r[0]: r[1] for r in conn.execute(
                    "SELECT id, created_by FROM tokens WHERE revoked_at IS NULL AND expires_at > ?", (now,)).fetchall()}
                sessions = _counts(conn, f"SELECT s.user_id, COUNT(*) FROM sessions s WHERE s.revoked_at IS NULL"
                                   f" AND s.expires_at > ? AND {NOT_KILLED} GROUP BY s.user_id", (now,))
                devices = _counts(conn, "SELECT user_id, COUNT(*) FROM devices WHERE status != 'revoked'"
                                  " GROUP BY user_id")
                credentials = _counts(conn, "SELECT c.user_id, COUNT(*) FROM credentials c JOIN devices d"
                                      " ON d.id = c.device_id WHERE d.status != 'revoked' GROUP BY c.user_id")
            finally:
                conn.execute("COMMIT")
            return IncidentSnapshot(users, owners, tokens, sessions, devices, credentials)

        return await self.read(read)

    async def start_incident(self, incident: Incident, draft: LedgerDraft) -> int:
        """Record a run about to begin (an automation token's), with its ``incident.start`` entry; returns its seq."""

        def tx(conn: sqlite3.Connection) -> int:
            seq = self._append(conn, draft)
            self._insert_incident(conn, incident, seq)
            return seq

        return await self.write(tx)

    @staticmethod
    def _insert_incident(conn: sqlite3.Connection, incident: Incident, seq: int) -> None:
        conn.execute(
            "INSERT INTO incidents (id, playbook, reason, actor, started_at, plan_json, stages_total, audit_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (incident.id, incident.playbook, incident.reason, incident.actor, incident.started_at,
             json.dumps(incident.plan, sort_keys=True), incident.stages_total, seq))

    def _apply_effect(self, conn: sqlite3.Connection, effect: ActionEffect, now: float) -> None:
        """An admin's signed ``incident.start`` (in :meth:`perform_action`); every other effect as before."""
        if not isinstance(effect, IncidentEffect):
            super()._apply_effect(conn, effect, now)  # type: ignore[misc]
            return
        # perform_action appends the entry right after the effect, in this same IMMEDIATE transaction: its seq
        # is the next one
        (head,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()
        self._insert_incident(conn, effect.incident, head + 1)

    async def commit_incident_stage(self, incident_id: str, number: int, work: StageWork, *, result: dict[str, Any],
                                    now: float, draft: LedgerDraft) -> StageCommit:
        """Do a stage's own changes and record it, as the next stage of the live incident ``incident_id``.

        ``result`` (what the stage's kills cut) is kept with the counts of what this transaction changed.

        ``draft.data`` gets the ids changed here (devices sent back to approval, passkeys marked suspect, tokens
        revoked) so the ledger alone says what the stage did. Raises :class:`Missing` for an unknown incident,
        :class:`Conflict` when it ended or ``number`` is not its next stage.
        """

        def tx(conn: sqlite3.Connection) -> StageCommit:
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise Missing(f"no incident {incident_id!r}")
            if row["ended_at"] is not None:
                raise Conflict(f"incident {incident_id} has ended; its remaining stages will not run")
            if row["stages_committed"] + 1 != number:
                raise Conflict(f"incident {incident_id} has {row['stages_committed']} stage(s) committed; "
                               f"stage {number} is not the next one")
            marks = ",".join("?" * len(work.users))
            devices: list[str] = []
            if work.reapprove and work.users:
                devices = sorted(r[0] for r in conn.execute(
                    f"SELECT id FROM devices WHERE status = 'active' AND user_id IN ({marks})", work.users))
                conn.executemany("UPDATE devices SET status = 'pending_approval' WHERE id = ?",
                                 [(d,) for d in devices])
                conn.executemany("UPDATE enrollments SET status = 'pending_approval' WHERE device_id = ?",
                                 [(d,) for d in devices])
            credentials: list[bytes] = []
            if work.suspect and work.users:
                credentials = sorted(bytes(r[0]) for r in conn.execute(
                    f"SELECT id FROM credentials WHERE suspect IS NULL AND user_id IN ({marks})", work.users))
                conn.executemany("UPDATE credentials SET suspect = ? WHERE id = ?",
                                 [(incident_id, c) for c in credentials])
            tokens = sorted(t for t in work.tokens if conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, t)).rowcount == 1)
            restrictions = ([("fresh_auth", work.fresh_auth)] if work.fresh_auth is not None else []) \
                + ([("block_code_enrollment", None)] if work.block_code_enrollment else [])
            conn.executemany("INSERT OR REPLACE INTO incident_restrictions (incident_id, user_id, kind, fresh_auth)"
                             " VALUES (?, ?, ?, ?)",
                             [(incident_id, user, kind, value) for user in work.users for kind, value in restrictions])
            data = dict(draft.data, devices_reapproval=devices,
                        credentials_suspect=[b64url_encode(c) for c in credentials], tokens_revoked=tokens)
            seq = self._append(conn, dataclasses.replace(draft, data=data))
            conn.execute("INSERT INTO incident_stages (incident_id, number, committed_at, result_json, audit_seq)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (incident_id, number, now,
                          json.dumps(dict(result, audit_seq=seq, devices_to_reapprove=len(devices),
                                          passkeys_marked_suspect=len(credentials), tokens_revoked=len(tokens)),
                                     sort_keys=True), seq))
            conn.execute("UPDATE incidents SET stages_committed = ? WHERE id = ?", (number, incident_id))
            for device in devices:
                self._event(conn, "device.changed", {"device": device}, now)
            if restrictions or work.suspect:
                for user in work.users:
                    self._event(conn, "user.changed", {"user": user}, now)
            return StageCommit(tuple(devices), tuple(b64url_encode(c) for c in credentials), tuple(tokens), seq)

        return await self.write(tx)

    async def end_incident(self, incident_id: str, *, now: float, draft: LedgerDraft) -> int:
        """End a live incident (its restrictions lift; revocations stay), with its ``incident.end`` entry."""

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("UPDATE incidents SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL"
                               " RETURNING id", (now, draft.actor, incident_id)).fetchone()
            if row is None:
                if conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone() is None:
                    raise Missing(f"no incident {incident_id!r}")
                raise Conflict(f"incident {incident_id} has already ended")
            seq = self._append(conn, draft)
            for (user,) in conn.execute("SELECT DISTINCT user_id FROM incident_restrictions WHERE incident_id = ?",
                                        (incident_id,)).fetchall():
                self._event(conn, "user.changed", {"user": user}, now)
            return seq

        return await self.write(tx)

    async def get_incident(self, incident_id: str) -> Incident | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone())
        return _incident_from_row(row) if row else None

    async def list_incidents(self, *, limit: int = 100) -> list[Incident]:
        """The newest incidents first."""
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM incidents ORDER BY started_at DESC, id LIMIT ?", (limit,)).fetchall())
        return [_incident_from_row(r) for r in rows]

    async def active_incidents(self) -> list[Incident]:
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM incidents WHERE ended_at IS NULL ORDER BY started_at").fetchall())
        return [_incident_from_row(r) for r in rows]

    async def incident_stages(self, incident_id: str) -> list[IncidentStageRow]:
        rows = await self.read(lambda c: c.execute(
            "SELECT * FROM incident_stages WHERE incident_id = ? ORDER BY number", (incident_id,)).fetchall())
        return [IncidentStageRow(r["number"], r["committed_at"], json.loads(r["result_json"]), r["audit_seq"])
                for r in rows]

    async def enrollment_blocked(self, user_id: str) -> str | None:
        """The live incident that blocks enrollment by invite code for ``user_id``, if any."""
        row = await self.read(lambda c: c.execute(
            f"SELECT r.incident_id FROM incident_restrictions r WHERE r.user_id = ?"
            f" AND r.kind = 'block_code_enrollment' AND EXISTS ({_ACTIVE}) LIMIT 1", (user_id,)).fetchone())
        return row[0] if row else None

    async def credential_suspect(self, credential_id: bytes) -> str | None:
        """The incident that marked this passkey suspect, or None."""
        row = await self.read(lambda c: c.execute("SELECT suspect FROM credentials WHERE id = ?",
                                                  (credential_id,)).fetchone())
        return row[0] if row else None
