"""IDWall end to end in a real browser (Debian's Chromium through Playwright) against one real gateway.

The story, in order (the tests share one gateway, one browser and what earlier tests created):

1. the first administrator runs ``idwall device enroll`` with the bootstrap code; Chromium opens the page it
   prints and creates the passkey (CDP virtual authenticator); the CLI writes the device files;
2. the administrator signs in with that certificate and passkey, opens the SOC console and signs invites;
3. a user enrolls with an invite code the same way, signs in and lands on the whoami app, which shows the
   identity it verified; a WebSocket through the gateway echoes;
4. the administrator kills the user's session in the console: the WebSocket drops (1006) at once and the
   user's next navigation is the login page;
5. what people see when things go wrong: unknown, cancelled, unverified and expired enrollments, refused and
   cancelled sign-ins, an expired session, no certificate, an unknown certificate, a wrong code in the CLI;
6. accessibility basics: names and labels, keyboard operation and focus, a status region, 400 px wide.

Every page state is captured as e2e-*.png in browser_helpers.SHOTS (build/screenshots by default).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509

from tests.helpers.browser import (
    CHROMIUM, SHOTS, VIEWPORT, WIDE, Console, add_credentials, anonymous_context, credentials_of, device_context,
    fits, launch, state_of, tab_order, unrelated_certificate, virtual_authenticator,
)
from idwall import pki
from idwall.config import Config, load_config
from idwall.demo import start_upstream, whoami_app
from idwall.testing.fixtures import client_ssl_context, free_port, init_gateway_dir
from idwall.upstream import AssertionVerifier, JWKSCache
from idwall.web.server import RunningGateway, start_gateway

import playwright.async_api as playwright_api

# CI installs Debian's chromium (.ci/run); a missing browser must fail the suite, never skip it.
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]  # tests/e2e/ is two levels below the repository
CEREMONY_TIMEOUT = 15_000  # ms; a virtual authenticator answers in well under a second
DEVICE_FILES = ("device.pem", "device-key.pem", "device.p12", "ca.pem")
ALICE = {"user": "alice", "name": "Alice Example", "email": "alice@example.com", "groups": ["eng"], "admin": False}
BOB = {"user": "bob", "name": "Bob Example", "email": "bob@example.com", "groups": ["ops"], "admin": False}

# A signed action from a page of the gateway's origin: begin, passkey assertion over the action, finish.
SIGNED_ACTION_JS = """async (action) => {
  const post = async (path, body) => {
    const response = await fetch(path, {method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", Accept: "application/json"}});
    const data = await response.json();
    if (!response.ok) throw new Error(path + " answered " + response.status + ": " + JSON.stringify(data));
    return data;
  };
  const begun = await post("/idwall/api/actions/begin", {action});
  const credential = await navigator.credentials.get(
    {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begun.options)});
  return (await post("/idwall/api/actions/finish", {action_id: begun.action_id, credential: credential.toJSON()}))
    .result;
}"""

# Opens a WebSocket to the app through the gateway and records what arrives and how it closes.
OPEN_WEBSOCKET_JS = """() => {
  const record = {messages: [], closed: null};
  window.e2e = record;
  const ws = new WebSocket(`wss://${location.host}/ws`);
  ws.onopen = () => ws.send("ping through the gateway");
  ws.onmessage = (event) => record.messages.push(event.data);
  ws.onclose = (event) => { record.closed = event.code; };
  record.ws = ws;
}"""


@dataclass
class Device:
    """An enrolled device: the CLI's files, its id, and the passkeys its owner created."""

    out: Path
    device_id: str
    credentials: list[dict[str, Any]]

    @property
    def cert(self) -> Path:
        return self.out / "device.pem"

    @property
    def key(self) -> Path:
        return self.out / "device-key.pem"


@dataclass
class SignedIn:
    """A browser context presenting a device certificate, with the device's passkeys, on a page."""

    context: Any
    page: Any
    cdp: Any
    authenticator_id: str


@dataclass
class World:
    """The one gateway, upstream and browser of this module, and what the tests build on each other."""

    dir: Path
    info: dict[str, Any]
    config: Config
    running: RunningGateway
    browser: Any
    console: Console
    devices: dict[str, Device] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    admin: SignedIn | None = None
    alice: SignedIn | None = None
    alice_sid: str | None = None

    @property
    def base(self) -> str:
        return self.config.public_url

    @property
    def gw(self) -> Any:
        return self.running.node

    async def page_in(self, context: Any) -> Any:
        page = await context.new_page()
        self.console.attach(page)
        return page


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """``idwall init``, the whoami upstream (verifies the assertion with the gateway's JWKS), the gateway, Chromium."""
    directory = tmp_path_factory.mktemp("e2e")
    upstream_port = free_port()
    info = await asyncio.to_thread(init_gateway_dir, directory / "gw", port=free_port(),
                                   upstream=f"http://127.0.0.1:{upstream_port}")
    config = load_config(info["config"])
    base = config.public_url
    verifier = AssertionVerifier(
        keys=JWKSCache(base + "/.well-known/idwall/jwks.json", ssl_context=ssl.create_default_context(
            cafile=info["ca_pem"])), issuer=base, audience="whoami")
    upstream = await start_upstream(whoami_app(verifier), upstream_port)
    running = await start_gateway(config)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # Playwright's TLS proxy (which presents client certificates) checks the gateway against Node's store.
            patch.setenv("NODE_EXTRA_CA_CERTS", info["ca_pem"])
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                try:
                    yield World(directory, info, config, running, browser, Console())
                finally:
                    await browser.close()
    finally:
        running.node.clock = time.time
        await running.stop(drain=1)
        await upstream.cleanup()


@pytest.fixture(autouse=True)
def clean_console(world: World) -> Any:
    """No test may leave a CSP violation or a script error in any page."""
    world.console.lines.clear()
    yield
    world.console.assert_clean()


async def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    """SHOTS/e2e-``name``.png"""
    await page.screenshot(path=str(SHOTS / f"e2e-{name}.png"), full_page=full_page)


def needs(value: Any, what: str) -> Any:
    """``value``, which an earlier test of this module made; fail clearly when that test did not."""
    if value is None:
        pytest.fail(f"{what} is missing: an earlier test of this module failed")
    return value


# --------------------------------------------------------------------------- the CLI and the enrollment page


async def start_cli_enroll(world: World, code: str, out: Path, name: str) -> tuple[Any, str]:
    """``python -m idwall device enroll`` in a subprocess; returns it and the page URL it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", "device", "enroll", "--gateway", world.base, f"--code={code}",
        "--out", str(out), "--ca", world.info["ca_pem"], "--name", name, "--timeout", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    assert process.stdout is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        seen += line
        found = re.search(rb"Open (https://\S+) in a browser", line)
        if found:
            return process, found.group(1).decode()
        if not line:
            _, err = await process.communicate()
            pytest.fail(f"idwall device enroll printed no page URL: {seen!r} {err!r}")


async def enroll_with_cli(world: World, who: str, code: str, device_name: str, *, shots: str | None) -> Device:
    """The whole enrollment: the CLI, the passkey in a browser without a certificate, the CLI's files."""
    out = world.dir / f"{who}-device"
    process, url = await start_cli_enroll(world, code, out, device_name)
    assert url.startswith(world.base + "/idwall/enroll/")
    context = await anonymous_context(world.browser, world.gw, world.dir / f"{who}-anon")
    try:
        page = await world.page_in(context)
        cdp, authenticator_id = await virtual_authenticator(context, page)
        await page.goto(url)
        await page.wait_for_selector("#create:not([hidden])")
        assert await state_of(page) == "ready"
        assert await page.text_content("#device") == device_name
        if shots:
            await shot(page, f"{shots}-ready")
        await page.click("#create")
        await page.wait_for_selector('#status[data-state="success"]', timeout=CEREMONY_TIMEOUT)
        device_id = (await page.text_content("#device-id")) or ""
        assert device_id.startswith("dev")
        if shots:
            await shot(page, f"{shots}-success")
        credentials = await credentials_of(cdp, authenticator_id)
        assert len(credentials) == 1
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await context.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, (stdout, stderr)
    assert b"Device enrolled" in stdout
    for name in DEVICE_FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "device-key.pem").stat().st_mode & 0o777 == 0o600
    assert (out / "device.p12").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "device.pem").read_bytes())
    assert cert.issuer == world.gw.device_ca_cert.subject
    assert cert.public_key() == pki.load_private_key(out / "device-key.pem").public_key()
    assert pki.device_id_from_cert(cert) == device_id
    assert "BEGIN CERTIFICATE" in (out / "ca.pem").read_text()
    device = Device(out, device_id, credentials)
    world.devices[who] = device
    return device


async def open_signed_in(world: World, device: Device, target: str, *, viewport: dict[str, int] = VIEWPORT,
                         shots: str | None = None) -> SignedIn:
    """A context with the device's certificate and passkey: ``target`` sends it to the login page, the passkey
    signs in, and the browser is back on ``target``."""
    context = await device_context(world.browser, world.base, device.cert, device.key, viewport)
    page = await world.page_in(context)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    await add_credentials(cdp, authenticator_id, device.credentials)
    await page.goto(world.base + target)
    assert page.url.startswith(world.base + "/idwall/login?next="), page.url
    await page.wait_for_selector("#signin:not([hidden])")
    assert await state_of(page) == "ready"
    if shots:
        await shot(page, shots)
    async with page.expect_navigation(url=world.base + target, timeout=CEREMONY_TIMEOUT):
        await page.click("#signin")
    return SignedIn(context, page, cdp, authenticator_id)


# --------------------------------------------------------------------------- 1-4: the story


async def test_admin_enrolls_with_the_cli_and_a_passkey_in_the_browser(world: World) -> None:
    device = await enroll_with_cli(world, "admin", world.info["bootstrap_code"], "Admin laptop",
                                   shots="admin-enroll")
    assert device.device_id
    # the bootstrap code is single use: a second enrollment with it is refused by the gateway, and the CLI says so
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", "device", "enroll", "--gateway", world.base,
        f"--code={world.info['bootstrap_code']}", "--out", str(world.dir / "again"), "--ca", world.info["ca_pem"],
        "--timeout", "5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode != 0
    assert b"enrollment refused" in stderr, stderr
    assert not (world.dir / "again").exists()


async def test_admin_signs_in_to_the_console_and_signs_invites(world: World) -> None:
    admin = needs(world.devices.get("admin"), "the admin's device")
    world.admin = await open_signed_in(world, admin, "/idwall/admin", viewport=WIDE)
    page = world.admin.page
    await page.wait_for_selector("#sessions-body tr")
    assert "admin" in (await page.text_content("#sessions-body") or "")
    # Invites need the admin's passkey over the exact action; signed from the whoami app page (same origin).
    await page.goto(world.base + "/")
    for who in (ALICE, BOB):
        result = await page.evaluate(SIGNED_ACTION_JS, {"type": "invite.create", **who})
        assert result["code"] and result["expires_at"] > time.time()
        world.codes[who["user"]] = result["code"]
    await page.goto(world.base + "/idwall/admin")
    await page.wait_for_selector("#sessions-body tr")


async def test_user_enrolls_signs_in_and_the_app_shows_the_verified_identity(world: World) -> None:
    code = needs(world.codes.get("alice"), "alice's invite")
    device = await enroll_with_cli(world, "alice", code, "Alice's laptop", shots="enroll")
    world.alice = await open_signed_in(world, device, "/hello?x=1", shots="login-ready")
    page = world.alice.page
    assert await page.text_content("h1") == "Hello, Alice Example"
    text = await page.text_content("body") or ""
    assert '"alice"' in text  # sub
    assert device.device_id in text  # the device claim
    assert '"alice@example.com"' in text
    assert '"hwk"' in text  # amr: the passkey-bound device key
    await shot(page, "app-identity")


async def test_websocket_through_the_gateway(world: World) -> None:
    alice = needs(world.alice, "alice's signed-in browser")
    page = alice.page
    await page.evaluate(OPEN_WEBSOCKET_JS)
    await page.wait_for_function("window.e2e.messages.length >= 2", timeout=10_000)
    greeting, echo = await page.evaluate("window.e2e.messages")
    assert echo == "ping through the gateway"
    hello = json.loads(greeting)
    assert hello["hello"] == "alice" and hello["sid"]
    world.alice_sid = hello["sid"]
    assert await page.evaluate("window.e2e.closed") is None


async def test_admin_kills_the_session_in_the_console(world: World) -> None:
    admin = needs(world.admin, "the admin's console")
    alice = needs(world.alice, "alice's signed-in browser")
    sid = needs(world.alice_sid, "alice's WebSocket")
    page = admin.page
    session_button = f'button[data-scope="session"][data-target="{sid}"]'
    kill_button = page.locator("#sessions-body " + session_button)
    await kill_button.wait_for(timeout=10_000)
    # the console refreshes itself every 2 s; the row shows the live WebSocket
    row = page.locator("#sessions-body tr", has=page.locator(session_button))
    await row.get_by_text("websocket", exact=False).wait_for(timeout=10_000)
    await shot(page, "console")
    await kill_button.click()
    await page.wait_for_selector("#confirm[open]")
    await page.fill("#confirm-reason", "e2e: suspicious activity")
    await shot(page, "console-confirm", full_page=False)  # the modal's backdrop covers the viewport only
    started = time.monotonic()
    await page.click("#confirm-ok")
    await page.wait_for_selector("#status:has-text('Cut')", timeout=10_000)
    status = await page.text_content("#status") or ""
    assert re.search(r"Cut [1-9]\d* connection\(s\): 1 session\(s\) revoked", status), status
    # the user's WebSocket is cut at once, not at the next message
    await alice.page.wait_for_function("window.e2e.closed !== null", timeout=5_000)
    assert await alice.page.evaluate("window.e2e.closed") == 1006
    assert time.monotonic() - started < 5
    await page.locator("#kills-body tr").first.wait_for()
    assert "e2e: suspicious activity" in (await page.text_content("#kills-body") or "")
    await kill_button.wait_for(state="detached", timeout=10_000)
    await shot(page, "console-killed")
    # the next navigation is the login page
    await alice.page.goto(world.base + "/hello")
    assert alice.page.url == world.base + "/idwall/login?next=/hello&reason=expired"
    await alice.page.wait_for_selector("#signin:not([hidden])")
    assert await state_of(alice.page) == "expired"
    assert "session ended" in (await alice.page.text_content("[role=status]") or "")
    await shot(alice.page, "login-after-kill")


# --------------------------------------------------------------------------- 5: what people see when it goes wrong


async def expect_state(page: Any, states: str, *, timeout: int = CEREMONY_TIMEOUT) -> str:
    """Wait for one of ``states`` (space separated) in the status region; it must say what to do next."""
    selector = ", ".join(f'#status[data-state="{state}"]' for state in states.split())
    await page.wait_for_selector(selector, timeout=timeout)
    assert (await page.text_content("#status .status-title") or "").strip()
    assert (await page.text_content("#status .status-next") or "").strip()
    return await state_of(page)


async def test_enrollment_page_errors(world: World) -> None:
    code = needs(world.codes.get("bob"), "bob's invite")
    context = await anonymous_context(world.browser, world.gw, world.dir / "bob-anon")
    try:
        page = await world.page_in(context)
        cdp, authenticator_id = await virtual_authenticator(context, page)

        # a link that is no enrollment
        response = await page.goto(world.base + "/idwall/enroll/not-an-enrollment")
        assert response.status == 404
        assert await expect_state(page, "unknown") == "unknown"
        assert not await page.is_visible("#create")
        await shot(page, "enroll-unknown")

        key = pki.generate_p256_key()
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(world.info["ca_pem"]))
        async with aiohttp.ClientSession(connector=connector) as client:
            async with client.post(world.base + "/idwall/api/enroll/begin", json={
                    "code": code, "csr_pem": pki.make_csr(key, "bob"), "device_name": "Bob's phone"}) as resp:
                assert resp.status == 200, await resp.text()
                begun = await resp.json()
        await page.goto(begun["enroll_url"])
        await page.wait_for_selector("#create:not([hidden])")

        # the passkey prompt fails (the authenticator cannot verify the user): cancelled, try again
        await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator_id, "isUserVerified": False})
        await page.focus("#create")
        await page.keyboard.press("Enter")
        assert await expect_state(page, "cancelled") == "cancelled"
        assert await page.is_enabled("#create") and await page.is_visible("#create")
        await shot(page, "enroll-cancelled")

        # a passkey that claims no user verification: the gateway refuses it, and the page says why
        await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator_id, "isUserVerified": True})
        await cdp.send("WebAuthn.setResponseOverrideBits", {"authenticatorId": authenticator_id, "isBadUV": True})
        await page.focus("#create")
        await page.keyboard.press("Space")
        assert await expect_state(page, "rejected") == "rejected"
        assert "verif" in (await page.text_content("#status") or "").lower()
        await shot(page, "enroll-rejected")
        await cdp.send("WebAuthn.setResponseOverrideBits", {"authenticatorId": authenticator_id, "isBadUV": False})

        # the link outlived the enrollment
        world.gw.clock = lambda: time.time() + (begun["expires_at"] - time.time()) + 5
        try:
            await page.goto(begun["enroll_url"])
            assert await expect_state(page, "expired") == "expired"
            assert not await page.is_visible("#create")
            await shot(page, "enroll-expired")
        finally:
            world.gw.clock = time.time
    finally:
        await context.close()


async def test_sign_in_errors_and_an_expired_session(world: World) -> None:
    alice = needs(world.alice, "alice's browser")
    page, cdp, authenticator_id = alice.page, alice.cdp, alice.authenticator_id
    await page.goto(world.base + "/idwall/login?next=/hello")
    await page.wait_for_selector("#signin:not([hidden])")

    # a passkey without user verification: the gateway refuses the sign-in
    await cdp.send("WebAuthn.setResponseOverrideBits", {"authenticatorId": authenticator_id, "isBadUV": True})
    await page.click("#signin")
    assert await expect_state(page, "rejected") == "rejected"
    assert await page.is_enabled("#signin")
    await shot(page, "login-rejected")
    await cdp.send("WebAuthn.setResponseOverrideBits", {"authenticatorId": authenticator_id, "isBadUV": False})

    # the prompt fails (user verification fails on the authenticator): cancelled, nothing changed
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator_id, "isUserVerified": False})
    await page.click("#signin")
    assert await expect_state(page, "cancelled") == "cancelled"
    await shot(page, "login-cancelled")
    await cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator_id, "isUserVerified": True})

    # signed in again with the keyboard alone: Tab reaches the button first, Space presses it
    await page.goto(world.base + "/idwall/login?next=/hello")
    await page.wait_for_selector("#signin:not([hidden])")
    await page.locator("body").focus()
    await page.keyboard.press("Tab")
    assert await page.locator(":focus").get_attribute("id") == "signin"
    async with page.expect_navigation(url=world.base + "/hello", timeout=CEREMONY_TIMEOUT):
        await page.keyboard.press("Space")

    # the session outlives session.max_age: the app sends the browser to the login page again
    world.gw.clock = lambda: time.time() + world.config.session.max_age + 60
    try:
        await page.goto(world.base + "/hello")
        assert page.url == world.base + "/idwall/login?next=/hello&reason=expired"
        await page.wait_for_selector("#signin:not([hidden])")
        assert await state_of(page) == "expired"
        await page.goto(world.base + "/idwall/login?next=/hello&reason=expired")
        await page.wait_for_selector("#signin:not([hidden])")
        assert await expect_state(page, "expired") == "expired"
        assert "session ended" in (await page.text_content("#status") or "")
        await shot(page, "login-expired")
    finally:
        world.gw.clock = time.time


async def test_browsers_without_a_usable_certificate(world: World) -> None:
    context = await anonymous_context(world.browser, world.gw, world.dir / "nocert")
    try:
        page = await world.page_in(context)
        await page.goto(world.base + "/idwall/login?next=/hello")
        assert await expect_state(page, "no-certificate") == "no-certificate"
        assert await page.get_attribute("#status-link", "href") == "/idwall/enroll"
        assert not await page.is_visible("#signin")
        await shot(page, "login-no-certificate")
        # a person opening the app without a certificate lands on the page that explains it (403, link to enrollment)
        response = await page.goto(world.base + "/hello")
        assert response.status == 403
        assert page.url.endswith("/idwall/login?next=/hello")
        assert await expect_state(page, "no-certificate") == "no-certificate"
        assert await page.get_attribute("#status-link", "href") == "/idwall/enroll"
        await shot(page, "app-no-certificate")
        await page.goto(world.base + "/idwall/enroll")
        assert await state_of(page) == "info"
        await shot(page, "enroll-help")
    finally:
        await context.close()

    # a certificate from the device CA that no enrollment issued
    cert_path, key_path = unrelated_certificate(world.gw, world.dir / "unknown")
    context = await device_context(world.browser, world.base, cert_path, key_path)
    try:
        page = await world.page_in(context)
        await page.goto(world.base + "/idwall/login")
        assert await expect_state(page, "unknown-device") == "unknown-device"
        assert not await page.is_visible("#signin")
        await shot(page, "login-unknown-device")
    finally:
        await context.close()


# --------------------------------------------------------------------------- 6: accessibility basics


async def test_accessibility_of_the_login_and_enrollment_pages(world: World) -> None:
    alice = needs(world.alice, "alice's browser")
    page = alice.page
    await page.goto(world.base + "/idwall/login?next=/hello")
    await page.wait_for_selector("#signin:not([hidden])")
    snapshot = await page.locator("body").aria_snapshot()
    assert 'heading "Sign in' in snapshot or "heading" in snapshot
    assert 'button "Sign in with passkey"' in snapshot
    assert "status" in snapshot
    assert await page.get_by_role("status").count() == 1
    assert await tab_order(page, 1) == ["signin"]
    await fits(page, 400)

    # Enter on the focused button signs in (this connection saw its session end while the clock was moved)
    async with page.expect_navigation(url=world.base + "/hello", timeout=CEREMONY_TIMEOUT):
        await page.keyboard.press("Enter")

    # signed in: Continue and Sign out, both reachable
    await page.goto(world.base + "/idwall/login?next=/hello")
    await page.wait_for_selector("#signout:not([hidden])")
    order = await tab_order(page, 3)
    assert order.index("continue") < order.index("signout"), order
    await fits(page, 400)

    context = await anonymous_context(world.browser, world.gw, world.dir / "a11y")
    try:
        other = await world.page_in(context)
        await other.goto(world.base + "/idwall/enroll")
        snapshot = await other.locator("body").aria_snapshot()
        assert "status" in snapshot and 'link "the sign-in page"' in snapshot
        await fits(other, 400)
        await other.goto(world.base + "/idwall/enroll/not-an-enrollment")
        await fits(other, 400)
    finally:
        await context.close()


async def test_accessibility_of_the_soc_console(world: World) -> None:
    admin = needs(world.admin, "the admin's console")
    page = admin.page
    await page.set_viewport_size(VIEWPORT)
    try:
        await page.goto(world.base + "/idwall/admin")
        await page.wait_for_selector("#sessions-body tr")
        # every input has a label
        for label in ("User", "Group", "Device", "Confirmation", "Reason"):
            assert await page.get_by_label(label, exact=True).count() >= 1, label
        snapshot = await page.locator("body").aria_snapshot()
        for name in ("Apply filter", "Kill group…", "Kill all sessions"):
            assert f'button "{name}"' in snapshot, name
        # the console's status region is in the page from the start (empty), so announcements are not missed
        assert await page.get_by_role("status").count() == 1
        assert await page.get_attribute("#status", "aria-live") == "polite"
        order = await tab_order(page, 13)
        assert order[:13] == ["Skip to live sessions", "Sessions", "People", "Devices", "Admins & tokens", "Ledger",
                              "Incidents", "Approvals", "filter-user", "filter-group", "filter-device", "Apply filter",
                              "Clear"], order
        await fits(page, 400)
        await shot(page, "console-400px")

        # a row's kill button works from the keyboard; Escape cancels and gives focus back to the button
        button = page.locator('#sessions-body button[data-scope="session"]').first
        name = await button.get_attribute("aria-label")
        assert name and name.startswith("Session session ")
        await button.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#confirm[open]")
        assert await page.locator(":focus").get_attribute("id") == "confirm-reason"
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#confirm[open]", state="detached")
        assert await page.locator(":focus").get_attribute("aria-label") == name
    finally:
        await page.set_viewport_size(WIDE)
