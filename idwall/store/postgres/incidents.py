"""Incidents in PostgreSQL: a run's start, each stage as it commits, its end, and the restrictions in force meanwhile.

The same records, checks and ledger entries as :mod:`idwall.store.sqlite.incidents`; every change runs under
the write lock with its entry, so a stage commits once even when two nodes resume one run.
"""

from __future__ import annotations

import dataclasses
import json
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
from ..sqlite.core import user_from_row
# the same rows to records as SQLite's: asyncpg rows are read by column name too
from ..sqlite.incidents import _incident_from_row
from .core import Conn
from .sessions import NOT_KILLED, SessionRecords

_ACTIVE = "SELECT 1 FROM incidents i WHERE i.id = r.incident_id AND i.ended_at IS NULL"


async def _counts(conn: Conn, sql: str, *args: Any) -> dict[str, int]:
    return {r[0]: r[1] for r in await conn.fetch(sql, *args)}


class IncidentRecords(SessionRecords):
    """Incident runs, their stages, suspect passkeys and per-user restrictions."""

    async def incident_snapshot(self, *, now: float) -> IncidentSnapshot:
        """Users, devices, live tokens and per-user holdings, read in one snapshot."""

        async def read(conn: Conn) -> IncidentSnapshot:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                users = tuple(user_from_row(r) for r in await conn.fetch("SELECT * FROM users ORDER BY id"))
                owners = {r[0]: r[1] for r in await conn.fetch(
                    "SELECT id, user_id FROM devices WHERE status != 'revoked'")}
                tokens = {r[0]: r[1] for r in await conn.fetch(
                    "SELECT id, created_by FROM tokens WHERE revoked_at IS NULL AND expires_at > $1", now)}
                sessions = await _counts(conn, f"SELECT s.user_id, COUNT(*) FROM sessions s WHERE s.revoked_at IS NULL"
                                         f" AND s.expires_at > $1 AND {NOT_KILLED} GROUP BY s.user_id", now)
                devices = await _counts(conn, "SELECT user_id, COUNT(*) FROM devices WHERE status != 'revoked'"
                                        " GROUP BY user_id")
                credentials = await _counts(conn, "SELECT c.user_id, COUNT(*) FROM credentials c JOIN devices d"
                                            " ON d.id = c.device_id WHERE d.status != 'revoked' GROUP BY c.user_id")
            return IncidentSnapshot(users, owners, tokens, sessions, devices, credentials)

        return await self.read(read)

    async def start_incident(self, incident: Incident, draft: LedgerDraft) -> int:
        """Record a run about to begin (an automation token's), with its ``incident.start`` entry; returns its seq."""

        async def tx(conn: Conn) -> int:
            seq = await self._append(conn, draft)
            await self._insert_incident(conn, incident, seq)
            return seq

        return await self.write(tx)

    @staticmethod
    async def _insert_incident(conn: Conn, incident: Incident, seq: int) -> None:
        await conn.execute(
            "INSERT INTO incidents (id, playbook, reason, actor, started_at, plan_json, stages_total, audit_seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            incident.id, incident.playbook, incident.reason, incident.actor, incident.started_at,
            json.dumps(incident.plan, sort_keys=True), incident.stages_total, seq)

    async def _apply_effect(self, conn: Conn, effect: ActionEffect, now: float) -> None:
        """An admin's signed ``incident.start`` (in :meth:`perform_action`); every other effect as before."""
        if not isinstance(effect, IncidentEffect):
            await super()._apply_effect(conn, effect, now)  # type: ignore[misc]
            return
        # perform_action appends the entry right after the effect, under the same lock: its seq is the next one
        head = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM ledger")
        await self._insert_incident(conn, effect.incident, int(head) + 1)

    async def commit_incident_stage(self, incident_id: str, number: int, work: StageWork, *, result: dict[str, Any],
                                    now: float, draft: LedgerDraft) -> StageCommit:
        """Do a stage's own changes and record it, as the next stage of the live incident ``incident_id`` (as
        SQLite's: :class:`Missing` for an unknown incident, :class:`Conflict` when it ended or ``number`` is not
        its next stage)."""

        async def tx(conn: Conn) -> StageCommit:
            row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
            if row is None:
                raise Missing(f"no incident {incident_id!r}")
            if row["ended_at"] is not None:
                raise Conflict(f"incident {incident_id} has ended; its remaining stages will not run")
            if row["stages_committed"] + 1 != number:
                raise Conflict(f"incident {incident_id} has {row['stages_committed']} stage(s) committed; "
                               f"stage {number} is not the next one")
            users = list(work.users)
            devices: list[str] = []
            if work.reapprove and users:
                devices = sorted(r[0] for r in await conn.fetch(
                    "SELECT id FROM devices WHERE status = 'active' AND user_id = ANY($1::text[])", users))
                await conn.execute("UPDATE devices SET status = 'pending_approval' WHERE id = ANY($1::text[])", devices)
                await conn.execute("UPDATE enrollments SET status = 'pending_approval' WHERE device_id = ANY($1::text[])",
                                   devices)
            credentials: list[bytes] = []
            if work.suspect and users:
                credentials = sorted(bytes(r[0]) for r in await conn.fetch(
                    "SELECT id FROM credentials WHERE suspect IS NULL AND user_id = ANY($1::text[])", users))
                await conn.execute("UPDATE credentials SET suspect = $1 WHERE id = ANY($2::bytea[])",
                                   incident_id, credentials)
            tokens = sorted(r[0] for r in await conn.fetch(
                "UPDATE tokens SET revoked_at = $1 WHERE id = ANY($2::text[]) AND revoked_at IS NULL RETURNING id",
                now, list(work.tokens)))
            restrictions = ([("fresh_auth", work.fresh_auth)] if work.fresh_auth is not None else []) \
                + ([("block_code_enrollment", None)] if work.block_code_enrollment else [])
            for user in users:
                for kind, value in restrictions:
                    await conn.execute(
                        "INSERT INTO incident_restrictions (incident_id, user_id, kind, fresh_auth)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT (incident_id, user_id, kind)"
                        " DO UPDATE SET fresh_auth = EXCLUDED.fresh_auth", incident_id, user, kind, value)
            data = dict(draft.data, devices_reapproval=devices,
                        credentials_suspect=[b64url_encode(c) for c in credentials], tokens_revoked=tokens)
            seq = await self._append(conn, dataclasses.replace(draft, data=data))
            await conn.execute(
                "INSERT INTO incident_stages (incident_id, number, committed_at, result_json, audit_seq)"
                " VALUES ($1, $2, $3, $4, $5)", incident_id, number, now,
                json.dumps(dict(result, audit_seq=seq, devices_to_reapprove=len(devices),
                                passkeys_marked_suspect=len(credentials), tokens_revoked=len(tokens)), sort_keys=True),
                seq)
            await conn.execute("UPDATE incidents SET stages_committed = $1 WHERE id = $2", number, incident_id)
            for device in devices:
                await self._event(conn, "device.changed", {"device": device}, now)
            if restrictions or work.suspect:
                for user in users:
                    await self._event(conn, "user.changed", {"user": user}, now)
            return StageCommit(tuple(devices), tuple(b64url_encode(c) for c in credentials), tuple(tokens), seq)

        return await self.write(tx)

    async def end_incident(self, incident_id: str, *, now: float, draft: LedgerDraft) -> int:
        """End a live incident (its restrictions lift; revocations stay), with its ``incident.end`` entry."""

        async def tx(conn: Conn) -> int:
            row = await conn.fetchrow("UPDATE incidents SET ended_at = $1, ended_by = $2 WHERE id = $3"
                                      " AND ended_at IS NULL RETURNING id", now, draft.actor, incident_id)
            if row is None:
                if await conn.fetchrow("SELECT 1 FROM incidents WHERE id = $1", incident_id) is None:
                    raise Missing(f"no incident {incident_id!r}")
                raise Conflict(f"incident {incident_id} has already ended")
            seq = await self._append(conn, draft)
            for user_row in await conn.fetch("SELECT DISTINCT user_id FROM incident_restrictions"
                                             " WHERE incident_id = $1", incident_id):
                await self._event(conn, "user.changed", {"user": user_row[0]}, now)
            return seq

        return await self.write(tx)

    async def get_incident(self, incident_id: str) -> Incident | None:
        row = await self._fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
        return _incident_from_row(row) if row else None

    async def list_incidents(self, *, limit: int = 100) -> list[Incident]:
        """The newest incidents first."""
        rows = await self._fetch("SELECT * FROM incidents ORDER BY started_at DESC, id LIMIT $1", limit)
        return [_incident_from_row(r) for r in rows]

    async def active_incidents(self) -> list[Incident]:
        rows = await self._fetch("SELECT * FROM incidents WHERE ended_at IS NULL ORDER BY started_at")
        return [_incident_from_row(r) for r in rows]

    async def incident_stages(self, incident_id: str) -> list[IncidentStageRow]:
        rows = await self._fetch("SELECT * FROM incident_stages WHERE incident_id = $1 ORDER BY number", incident_id)
        return [IncidentStageRow(r["number"], r["committed_at"], json.loads(r["result_json"]), r["audit_seq"])
                for r in rows]

    async def enrollment_blocked(self, user_id: str) -> str | None:
        """The live incident that blocks enrollment by invite code for ``user_id``, if any."""
        row = await self._fetchrow(
            f"SELECT r.incident_id FROM incident_restrictions r WHERE r.user_id = $1"
            f" AND r.kind = 'block_code_enrollment' AND EXISTS ({_ACTIVE}) LIMIT 1", user_id)
        return row[0] if row else None

    async def credential_suspect(self, credential_id: bytes) -> str | None:
        """The incident that marked this passkey suspect, or None."""
        row = await self._fetchrow("SELECT suspect FROM credentials WHERE id = $1", credential_id)
        return row[0] if row else None
