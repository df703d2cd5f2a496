"""Shared pieces of the real-browser tests: launching Debian's Chromium through Playwright, browser contexts that
trust the gateway (through Playwright's TLS proxy, never ``ignore_https_errors``), CDP virtual passkeys, and the
checks every page gets (no CSP violations, no script errors); and the story of the console suites (a gateway, a
browser, devices enrolled on the enrollment page, signing in, the signing dialog, screenshots of each state)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
import os
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, TypeVar

import playwright.async_api as playwright_api
import pytest

from idwall import pki

from .api import begin_enroll, call_fresh
from .gateway import GatewayUnderTest, start_test_gateway

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

    def watched(self) -> Iterator[None]:
        """A fixture's body: forget what earlier tests logged, then fail if this test left a CSP violation or a
        script error in any page."""
        self.lines.clear()
        yield
        self.assert_clean()


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


# --------------------------------------------------------------------------- the console suites' story

#: the wide screenshots (the narrow ones are VIEWPORT)
SHOT_WIDE = {"width": 1280, "height": 900}
CEREMONY_TIMEOUT = 15_000  # ms; a virtual authenticator answers in well under a second
LIGHT = {"color_scheme": "light"}
# From a page of the gateway's origin: begin a signed action, and answer the status and body of the refusal.
BEGIN_ACTION_JS = """async (action) => {
  const response = await fetch("/idwall/api/actions/begin", {method: "POST", body: JSON.stringify({action}),
    headers: {"Content-Type": "application/json", Accept: "application/json"}});
  return [response.status, await response.json()];
}"""


@dataclass
class BrowserDevice:
    """A device enrolled through the enrollment page: its key and certificate files, and its owner's passkeys."""

    device_id: str
    enrollment_id: str
    cert: Path
    key: Path
    credentials: list[dict[str, Any]]


@dataclass
class Browsing:
    """A browser context presenting a device certificate, signed in, on a page."""

    context: Any
    page: Any


@dataclass
class Story:
    """One gateway and one browser that a module's tests share, in order; screenshots are ``prefix``-NAME-WIDTH.png."""

    gw: GatewayUnderTest
    browser: Any
    console: Console
    prefix: str
    devices: dict[str, BrowserDevice] = field(default_factory=dict)
    root: str | None = None
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.gw.url

    async def page_in(self, context: Any) -> Any:
        page = await context.new_page()
        self.console.attach(page)
        return page

    async def ledger(self) -> list[dict[str, Any]]:
        return await self.gw.store.ledger_entries()

    async def shots(self, page: Any, name: str, *, full_page: bool = True) -> None:
        """SHOTS/``prefix``-``name``-1280.png and -400.png, light; the page is left at 1280 px."""
        await page.set_viewport_size(SHOT_WIDE)
        await page.screenshot(path=str(SHOTS / f"{self.prefix}-{name}-1280.png"), full_page=full_page)
        await page.set_viewport_size(VIEWPORT)
        await fits(page, VIEWPORT["width"])
        await page.screenshot(path=str(SHOTS / f"{self.prefix}-{name}-400.png"), full_page=full_page)
        await page.set_viewport_size(SHOT_WIDE)


S = TypeVar("S", bound=Story)


@asynccontextmanager
async def story_of(kind: type[S], directory: Path, prefix: str, **gateway: Any) -> AsyncIterator[S]:
    """``idwall init`` in ``directory`` and a started gateway (``gateway`` goes to start_test_gateway), Chromium
    trusting its CA through Playwright's TLS proxy; a ``kind`` story of both, stopped when the block ends."""
    gw = await start_test_gateway(directory, None, **gateway)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NODE_EXTRA_CA_CERTS", gw.init["ca_pem"])
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                try:
                    yield kind(gw, browser, Console(), prefix)
                finally:
                    await browser.close()
    finally:
        await gw.running.stop(drain=1)


def needs(value: Any, what: str) -> Any:
    """``value``, or the test fails saying that an earlier test of the story did not make it."""
    if value is None:
        pytest.fail(f"{what} is missing: an earlier test of this module failed")
    return value


async def enrollment_answer(story: Story, enrollment_id: str) -> dict[str, Any]:
    """What the polling CLI reads of an enrollment (status, and the certificate once approved)."""
    status, answer, _ = await call_fresh(story.gw, "GET", f"/idwall/api/enroll/{enrollment_id}")
    assert status == 200, answer
    return answer


async def enroll_in_browser(story: Story, who: str, device_name: str, *, code: str | None = None,
                            user: str | None = None, shot: str | None = None) -> BrowserDevice:
    """Begin an enrollment with a new device key, create the passkey on its page in Chromium, keep the files."""
    key, status, begun = await begin_enroll(story.gw, code=code, user=user, device_name=device_name)
    assert status == 200, begun
    context = await anonymous_context(story.browser, story.gw.running.node, story.gw.dir / f"{who}-anon", SHOT_WIDE,
                                      **LIGHT)
    try:
        page = await story.page_in(context)
        cdp, authenticator_id = await virtual_authenticator(context, page)
        await page.goto(begun["enroll_url"])
        await page.wait_for_selector("#create:not([hidden])")
        await page.click("#create")
        # a waiting self-service device may then say its owner can approve it ("recover")
        await page.wait_for_selector('#status[data-state="success"], #status[data-state="pending"],'
                                     ' #status[data-state="recover"]', timeout=CEREMONY_TIMEOUT)
        if await page.is_visible("#root-fingerprint"):
            story.root = (await page.text_content("#root-fingerprint") or "").strip()
        if shot:
            await story.shots(page, shot)
        credentials = await credentials_of(cdp, authenticator_id)
    finally:
        await context.close()
    answer = await enrollment_answer(story, begun["enrollment_id"])
    cert, key_path = write_device(story.gw.dir / "devices", who, answer.get("certificate_pem"), key)
    device = BrowserDevice(answer["device_id"], begun["enrollment_id"], cert, key_path, credentials)
    story.devices[who] = device
    return device


async def sign_in(story: Story, device: BrowserDevice, target: str) -> Browsing:
    """A light context with the device's certificate and passkeys: ``target`` sends it to the passkey login, and
    the browser comes back to ``target`` signed in."""
    context = await device_context(story.browser, story.base, device.cert, device.key, SHOT_WIDE, **LIGHT)
    page = await story.page_in(context)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    await add_credentials(cdp, authenticator_id, device.credentials)
    await page.goto(story.base + target)
    assert page.url.startswith(story.base + "/idwall/login?next="), page.url
    await page.wait_for_selector("#signin:not([hidden])")
    async with page.expect_navigation(url=story.base + target, timeout=CEREMONY_TIMEOUT):
        await page.click("#signin")
    return Browsing(context, page)


async def sign_dialog(story: Story, page: Any, words: list[str], shot: str | None = None) -> str:
    """The signing dialog is open and says ``words``; press Sign with passkey. Returns what it said."""
    await page.wait_for_selector("#sign[open]")
    said = await page.text_content("#sign-words") or ""
    for part in words:
        assert part in said, (part, said)
    assert '"nonce"' in (await page.text_content("#sign-json") or "")  # the exact action, as JSON
    if shot:
        await story.shots(page, shot, full_page=False)  # a modal's backdrop covers the viewport only
    await page.click("#sign-ok")
    await page.wait_for_selector("#sign[open]", state="detached", timeout=CEREMONY_TIMEOUT)
    return said


async def status_says(page: Any, pattern: str) -> str:
    """Wait until the page's live region says something matching ``pattern``; what it says."""
    await page.wait_for_function("(p) => new RegExp(p).test(document.getElementById('status').textContent)",
                                 arg=pattern, timeout=CEREMONY_TIMEOUT)
    assert await page.is_hidden("#alert"), await page.text_content("#alert")
    return await page.text_content("#status") or ""


async def ledger_verified(story: Story, page: Any) -> list[dict[str, Any]]:
    """Open the console's Ledger page on ``page``: the whole chain verified in the gateway against the story's root,
    as many entries as the store holds. Returns those entries."""
    await page.goto(story.base + "/idwall/admin/ledger")
    await page.wait_for_selector('#verify-result[data-state="ok"]', timeout=CEREMONY_TIMEOUT)
    entries = await story.ledger()
    verdict = await page.text_content("#verify-result") or ""
    assert f"Chain verified: {len(entries)} entries up to seq {entries[-1]['seq']}" in verdict, verdict
    assert story.root and story.root in verdict, (story.root, verdict)
    return entries
