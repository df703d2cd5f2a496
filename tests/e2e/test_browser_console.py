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

Every page state is captured light at 1280 px and 400 px as console-*.png in helpers.browser.SHOTS. The story's
pieces (enrolling on the enrollment page, signing in, the signing dialog) are helpers.browser's, shared with
test_browser_manager_approval.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.helpers.api import call_fresh
from tests.helpers.browser import (
    BEGIN_ACTION_JS, CEREMONY_TIMEOUT, CHROMIUM, SHOT_WIDE, VIEWPORT, BrowserDevice, Browsing, Story, enroll_in_browser,
    enrollment_answer, fits, ledger_verified, needs, sign_dialog, sign_in, status_says, story_of, tab_order,
)

# a missing browser must fail the suite, never skip it
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

PERSON = {"user": "carol", "name": "Carol Example", "email": "carol@example.com", "groups": "eng, ops"}


@dataclass
class ConsoleStory(Story):
    """What the tests of this module hand on: the administrator's and the person's browsers, the code, a device."""

    admin: Browsing | None = None
    person: Browsing | None = None
    code: str | None = None
    pending: BrowserDevice | None = None
    token: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def story(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ConsoleStory]:
    """``idwall init`` and a started gateway, Chromium trusting its CA through Playwright's TLS proxy."""
    async with story_of(ConsoleStory, tmp_path_factory.mktemp("console"), "console") as started:
        yield started


@pytest.fixture(autouse=True)
def clean_console(story: ConsoleStory) -> Iterator[None]:
    """No test may leave a CSP violation or a script error in any page."""
    yield from story.console.watched()


# --------------------------------------------------------------------------- 1-2: the administrator invites


async def test_the_administrator_enrolls_and_opens_the_people_page(story: ConsoleStory) -> None:
    admin = await enroll_in_browser(story, "admin", "Admin laptop", code=story.gw.init["bootstrap_code"])
    assert story.root and len(story.root) == 43
    story.admin = await sign_in(story, admin, "/idwall/admin/people")
    page = story.admin.page
    await page.wait_for_selector('#people-body tr[data-user="admin"]')
    row = await page.text_content('#people-body tr[data-user="admin"]') or ""
    assert "Admin laptop — active, certificate until" in row and "yes" in row
    assert await page.get_attribute('nav a[href="/idwall/admin/people"]', "aria-current") == "page"
    await story.shots(page, "people")


async def test_the_administrator_invites_a_person_and_sees_the_code_once(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    for name, value in PERSON.items():
        await page.fill(f"#invite-{name}", value)
    await story.shots(page, "people-invite-form")
    before = len(await story.ledger())
    await page.click("#invite-submit")
    await sign_dialog(story, page, ["Invite Carol Example as user carol <carol@example.com>", "in groups: eng, ops",
                             "not an administrator", "Signed by admin"], shot="people-invite-sign")
    await page.wait_for_selector("#invite-result:not([hidden])")
    code = (await page.text_content("#invite-code") or "").strip()
    assert len(code) >= 16
    assert await page.text_content("#invite-command") == f"idwall device enroll --gateway {story.base} --code {code}"
    assert await page.evaluate("document.activeElement.id") == "invite-result-heading"
    await status_says(page, "Invite for carol signed")
    await page.wait_for_selector('#people-body tr[data-user="admin"]')
    await story.shots(page, "people-invite-code")
    entries = await story.ledger()
    assert [e["type"] for e in entries[before:]] == ["invite.create"]
    assert entries[-1]["approval"]["action"]["user"] == "carol"
    story.seqs["invite.create"] = entries[-1]["seq"]
    # once: after Done the code is gone from the page (the gateway kept only its hash)
    await page.click("#invite-done")
    assert await page.is_hidden("#invite-result")
    assert code not in (await page.content())
    story.code = code


# --------------------------------------------------------------------------- 3: the person, who is no admin


async def test_the_person_enrolls_and_gets_no_console(story: ConsoleStory) -> None:
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
    await story.shots(page, "forbidden")
    for path in ("/idwall/admin", "/idwall/admin/ledger"):
        response = await page.goto(story.base + path)
        assert response.status == 403, path


async def test_a_signing_attempt_by_someone_not_entitled_is_refused_and_leaves_no_trace(story: ConsoleStory) -> None:
    browsing = needs(story.person, "the person's browser")
    page = browsing.page
    await page.goto(story.base + "/idwall/login")
    before = await story.ledger()
    for action in ({"type": "admin.grant", "user": "carol"},
                   {"type": "token.create", "name": "mine", "scopes": ["kill"], "ttl": "1h"},
                   {"type": "invite.create", "user": "mallory", "name": "M", "email": "", "groups": [], "admin": True}):
        status, problem = await page.evaluate(BEGIN_ACTION_JS, action)
        assert status == 403, (action, problem)
        assert "administrator" in problem["detail"], problem
    assert await story.ledger() == before
    users = {u.id: u for u in await story.gw.store.list_users()}
    assert users["carol"].admin is False and "mallory" not in users


# --------------------------------------------------------------------------- 4: devices


async def test_the_administrator_approves_the_persons_second_device(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    second = await enroll_in_browser(story, "carol-phone", "Carol phone", user="carol", shot="enroll-pending")
    story.pending = second
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/devices?status=pending_approval")
    row = page.locator(f'#devices-body tr[data-device="{second.device_id}"]')
    await row.wait_for()
    assert await page.locator("#devices-body tr").count() == 1
    assert "Waiting for approval" in (await row.text_content() or "")
    await story.shots(page, "devices-pending")
    await row.get_by_role("button", name="Approve… Carol phone of carol").click()
    await sign_dialog(story, page, [f"Approve device {second.device_id} (Carol phone of carol)", "receives its certificate"],
                      shot="devices-approve-sign")
    await status_says(page, "Approved Carol phone of carol: the device is now active")
    await page.wait_for_selector("#devices-empty:not([hidden])")  # no longer pending
    answer = await enrollment_answer(story, second.enrollment_id)
    assert answer["status"] == "active" and "certificate_pem" in answer
    device = await story.gw.store.get_device(second.device_id)
    assert device.status == "active" and device.approved_by == "admin"
    entries = await story.ledger()
    assert entries[-1]["type"] == "device.approve" and entries[-1]["subject"] == second.device_id
    story.seqs["device.approve"] = entries[-1]["seq"]
    await page.select_option("#devices-status", "")
    await page.click("#devices-filter button[type=submit]")
    await row.wait_for()
    text = await row.text_content() or ""
    assert "Active" in text and "admin" in text
    await story.shots(page, "devices-all")


async def test_the_administrator_revokes_the_device(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    second = needs(story.pending, "the approved second device")
    page = browsing.page
    row = page.locator(f'#devices-body tr[data-device="{second.device_id}"]')
    await row.get_by_role("button", name="Revoke… Carol phone of carol").click()
    await page.wait_for_selector("#confirm[open]")
    assert await page.evaluate("document.activeElement.id") == "confirm-reason"
    await page.fill("#confirm-reason", "lost phone")
    await story.shots(page, "devices-revoke-confirm", full_page=False)
    await page.click("#confirm-ok")
    said = await status_says(page, "Revoked Carol phone of carol")
    assert "1 device(s) revoked" in said
    await page.locator(f'#devices-body tr[data-device="{second.device_id}"][data-status="revoked"]').wait_for()
    await story.shots(page, "devices-revoked")
    assert (await story.gw.store.get_device(second.device_id)).status == "revoked"
    entries = await story.ledger()
    kill = entries[-1]
    assert kill["type"] == "kill" and kill["data"]["scope"] == "device" and kill["data"]["revoke_devices"] is True
    assert kill["data"]["reason"] == "lost phone" and kill["actor"] == "admin"
    story.seqs["kill"] = kill["seq"]


# --------------------------------------------------------------------------- 5: admins and tokens


async def test_the_administrator_grants_and_revokes_the_admin_role(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/tokens")
    await page.wait_for_selector('#admins-body tr[data-user="admin"]')
    await page.fill("#grant-user", "carol")
    await page.click("#grant button[type=submit]")
    await sign_dialog(story, page, ["Make carol an administrator"], shot="admins-grant-sign")
    await status_says(page, "carol is now an administrator")
    await page.wait_for_selector('#admins-body tr[data-user="carol"]')
    await story.shots(page, "admins-granted")
    await page.get_by_role("button", name="Revoke admin role of carol").click()
    await sign_dialog(story, page, ["Remove the administrator role from carol"])
    await status_says(page, "carol is no longer an administrator")
    await page.wait_for_selector('#admins-body tr[data-user="carol"]', state="detached")
    types = [e["type"] for e in (await story.ledger())[-2:]]
    assert types == ["admin.grant", "admin.revoke"]


async def test_a_token_is_shown_once_works_and_stops_at_once_when_revoked(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.fill("#token-name", "soar playbook")
    await page.check("#token-kill")
    await page.fill("#token-ttl", "1h")
    await page.click("#token-create button[type=submit]")
    await sign_dialog(story, page, ["Create the automation token \u201csoar playbook\u201d with scope(s) kill",
                             "valid for 1h"], shot="tokens-create-sign")
    await page.wait_for_selector("#token-result:not([hidden])")
    secret = (await page.text_content("#token-secret") or "").strip()
    token_id = (await page.text_content("#token-id") or "").strip()
    assert secret.startswith("idw_") and token_id.startswith("tok-")
    row = page.locator(f'#tokens-body tr[data-token="{token_id}"][data-status="active"]')
    await row.wait_for()
    await story.shots(page, "tokens-created")
    await page.click("#token-done")
    assert secret not in await page.content()
    story.seqs["token.create"] = (await story.ledger())[-1]["seq"]

    kill = {"scope": "user", "target": "nobody", "reason": "playbook test", "revoke_devices": False}
    status, body, _ = await call_fresh(story.gw, "POST", "/idwall/api/admin/kill", token=secret, body=kill)
    assert status == 200, body

    await row.get_by_role("button", name="Revoke token soar playbook").click()
    await page.wait_for_selector("#confirm[open]")
    assert await page.is_hidden("#confirm-reason-label")
    await story.shots(page, "tokens-revoke-confirm", full_page=False)
    await page.click("#confirm-ok")
    await status_says(page, "Token soar playbook revoked")
    await page.locator(f'#tokens-body tr[data-token="{token_id}"][data-status="revoked"]').wait_for()
    await story.shots(page, "tokens-revoked")
    # the attack: the very next request with the revoked token
    status, problem, _ = await call_fresh(story.gw, "POST", "/idwall/api/admin/kill", token=secret, body=kill)
    assert status == 401 and problem["type"].endswith("/invalid-token"), problem
    entries = await story.ledger()
    assert entries[-1]["type"] == "token.revoke" and entries[-1]["subject"] == token_id
    story.seqs["token.revoke"] = entries[-1]["seq"]
    story.token = {"id": token_id}


# --------------------------------------------------------------------------- 6: the ledger


async def test_the_ledger_shows_every_entry_with_its_approval_and_the_chain_verified(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    assert set(story.seqs) == {"invite.create", "device.approve", "kill", "token.create", "token.revoke"}, story.seqs
    page = browsing.page
    await ledger_verified(story, page)
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
    await story.shots(page, "ledger")

    # pinned to the root written down at bootstrap, and to another root
    await page.fill("#verify-root", story.root)
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-state="ok"]:has-text("against the pinned root")')
    other = ("A" if story.root[0] != "A" else "B") + story.root[1:]
    await page.fill("#verify-root", other)
    await page.click("#verify-form button[type=submit]")
    await page.wait_for_selector('#verify-result[data-state="failed"]')
    assert "Chain NOT verified at seq 1" in (await page.text_content("#verify-result") or "")
    await story.shots(page, "ledger-wrong-root", full_page=False)

    # searched by type, then by user
    await page.fill("#ledger-type", "device.approve")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_function("() => document.querySelectorAll('#ledger-body tr').length === 1")
    assert await page.get_attribute("#ledger-body tr", "data-seq") == str(story.seqs["device.approve"])
    await story.shots(page, "ledger-search-type")
    await page.fill("#ledger-type", "")
    await page.fill("#ledger-user", "carol")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_selector('#ledger-body tr[data-type="invite.create"]')
    types = await page.eval_on_selector_all("#ledger-body tr", "rows => rows.map(r => r.dataset.type)")
    # hers: the invite, her devices' enrollments, approval and revocation, her role; not the admin's token
    for kind in ("invite.create", "device.enroll", "device.approve", "kill", "admin.grant", "admin.revoke"):
        assert kind in types, (kind, types)
    assert "token.create" not in types and "bootstrap" not in types, types
    await story.shots(page, "ledger-search-user")
    await page.fill("#ledger-user", "nobody-at-all")
    await page.click("#ledger-filter button[type=submit]")
    await page.wait_for_selector("#ledger-empty:not([hidden])")
    await story.shots(page, "ledger-search-empty")


async def test_the_ledger_is_paged(story: ConsoleStory) -> None:
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
    total = len(await story.ledger())
    assert total > 50
    await page.goto(story.base + "/idwall/admin/ledger")
    await page.wait_for_selector('#ledger-body tr[data-seq="50"]')
    assert await page.locator("#ledger-body tr").count() == 50
    assert await page.is_disabled("#ledger-first") and await page.is_enabled("#ledger-next")
    await page.click("#ledger-next")
    await page.wait_for_selector('#ledger-body tr[data-seq="51"]')
    assert await page.get_attribute("#ledger-body tr:first-child", "data-seq") == "51"
    assert "(seq 51 to" in (await page.text_content("#ledger-range") or "")
    await story.shots(page, "ledger-page-2")
    await page.click("#ledger-first")
    await page.wait_for_selector('#ledger-body tr[data-seq="1"]')
    await page.wait_for_selector('#verify-result[data-state="ok"]', timeout=CEREMONY_TIMEOUT)


# --------------------------------------------------------------------------- 7: accessibility


async def test_every_console_page_is_labelled_keyboard_usable_and_fits_400px(story: ConsoleStory) -> None:
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
        order = await tab_order(page, 10)
        assert order == ["Skip to people", "Sessions", "People", "Devices", "Admins & tokens", "Ledger", "Incidents",
                         "Approvals", "invite-user", "invite-name"], order
        # an invite is reviewed and cancelled from the keyboard; nothing is signed and focus comes back
        before = len(await story.ledger())
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
        assert len(await story.ledger()) == before + 1
        assert await page.evaluate("document.activeElement.id") == "invite-result-heading"
        for expected in ("invite-link", "invite-done"):
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.id") == expected
        await page.keyboard.press("Enter")
        assert await page.is_hidden("#invite-result")
        assert await page.evaluate("document.activeElement.id") == "invite-user"
    finally:
        await page.set_viewport_size(SHOT_WIDE)


async def test_a_refused_signature_is_said_in_words(story: ConsoleStory) -> None:
    browsing = needs(story.admin, "the administrator's console")
    page = browsing.page
    await page.goto(story.base + "/idwall/admin/tokens")
    await page.wait_for_selector('#admins-body tr[data-user="admin"]')
    before = await story.ledger()
    # the last administrator cannot remove their own role: refused before anything is signed
    await page.get_by_role("button", name="Revoke admin role of admin").click()
    await page.wait_for_selector("#alert:not([hidden])")
    assert "last administrator" in (await page.text_content("#alert") or "")
    assert "nothing was changed" in (await page.text_content("#status") or "")
    await story.shots(page, "admins-refused")
    assert await story.ledger() == before
