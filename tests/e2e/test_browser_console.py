"""The admin console's pages in real Chromium (Debian's, through Playwright) against one real gateway.

The story, in order (the tests share one gateway, one browser and what earlier tests made):

1. the first administrator enrolls (CDP virtual passkey, device certificate presented with
   ``client_certificates``) and signs in to the People page;
2. the administrator invites a person: the page shows in words what the passkey will sign, then the
   passkey prompt, then the single-use code once;
3. the person enrolls with the code and signs in; they get no console, and a signing attempt of theirs is
   refused without a trace in the ledger;
4. the person's second (self-service) device waits for approval; the administrator approves it on the
   Devices page with a signed ``device.approve``, then revokes it through the kill switch;
5. on Admins & tokens the administrator grants and revokes the admin role and creates a token (shown
   once), which works until it is revoked there, and not a request longer;
6. the Ledger page shows every one of those entries with who approved it and with which passkey, the
   chain verified in the gateway (and failing against another root), searchable by type and user;
7. accessibility: labels, headings, live regions, keyboard-only signing and cancelling, 400 px wide.

Every page state is captured light at 1280 px and 400 px as console-*.png in helpers.browser.SHOTS.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

import playwright.async_api as playwright_api

from tests.helpers.api import begin_enroll, call_fresh
from tests.helpers.browser import (
    CHROMIUM, SHOTS, VIEWPORT, Console, add_credentials, anonymous_context, credentials_of, device_context, fits,
    launch, tab_order, virtual_authenticator, write_device,
)
from tests.helpers.gateway import GatewayUnderTest, start_test_gateway

# a missing browser must fail the suite, never skip it
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

WIDE = {"width": 1280, "height": 900}
CEREMONY_TIMEOUT = 15_000  # ms; a virtual authenticator answers in well under a second
LIGHT = {"color_scheme": "light"}
PERSON = {"user": "carol", "name": "Carol Example", "email": "carol@example.com", "groups": "eng, ops"}

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
    gw: GatewayUnderTest
    browser: Any
    console: Console
    devices: dict[str, BrowserDevice] = field(default_factory=dict)
    admin: Browsing | None = None
    person: Browsing | None = None
    root: str | None = None
    code: str | None = None
    pending: BrowserDevice | None = None
    token: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.gw.url

    async def page_in(self, context: Any) -> Any:
        page = await context.new_page()
        self.console.attach(page)
        return page


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def story(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Story]:
    """``idwall init`` and a started gateway, Chromium trusting its CA through Playwright's TLS proxy."""
    gw = await start_test_gateway(tmp_path_factory.mktemp("console"), None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NODE_EXTRA_CA_CERTS", gw.init["ca_pem"])
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                try:
                    yield Story(gw, browser, Console())
                finally:
                    await browser.close()
    finally:
        await gw.running.stop(drain=1)


@pytest.fixture(autouse=True)
def clean_console(story: Story) -> Any:
    """No test may leave a CSP violation or a script error in any page."""
    story.console.lines.clear()
    yield
    story.console.assert_clean()


def needs(value: Any, what: str) -> Any:
    if value is None:
        pytest.fail(f"{what} is missing: an earlier test of this module failed")
    return value


async def shots(page: Any, name: str, *, full_page: bool = True) -> None:
    """SHOTS/console-``name``-1280.png and -400.png, light; the page is left at 1280 px."""
    await page.set_viewport_size(WIDE)
    await page.screenshot(path=str(SHOTS / f"console-{name}-1280.png"), full_page=full_page)
    await page.set_viewport_size(VIEWPORT)
    await fits(page, VIEWPORT["width"])
    await page.screenshot(path=str(SHOTS / f"console-{name}-400.png"), full_page=full_page)
    await page.set_viewport_size(WIDE)


async def ledger(story: Story) -> list[dict[str, Any]]:
    return await story.gw.store.ledger_entries()


async def enrollment_answer(story: Story, enrollment_id: str) -> dict[str, Any]:
    status, answer, _ = await call_fresh(story.gw, "GET", f"/idwall/api/enroll/{enrollment_id}")
    assert status == 200, answer
    return answer


async def enroll_in_browser(story: Story, who: str, device_name: str, *, code: str | None = None,
                            user: str | None = None, shot: str | None = None) -> BrowserDevice:
    """Begin an enrollment with a new device key, create the passkey on its page in Chromium, keep the files."""
    key, status, begun = await begin_enroll(story.gw, code=code, user=user, device_name=device_name)
    assert status == 200, begun
    context = await anonymous_context(story.browser, story.gw.running.node, story.gw.dir / f"{who}-anon", WIDE,
                                      **LIGHT)
    try:
        page = await story.page_in(context)
        cdp, authenticator_id = await virtual_authenticator(context, page)
        await page.goto(begun["enroll_url"])
        await page.wait_for_selector("#create:not([hidden])")
        await page.click("#create")
        await page.wait_for_selector('#status[data-state="success"], #status[data-state="pending"]',
                                     timeout=CEREMONY_TIMEOUT)
        if await page.is_visible("#root-fingerprint"):
            story.root = (await page.text_content("#root-fingerprint") or "").strip()
        if shot:
            await shots(page, shot)
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
    context = await device_context(story.browser, story.base, device.cert, device.key, WIDE, **LIGHT)
    page = await story.page_in(context)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    await add_credentials(cdp, authenticator_id, device.credentials)
    await page.goto(story.base + target)
    assert page.url.startswith(story.base + "/idwall/login?next="), page.url
    await page.wait_for_selector("#signin:not([hidden])")
    async with page.expect_navigation(url=story.base + target, timeout=CEREMONY_TIMEOUT):
        await page.click("#signin")
    return Browsing(context, page)


async def sign_dialog(page: Any, words: list[str], shot: str | None = None) -> str:
    """The signing dialog is open and says ``words``; press Sign with passkey. Returns what it said."""
    await page.wait_for_selector("#sign[open]")
    said = await page.text_content("#sign-words") or ""
    for part in words:
        assert part in said, (part, said)
    assert '"nonce"' in (await page.text_content("#sign-json") or "")  # the exact action, as JSON
    if shot:
        await shots(page, shot, full_page=False)  # a modal's backdrop covers the viewport only
    await page.click("#sign-ok")
    await page.wait_for_selector("#sign[open]", state="detached", timeout=CEREMONY_TIMEOUT)
    return said


async def status_says(page: Any, pattern: str) -> str:
    """Wait until the page's live region says something matching ``pattern``; what it says."""
    await page.wait_for_function("(p) => new RegExp(p).test(document.getElementById('status').textContent)",
                                 arg=pattern, timeout=CEREMONY_TIMEOUT)
    assert await page.is_hidden("#alert"), await page.text_content("#alert")
    return await page.text_content("#status") or ""


# --------------------------------------------------------------------------- 1-2: the administrator invites


async def test_the_administrator_enrolls_and_opens_the_people_page(story: Story) -> None:
    admin = await enroll_in_browser(story, "admin", "Admin laptop", code=story.gw.init["bootstrap_code"])
    assert story.root and len(story.root) == 43
    story.admin = await sign_in(story, admin, "/idwall/admin/people")
    page = story.admin.page
    await page.wait_for_selector('#people-body tr[data-user="admin"]')
    row = await page.text_content('#people-body tr[data-user="admin"]') or ""
    assert "Admin laptop — active, certificate until" in row and "yes" in row
    assert await page.get_attribute('nav a[href="/idwall/admin/people"]', "aria-current") == "page"
    await shots(page, "people")


async def test_the_administrator_invites_a_person_and_sees_the_code_once(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    for name, value in PERSON.items():
        await page.fill(f"#invite-{name}", value)
    await shots(page, "people-invite-form")
    before = len(await ledger(story))
    await page.click("#invite-submit")
    await sign_dialog(page, ["Invite Carol Example as user carol <carol@example.com>", "in groups: eng, ops",
                             "not an administrator", "Signed by admin"], shot="people-invite-sign")
    await page.wait_for_selector("#invite-result:not([hidden])")
    code = (await page.text_content("#invite-code") or "").strip()
    assert len(code) >= 16
    assert await page.text_content("#invite-command") == f"idwall device enroll --gateway {story.base} --code {code}"
    assert await page.evaluate("document.activeElement.id") == "invite-result-heading"
    await status_says(page, "Invite for carol signed")
    await page.wait_for_selector('#people-body tr[data-user="admin"]')
    await shots(page, "people-invite-code")
    entries = await ledger(story)
    assert [e["type"] for e in entries[before:]] == ["invite.create"]
    assert entries[-1]["approval"]["action"]["user"] == "carol"
    story.seqs["invite.create"] = entries[-1]["seq"]
    # once: after Done the code is gone from the page (the gateway kept only its hash)
    await page.click("#invite-done")
    assert await page.is_hidden("#invite-result")
    assert code not in (await page.content())
    story.code = code


# --------------------------------------------------------------------------- 3: the person, who is no admin


async def test_the_person_enrolls_and_gets_no_console(story: Story) -> None:
    code = needs(story.code, "the invite code")
    device = await enroll_in_browser(story, "carol", "Carol laptop", code=code)
    # the console sends a person without a session to the passkey login and back; then they are refused
    story.person = await sign_in(story, device, "/idwall/admin/people")
    page = story.person.page
    await page.wait_for_selector('#status[data-state="forbidden"]')
    response = await page.goto(story.base + "/idwall/admin/people")
    assert response.status == 403
    assert await page.get_attribute("#status", "data-state") == "forbidden"
    assert "This console is for administrators." in (await page.text_content("#status") or "")
    assert "carol is not an administrator" in (await page.text_content("#status") or "")
    assert await page.locator("#people").count() == 0
    await shots(page, "forbidden")
    for path in ("/idwall/admin", "/idwall/admin/ledger"):
        response = await page.goto(story.base + path)
        assert response.status == 403, path


async def test_a_signing_attempt_by_someone_not_entitled_is_refused_and_leaves_no_trace(story: Story) -> None:
    browsing = needs(story.person, "the person's browser")
    page = browsing.page
    await page.goto(story.base + "/idwall/login")
    before = await ledger(story)
    for action in ({"type": "admin.grant", "user": "carol"},
                   {"type": "token.create", "name": "mine", "scopes": ["kill"], "ttl": "1h"},
                   {"type": "invite.create", "user": "mallory", "name": "M", "email": "", "groups": [], "admin": True}):
        status, problem = await page.evaluate(BEGIN_ACTION_JS, action)
        assert status == 403, (action, problem)
        assert "administrator" in problem["detail"], problem
    assert await ledger(story) == before
    users = {u.id: u for u in await story.gw.store.list_users()}
    assert users["carol"].admin is False and "mallory" not in users


# --------------------------------------------------------------------------- 4: devices


async def test_the_administrator_approves_the_persons_second_device(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    second = await enroll_in_browser(story, "carol-phone", "Carol phone", user="carol", shot="enroll-pending")
    story.pending = second
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/devices?status=pending_approval")
    row = page.locator(f'#devices-body tr[data-device="{second.device_id}"]')
    await row.wait_for()
    assert await page.locator("#devices-body tr").count() == 1
    assert "Waiting for approval" in (await row.text_content() or "")
    await shots(page, "devices-pending")
    await row.get_by_role("button", name="Approve… Carol phone of carol").click()
    await sign_dialog(page, [f"Approve device {second.device_id} (Carol phone of carol)", "receives its certificate"],
                      shot="devices-approve-sign")
    await status_says(page, "Approved Carol phone of carol: the device is now active")
    await page.wait_for_selector("#devices-empty:not([hidden])")  # no longer pending
    answer = await enrollment_answer(story, second.enrollment_id)
    assert answer["status"] == "active" and "certificate_pem" in answer
    device = await story.gw.store.get_device(second.device_id)
    assert device.status == "active" and device.approved_by == "admin"
    entries = await ledger(story)
    assert entries[-1]["type"] == "device.approve" and entries[-1]["subject"] == second.device_id
    story.seqs["device.approve"] = entries[-1]["seq"]
    await page.select_option("#devices-status", "")
    await page.click("#devices-filter button[type=submit]")
    await row.wait_for()
    text = await row.text_content() or ""
    assert "Active" in text and "admin" in text
    await shots(page, "devices-all")


async def test_the_administrator_revokes_the_device(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    second = needs(story.pending, "the approved second device")
    page = browsing.page
    row = page.locator(f'#devices-body tr[data-device="{second.device_id}"]')
    await row.get_by_role("button", name="Revoke… Carol phone of carol").click()
    await page.wait_for_selector("#confirm[open]")
    assert await page.evaluate("document.activeElement.id") == "confirm-reason"
    await page.fill("#confirm-reason", "lost phone")
    await shots(page, "devices-revoke-confirm", full_page=False)
    await page.click("#confirm-ok")
    said = await status_says(page, "Revoked Carol phone of carol")
    assert "1 device(s) revoked" in said
    await page.locator(f'#devices-body tr[data-device="{second.device_id}"][data-status="revoked"]').wait_for()
    await shots(page, "devices-revoked")
    assert (await story.gw.store.get_device(second.device_id)).status == "revoked"
    entries = await ledger(story)
    kill = entries[-1]
    assert kill["type"] == "kill" and kill["data"]["scope"] == "device" and kill["data"]["revoke_devices"] is True
    assert kill["data"]["reason"] == "lost phone" and kill["actor"] == "admin"
    story.seqs["kill"] = kill["seq"]


# --------------------------------------------------------------------------- 5: admins and tokens


async def test_the_administrator_grants_and_revokes_the_admin_role(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/tokens")
    await page.wait_for_selector('#admins-body tr[data-user="admin"]')
    await page.fill("#grant-user", "carol")
    await page.click("#grant button[type=submit]")
    await sign_dialog(page, ["Make carol an administrator"], shot="admins-grant-sign")
    await status_says(page, "carol is now an administrator")
    await page.wait_for_selector('#admins-body tr[data-user="carol"]')
    await shots(page, "admins-granted")
    await page.get_by_role("button", name="Revoke admin role of carol").click()
    await sign_dialog(page, ["Remove the administrator role from carol"])
    await status_says(page, "carol is no longer an administrator")
    await page.wait_for_selector('#admins-body tr[data-user="carol"]', state="detached")
    types = [e["type"] for e in (await ledger(story))[-2:]]
    assert types == ["admin.grant", "admin.revoke"]


async def test_a_token_is_shown_once_works_and_stops_at_once_when_revoked(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.fill("#token-name", "soar playbook")
    await page.check("#token-kill")
    await page.fill("#token-ttl", "1h")
    await page.click("#token-create button[type=submit]")
    await sign_dialog(page, ["Create the automation token \u201csoar playbook\u201d with scope(s) kill",
                             "valid for 1h"], shot="tokens-create-sign")
    await page.wait_for_selector("#token-result:not([hidden])")
    secret = (await page.text_content("#token-secret") or "").strip()
    token_id = (await page.text_content("#token-id") or "").strip()
    assert secret.startswith("idw_") and token_id.startswith("tok-")
    row = page.locator(f'#tokens-body tr[data-token="{token_id}"][data-status="active"]')
    await row.wait_for()
    await shots(page, "tokens-created")
    await page.click("#token-done")
    assert secret not in await page.content()
    story.seqs["token.create"] = (await ledger(story))[-1]["seq"]

    kill = {"scope": "user", "target": "nobody", "reason": "playbook test", "revoke_devices": False}
    status, body, _ = await call_fresh(story.gw, "POST", "/idwall/api/admin/kill", token=secret, body=kill)
    assert status == 200, body

    await row.get_by_role("button", name="Revoke token soar playbook").click()
    await page.wait_for_selector("#confirm[open]")
    assert await page.is_hidden("#confirm-reason-label")
    await shots(page, "tokens-revoke-confirm", full_page=False)
    await page.click("#confirm-ok")
    await status_says(page, "Token soar playbook revoked")
    await page.locator(f'#tokens-body tr[data-token="{token_id}"][data-status="revoked"]').wait_for()
    await shots(page, "tokens-revoked")
    # the attack: the very next request with the revoked token
    status, problem, _ = await call_fresh(story.gw, "POST", "/idwall/api/admin/kill", token=secret, body=kill)
    assert status == 401 and problem["type"].endswith("/invalid-token"), problem
    entries = await ledger(story)
    assert entries[-1]["type"] == "token.revoke" and entries[-1]["subject"] == token_id
    story.seqs["token.revoke"] = entries[-1]["seq"]
    story.token = {"id": token_id}


# --------------------------------------------------------------------------- 6: the ledger


async def test_the_ledger_shows_every_entry_with_its_approval_and_the_chain_verified(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    assert set(story.seqs) == {"invite.create", "device.approve", "kill", "token.create", "token.revoke"}, story.seqs
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/ledger")
    await page.wait_for_selector('#verify-result[data-state="ok"]', timeout=CEREMONY_TIMEOUT)
    entries = await ledger(story)
    verdict = await page.text_content("#verify-result") or ""
    assert f"Chain verified: {len(entries)} entries up to seq {entries[-1]['seq']}" in verdict, verdict
    assert story.root in verdict
    for kind, seq in story.seqs.items():
        row = page.locator(f'#ledger-body tr[data-seq="{seq}"]')
        text = await row.text_content() or ""
        assert kind in text, (kind, text)
        if kind in ("invite.create", "device.approve", "token.create"):
            assert re.search(r"admin with passkey \S+… on Admin laptop of admin", text), text
    # taking access away needs no passkey (DESIGN.md principle 3), and the view says so
    for kind in ("kill", "token.revoke"):
        text = await page.locator(f'#ledger-body tr[data-seq="{story.seqs[kind]}"]').text_content() or ""
        assert "no passkey needed (admin)" in text, (kind, text)
    first = await page.locator('#ledger-body tr[data-seq="1"]').text_content() or ""
    assert "bootstrap" in first and "registers passkey" in first
    await shots(page, "ledger")

    # pinned to the root written down at bootstrap, and to another root
    await page.fill("#verify-root", story.root)
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-state="ok"]:has-text("against the pinned root")')
    other = ("A" if story.root[0] != "A" else "B") + story.root[1:]
    await page.fill("#verify-root", other)
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-state="failed"]')
    assert "Chain NOT verified at seq 1" in (await page.text_content("#verify-result") or "")
    await shots(page, "ledger-wrong-root", full_page=False)

    # searched by type, then by user
    await page.fill("#ledger-type", "device.approve")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_function("() => document.querySelectorAll('#ledger-body tr').length === 1")
    assert await page.get_attribute("#ledger-body tr", "data-seq") == str(story.seqs["device.approve"])
    await shots(page, "ledger-search-type")
    await page.fill("#ledger-type", "")
    await page.fill("#ledger-user", "carol")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_selector('#ledger-body tr[data-type="invite.create"]')
    types = await page.eval_on_selector_all("#ledger-body tr", "rows => rows.map(r => r.dataset.type)")
    # hers: the invite, her devices' enrollments, approval and revocation, her role; not the admin's token
    for kind in ("invite.create", "device.enroll", "device.approve", "kill", "admin.grant", "admin.revoke"):
        assert kind in types, (kind, types)
    assert "token.create" not in types and "bootstrap" not in types, types
    await shots(page, "ledger-search-user")
    await page.fill("#ledger-user", "nobody-at-all")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_selector("#ledger-empty:not([hidden])")
    await shots(page, "ledger-search-empty")


async def test_the_ledger_is_paged(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/ledger")
    # enough kills (each one a ledger entry) from the console's own origin for a second page
    await page.evaluate("""async () => {
      for (let i = 0; i < 50; i++) {
        const response = await fetch("/idwall/api/admin/kill", {method: "POST",
          headers: {"Content-Type": "application/json"},
          body: JSON.stringify({scope: "user", target: "nobody", reason: "paging " + i, revoke_devices: false})});
        if (!response.ok) throw new Error("kill answered " + response.status);
      }
    }""")
    total = len(await ledger(story))
    assert total > 50
    await page.goto(story.base + "/idwall/admin/ledger")
    await page.wait_for_selector('#ledger-body tr[data-seq="50"]')
    assert await page.locator("#ledger-body tr").count() == 50
    assert await page.is_disabled("#ledger-first") and await page.is_enabled("#ledger-next")
    await page.click("#ledger-next")
    await page.wait_for_selector('#ledger-body tr[data-seq="51"]')
    assert await page.get_attribute("#ledger-body tr:first-child", "data-seq") == "51"
    assert "(seq 51 to" in (await page.text_content("#ledger-range") or "")
    await shots(page, "ledger-page-2")
    await page.click("#ledger-first")
    await page.wait_for_selector('#ledger-body tr[data-seq="1"]')
    await page.wait_for_selector('#verify-result[data-state="ok"]', timeout=CEREMONY_TIMEOUT)


# --------------------------------------------------------------------------- 7: accessibility


async def test_every_console_page_is_labelled_keyboard_usable_and_fits_400px(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.set_viewport_size(VIEWPORT)
    try:
        for path, labels in (("/idwall/admin/people", ("User id", "Full name", "Email", "Groups", "Manager")),
                             ("/idwall/admin/devices", ("Status",)),
                             ("/idwall/admin/tokens", ("Grant to user id", "Name", "kill", "read", "Lifetime")),
                             ("/idwall/admin/ledger", ("Pinned root fingerprint", "Type", "User"))):
            await page.goto(story.base + path)
            await page.wait_for_load_state("networkidle")
            for label in labels:
                assert await page.get_by_label(label, exact=True).count() >= 1, (path, label)
            assert await page.get_by_role("status").count() == 1
            assert await page.get_attribute("#status", "aria-live") == "polite"
            assert await page.get_by_role("heading", level=1).count() == 1
            assert await page.get_by_role("navigation", name="Console pages").count() == 1
            await fits(page, VIEWPORT["width"])
        # keyboard only: the skip link, the pages, then the invite form in order
        await page.goto(story.base + "/idwall/admin/people")
        await page.wait_for_selector('#people-body tr[data-user="carol"]')
        order = await tab_order(page, 8)
        assert order == ["Skip to people", "Sessions", "People", "Devices", "Admins & tokens", "Ledger",
                         "invite-user", "invite-name"], order
        # an invite is reviewed and cancelled from the keyboard; nothing is signed and focus comes back
        before = len(await ledger(story))
        await page.fill("#invite-user", "dave")
        await page.fill("#invite-name", "Dave Example")
        await page.focus("#invite-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#sign[open]")
        assert await page.evaluate("document.activeElement.id") == "sign-ok"
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#sign[open]", state="detached")
        await status_says(page, "Cancelled: nothing was signed")
        assert await page.evaluate("document.activeElement.id") == "invite-submit"
        # and signed from the keyboard alone: Enter on "Sign with passkey"
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#sign[open]")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#invite-result:not([hidden])", timeout=CEREMONY_TIMEOUT)
        assert len(await ledger(story)) == before + 1
        assert await page.evaluate("document.activeElement.id") == "invite-result-heading"
        for expected in ("invite-link", "invite-done"):
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.id") == expected
        await page.keyboard.press("Enter")
        assert await page.is_hidden("#invite-result")
        assert await page.evaluate("document.activeElement.id") == "invite-user"
    finally:
        await page.set_viewport_size(WIDE)


async def test_a_refused_signature_is_said_in_words(story: Story) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/tokens")
    await page.wait_for_selector('#admins-body tr[data-user="admin"]')
    before = await ledger(story)
    # the last administrator cannot remove their own role: refused before anything is signed
    await page.get_by_role("button", name="Revoke admin role of admin").click()
    await page.wait_for_selector("#alert:not([hidden])")
    assert "last administrator" in (await page.text_content("#alert") or "")
    assert "nothing was changed" in (await page.text_content("#status") or "")
    await shots(page, "admins-refused")
    assert await ledger(story) == before
