"""Signed actions: every grant of access is a passkey signature over the exact action.

``begin`` validates the action, completes it with ``actor``, ``nonce`` and
``not_after``, and answers request options whose challenge is
``action_challenge(action)``; the canonical action is kept in a single-use
ceremony bound to the certificate of this connection. ``finish`` verifies the
assertion against the signer's own active credential, checks the role again,
and commits the effect, the signer's new sign count and the ledger entry (with
the assertion and the action) in one store transaction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from .. import passkeys, pki, tokens
from ..actions import (
    ADMIN_ACTIONS,
    action_draft,
    anomaly_draft,
    approval_of,
    build_action,
    check_role,
    token_ttl,
    validate_action,
)
from ..challenges import action_challenge
from ..encoding import canonical_json
from ..enrollment import INVITE_TTL, new_invite_code, user_handle
from ..errors import Conflict, Forbidden, Gone, NotFound, WebAuthnRejected
from ..logs import event
from ..store.base import (
    ActionEffect,
    ActivateEffect,
    AdminEffect,
    Device,
    Invite,
    InviteEffect,
    Signer,
    TokenEffect,
    User,
)
from .api_login import MAX_OPEN_CEREMONIES, OTHER_CONNECTION, new_ceremony
from ..node import Node
from .context import NODE, from_own_pages, with_session
from .problems import field, read_json_object

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Prepared:
    """What performing an action will write (effect, ledger subject and data) and answer."""

    effect: ActionEffect
    subject: str
    data: dict[str, Any]
    result: dict[str, Any]


async def _pending_device(node: Node, device_id: str | None) -> Device:
    device = await node.store.get_device(device_id) if device_id else None
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if device.status != "pending_approval":
        raise Conflict(f"device {device.id} is {device.status.replace('_', ' ')}, not pending approval")
    return device


async def _recover_target(node: Node, enrollment_id: str, signer: User) -> Device:
    enrollment = await node.store.get_enrollment(enrollment_id)
    if enrollment is None:
        raise NotFound(f"no enrollment {enrollment_id!r}")
    if enrollment.user_id != signer.id:
        raise Forbidden("device.recover can only approve your own new device; ask an administrator otherwise")
    if node.config.devices.approval != "none":
        # the operator asked for a second person on every new device: the user's own passkey is not enough
        raise Forbidden(f"this gateway requires an administrator's approval for new devices (devices.approval: "
                        f"{node.config.devices.approval}); ask an administrator to sign device.approve")
    if enrollment.status != "pending_approval" or enrollment.device_id is None:
        raise Conflict(f"enrollment {enrollment_id} is not waiting for approval (it is {enrollment.status})")
    return await _pending_device(node, enrollment.device_id)


async def _check_admin_change(node: Node, action: dict[str, Any]) -> User:
    target = await node.store.get_user(action["user"])
    if target is None:
        raise NotFound(f"no user {action['user']!r}")
    if action["type"] == "admin.revoke" and target.admin:
        admins = [u for u in await node.store.list_users() if u.admin]
        if len(admins) <= 1:
            raise Conflict(f"{target.id} is the last administrator; grant another one first")
    return target


async def _precheck(node: Node, action: dict[str, Any], signer: User) -> None:
    """Refuse at ``begin`` what ``finish`` would refuse, so nobody signs an action that cannot happen."""
    check_role(action, signer_admin=signer.admin)
    kind = action["type"]
    if kind in ("admin.grant", "admin.revoke"):
        await _check_admin_change(node, action)
    elif kind == "device.approve":
        await _pending_device(node, action["device_id"])
    elif kind == "device.recover":
        await _recover_target(node, action["enrollment_id"], signer)


async def _activation(node: Node, device: Device, *, approved_by: str, now: float) -> ActivateEffect:
    """Issue the pending device's first certificate, for the key its enrollment's CSR carries."""
    enrollment = await node.store.get_enrollment(device.enrollment_id)
    if enrollment is None:
        raise NotFound(f"device {device.id} has no enrollment record")
    cert = pki.issue_device_cert(ca_cert=node.device_ca_cert, ca_key=node.device_ca_key,
                                 csr=pki.check_csr(enrollment.csr_pem), device_id=device.id,
                                 now=datetime.fromtimestamp(now, timezone.utc), ttl=node.config.device_ca.cert_ttl)
    return ActivateEffect(device_id=device.id, enrollment_id=enrollment.id, user_id=device.user_id,
                          cert_sha256=pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER)),
                          cert_pem=pki.cert_pem(cert), not_after=cert.not_valid_after_utc.timestamp(),
                          approved_by=approved_by)


async def _prepare(node: Node, action: dict[str, Any], *, signer: User, signing_device: str,
                   now: float) -> Prepared:
    kind, actor = action["type"], action["actor"]
    if kind == "invite.create":
        code = new_invite_code()
        expires_at = int(now) + INVITE_TTL
        invite = Invite(code.invite_id, action["user"], action["name"], action["email"], tuple(action["groups"]),
                        action["admin"], False, actor, now, float(expires_at))
        data = {"invite_id": code.invite_id, "user": invite.user_id, "name": invite.name, "email": invite.email,
                "groups": list(invite.groups), "admin": invite.admin, "expires_at": expires_at}
        return Prepared(InviteEffect(invite), invite.user_id, data, {"code": code.code, "expires_at": expires_at})
    if kind in ("admin.grant", "admin.revoke"):
        target = await _check_admin_change(node, action)
        admin = kind == "admin.grant"
        return Prepared(AdminEffect(target.id, admin), target.id, {"user": target.id, "admin": admin},
                        {"user": target.id, "admin": admin})
    if kind == "token.create":
        issued = tokens.new_token(name=action["name"], scopes=action["scopes"], ttl=token_ttl(action["ttl"]),
                                  created_by=actor, now=now)
        record = issued.record
        # the ledger's scopes are the signed ones, in the order signed (the verifier compares them exactly)
        data = {"token_id": record.id, "name": record.name, "scopes": list(action["scopes"]),
                "expires_at": int(record.expires_at)}
        return Prepared(TokenEffect(record), record.id, data,
                        {"token": issued.secret, "token_id": record.id, "expires_at": int(record.expires_at)})
    if kind == "device.approve":
        device = await _pending_device(node, action["device_id"])
    else:
        device = await _recover_target(node, action["enrollment_id"], signer)
        if device.id == signing_device:
            raise Forbidden("device.recover must be signed with a passkey on another, active device")
    effect = await _activation(node, device, approved_by=actor, now=now)
    data = {"device_id": device.id, "enrollment_id": device.enrollment_id, "status": "active"}
    return Prepared(effect, device.id, data, {"device_id": device.id, "status": "active"})


@routes.post("/idwall/api/actions/begin")
async def action_begin(request: web.Request) -> web.Response:
    """The full action to sign and passkey request options whose challenge is that action's."""
    node = request.app[NODE]
    from_own_pages(request)
    body = await read_json_object(request, limit=node.config.limits.api_body)
    raw = field(body, "action", dict)
    conn, resolved, _ = await with_session(request)
    assert conn.cert_sha256 is not None
    fields = validate_action(raw)
    signer = resolved.user
    now = node.clock()
    timeout = node.config.webauthn.timeout
    nonce = os.urandom(32)
    action = build_action(fields, actor=signer.id, nonce=nonce, now=now, timeout=timeout)
    await _precheck(node, action, signer)
    challenge = action_challenge(action)
    credentials = await node.store.user_credentials(signer.id)
    ceremony = new_ceremony("action", challenge, nonce, conn.cert_sha256, resolved,
                            payload=canonical_json(action).decode("utf-8"), expires_at=float(action["not_after"]))
    await node.store.create_ceremony(ceremony, max_per_device=MAX_OPEN_CEREMONIES)
    options = passkeys.authentication_options(
        rp_id=node.config.webauthn.rp_id, challenge=challenge, allow=[c.id for c in credentials],
        timeout_ms=timeout * 1000, user_verification=node.config.webauthn.user_verification)
    event("action.begin", user=signer.id, device=resolved.device.id, action=action["type"])
    return web.json_response({"action_id": ceremony.id, "action": action, "options": options})


@routes.post("/idwall/api/actions/finish")
async def action_finish(request: web.Request) -> web.Response:
    """Verify the signature over the action and perform it once, with its ledger entry."""
    node = request.app[NODE]
    from_own_pages(request)
    body = await read_json_object(request, limit=node.config.limits.api_body)
    action_id = field(body, "action_id", str)
    credential = field(body, "credential", dict)
    conn, resolved, _ = await with_session(request)
    credential_id = passkeys.credential_id_of(credential)
    now = node.clock()
    ceremony = await node.store.consume_ceremony(action_id, kind="action", now=now)
    if ceremony.binding != conn.cert_sha256 or ceremony.user_id != resolved.user.id or ceremony.payload is None:
        raise Forbidden(OTHER_CONNECTION)
    action: dict[str, Any] = json.loads(ceremony.payload)
    active = {c.id: c for c in await node.store.user_credentials(resolved.user.id)}
    stored = active.get(credential_id)
    if stored is None:
        raise WebAuthnRejected("this passkey is not one of your active passkeys; sign with one of those offered")
    webauthn = node.config.webauthn
    try:
        verified = passkeys.verify_authentication(
            credential=credential, expected_challenge=action_challenge(action), expected_credential_id=stored.id,
            rp_id=webauthn.rp_id, origins=webauthn.origins, public_key=stored.public_key,
            stored_sign_count=stored.sign_count, require_uv=webauthn.user_verification == "required",
            user_handle=user_handle(stored.user_id))
    except passkeys.SignCountRegression as exc:
        await node.store.record_anomaly(anomaly_draft(user_id=stored.user_id, device_id=stored.device_id,
                                                    credential_id=stored.id, stored=exc.stored,
                                                    received=exc.received))
        event("signcount.anomaly", user=stored.user_id, device=stored.device_id, stored=exc.stored,
              received=exc.received)
        raise
    signer = await node.store.get_user(resolved.user.id)
    if signer is None:
        raise Forbidden("your user no longer exists")
    check_role(action, signer_admin=signer.admin)
    if action["not_after"] < now:
        raise Gone("this action's signature window has passed; start it again")
    prepared = await _prepare(node, action, signer=signer, signing_device=stored.device_id, now=now)
    draft = action_draft(action, approval=approval_of(credential, credential_id=stored.id),
                         subject=prepared.subject, data=prepared.data)
    seq = await node.store.perform_action(
        signer=Signer(user_id=signer.id, credential_id=stored.id, expected_sign_count=stored.sign_count,
                      new_sign_count=verified.new_sign_count, must_be_admin=action["type"] in ADMIN_ACTIONS),
        effect=prepared.effect, now=now, draft=draft)
    if isinstance(prepared.effect, AdminEffect):
        node.registry.invalidate(node.registry.for_ids(users=[prepared.effect.user_id]))
    event("action", user=signer.id, device=stored.device_id, action=action["type"], subject=prepared.subject,
          audit_seq=seq)
    return web.json_response({"result": prepared.result})
