"""idwall.web.page_renew over real TLS: the renewal page tells the user, in words, what their passkey will sign and
whether this browser is the device being renewed; it renders with the strict CSP and changes nothing."""

from __future__ import annotations

from idwall.web.pages import CSP
from tests.helpers.api import begin_renewal, bootstrap, call_fresh, counts, enroll, invite, login, renewed, sign


def _state(html: str) -> str:
    return html.split('id="status" class="status" role="status" aria-live="polite" data-state="', 1)[1].split('"')[0]


async def test_the_page_on_the_device_being_renewed_is_ready_to_sign(gateway) -> None:
    admin = await bootstrap(gateway)
    _, _, begun = await begin_renewal(gateway, admin)
    before = await counts(gateway)
    status, html, headers = await call_fresh(gateway, "GET", "/idwall/renew/" + begun["renewal_id"], device=admin)
    assert status == 200 and headers["Content-Security-Policy"] == CSP
    assert _state(html) == "ready" and 'data-state="ready"' in html
    assert admin.device_id in html and 'src="/idwall/static/renew.js"' in html
    assert "renew the certificate of device" in html
    assert await counts(gateway) == before
    status, script, headers = await call_fresh(gateway, "GET", "/idwall/static/renew.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and "device.renew" in script


async def test_another_browser_is_told_to_open_the_page_on_the_device(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
    _, _, begun = await begin_renewal(gateway, admin)
    for device in (None, bob):
        status, html, _ = await call_fresh(gateway, "GET", "/idwall/renew/" + begun["renewal_id"], device=device)
        assert status == 200 and _state(html) == "other-device", html


async def test_an_unknown_or_used_renewal(gateway) -> None:
    admin = await bootstrap(gateway)
    for path in ("/idwall/renew/ren-nope", "/idwall/renew/enr-not-a-renewal"):
        status, html, _ = await call_fresh(gateway, "GET", path, device=admin)
        assert status == 404 and _state(html) == "unknown", html
    key, _, begun = await begin_renewal(gateway, admin)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        status, answer = await sign(gateway, admin, client, {"type": "device.renew", "device_id": admin.device_id,
                                                             "csr_pem": begun["csr_pem"]})
        assert status == 200, answer
    new = renewed(gateway, admin, key, answer["result"]["certificate_pem"])
    status, html, _ = await call_fresh(gateway, "GET", "/idwall/renew/" + begun["renewal_id"], device=new)
    assert status == 200 and _state(html) == "success", html
