"""Signing from the command line: the action is begun by ``idwall`` over its device's mTLS session, signed
on a one-time page by the passkey in the browser of that same session, and finished by ``idwall`` again.

The command line never holds a passkey and the page never sees the result: the page hands the assertion
back through the sign request (:mod:`idwall.sign_requests`), the command line collects it with a secret only
it knows and calls ``/idwall/api/actions/finish`` itself, so the invite code or token is answered once, to
it. An automation token opens none of this: every endpoint needs a live passkey session.

    POST /idwall/api/sign/requests {action}                        command line: begin
    POST /idwall/api/sign/open     {request_id, secret}            page: the action and passkey options, once
    POST /idwall/api/sign/approve  {request_id, secret, credential} page: the assertion over the action
    POST /idwall/api/sign/decline  {request_id, secret}            page: the person said no
    POST /idwall/api/sign/collect  {request_id, poll_secret}       command line: the state; the assertion, once
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from .. import passkeys
from ..action_words import describe
from ..actions import build_action, claimed_challenge, validate_action
from ..challenges import action_challenge
from ..encoding import b64url_decode, canonical_json
from ..errors import Forbidden, Gone, WebAuthnRejected
from ..logs import event
from ..node import Node
from ..sign_requests import (
    MAX_OPEN_PER_DEVICE,
    check_code,
    check_live,
    check_secret,
    holder_of,
    new_secrets,
    refusal,
    secret_hash,
    sign_link,
)
from ..model import SignRequest
from ..store.base import AlreadyUsed
from .api_actions import precheck
from .api_login import MAX_OPEN_CEREMONIES, new_ceremony
from .context import NODE, from_own_pages, with_session
from .problems import field, read_json_object

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, Any]:
    from_own_pages(request)
    return await read_json_object(request, limit=request.app[NODE].config.limits.api_body)


@routes.post("/idwall/api/sign/requests")
async def sign_begin(request: web.Request) -> web.Response:
    """Begin an action for the passkey of this session; answer the link to sign it and the poll secret."""
    node = request.app[NODE]
    body = await _body(request)
    raw = field(body, "action", dict)
    conn, resolved, _ = await with_session(request)
    assert conn.cert_sha256 is not None
    signer, now, timeout = resolved.user, node.clock(), node.config.webauthn.timeout
    nonce = os.urandom(32)
    action = build_action(validate_action(raw), actor=signer.id, nonce=nonce, now=now, timeout=timeout)
    await precheck(node, action, signer, conn)
    challenge = action_challenge(action)
    canonical = canonical_json(action).decode("utf-8")
    ceremony = new_ceremony("action", challenge, nonce, conn.cert_sha256, resolved, payload=canonical,
                            expires_at=float(action["not_after"]))
    made = new_secrets()
    await node.store.create_sign_request(SignRequest(
        made.request_id, secret_hash(made.link_secret), secret_hash(made.poll_secret), conn.cert_sha256,
        signer.id, resolved.device.id, ceremony.id, canonical, "waiting", None, None, now,
        float(action["not_after"])), max_per_device=MAX_OPEN_PER_DEVICE)
    await node.store.create_ceremony(ceremony, max_per_device=MAX_OPEN_CEREMONIES)
    event("sign.request", user=signer.id, device=resolved.device.id, action=action["type"], request=made.request_id)
    return web.json_response({
        "request_id": made.request_id, "action_id": ceremony.id, "action": action, "summary": describe(action),
        "check_code": check_code(challenge), "link": sign_link(node.config.public_url, made.request_id,
                                                               made.link_secret),
        "poll_secret": made.poll_secret, "expires_at": action["not_after"], "expires_in": action["not_after"] - int(now)})


async def _for_page(request: web.Request, node: Node, body: dict[str, Any]) -> tuple[SignRequest, Any]:
    """The request a page names, if its secret is right, it is live, and the page is on the request's session.

    A page on any other session (another user, or another device of the same one) has the link but not the
    session: the request is cancelled, the terminal is told who opened it, and the page is refused.
    """
    request_id = field(body, "request_id", str)
    secret = field(body, "secret", str)
    conn, resolved, _ = await with_session(request)
    found = check_secret(await node.store.get_sign_request(request_id), "link", secret)
    now = node.clock()
    check_live(found, now=now)
    if not holder_of(found, cert_sha256=conn.cert_sha256, user_id=resolved.user.id):
        told, refused = refusal(user_id=resolved.user.id, device_id=resolved.device.id)
        try:
            await node.store.move_sign_request(found.id, expect=("waiting", "opened"), state="refused",
                                               credential=None, detail=told, now=now)
        except AlreadyUsed:
            pass  # already signed or ended: nothing left to cancel
        event("sign.refused", request=found.id, owner=found.user_id, user=resolved.user.id,
              device=resolved.device.id)
        raise refused
    return found, resolved


_ENDED = {
    "opened": "this signing link was already opened once",
    "signed": "this signing link was already used: its action is signed",
    "collected": "this signing link was already used: its action is signed",
    "declined": "this sign request was declined",
    "refused": "this sign request was cancelled: its link was opened by another session",
}


def _ended(found: SignRequest, what: str) -> Gone:
    return Gone(f"{_ENDED.get(found.state, 'this sign request has ended')}; {what}")


@routes.post("/idwall/api/sign/open")
async def sign_open(request: web.Request) -> web.Response:
    """The action to show and the passkey options to sign it, for the first page that opens the link."""
    node = request.app[NODE]
    found, resolved = await _for_page(request, node, await _body(request))
    if found.state != "waiting":
        raise _ended(found, "run the command again for a new link")
    await node.store.move_sign_request(found.id, expect=("waiting",), state="opened", credential=None, detail=None,
                                       now=node.clock())
    action = json.loads(found.action)
    credentials = await node.store.user_credentials(resolved.user.id)
    options = passkeys.authentication_options(
        rp_id=node.config.webauthn.rp_id, challenge=b64url_decode(found.action_id), allow=[c.id for c in credentials],
        timeout_ms=node.config.webauthn.timeout * 1000, user_verification=node.config.webauthn.user_verification)
    event("sign.open", request=found.id, user=resolved.user.id)
    return web.json_response({"request_id": found.id, "action": action, "summary": describe(action),
                              "check_code": check_code(b64url_decode(found.action_id)), "options": options,
                              "expires_at": int(found.expires_at)})


@routes.post("/idwall/api/sign/approve")
async def sign_approve(request: web.Request) -> web.Response:
    """Keep the page's assertion for the command line, if it answers this request's action."""
    node = request.app[NODE]
    body = await _body(request)
    credential = field(body, "credential", dict)
    found, resolved = await _for_page(request, node, body)
    if found.state != "opened":
        raise _ended(found, "nothing was signed")
    if claimed_challenge(credential) != b64url_decode(found.action_id):
        # an assertion over anything else (another action, a changed one) must not reach this request
        raise WebAuthnRejected("this passkey response signs another challenge, not this request's action; "
                               "nothing was signed")
    await node.store.move_sign_request(found.id, expect=("opened",), state="signed",
                                       credential=json.dumps(credential), detail=None, now=node.clock())
    event("sign.approve", request=found.id, user=resolved.user.id)
    return web.json_response({"request_id": found.id, "state": "signed"})


@routes.post("/idwall/api/sign/decline")
async def sign_decline(request: web.Request) -> web.Response:
    """The person declined on the page: the command line stops and nothing is signed."""
    node = request.app[NODE]
    found, resolved = await _for_page(request, node, await _body(request))
    await node.store.move_sign_request(found.id, expect=("waiting", "opened"), state="declined", credential=None,
                                       detail="the request was declined on the signing page", now=node.clock())
    event("sign.decline", request=found.id, user=resolved.user.id)
    return web.json_response({"request_id": found.id, "state": "declined"})


@routes.post("/idwall/api/sign/collect")
async def sign_collect(request: web.Request) -> web.Response:
    """The request's state for the command line that began it; once signed, the assertion, exactly once."""
    node = request.app[NODE]
    body = await _body(request)
    request_id = field(body, "request_id", str)
    poll_secret = field(body, "poll_secret", str)
    conn, resolved, _ = await with_session(request)
    found = check_secret(await node.store.get_sign_request(request_id), "poll", poll_secret)
    if not holder_of(found, cert_sha256=conn.cert_sha256, user_id=resolved.user.id):
        raise Forbidden("this sign request was begun on another session; only the command that began it collects it")
    now = node.clock()
    if found.state in ("declined", "refused"):
        return web.json_response({"state": found.state, "detail": found.detail})
    if found.state == "collected":
        raise Gone("this sign request's assertion was already collected")
    check_live(found, now=now)
    if found.state != "signed":
        return web.json_response({"state": found.state})
    moved = await node.store.move_sign_request(found.id, expect=("signed",), state="collected", credential=None,
                                               detail=None, now=now)
    assert found.credential is not None and moved.state == "collected"
    event("sign.collect", request=found.id, user=resolved.user.id)
    return web.json_response({"state": "signed", "action_id": found.action_id,
                              "credential": json.loads(found.credential)})
