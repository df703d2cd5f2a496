"""The renewal page: where the user signs ``device.renew`` for the new key a device asked a certificate for.

``idwall device renew`` prints its URL. It must be opened in a browser that presents the device's current
certificate (the renewal is signed over that device's own connection) and is signed in there; the script
(``static/renew.js``) shows what will be signed, asks for a passkey bound to the device, and tells the user
to return to the terminal, which saves the new certificate. The page itself changes nothing.
"""

from __future__ import annotations

import re
import string

from aiohttp import web

from ..encoding import b64url_encode
from ..renewal import public_status
from .context import NODE, conn_for
from .pages import State, _hidden, _page, _status, _when, render

routes = web.RouteTableDef()

_RENEWAL_ID = re.compile(r"ren-[A-Za-z0-9_-]{1,124}")

RENEW_PAGE = string.Template("""<dl class="facts" id="facts"$facts_hidden>
<dt>User</dt><dd id="who">$user</dd>
<dt>Device</dt><dd id="device"><code>$device_id</code></dd>
<dt>New key</dt><dd><code id="new-key" class="wrap">$new_key</code></dd>
<dt>Link expires</dt><dd id="expires">$expires</dd>
</dl>
$status
<p id="signing" hidden>Your passkey will sign: <strong>renew the certificate of device <code>$device_id</code> for
the new key above</strong>. The old certificate stops working at once; your session moves to the new one.</p>
<p><button type="button" id="renew" class="primary" hidden>Renew with passkey</button></p>""")


def _state(status: str, *, this_device: bool) -> State:
    if status == "renewed":
        return State("success", "The certificate is renewed; return to the terminal.",
                     "The terminal saves the new device certificate.", "Import the new device.p12 into this browser.")
    if status == "expired":
        return State("expired", "This renewal request has expired.", "Renewal links only work for a few minutes.",
                     "Run idwall device renew again.")
    if not this_device:
        return State("other-device", "Open this page on the device being renewed.",
                     "A renewal is signed over that device's own connection: this browser presents another "
                     "certificate, or none.", "Open the link in a browser that uses this device's certificate.")
    return State("ready", "Renew this device's certificate.",
                 "Sign with a passkey bound to this device.", "Press Renew with passkey.")


@routes.get("/idwall/renew/{renewal_id}")
async def renew_page(request: web.Request) -> web.Response:
    """The passkey page of one renewal request (the CLI prints its URL)."""
    node = request.app[NODE]
    renewal_id = request.match_info["renewal_id"]
    renewal = await node.store.get_renewal(renewal_id) if _RENEWAL_ID.fullmatch(renewal_id) else None
    data = {"page": "renew", "renewal-id": renewal_id}
    if renewal is None:
        state = State("unknown", "Unknown renewal.", "No renewal request has this link.",
                      "Check that you opened the link the terminal printed, or run idwall device renew again.")
        body = render(RENEW_PAGE, user="—", device_id="—", new_key="—", expires="—", facts_hidden=_hidden(True),
                      status=_status(state))
        return _page(request, title="Renew your device certificate", script="renew.js", body=body, status=404,
                     data=data)
    conn = conn_for(request)
    resolved = await node.resolve(conn)
    status = public_status(renewal, now=node.clock())
    state = _state(status, this_device=resolved is not None and resolved.device.id == renewal.device_id)
    body = render(RENEW_PAGE, user=renewal.user_id, device_id=renewal.device_id,
                  new_key=b64url_encode(renewal.spki_sha256), expires=_when(renewal.expires_at),
                  facts_hidden=_hidden(False), status=_status(state))
    return _page(request, title="Renew your device certificate", script="renew.js", body=body,
                 data={**data, "state": state.state})
