"""Replay of device entries: enrollment, approval and rejection, recovery, certificate renewal.

:class:`DeviceEntries` is mixed into :class:`~idwall.audit.replay.LedgerState`; its handlers use the state and
the shared checks defined there (``_data``, ``_verify_action``, ``_register_key``, ...).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from idwall.audit.records import DeviceRecord, Envelope
from idwall.audit.schemas import Reject, instant, show
from idwall.audit.sealing import format_time
from idwall.pki import CSRError, check_csr


class DeviceEntries:
    """The handlers of ``device.*`` entries (a mixin of :class:`~idwall.audit.replay.LedgerState`)."""

    def _apply_device_enroll(self, env: Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise Reject(f"actor is {show(env.actor)}, expected the enrolled user {show(data['user'])}")
        self._subject_is(env, data["device_id"], "device")
        if data["cert_sha256"] is None and data["status"] == "active":
            raise Reject("an active device must record its certificate (cert_sha256 is null)")
        invite_id = data["invite_id"]
        if invite_id is not None:
            invite = self.invites.get(invite_id)
            if invite is None:
                raise Reject(f"invite {invite_id} was never created by a valid invite.create")
            if invite.used_by is not None:
                raise Reject(f"invite {invite_id} was already used by seq {invite.used_by}")
            if env.time > invite.expires_at:
                raise Reject(
                    f"invite {invite_id} expired at {format_time(invite.expires_at)}, before this enrollment"
                )
            granted = {"user": invite.user, "name": invite.name, "email": invite.email,
                       "groups": list(invite.groups), "admin": invite.admin}
            for name, value in granted.items():
                if data[name] != value:
                    raise Reject(f"data.{name} is {show(data[name])}, but invite {invite_id} says {show(value)}")
        else:
            user = self.users.get(data["user"])
            if user is None:
                raise Reject(f"an enrollment without an invite must be for a known user; {data['user']} is unknown")
            if data["status"] != "pending_approval":
                raise Reject("an enrollment without an invite must be pending_approval until a signed approval")
            known = {"name": user.name, "email": user.email, "groups": list(user.groups), "admin": user.admin}
            for name, value in known.items():
                if data[name] != value:
                    raise Reject(f"data.{name} is {show(data[name])}, but an enrollment without an invite "
                                  f"cannot change user {user.id}'s {name} ({show(value)})")
        # an invite names the user's manager from now on; a self-service enrollment changes nobody's manager
        manager = self.invites[invite_id].manager if invite_id is not None else self.users[data["user"]].manager
        self._register_key(env, data)
        self._set_user(data, env.seq, manager=manager)
        if invite_id is not None:
            self.invites[invite_id] = replace(self.invites[invite_id], used_by=env.seq)

    def _pending_device(self, data: dict[str, Any]) -> DeviceRecord:
        device = self.devices.get(data["device_id"])
        if device is None:
            raise Reject(f"device {data['device_id']} was never enrolled")
        if device.enrollment_id != data["enrollment_id"]:
            raise Reject(f"device {device.id} came from enrollment {device.enrollment_id}, not {data['enrollment_id']}")
        if device.status != "pending_approval":
            raise Reject(f"device {device.id} is {device.status}, not pending_approval")
        return device

    def _apply_device_approve(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        action, _ = self._verify_action(env)
        self._match(action, "device_id", data["device_id"], "data.device_id")
        device = self._pending_device(data)
        self._require_approver(env.actor, device)
        self.devices[device.id] = replace(device, status="active", activated=True)

    def _apply_device_reject(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        action, _ = self._verify_action(env)
        self._match(action, "device_id", data["device_id"], "data.device_id")
        device = self._pending_device(data)
        self._require_approver(env.actor, device)
        self.devices[device.id] = replace(device, status="revoked")

    def _require_approver(self, signer: str, device: DeviceRecord) -> None:
        """An approval or rejection is signed by an admin, or by the device owner's manager at this point.

        The gateway lets a manager sign only under ``devices.approval: manager``; the ledger does not record
        the policy (it is configuration, and a ledger-key holder could rewrite it), so the verifier holds
        every approval to the rule that stays true under any policy.
        """
        user = self.users.get(signer)
        if user is not None and user.admin:
            return
        owner = self.users.get(device.user)
        if owner is not None and owner.manager is not None and owner.manager == signer:
            return
        raise Reject(f"signer {signer} is neither an admin nor the manager of {device.user} (the owner of device "
                     f"{device.id}) at this point")

    def _apply_device_recover(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        # the signer's passkey may be on a device whose certificate was revoked (an incident reset): the passkey
        # is the durable credential; what it must not be is revoked, suspect, or on a device never approved
        action, credential = self._verify_action(env, recovery=True)
        self._match(action, "enrollment_id", data["enrollment_id"], "data.enrollment_id")
        device = self._pending_device(data)
        if env.actor != device.user:
            raise Reject(f"signer {env.actor} is not the user {device.user} of the pending device {device.id}")
        if credential.device_id == device.id:
            raise Reject("device.recover must be signed with a passkey of another device, not the recovered one's")
        if credential.revoked:
            raise Reject(f"device.recover is signed with credential {credential.id}, which was revoked with its lost "
                         f"device {credential.device_id}")
        if credential.suspect:
            raise Reject(f"device.recover is signed with credential {credential.id}, which an incident marked "
                         "suspect; only device.approve by an admin or the manager can activate the device")
        if not self.devices[credential.device_id].activated:
            raise Reject(f"device.recover is signed with credential {credential.id} of device "
                         f"{credential.device_id}, which was never active: only a passkey of an approved device vouches")
        self.devices[device.id] = replace(device, status="active", activated=True)


    def _apply_device_renew(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["device_id"], "device")
        action, credential = self._verify_action(env)
        self._match(action, "device_id", data["device_id"], "data.device_id")
        device = self.devices.get(data["device_id"])
        if device is None:
            raise Reject(f"device {data['device_id']} was never enrolled")
        if env.actor != device.user:
            raise Reject(f"signer {env.actor} is not the user {device.user} of device {device.id}")
        if credential.device_id != device.id:
            raise Reject(f"device.renew must be signed with a credential bound to device {device.id}; "
                         f"{credential.id} is bound to {credential.device_id}")
        if device.status != "active":
            raise Reject(f"device {device.id} is {device.status}; only an active device renews")
        if device.not_after is not None and env.time >= device.not_after:
            raise Reject(f"device {device.id}'s certificate expired at {format_time(device.not_after)}, "
                         "before this renewal")
        try:
            check_csr(action["csr_pem"])
        except CSRError as exc:
            raise Reject(f"approval action csr_pem: {exc.detail}") from None
        cert = data["cert_sha256"]
        if cert in self.certificates:
            raise Reject(f"cert_sha256 {cert} is already the certificate of device {self.certificates[cert]}")
        self.devices[device.id] = replace(device, cert_sha256=cert, not_after=instant(data["not_after"]))
        self.certificates[cert] = device.id
