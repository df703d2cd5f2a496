"""Device enrollment: an invite code (or a self-service request) and a CSR in, a passkey and a certificate out.

The creation challenge commits to the CSR's public key
(``enroll_challenge(nonce, SPKI)``), so the passkey vouches for exactly the TLS
key the certificate is then issued for. Nothing is written at ``finish`` until
every check passed, and then user, device, credential, the consumed invite and
the ledger entry are committed in one transaction: a failed finish leaves the
store as it was.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from .. import passkeys, pki
from ..audit import ledger_public_jwk, root_fingerprint
from ..challenges import enroll_challenge
from ..enrollment import (
    KEEP_EXPIRED_ENROLLMENT,
    MAX_OPEN_ENROLLMENTS,
    MAX_PENDING_DEVICES,
    check_code,
    check_device_name,
    check_invite,
    check_user_id,
    enrollment_draft,
    initial_status,
    invite_id_of,
    new_device_id,
    new_enrollment_id,
    public_status,
    user_handle,
)
from ..errors import BadRequest, Conflict, EnrollmentBlocked, Gone, NotFound
from ..logs import event
from ..model import Credential, Device, Enrollment, NewDevice, User
from ..node import Node
from .context import NODE, conn_for
from .problems import field, read_json_object

routes = web.RouteTableDef()


async def _registration_options(node: Node, enrollment: Enrollment) -> dict[str, Any]:
    webauthn = node.config.webauthn
    existing = await node.store.user_credentials(enrollment.user_id)
    return passkeys.registration_options(
        rp_id=webauthn.rp_id, rp_name=webauthn.rp_name, user_id=user_handle(enrollment.user_id),
        user_name=enrollment.user_id, display_name=enrollment.name or enrollment.user_id,
        challenge=enrollment.challenge, timeout_ms=webauthn.timeout * 1000,
        user_verification=webauthn.user_verification, exclude=[c.id for c in existing])


def _enroll_page(node: Node, enrollment_id: str) -> str:
    return node.config.public_url.rstrip("/") + "/idwall/enroll/" + enrollment_id


@routes.post("/idwall/api/enroll/begin")
async def enroll_begin(request: web.Request) -> web.Response:
    """Start an enrollment: check the code (or user) and CSR, answer creation options bound to the CSR key."""
    node = request.app[NODE]
    body = await read_json_object(request, limit=node.config.limits.api_body)
    code = field(body, "code", str, required=False)
    user_id = field(body, "user", str, required=False)
    if (code is None) == (user_id is None):
        raise BadRequest("give either code (from an invite) or user (to enroll another device of yours and "
                         "wait for approval), not both and not neither")
    csr_pem = field(body, "csr_pem", str)
    csr = pki.check_csr(csr_pem)
    device_name = check_device_name(field(body, "device_name", str))
    now = node.clock()
    if code is not None:
        stored = await node.store.get_invite(invite_id_of(check_code(code)))
        admin_exists = bool(stored and stored.bootstrap) and await node.store.has_admin()
        invite = check_invite(stored, now=now, admin_exists=admin_exists)
        blocker = await node.store.enrollment_blocked(invite.user_id)
        if blocker is not None:
            # a code read out over the phone is exactly what an intruder asks the desk for during an incident
            raise EnrollmentBlocked(f"incident {blocker} blocks enrollment by invite code for {invite.user_id} while "
                                    "it is active; enroll with a passkey you still hold (give user instead of code) "
                                    "or wait until the incident ends", incident=blocker)
        # the invite says who the device is for; an existing user's attributes are updated from it at finish
        subject = User(invite.user_id, invite.name, invite.email, invite.groups, invite.admin, now)
        bootstrap, linked_invite = invite.bootstrap, invite.id
    else:
        existing = await node.store.get_user(check_user_id(user_id))
        if existing is None:
            raise NotFound(f"no user {user_id!r}; ask an administrator for an invite")
        subject, bootstrap, linked_invite = existing, False, None
    nonce = os.urandom(32)
    timeout = node.config.webauthn.timeout
    enrollment = Enrollment(
        id=new_enrollment_id(), nonce=nonce, challenge=enroll_challenge(nonce, csr.spki_der),
        spki_sha256=csr.spki_sha256, csr_pem=csr_pem, device_name=device_name, invite_id=linked_invite,
        user_id=subject.id, name=subject.name, email=subject.email, groups=tuple(subject.groups),
        admin=subject.admin, bootstrap=bootstrap,
        status="begun", device_id=None, created_at=now, expires_at=now + timeout, source=conn_for(request).remote)
    options = await _registration_options(node, enrollment)
    await node.store.create_enrollment(enrollment, max_open=MAX_OPEN_ENROLLMENTS, max_pending_devices=MAX_PENDING_DEVICES,
                                     forget_before=now - KEEP_EXPIRED_ENROLLMENT)
    event("enroll.begin", enrollment=enrollment.id, user=enrollment.user_id, bootstrap=bootstrap,
          self_service=linked_invite is None)
    return web.json_response({"enrollment_id": enrollment.id, "options": options,
                              "enroll_url": _enroll_page(node, enrollment.id), "expires_at": int(enrollment.expires_at)})


@routes.get("/idwall/api/enroll/{enrollment_id}")
async def enroll_status(request: web.Request) -> web.Response:
    """Where an enrollment stands; the certificate once the device is active (for the polling CLI)."""
    node = request.app[NODE]
    enrollment = await node.store.get_enrollment(request.match_info["enrollment_id"])
    if enrollment is None:
        raise NotFound("unknown enrollment; start again with your code")
    status = public_status(enrollment, now=node.clock())
    answer: dict[str, Any] = {"enrollment_id": enrollment.id, "status": status, "user": enrollment.user_id,
                              "device_name": enrollment.device_name, "expires_at": int(enrollment.expires_at)}
    if status == "begun":
        answer["options"] = await _registration_options(node, enrollment)
    if enrollment.device_id is not None:
        answer["device_id"] = enrollment.device_id
        device = await node.store.get_device(enrollment.device_id)
        if device is not None and device.status == "revoked" and status != "rejected":
            answer["status"] = "revoked"
        elif device is not None and device.status == "active" and device.cert_pem:
            answer.update(certificate_pem=device.cert_pem, ca_pem=node.ca_pem)
    return web.json_response(answer)


@routes.post("/idwall/api/enroll/finish")
async def enroll_finish(request: web.Request) -> web.Response:
    """Verify the new passkey, issue the device certificate (when active) and record the enrollment."""
    node = request.app[NODE]
    body = await read_json_object(request, limit=node.config.limits.api_body)
    enrollment_id = field(body, "enrollment_id", str)
    credential = field(body, "credential", dict)
    now = node.clock()
    enrollment = await node.store.get_enrollment(enrollment_id)
    if enrollment is None:
        raise NotFound("unknown enrollment; start again with your code")
    if enrollment.status != "begun":
        raise Conflict("this enrollment was already completed; start a new one")
    if enrollment.expires_at <= now:
        raise Gone("this enrollment has expired; start again with your code")
    webauthn = node.config.webauthn
    registration = passkeys.verify_registration(
        credential=credential, expected_challenge=enrollment.challenge, rp_id=webauthn.rp_id,
        origins=webauthn.origins, require_uv=webauthn.user_verification == "required")
    if await node.store.credential_exists(registration.credential_id):
        raise Conflict("this passkey is already registered; create a new passkey for this device")
    approved_by: str | None = None
    if enrollment.invite_id is not None:
        invite = await node.store.get_invite(enrollment.invite_id)
        admin_exists = bool(invite and invite.bootstrap) and await node.store.has_admin()
        approved_by = check_invite(invite, now=now, admin_exists=admin_exists).created_by
    status = initial_status(bootstrap=enrollment.bootstrap, invited=enrollment.invite_id is not None,
                            approval=node.config.devices.approval)
    device_id = new_device_id()
    cert_pem: str | None = None
    cert_sha256: bytes | None = None
    not_after: float | None = None
    if status == "active":
        cert = pki.issue_device_cert(ca_cert=node.device_ca_cert, ca_key=node.device_ca_key,
                                     csr=pki.check_csr(enrollment.csr_pem), device_id=device_id,
                                     now=datetime.fromtimestamp(now, timezone.utc), ttl=node.config.device_ca.cert_ttl)
        cert_pem = pki.cert_pem(cert)
        cert_sha256 = pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))
        not_after = cert.not_valid_after_utc.timestamp()
    else:
        approved_by = None
    new = NewDevice(
        user=User(enrollment.user_id, enrollment.name, enrollment.email, enrollment.groups, enrollment.admin, now),
        device=Device(device_id, enrollment.user_id, enrollment.device_name, status, cert_sha256, cert_pem, now,
                      not_after, approved_by, None, enrollment.id),
        credential=Credential(registration.credential_id, enrollment.user_id, device_id, registration.public_key,
                              registration.alg, registration.sign_count, now))
    draft = enrollment_draft(enrollment=enrollment, device_id=device_id, registration=registration,
                             cert_sha256=cert_sha256, status=status, webauthn=webauthn,
                             ledger_key_jwk=ledger_public_jwk(node.ledger_key))
    seq = await node.store.complete_enrollment(enrollment_id=enrollment.id, new=new, now=now, draft=draft,
                                             max_pending_devices=MAX_PENDING_DEVICES)
    event("enroll.finish", enrollment=enrollment.id, user=enrollment.user_id, device=device_id, status=status,
          bootstrap=enrollment.bootstrap, audit_seq=seq)
    answer: dict[str, Any] = {"device_id": device_id, "status": status, "ca_pem": node.ca_pem}
    if cert_pem is not None:
        answer["certificate_pem"] = cert_pem
    if enrollment.bootstrap:
        answer["root_fingerprint"] = root_fingerprint(registration.public_key)
    return web.json_response(answer)
