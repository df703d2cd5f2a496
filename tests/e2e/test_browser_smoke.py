"""The pages in a real browser (Chromium via Playwright) against a real gateway: enroll with a virtual passkey,
sign in over mTLS with the issued certificate, land on the upstream, sign out; the no-certificate state; no CSP
violations anywhere. Screenshots (400 px wide) go to browser_helpers.SHOTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.browser import (
    CHROMIUM, SHOTS, Console, anonymous_context, credentials_of, device_page, launch, state_of,
    virtual_authenticator, write_device,
)
from idwall import pki

import playwright.async_api as playwright_api

# CI installs Debian's chromium (.ci/run); a missing browser must fail the suite, never skip it.
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"


async def test_enroll_sign_in_and_out_in_chromium(gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Playwright's TLS proxy (which presents client certificates) checks the gateway against Node's trust store.
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", gateway.init["ca_pem"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = gateway.url
    gw = gateway.running.node

    # The device side of `idwall device enroll`: key, CSR, begin with the bootstrap code.
    device_key = pki.generate_p256_key()
    async with gateway.session() as client:
        async with client.post(base + "/idwall/api/enroll/begin", json={
                "code": gateway.init["bootstrap_code"], "csr_pem": pki.make_csr(device_key, "browser"),
                "device_name": "Chromium <smoke>"}) as resp:
            assert resp.status == 200, await resp.text()
            begun = await resp.json()

    console = Console()

    async with playwright_api.async_playwright() as pw:
        browser = await launch(pw)
        try:
            # presents no certificate to the gateway: the enrollment page sees a browser without one
            anonymous = await anonymous_context(browser, gw, tmp_path)
            page = await anonymous.new_page()
            console.attach(page)

            # 1. no certificate: the login page says so and links to enrollment
            await page.goto(base + "/idwall/login?next=/app")
            assert await state_of(page) == "no-certificate"
            assert await page.get_attribute("#status-link", "href") == "/idwall/enroll"
            await page.screenshot(path=str(SHOTS / "login-no-certificate.png"), full_page=True)
            await page.goto(base + "/idwall/enroll")
            await page.screenshot(path=str(SHOTS / "enroll-help.png"), full_page=True)

            # 2. the enrollment page: create the passkey with a virtual authenticator
            cdp, authenticator_id = await virtual_authenticator(anonymous, page)
            await page.goto(begun["enroll_url"])
            await page.wait_for_selector("#create:not([hidden])")
            assert await page.text_content("#device") == "Chromium <smoke>"
            await page.screenshot(path=str(SHOTS / "enroll-ready.png"), full_page=True)
            await page.click("#create")
            await page.wait_for_selector('#status[data-state="success"]', timeout=15000)
            device_id = await page.text_content("#device-id")
            assert device_id and device_id.startswith("dev")
            assert await page.is_visible("#root-fingerprint")  # the bootstrap admin's root of trust
            await page.screenshot(path=str(SHOTS / "enroll-success.png"), full_page=True)
            credentials = await credentials_of(cdp, authenticator_id)
            assert len(credentials) == 1

            # the page reloaded after success shows the used enrollment, not a new button
            await page.reload()
            # (selectors, not wait_for_function: the page's CSP forbids the eval that polling would need)
            await page.wait_for_selector('#status:not([data-state="ready"])')
            assert await state_of(page) == "success"
            assert not await page.is_visible("#create")

            # 3. the CLI's poll gets the certificate
            async with gateway.session() as client:
                async with client.get(f"{base}/idwall/api/enroll/{begun['enrollment_id']}") as resp:
                    status = await resp.json()
            assert status["status"] == "active"
            cert_path, key_path = write_device(tmp_path, "device", status["certificate_pem"], device_key)

            # 4. a browser with the device certificate and the same passkey signs in and lands on the upstream
            _, page, cdp, authenticator_id = await device_page(browser, base, cert_path, key_path, credentials, console)
            await page.goto(base + "/idwall/login?next=/app/page%3Fx=1&reason=expired")
            await page.wait_for_selector("#signin:not([hidden])")
            assert await state_of(page) == "expired"
            assert "Chromium <smoke>" in (await page.text_content("#device") or "")
            await page.screenshot(path=str(SHOTS / "login-ready.png"), full_page=True)
            async with page.expect_navigation(url=f"{base}/app/page?x=1", timeout=15000) as navigation:
                await page.click("#signin")
            landed = await (await navigation.value).json()
            assert landed["path"] == "/app/page"
            assert any(name.lower() == "x-idwall-assertion" for name, _ in landed["headers"])

            # 5. back on the login page: signed in, then sign out
            await page.goto(base + "/idwall/login?next=//evil.example")
            assert await state_of(page) == "signed-in"
            assert await page.get_attribute("#continue", "href") == "/"
            await page.wait_for_selector("#signout:not([hidden])")
            await page.screenshot(path=str(SHOTS / "login-signed-in.png"), full_page=True)
            await page.click("#signout")
            await page.wait_for_selector('#status[data-state="signed-out"]')
            assert not await page.is_visible("#signout")
            async with page.expect_response(f"{base}/app") as answer:
                await page.evaluate("fetch('/app', {headers: {Accept: 'application/json'}})")
            assert (await answer.value).status == 401

            # 6. a passkey prompt that fails: the page says it was cancelled and offers a retry
            await cdp.send("WebAuthn.clearCredentials", {"authenticatorId": authenticator_id})
            await page.click("#signin")
            await page.wait_for_selector('#status[data-state="cancelled"], #status[data-state="error"]',
                                         timeout=20000)
            assert await page.is_enabled("#signin")
            await page.screenshot(path=str(SHOTS / "login-cancelled.png"), full_page=True)
        finally:
            await browser.close()
    console.assert_clean()
