"""Certificate renewal requests: a device asks, over its own mTLS connection, for a certificate for a new key.

``POST /idwall/api/renew/begin {csr_pem}`` needs the connection of an active enrolled device (no session: the
CLI that asks holds the device key, not a passkey). It checks the CSR as enrollment does and against the
device (:func:`idwall.renewal.check_renewal`), stores the request and answers the page where the user
signs ``device.renew`` with a passkey bound to this device. ``GET /idwall/api/renew/{renewal_id}`` needs
only TLS: it is what the CLI polls (a certificate is no secret, the id is unguessable) and what the page
reads to know the CSR it asks the user to sign.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import pki
from ..errors import NotFound
from ..logs import event
from ..renewal import KEEP_EXPIRED_RENEWAL, MAX_OPEN_RENEWALS, RenewalTarget, check_renewal, new_renewal_id, public_status
from ..model import Renewal
from .context import NODE, enrolled, from_own_pages
from .problems import field, read_json_object

routes = web.RouteTableDef()


@routes.post("/idwall/api/renew/begin")
async def renew_begin(request: web.Request) -> web.Response:
    """Record a renewal request of this connection's device for the CSR's new key; answer the page to sign it."""
    node = request.app[NODE]
    from_own_pages(request)
    body = await read_json_object(request, limit=node.config.limits.api_body)
    csr_pem = field(body, "csr_pem", str)
    conn, resolved = await enrolled(request)
    csr = pki.check_csr(csr_pem)
    cert_der = conn.certificate_der()
    assert cert_der is not None
    device = resolved.device
    now = node.clock()
    check_renewal(RenewalTarget(device, device.id, pki.cert_spki_sha256(cert_der), csr.spki_sha256),
                  signer=device.user_id, now=now)
    renewal = Renewal(new_renewal_id(), device.id, device.user_id, csr_pem, csr.spki_sha256, "begun", now,
                      now + node.config.webauthn.timeout)
    await node.store.create_renewal(renewal, max_open=MAX_OPEN_RENEWALS, forget_before=now - KEEP_EXPIRED_RENEWAL)
    event("renew.begin", renewal=renewal.id, user=device.user_id, device=device.id)
    return web.json_response({"renewal_id": renewal.id, "device_id": device.id,
                              "renew_url": node.config.public_url.rstrip("/") + "/idwall/renew/" + renewal.id,
                              "expires_at": int(renewal.expires_at)})


@routes.get("/idwall/api/renew/{renewal_id}")
async def renew_status(request: web.Request) -> web.Response:
    """Where a renewal stands: the CSR to sign while begun, the new certificate once renewed."""
    node = request.app[NODE]
    renewal = await node.store.get_renewal(request.match_info["renewal_id"])
    if renewal is None:
        raise NotFound("unknown renewal; run idwall device renew again")
    status = public_status(renewal, now=node.clock())
    answer: dict[str, Any] = {"renewal_id": renewal.id, "device_id": renewal.device_id, "user": renewal.user_id,
                              "status": status, "expires_at": int(renewal.expires_at)}
    if status == "begun":
        answer["csr_pem"] = renewal.csr_pem
    elif status == "renewed":
        assert renewal.not_after is not None
        answer.update(certificate_pem=renewal.cert_pem, not_after=int(renewal.not_after), ca_pem=node.ca_pem)
    return web.json_response(answer)
