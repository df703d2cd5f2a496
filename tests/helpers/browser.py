"""Shared pieces of the real-browser tests: launching Debian's Chromium through Playwright, browser contexts that
trust the gateway (through Playwright's TLS proxy, never ``ignore_https_errors``), CDP virtual passkeys, and the
checks every page gets (no CSP violations, no script errors)."""

from __future__ import annotations

from datetime import datetime, timezone
import os
from pathlib import Path
from typing import Any

from idwall import pki

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# Screenshots of every page state go to build/screenshots (not tracked); the curated set in docs/screenshots
# was taken with IDWALL_SCREENSHOTS=docs/screenshots and is refreshed the same way.
SHOTS = Path(os.environ.get("IDWALL_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "build" / "screenshots")
VIEWPORT = {"width": 400, "height": 760}
WIDE = {"width": 1200, "height": 800}
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
                 "isUserVerified": True, "automaticPresenceSimulation": True}


class Console:
    """Everything the pages logged, so CSP violations and script errors fail the test."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("console", lambda msg: self.lines.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self.lines.append(f"pageerror: {err}"))

    def assert_clean(self) -> None:
        bad = [line for line in self.lines if "Content Security Policy" in line or line.startswith("pageerror")]
        assert not bad, bad


async def launch(pw: Any) -> Any:
    """Debian's Chromium (never a downloaded one)."""
    return await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)


async def virtual_authenticator(context: Any, page: Any, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """A CDP session on ``page`` with a virtual platform passkey authenticator; returns (cdp, authenticator id)."""
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options or AUTHENTICATOR})
    return cdp, added["authenticatorId"]


async def credentials_of(cdp: Any, authenticator_id: str) -> list[dict[str, Any]]:
    """The passkeys (private keys included) a virtual authenticator holds."""
    return (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id}))["credentials"]


async def add_credentials(cdp: Any, authenticator_id: str, credentials: list[dict[str, Any]]) -> None:
    """Put passkeys created elsewhere into a virtual authenticator (a context keeps its own authenticators)."""
    for credential in credentials:
        await cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator_id, "credential": credential})


async def state_of(page: Any) -> str:
    """The ``data-state`` of the page's status region."""
    return await page.get_attribute("#status", "data-state")


def write_device(directory: Path, name: str, cert_pem: str | None, key: Any) -> tuple[Path, Path]:
    """Write ``name``.pem (when given) and ``name``-key.pem into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    if cert_pem is not None:
        cert_path.write_text(cert_pem)
    pki.write_private_key(key_path, key)
    return cert_path, key_path


def unrelated_certificate(gw: Any, directory: Path) -> tuple[Path, Path]:
    """A device-CA certificate that no enrollment knows, written to ``directory`` (cert, key paths)."""
    key = pki.generate_p256_key()
    cert = pki.issue_device_cert(ca_cert=gw.device_ca_cert, ca_key=gw.device_ca_key,
                                 csr=pki.check_csr(pki.make_csr(key, "x")), device_id="dev-unused",
                                 now=datetime.now(timezone.utc), ttl=600)
    return write_device(directory, "unrelated", pki.cert_pem(cert), key)


async def anonymous_context(browser: Any, gw: Any, directory: Path, viewport: dict[str, int] | None = None,
                            **options: Any) -> Any:
    """A context that presents no certificate to the gateway but still verifies the gateway's server certificate.

    A certificate for another origin routes the context through Playwright's TLS proxy (which trusts
    ``NODE_EXTRA_CA_CERTS``); nothing is presented to the gateway itself.
    """
    cert_path, key_path = unrelated_certificate(gw, directory)
    return await browser.new_context(viewport=viewport or VIEWPORT, client_certificates=[
        {"origin": "https://localhost:1", "certPath": str(cert_path), "keyPath": str(key_path)}], **options)


async def device_context(browser: Any, base: str, cert_path: Path, key_path: Path,
                         viewport: dict[str, int] | None = None, **options: Any) -> Any:
    """A context whose connections to ``base`` present this device certificate (``options`` go to Playwright)."""
    return await browser.new_context(viewport=viewport or VIEWPORT, client_certificates=[
        {"origin": base, "certPath": str(cert_path), "keyPath": str(key_path)}], **options)


async def fits(page: Any, width: int) -> None:
    """Nothing sticks out to the right of a ``width`` px viewport (no horizontal scrolling)."""
    scroll_width = await page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, scroll_width


async def tab_order(page: Any, count: int) -> list[str]:
    """What Tab focuses, from the top of the page: id, else the accessible text."""
    await page.locator("body").focus()
    order = []
    for _ in range(count):
        await page.keyboard.press("Tab")
        focused = page.locator(":focus")
        order.append(await focused.get_attribute("id") or (await focused.text_content() or "").strip())
    return order


async def device_page(browser: Any, base: str, cert_path: Path, key_path: Path, passkeys: list[dict[str, Any]],
                      console: Console) -> tuple[Any, Any, Any, str]:
    """A context presenting this device certificate, and a page in it whose virtual authenticator holds
    ``passkeys`` (made elsewhere, e.g. at enrollment); returns (context, page, CDP session, authenticator id)."""
    context = await device_context(browser, base, cert_path, key_path)
    page = await context.new_page()
    console.attach(page)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    await add_credentials(cdp, authenticator_id, passkeys)
    return context, page, cdp, authenticator_id
