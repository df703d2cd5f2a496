"""Replay of incident entries: a run's start, each stage's effects, its end; and who may kill during one.

:class:`IncidentEntries` is mixed into :class:`~idwall.audit.replay.LedgerState`. An incident is started by an
admin's signed ``incident.start`` or by an automation token with scope ``incident``; its stages then follow in
order, each by the incident's actor, and their effects are folded in: a device sent back to approval is
pending again (a later ``device.approve`` of it is valid), a passkey marked suspect can no longer sign
``device.recover``, a revoked token can no longer act. A token with scope ``incident`` may kill only while an
incident it started is active.
"""

from __future__ import annotations

from dataclasses import replace

from idwall.audit.records import Envelope, IncidentRecord
from idwall.audit.schemas import Reject, show
from idwall.audit.sealing import format_time


class IncidentEntries:
    """The handlers of ``incident.*`` entries (a mixin of :class:`~idwall.audit.replay.LedgerState`)."""

    def _incident_token(self, actor: str, scope: str, time: float) -> bool:
        """Whether ``actor`` is a live token holding ``scope`` at ``time`` (False for a person)."""
        if not actor.startswith("token:"):
            return False
        token = self.tokens.get(actor.removeprefix("token:"))
        if token is None or token.revoked_by is not None or scope not in token.scopes:
            raise Reject(f"actor {actor} is not a live token with the {scope} scope")
        if time > token.expires_at:
            raise Reject(f"actor {actor} expired at {format_time(token.expires_at)}")
        return True

    def may_kill_for_incident(self, actor: str) -> bool:
        """Whether ``actor`` runs an incident that is active at this point (its kills are the incident's)."""
        return any(i.actor == actor and i.ended_by is None for i in self.incidents.values())

    def _apply_incident_start(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["incident_id"], "incident")
        if env.approval is not None:
            action, _ = self._verify_action(env)
            for name in ("playbook", "reason", "targets"):
                self._match(action, name, data[name], f"data.{name}")
            if action["dry_run"] is not False:
                raise Reject("approval action is a dry run, which writes nothing; it cannot start an incident")
            self._require_admin(env.actor, "signer")
        elif not self._incident_token(env.actor, "incident", env.time):
            raise Reject(f"incident.start by {env.actor} needs an admin's signed approval")
        if data["incident_id"] in self.incidents:
            earlier = self.incidents[data["incident_id"]].seq
            raise Reject(f"incident {data['incident_id']} was already started by seq {earlier}")
        self.incidents[data["incident_id"]] = IncidentRecord(data["incident_id"], env.actor, data["stages"], 0, env.seq)

    def _live_incident(self, env: Envelope, incident_id: str) -> IncidentRecord:
        incident = self.incidents.get(incident_id)
        if incident is None:
            raise Reject(f"incident {incident_id} was never started")
        if incident.ended_by is not None:
            raise Reject(f"incident {incident_id} ended at seq {incident.ended_by}")
        return incident

    def _apply_incident_stage(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["incident_id"], "incident")
        incident = self._live_incident(env, data["incident_id"])
        if env.actor != incident.actor:
            raise Reject(f"actor is {show(env.actor)}, but incident {incident.id} is run by {incident.actor}")
        if data["number"] != incident.committed + 1 or data["number"] > incident.stages:
            raise Reject(f"stage {data['number']} of incident {incident.id} is out of order: {incident.committed} of "
                         f"{incident.stages} stage(s) were committed before it")
        if env.actor.startswith("token:"):
            self._incident_token(env.actor, "incident", env.time)
        else:
            self._require_admin(env.actor, "actor")
        users = set(data["users"])
        for device_id in data["devices_reapproval"]:
            device = self.devices.get(device_id)
            if device is None or device.user not in users or device.status != "active":
                raise Reject(f"stage sends device {device_id} back to approval, but it is not an active device of a "
                             "user in the stage")
        for credential_id in data["credentials_suspect"]:
            credential = self.credentials.get(credential_id)
            if credential is None or credential.user not in users:
                raise Reject(f"stage marks credential {credential_id} suspect, but it is no passkey of a user in the "
                             "stage")
        for token_id in data["tokens_revoked"]:
            token = self.tokens.get(token_id)
            if token is None or token.revoked_by is not None:
                raise Reject(f"stage revokes token {token_id}, which is not a live token")
        for kill in data["kills"]:
            if kill >= env.seq:
                raise Reject(f"stage lists kill seq {kill}, which is not before it")
        for device_id in data["devices_reapproval"]:
            self.devices[device_id] = replace(self.devices[device_id], status="pending_approval")
        for credential_id in data["credentials_suspect"]:
            self.credentials[credential_id] = replace(self.credentials[credential_id], suspect=True)
        for token_id in data["tokens_revoked"]:
            self.tokens[token_id] = replace(self.tokens[token_id], revoked_by=env.seq)
        self.incidents[incident.id] = replace(incident, committed=data["number"])

    def _apply_incident_end(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["incident_id"], "incident")
        incident = self._live_incident(env, data["incident_id"])
        if not self._incident_token(env.actor, "incident", env.time):
            self._require_admin(env.actor, "actor")
        self.incidents[incident.id] = replace(incident, ended_by=env.seq)
