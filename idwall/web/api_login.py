"""Login, logout and "who am I" over the device's mTLS connection.

A login is bound to the connection it happens on: the challenge is
``login_challenge(nonce, certificate on this connection)``, the ceremony
remembers that certificate's thumbprint, and ``finish`` must arrive over a
connection presenting the same certificate. An assertion lifted from one
device's connection is useless on any other.

After a login or logout every connection presenting the certificate is marked
stale, so the next proxied request on any of them sees the new session (or
its absence) at once.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from aiohttp import web

from .. import passkeys
from ..actions import anomaly_draft, approval_of, claimed_challenge, login_draft, logout_draft
from ..enrollment import user_handle
from ..challenges import login_challenge
from ..encoding import b64url_encode
from ..errors import Forbidden, NoClientCertificate, WebAuthnRejected
from ..logs import event
from ..model import Ceremony, Credential, Resolved, Session
from ..node import Node
from .context import NODE, conn_for, enrolled, from_own_pages, with_session
from .problems import field, read_json_object

routes = web.RouteTableDef()

#: unanswered login and signed-action ceremonies kept per device; begin evicts the oldest beyond this
MAX_OPEN_CEREMONIES = 32
OTHER_CONNECTION = "assertion was made for another connection; start the login again on this connection"


def _require_uv(node: Node) -> bool:
    return node.config.webauthn.user_verification == "required"


@routes.post("/idwall/api/login/begin")
async def login_begin(request: web.Request) -> web.Response:
    """Options for a passkey assertion bound to the certificate on this connection."""
    node = request.app[NODE]
    from_own_pages(request)
    await read_json_object(request, limit=node.config.limits.api_body)
    conn, resolved = await enrolled(request)
    cert_der = conn.certificate_der()
    assert cert_der is not None and conn.cert_sha256 is not None
    if not resolved.credentials:
        raise Forbidden(f"device {resolved.device.id} has no passkey bound to it; enroll it again")
    now = node.clock()
    timeout = node.config.webauthn.timeout
    nonce = os.urandom(32)
    challenge = login_challenge(nonce, cert_der)
    await node.store.create_ceremony(new_ceremony("login", challenge, nonce, conn.cert_sha256, resolved,
                                                payload=None, expires_at=now + timeout),
                                   max_per_device=MAX_OPEN_CEREMONIES)
    options = passkeys.authentication_options(
        rp_id=node.config.webauthn.rp_id, challenge=challenge, allow=[c.id for c in resolved.credentials],
        timeout_ms=timeout * 1000, user_verification=node.config.webauthn.user_verification)
    event("login.begin", user=resolved.user.id, device=resolved.device.id)
    return web.json_response({"options": options})


def new_ceremony(kind: str, challenge: bytes, nonce: bytes, binding: bytes, resolved: Resolved, *,
                 payload: str | None, expires_at: float) -> Ceremony:
    """A single-use ceremony named by its challenge and bound to the certificate it began over."""
    return Ceremony(b64url_encode(challenge), kind, nonce, binding, resolved.user.id, resolved.device.id, payload,
                    expires_at)


async def verify_passkey(node: Node, credential: dict[str, Any], stored: Credential, *,
                         challenge: bytes) -> passkeys.VerifiedAuthentication:
    """Verify ``stored``'s assertion over ``challenge`` (a login's or a signed action's); a sign count that went
    back is recorded in the ledger as an anomaly before the refusal."""
    webauthn = node.config.webauthn
    try:
        return passkeys.verify_authentication(
            credential=credential, expected_challenge=challenge, expected_credential_id=stored.id,
            rp_id=webauthn.rp_id, origins=webauthn.origins, public_key=stored.public_key,
            stored_sign_count=stored.sign_count, require_uv=_require_uv(node), user_handle=user_handle(stored.user_id))
    except passkeys.SignCountRegression as exc:
        await node.store.record_anomaly(anomaly_draft(user_id=stored.user_id, device_id=stored.device_id,
                                                    credential_id=stored.id, stored=exc.stored,
                                                    received=exc.received))
        event("signcount.anomaly", user=stored.user_id, device=stored.device_id, stored=exc.stored,
              received=exc.received)
        raise


@routes.post("/idwall/api/login/finish")
async def login_finish(request: web.Request) -> web.Response:
    """Verify the assertion made over this connection and start the session."""
    node = request.app[NODE]
    from_own_pages(request)
    body = await read_json_object(request, limit=node.config.limits.api_body)
    credential = field(body, "credential", dict)
    conn, resolved = await enrolled(request)
    cert_der = conn.certificate_der()
    assert cert_der is not None and conn.cert_sha256 is not None
    challenge = claimed_challenge(credential)
    credential_id = passkeys.credential_id_of(credential)
    now = node.clock()
    ceremony = await node.store.consume_ceremony(b64url_encode(challenge), kind="login", now=now)
    if ceremony.binding != conn.cert_sha256 or ceremony.device_id != resolved.device.id:
        event("login.other_connection", user=resolved.user.id, device=resolved.device.id,
              ceremony_device=ceremony.device_id)
        raise Forbidden(OTHER_CONNECTION)
    stored = await node.store.get_credential(credential_id)
    if stored is None or stored.device_id != resolved.device.id:
        raise WebAuthnRejected("this passkey is not bound to this device; use the passkey made when it enrolled")
    verified = await verify_passkey(node, credential, stored, challenge=login_challenge(ceremony.nonce, cert_der))
    session = Session(
        id="ses-" + secrets.token_hex(12), user_id=resolved.user.id, device_id=resolved.device.id,
        credential_id=stored.id, cert_sha256=conn.cert_sha256, amr=verified.amr, auth_time=now, created_at=now,
        expires_at=now + node.config.session.max_age, last_seen=now)
    draft = login_draft(session=session, approval=approval_of(credential, credential_id=stored.id),
                        nonce=ceremony.nonce, sign_count=verified.new_sign_count)
    await node.store.create_session(session, expected_sign_count=stored.sign_count,
                                  new_sign_count=verified.new_sign_count, draft=draft)
    node.registry.invalidate(node.registry.by_cert(conn.cert_sha256))
    event("login", user=session.user_id, device=session.device_id, session=session.id, amr=list(session.amr))
    return web.json_response({"session_id": session.id, "user": session.user_id,
                              "expires_at": int(session.expires_at), "auth_time": int(session.auth_time)})


@routes.post("/idwall/api/logout")
async def logout(request: web.Request) -> web.Response:
    """End this connection's session (every connection with this certificate loses it)."""
    node = request.app[NODE]
    # no JSON body is required here, so a cross-site form could post without a preflight: refuse it
    from_own_pages(request)
    conn, _, session = await with_session(request)
    assert conn.cert_sha256 is not None
    await node.store.end_session(session.id, now=node.clock(), reason="logout", draft=logout_draft(session))
    node.registry.invalidate(node.registry.by_cert(conn.cert_sha256))
    node.forget_sessions([session.id])
    event("logout", user=session.user_id, device=session.device_id, session=session.id)
    return web.json_response({"session_id": session.id, "ended": True})


@routes.get("/idwall/api/me")
async def me(request: web.Request) -> web.Response:
    """Who this connection is: user, device and live session (each null when absent)."""
    node = request.app[NODE]
    conn = conn_for(request)
    if conn.cert_sha256 is None:
        raise NoClientCertificate("connect with your IDWall device certificate, or enroll this device first",
                                  enroll_url=node.access.enroll_url)
    resolved = await node.resolve(conn)
    if resolved is None:
        return web.json_response({"user": None, "device": None, "session": None})
    user, device = resolved.user, resolved.device
    session = node.live_session(conn, now=node.clock())
    return web.json_response({
        "user": {"id": user.id, "name": user.name, "email": user.email, "groups": list(user.groups),
                 "admin": user.admin},
        "device": {"id": device.id, "name": device.name, "status": device.status},
        "session": None if session is None else {"id": session.id, "auth_time": int(session.auth_time),
                                                 "expires_at": int(session.expires_at)},
    })
