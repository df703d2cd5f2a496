"""Certificate renewal in real Chromium (Playwright, CDP virtual passkey) against a real gateway: the device's
``idwall device renew`` prints the renewal page, the browser that presents the device's certificate signs it with
the passkey bound to the device, the command saves the new files, and the device keeps working on the new
certificate in the same session while the old one is refused. Screenshots of every page state (400 px wide)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import playwright.async_api as playwright_api
import pytest

from idwall import pki
from tests.helpers.api import call
from tests.helpers.browser import (
    CHROMIUM, SHOTS, Console, anonymous_context, credentials_of, device_context, device_page, launch, state_of,
    virtual_authenticator, write_device,
)
from tests.helpers.cli import start_cli_until_url

assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
TIMEOUT = 20000


async def test_a_device_renews_in_chromium_and_keeps_working_on_the_new_certificate(
        gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", gateway.init["ca_pem"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    base, gw = gateway.url, gateway.running.node
    key = pki.generate_p256_key()
    async with gateway.session() as anon:
        _, begun = await call(anon, "POST", base + "/idwall/api/enroll/begin", {
            "code": gateway.init["bootstrap_code"], "csr_pem": pki.make_csr(key, "laptop"), "device_name": "laptop"})
    console = Console()
    async with playwright_api.async_playwright() as pw:
        browser = await launch(pw)
        try:
            # enrollment (as in the smoke test): the passkey is created in the browser
            anonymous = await anonymous_context(browser, gw, tmp_path / "anon")
            page = await anonymous.new_page()
            console.attach(page)
            cdp, authenticator = await virtual_authenticator(anonymous, page)
            await page.goto(begun["enroll_url"])
            await page.wait_for_selector("#create:not([hidden])")
            await page.click("#create")
            await page.wait_for_selector('#status[data-state="success"]', timeout=TIMEOUT)
            passkeys = await credentials_of(cdp, authenticator)
            async with gateway.session() as anon:
                _, view = await call(anon, "GET", f"{base}/idwall/api/enroll/{begun['enrollment_id']}")
            directory = tmp_path / "device"
            # what idwall device enroll leaves: device.pem, device-key.pem, ca.pem
            cert_path, key_path = write_device(directory, "device", view["certificate_pem"], key)
            (directory / "ca.pem").write_text(Path(gateway.init["ca_pem"]).read_text())

            # the device's browser signs in
            laptop, page, _, _ = await device_page(browser, base, cert_path, key_path, passkeys, console)
            await page.goto(base + "/idwall/login?next=/")
            await page.wait_for_selector("#signin:not([hidden])")
            async with page.expect_navigation(url=base + "/", timeout=TIMEOUT):
                await page.click("#signin")

            # the terminal asks for a renewal; another browser is told to open the page on the device
            process, url = await start_cli_until_url("device", "renew", "--gateway", base, "--dir", str(directory),
                                                     "--timeout", "60",
                                                     printed=b"in a browser that uses this device's certificate")
            other = await anonymous.new_page()
            console.attach(other)
            await other.goto(url)
            assert await state_of(other) == "other-device"
            assert not await other.is_visible("#renew")
            await other.screenshot(path=str(SHOTS / "renew-other-device.png"), full_page=True)

            # the device's browser: what will be signed, in words, then the passkey
            await page.goto(url)
            await page.wait_for_selector("#renew:not([hidden])")
            assert await state_of(page) == "ready"
            assert "renew the certificate of device" in (await page.text_content("#signing") or "")
            await page.screenshot(path=str(SHOTS / "renew-ready.png"), full_page=True)
            await page.click("#renew")
            await page.wait_for_selector('#status[data-state="success"]', timeout=TIMEOUT)
            assert not await page.is_visible("#renew")
            await page.screenshot(path=str(SHOTS / "renew-success.png"), full_page=True)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err
            assert b"renewed, valid until" in out

            # the old certificate no longer works; the new one continues the session without a new sign-in
            page = await laptop.new_page()
            console.attach(page)
            await page.goto(base + "/idwall/login")
            assert await state_of(page) == "unknown-device"
            renewed = await device_context(browser, base, directory / "device.pem", directory / "device-key.pem")
            page = await renewed.new_page()
            console.attach(page)
            await page.goto(base + "/idwall/login")
            assert await state_of(page) == "signed-in"
            answer = await page.goto(base + "/", wait_until="load")
            assert answer is not None and answer.status == 200
            await page.goto(url)
            assert await state_of(page) == "success"  # the used renewal, opened again
        finally:
            await browser.close()
    console.assert_clean()
