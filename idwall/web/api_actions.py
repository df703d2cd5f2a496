"""Signed actions: every grant of access is a passkey signature over the exact action.

``begin`` validates the action, completes it with ``actor``, ``nonce`` and
``not_after``, and answers request options whose challenge is
``action_challenge(action)``; the canonical action is kept in a single-use
ceremony bound to the certificate of this connection. ``finish`` verifies the
assertion against the signer's own active credential, checks the role again,
and commits the effect, the signer's new sign count and the ledger entry (with
the assertion and the action) in one store transaction.

A device approval or rejection by the owner's manager (``devices.approval:
manager``) is checked again inside that transaction against the owner's manager
at that moment, so a concurrent ``user.set_manager`` cannot let a former manager
through. A ``device.renew`` answers the new certificate and then closes this
connection (it presents the replaced certificate); the session carries over to
the new certificate, so the device's next connection needs no new login.
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
    MANAGER_ACTIONS,
    action_draft,
    approval_of,
    build_action,
    check_role,
    manages,
    token_ttl,
    validate_action,
)
from ..challenges import action_challenge
from ..connections import Conn
from ..encoding import b64url_encode, canonical_json
from ..enrollment import INVITE_TTL, new_invite_code
from ..errors import BadRequest, Conflict, Forbidden, Gone, NotFound, SuspectPasskey, WebAuthnRejected
from ..incident import run as incidents
from ..incident.plan import Targets
from ..logs import event
from ..renewal import RenewalTarget, check_renewal
from ..model import (
    ActionEffect,
    ActivateEffect,
    AdminEffect,
    Device,
    IncidentEffect,
    Invite,
    InviteEffect,
    ManagerEffect,
    RejectEffect,
    RenewEffect,
    Signer,
    TokenEffect,
    User,
)
from .api_login import MAX_OPEN_CEREMONIES, OTHER_CONNECTION, new_ceremony, verify_passkey
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


async def pending_device(node: Node, device_id: str | None) -> Device:
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
        approvers = "an administrator or your manager" if node.config.devices.approval == "manager" \
            else "an administrator"
        raise Forbidden(f"this gateway requires a second person's approval for new devices (devices.approval: "
                        f"{node.config.devices.approval}); ask {approvers} to sign device.approve")
    if enrollment.status != "pending_approval" or enrollment.device_id is None:
        raise Conflict(f"enrollment {enrollment_id} is not waiting for approval (it is {enrollment.status})")
    return await pending_device(node, enrollment.device_id)


async def _unsuspected(node: Node, credentials: list[Any], enrollment_id: str) -> list[Any]:
    """The passkeys that may still vouch for a recovered device: none an incident marked suspect (else 403)."""
    usable, marked = [], None
    for credential in credentials:
        incident = await node.store.credential_suspect(credential.id)
        if incident is None:
            usable.append(credential)
        else:
            marked = incident
    if not usable:
        raise SuspectPasskey(f"incident {marked} marked your passkey suspect, so it cannot approve a new device of "
                             f"yours; an administrator's or your manager's device.approve is needed for the device "
                             f"of enrollment {enrollment_id}", incident=marked)
    return usable


async def _check_admin_change(node: Node, action: dict[str, Any]) -> User:
    target = await node.store.get_user(action["user"])
    if target is None:
        raise NotFound(f"no user {action['user']!r}")
    if action["type"] == "admin.revoke" and target.admin:
        admins = [u for u in await node.store.list_users() if u.admin]
        if len(admins) <= 1:
            raise Conflict(f"{target.id} is the last administrator; grant another one first")
    return target


async def _known_manager(node: Node, manager: str | None) -> None:
    if manager is not None and await node.store.get_user(manager) is None:
        raise Conflict(f"no user {manager!r} to be the manager; invite them first")


async def _manages_owner(node: Node, action: dict[str, Any], signer: User) -> bool:
    """For a device approval or rejection: whether the signer may sign it as the device owner's manager."""
    if action["type"] not in MANAGER_ACTIONS:
        return False
    device = await pending_device(node, action["device_id"])
    owner = await node.store.get_user(device.user_id)
    return manages(approval=node.config.devices.approval, owner_manager=owner.manager if owner else None,
                   signer=signer.id)


async def _renewal_target(node: Node, action: dict[str, Any], conn: Conn) -> tuple[Device, pki.CSRInfo]:
    """The device a ``device.renew`` names and its CSR, checked against the connection it is signed over."""
    device = await node.store.get_device(action["device_id"])
    if device is None:
        raise NotFound(f"no device {action['device_id']!r}")
    cert_der = conn.certificate_der()
    assert cert_der is not None and conn.resolved is not None  # with_session: an enrolled device's connection
    csr = pki.check_csr(action["csr_pem"])
    check_renewal(RenewalTarget(device, conn.resolved.device.id, pki.cert_spki_sha256(cert_der), csr.spki_sha256),
                  signer=action["actor"], now=node.clock())
    return device, csr


async def precheck(node: Node, action: dict[str, Any], signer: User, conn: Conn) -> None:
    """Refuse at ``begin`` what ``finish`` would refuse, so nobody signs an action that cannot happen."""
    check_role(action, signer_admin=signer.admin, signer_manages_owner=await _manages_owner(node, action, signer))
    kind = action["type"]
    if kind in ("admin.grant", "admin.revoke"):
        await _check_admin_change(node, action)
    elif kind == "device.recover":
        await _recover_target(node, action["enrollment_id"], signer)
    elif kind == "invite.create":
        await _known_manager(node, action["manager"])
    elif kind == "user.set_manager":
        await _manager_change(node, action)
    elif kind == "device.renew":
        await _renewal_target(node, action, conn)
    elif kind == "incident.start":
        await _incident_plan(node, action)


async def _incident_plan(node: Node, action: dict[str, Any]) -> incidents.Prepared:
    """The plan a signed ``incident.start`` will run (a dry run is refused: it needs no signature)."""
    if action["dry_run"]:
        raise BadRequest("a dry run changes nothing and needs no signature: POST /idwall/api/admin/incidents with "
                         "dry_run: true")
    targets = Targets(tuple(action["targets"]["users"]), tuple(action["targets"]["devices"]))
    return await incidents.prepare(node, incidents.find_playbook(node, action["playbook"]), targets)


async def _manager_change(node: Node, action: dict[str, Any]) -> User:
    target = await node.store.get_user(action["user"])
    if target is None:
        raise NotFound(f"no user {action['user']!r}")
    await _known_manager(node, action["manager"])
    return target


async def activation(node: Node, device: Device, *, approved_by: str, now: float) -> ActivateEffect:
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


async def _renew(node: Node, action: dict[str, Any], *, conn: Conn, signing_device: str, now: float) -> Prepared:
    """Issue the certificate for the CSR's key; the device's thumbprint and sessions move to it on commit."""
    device, csr = await _renewal_target(node, action, conn)
    if signing_device != device.id:
        raise Forbidden(f"device.renew must be signed with a passkey bound to device {device.id}, the one renewed")
    assert device.cert_sha256 is not None  # check_renewal: the device is active
    cert = pki.issue_device_cert(ca_cert=node.device_ca_cert, ca_key=node.device_ca_key, csr=csr, device_id=device.id,
                                 now=datetime.fromtimestamp(now, timezone.utc), ttl=node.config.device_ca.cert_ttl)
    cert_sha256 = pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))
    not_after = cert.not_valid_after_utc.timestamp()
    effect = RenewEffect(device_id=device.id, user_id=device.user_id, old_cert_sha256=device.cert_sha256,
                         cert_sha256=cert_sha256, cert_pem=pki.cert_pem(cert), not_after=not_after,
                         spki_sha256=csr.spki_sha256)
    data = {"device_id": device.id, "cert_sha256": b64url_encode(cert_sha256), "not_after": int(not_after)}
    return Prepared(effect, device.id, data,
                    {"device_id": device.id, "certificate_pem": effect.cert_pem, "not_after": int(not_after)})


async def _prepare(node: Node, action: dict[str, Any], *, signer: User, signing_device: str, conn: Conn,
                   now: float) -> Prepared:
    kind, actor = action["type"], action["actor"]
    if kind == "invite.create":
        await _known_manager(node, action["manager"])
        code = new_invite_code()
        expires_at = int(now) + INVITE_TTL
        invite = Invite(code.invite_id, action["user"], action["name"], action["email"], tuple(action["groups"]),
                        action["admin"], False, actor, now, float(expires_at), manager=action["manager"])
        data = {"invite_id": code.invite_id, "user": invite.user_id, "name": invite.name, "email": invite.email,
                "groups": list(invite.groups), "admin": invite.admin, "manager": invite.manager,
                "expires_at": expires_at}
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
    if kind == "user.set_manager":
        target = await _manager_change(node, action)
        answer = {"user": target.id, "manager": action["manager"]}
        return Prepared(ManagerEffect(target.id, action["manager"]), target.id, answer, answer)
    if kind == "device.renew":
        return await _renew(node, action, conn=conn, signing_device=signing_device, now=now)
    if kind == "incident.start":
        plan = await _incident_plan(node, action)
        targets = Targets(tuple(action["targets"]["users"]), tuple(action["targets"]["devices"]))
        incident, data = incidents.new_incident(node, plan, reason=action["reason"], targets=targets, actor=actor)
        return Prepared(IncidentEffect(incident), incident.id, data, {"incident_id": incident.id})
    if kind == "device.reject":
        device = await pending_device(node, action["device_id"])
        data = {"device_id": device.id, "enrollment_id": device.enrollment_id, "status": "revoked"}
        return Prepared(RejectEffect(device.id, device.enrollment_id, device.user_id), device.id, data,
                        {"device_id": device.id, "status": "revoked"})
    if kind == "device.approve":
        device = await pending_device(node, action["device_id"])
    else:
        device = await _recover_target(node, action["enrollment_id"], signer)
        if device.id == signing_device:
            raise Forbidden("device.recover must be signed with a passkey on another, active device")
    effect = await activation(node, device, approved_by=actor, now=now)
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
    await precheck(node, action, signer, conn)
    challenge = action_challenge(action)
    # a renewal is signed with a passkey bound to the renewed device (this connection's): offer only those
    credentials = list(resolved.credentials) if action["type"] == "device.renew" \
        else await node.store.user_credentials(signer.id)
    if action["type"] == "device.recover":
        credentials = await _unsuspected(node, credentials, action["enrollment_id"])
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
    verified = await verify_passkey(node, credential, stored, challenge=action_challenge(action))
    if action["type"] == "device.recover":
        await _unsuspected(node, [stored], action["enrollment_id"])
    signer = await node.store.get_user(resolved.user.id)
    if signer is None:
        raise Forbidden("your user no longer exists")
    check_role(action, signer_admin=signer.admin, signer_manages_owner=await _manages_owner(node, action, signer))
    if action["not_after"] < now:
        raise Gone("this action's signature window has passed; start it again")
    prepared = await _prepare(node, action, signer=signer, signing_device=stored.device_id, conn=conn, now=now)
    draft = action_draft(action, approval=approval_of(credential, credential_id=stored.id),
                         subject=prepared.subject, data=prepared.data)
    effect = prepared.effect
    manager_may_sign = action["type"] in MANAGER_ACTIONS and node.config.devices.approval == "manager"
    seq = await node.store.perform_action(
        signer=Signer(user_id=signer.id, credential_id=stored.id, expected_sign_count=stored.sign_count,
                      new_sign_count=verified.new_sign_count, must_be_admin=action["type"] in ADMIN_ACTIONS,
                      or_manager_of=effect.user_id if manager_may_sign and isinstance(effect, ActivateEffect
                                                                                          | RejectEffect) else None),
        effect=effect, now=now, draft=draft)
    if isinstance(effect, AdminEffect | ManagerEffect):
        node.registry.invalidate(node.registry.for_ids(users=[effect.user_id]))
    elif isinstance(effect, RenewEffect):
        # the replaced certificate stops working at once: this connection after its answer, any other now
        conn.close_after_answer = True
        node.registry.cut([c for c in node.registry.by_cert(effect.old_cert_sha256) if c is not conn])
    event("action", user=signer.id, device=stored.device_id, action=action["type"], subject=prepared.subject,
          audit_seq=seq)
    result = prepared.result
    if isinstance(effect, IncidentEffect):
        # the stages run now, the signer's own session among the first cut (privileged first): this answer is
        # still written on the connection, which closes right after
        incident = await incidents.started(node, effect.incident.id, prepared.data)
        if await incidents.run_stages(node, incident, spare=conn):
            conn.close_after_answer = True
        result = await incidents.status(node, await incidents.incident_or_404(node, incident.id))
    return web.json_response({"result": result})
