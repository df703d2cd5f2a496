"""Self-service recovery over the enrollment page's plain TLS connection: no client certificate, a passkey alone.

After a reset revoked a user's device certificates, the user enrolls a new device with ``user`` instead of a
code; it waits in ``pending_approval``. On its enrollment page the user signs ``device.recover`` with any
passkey they still hold (:mod:`idwall.self_recovery` says which). The action, its challenge
(``action_challenge``), the ledger entry and its approval are exactly those of ``POST /idwall/api/actions/*``,
so ``idwall audit verify`` checks both the same way.

    GET  /idwall/api/enroll/{id}/recover          the case (self, suspect, none, policy), in words, and what is approved
    POST /idwall/api/enroll/{id}/recover/begin    {}                         -> {action_id, action, options}
    POST /idwall/api/enroll/{id}/recover/finish   {action_id, credential}    -> {result: {device_id, status}}

The ceremony is bound to the enrollment (``recovery_binding``) and its user, single use and expiring like
every other; a waiting device keeps only its newest :data:`~idwall.self_recovery.MAX_OPEN_RECOVERIES`. It
offers only the user's usable passkeys, and ``finish`` checks them again, then once more inside the
transaction that activates the device (a kill or incident stage racing it cannot slip a passkey through).
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from .. import passkeys
from ..actions import action_draft, approval_of, build_action, validate_action
from ..challenges import action_challenge
from ..encoding import b64url_encode, canonical_json
from ..errors import Conflict, Forbidden, Gone, NotFound, SuspectPasskey, WebAuthnRejected
from ..logs import event
from ..model import Ceremony, Credential, Device, Enrollment, Signer
from ..node import Node
from ..self_recovery import MAX_OPEN_RECOVERIES, RecoveryCase, case_words, recovery_binding, recovery_case, usable
from .api_actions import activation, pending_device
from .api_login import verify_passkey
from .context import NODE
from .problems import field, read_json_object

routes = web.RouteTableDef()

NOT_YOURS = "this passkey is not one of {user}'s passkeys that can approve a new device; use one of those offered"


async def _waiting(node: Node, enrollment_id: str) -> tuple[Enrollment, Device]:
    """The self-service enrollment ``enrollment_id`` and its device, if it is waiting for approval."""
    enrollment = await node.store.get_enrollment(enrollment_id)
    if enrollment is None:
        raise NotFound("unknown enrollment; start again with idwall device enroll")
    if enrollment.invite_id is not None or enrollment.bootstrap:
        raise Conflict("this enrollment came with an invite code: the administrator who invited you approves it, "
                       "not your own passkey")
    if enrollment.status != "pending_approval" or enrollment.device_id is None:
        raise Conflict(f"enrollment {enrollment.id} is not waiting for approval (it is {enrollment.status})")
    return enrollment, await pending_device(node, enrollment.device_id)


async def case_of(node: Node, user_id: str, new_device_id: str) -> RecoveryCase:
    """Which recovery case applies to ``user_id``'s waiting device ``new_device_id`` (from their passkeys now)."""
    return recovery_case(await node.store.user_passkeys(user_id), approval=node.config.devices.approval,
                         new_device_id=new_device_id)


def refusal(case: RecoveryCase, enrollment_id: str) -> Forbidden:
    """Why this user's own passkey cannot approve the waiting device, and who can (``case`` is not ``self``)."""
    if case.case == "suspect":
        return SuspectPasskey(f"incident {case.incident} marked your passkeys suspect, so they cannot approve a new "
                              f"device of yours; {case.approvers} must sign device.approve for the device of "
                              f"enrollment {enrollment_id}", incident=case.incident)
    if case.case == "policy":
        return Forbidden(f"this gateway requires a second person's approval for new devices; ask {case.approvers} "
                         "to sign device.approve")
    return Forbidden(f"you hold no passkey that can approve a new device (a lost device's passkeys are revoked "
                     f"with it); ask {case.approvers} to sign device.approve")


def _facts(enrollment: Enrollment) -> dict[str, Any]:
    """What the page shows of the device being approved, against consent phishing."""
    return {"enrollment_id": enrollment.id, "user": enrollment.user_id, "device_name": enrollment.device_name,
            "started_at": int(enrollment.created_at), "source": enrollment.source}


@routes.get("/idwall/api/enroll/{enrollment_id}/recover")
async def recover_case(request: web.Request) -> web.Response:
    """Which case applies to this waiting device: approve it yourself, or who must."""
    node = request.app[NODE]
    enrollment, device = await _waiting(node, request.match_info["enrollment_id"])
    case = await case_of(node, enrollment.user_id, device.id)
    title, detail, next_step = case_words(case)
    return web.json_response({**_facts(enrollment), "device_id": device.id, "case": case.case,
                              "approvers": case.approvers, "incident": case.incident, "title": title, "detail": detail,
                              "next": next_step})


@routes.post("/idwall/api/enroll/{enrollment_id}/recover/begin")
async def recover_begin(request: web.Request) -> web.Response:
    """``device.recover`` for this waiting device and request options offering the user's usable passkeys."""
    node = request.app[NODE]
    await read_json_object(request, limit=node.config.limits.api_body)
    enrollment, device = await _waiting(node, request.match_info["enrollment_id"])
    case = await case_of(node, enrollment.user_id, device.id)
    if case.case != "self":
        raise refusal(case, enrollment.id)
    now, timeout = node.clock(), node.config.webauthn.timeout
    nonce = os.urandom(32)
    action = build_action(validate_action({"type": "device.recover", "enrollment_id": enrollment.id}),
                          actor=enrollment.user_id, nonce=nonce, now=now, timeout=timeout)
    challenge = action_challenge(action)
    ceremony = Ceremony(b64url_encode(challenge), "action", nonce, recovery_binding(enrollment.id), enrollment.user_id,
                        device.id, canonical_json(action).decode("utf-8"), float(action["not_after"]))
    await node.store.create_ceremony(ceremony, max_per_device=MAX_OPEN_RECOVERIES)
    options = passkeys.authentication_options(
        rp_id=node.config.webauthn.rp_id, challenge=challenge, allow=[c.id for c in case.passkeys],
        timeout_ms=timeout * 1000, user_verification=node.config.webauthn.user_verification)
    event("recover.begin", user=enrollment.user_id, device=device.id, enrollment=enrollment.id)
    return web.json_response({"action_id": ceremony.id, "action": action, "options": options, **_facts(enrollment)})


def _signer_passkey(found: list[Credential], credential_id: bytes, enrollment: Enrollment, device: Device) -> Credential:
    """The user's passkey that signed, if it may vouch for ``device`` (else the specific 4xx)."""
    stored = next((c for c in found if c.id == credential_id), None)
    if stored is None or stored.device_id == device.id:
        raise WebAuthnRejected(NOT_YOURS.format(user=enrollment.user_id))
    if stored.suspect is not None:
        raise SuspectPasskey(f"incident {stored.suspect} marked this passkey suspect, so it cannot approve a new "
                             f"device; an administrator's or your manager's device.approve is needed for the device "
                             f"of enrollment {enrollment.id}", incident=stored.suspect)
    if not usable(stored):
        raise Forbidden("this passkey was revoked with its lost device; sign with another passkey you hold, or ask an "
                        "administrator to sign device.approve")
    return stored


@routes.post("/idwall/api/enroll/{enrollment_id}/recover/finish")
async def recover_finish(request: web.Request) -> web.Response:
    """Verify the passkey's signature over ``device.recover`` and activate the waiting device, once."""
    node = request.app[NODE]
    body = await read_json_object(request, limit=node.config.limits.api_body)
    action_id = field(body, "action_id", str)
    credential = field(body, "credential", dict)
    credential_id = passkeys.credential_id_of(credential)
    enrollment, device = await _waiting(node, request.match_info["enrollment_id"])
    now = node.clock()
    ceremony = await node.store.consume_ceremony(action_id, kind="action", now=now)
    if ceremony.binding != recovery_binding(enrollment.id) or ceremony.user_id != enrollment.user_id \
            or ceremony.payload is None:
        raise Forbidden("this signature was begun for another enrollment; start the recovery again on this page")
    action: dict[str, Any] = json.loads(ceremony.payload)
    stored = _signer_passkey(await node.store.user_passkeys(enrollment.user_id), credential_id, enrollment, device)
    verified = await verify_passkey(node, credential, stored, challenge=action_challenge(action))
    case = await case_of(node, enrollment.user_id, device.id)
    if case.case == "policy":
        raise refusal(case, enrollment.id)
    if action["not_after"] < now:
        raise Gone("this action's signature window has passed; start it again")
    effect = await activation(node, device, approved_by=enrollment.user_id, now=now)
    data = {"device_id": device.id, "enrollment_id": enrollment.id, "status": "active"}
    draft = action_draft(action, approval=approval_of(credential, credential_id=stored.id), subject=device.id,
                         data=data)
    seq = await node.store.perform_action(
        signer=Signer(user_id=enrollment.user_id, credential_id=stored.id, expected_sign_count=stored.sign_count,
                      new_sign_count=verified.new_sign_count, must_be_admin=False, recovery=True),
        effect=effect, now=now, draft=draft)
    event("action", user=enrollment.user_id, device=stored.device_id, action="device.recover", subject=device.id,
          audit_seq=seq, over="enrollment page")
    return web.json_response({"result": {"device_id": device.id, "status": "active"}})
