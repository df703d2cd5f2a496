"""A manager who is not an administrator approves devices in real Chromium (Debian's, through Playwright), on one
gateway with ``devices.approval: manager`` (issue 10's "must show").

The story, in order (the tests share the gateway, the browser and what earlier tests made):

1. the administrator bootstraps and invites dave (no manager) on the People page; under this policy dave's
   device waits, and the administrator approves it on the Devices page;
2. the administrator invites carol with manager dave; carol enrolls and her device waits;
3. dave, not an administrator, is told on the sign-in page that a device waits for him, opens
   /idwall/approvals and approves carol's device with his passkey;
4. carol's second (self-service) device waits; erin, who manages nobody, sees no device on her approvals page and
   her signed approval of carol's device is refused; dave is refused for a device of someone he does not manage;
   neither attempt changes the ledger; then dave approves carol's second device too;
5. the administrator revokes it on the Devices page and creates a token on Admins & tokens;
6. the Ledger page shows every one of those entries, dave's approvals signed with his passkey, the chain verified;
   ``idwall audit verify --config`` passes.

Every new page state is captured light at 1280 px and 400 px as approvals-*.png in helpers.browser.SHOTS.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.helpers.approvals import MANAGER_POLICY
from tests.helpers.browser import (
    BEGIN_ACTION_JS, CHROMIUM, BrowserDevice, Browsing, Story, enroll_in_browser, enrollment_answer,
    ledger_verified, needs, sign_dialog, sign_in, status_says, story_of, tab_order,
)
from tests.helpers.cli import run_cli

# a missing browser must fail the suite, never skip it
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

APPROVALS = "/idwall/approvals"


@dataclass
class ManagerStory(Story):
    """The browsers of the administrator, dave and erin, the invite codes, and the devices waiting."""

    browsing: dict[str, Browsing] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, BrowserDevice] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def story(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ManagerStory]:
    """``idwall init`` with ``devices.approval: manager``, a started gateway and Chromium trusting its CA."""
    async with story_of(ManagerStory, tmp_path_factory.mktemp("approvals"), "approvals", **MANAGER_POLICY) as started:
        yield started


@pytest.fixture(autouse=True)
def clean_console(story: ManagerStory) -> Iterator[None]:
    """No test may leave a CSP violation or a script error in any page."""
    yield from story.console.watched()


def page_of(story: ManagerStory, who: str) -> Any:
    return needs(story.browsing.get(who), f"{who}'s signed-in browser").page


async def invite_on_people_page(story: ManagerStory, user: str, name: str, manager: str = "") -> None:
    """The administrator invites ``user`` on the People page (with ``manager`` when given); keeps the code."""
    page = page_of(story, "admin")
    await page.goto(story.base + "/idwall/admin/people")
    await page.wait_for_selector('#people-body tr[data-user="admin"]')
    await page.fill("#invite-user", user)
    await page.fill("#invite-name", name)
    await page.fill("#invite-manager", manager)
    await page.click("#invite-submit")
    await sign_dialog(story, page, [f"Invite {name} as user {user}", f"manager: {manager or 'none'}"])
    await page.wait_for_selector("#invite-result:not([hidden])")
    story.codes[user] = (await page.text_content("#invite-code") or "").strip()
    await page.click("#invite-done")
    entry = (await story.ledger())[-1]
    assert (entry["type"], entry["data"]["manager"]) == ("invite.create", manager or None), entry


async def approve_on_devices_page(story: ManagerStory, device: BrowserDevice, about: str) -> None:
    """The administrator approves a pending device on the console's Devices page."""
    page = page_of(story, "admin")
    await page.goto(story.base + "/idwall/admin/devices?status=pending_approval")
    row = page.locator(f'#devices-body tr[data-device="{device.device_id}"]')
    await row.wait_for()
    await row.get_by_role("button", name=f"Approve… {about}").click()
    await sign_dialog(story, page, [f"Approve device {device.device_id} ({about})", "Signed by admin"])
    await status_says(page, f"Approved {about}: the device is now active")


async def certificate_issued(story: ManagerStory, device: BrowserDevice) -> None:
    """The approved device's certificate, as the polling CLI would save it next to its key."""
    answer = await enrollment_answer(story, device.enrollment_id)
    assert answer["status"] == "active", answer
    device.cert.write_text(answer["certificate_pem"])


async def listed(page: Any) -> list[str]:
    """The device ids the approvals page lists, once it has loaded."""
    await page.goto(page.url.split("?")[0])
    await page.wait_for_selector("body[data-loaded=true]")
    return await page.eval_on_selector_all("#approvals-body tr", "rows => rows.map(r => r.dataset.device)")


async def refused(story: ManagerStory, who: str, device: BrowserDevice, words: str) -> None:
    """``who`` tries to sign ``device.approve`` for ``device`` from their page: refused, the ledger unchanged."""
    page = page_of(story, who)
    before = await story.ledger()
    status, problem = await page.evaluate(BEGIN_ACTION_JS, {"type": "device.approve", "device_id": device.device_id})
    assert status == 403 and words in problem["detail"], problem
    assert await story.ledger() == before
    assert (await story.gw.store.get_device(device.device_id)).status == "pending_approval"


# --------------------------------------------------------------------------- 1: the administrator and dave


async def test_the_administrator_bootstraps_and_invites_dave_without_a_manager(story: ManagerStory) -> None:
    admin = await enroll_in_browser(story, "admin", "Admin laptop", code=story.gw.init["bootstrap_code"])
    assert story.root and len(story.root) == 43
    story.browsing["admin"] = await sign_in(story, admin, "/idwall/admin/people")
    await invite_on_people_page(story, "dave", "Dave Example")
    story.seqs["invite dave"] = (await story.ledger())[-1]["seq"]


async def test_daves_device_waits_and_the_administrator_approves_it(story: ManagerStory) -> None:
    dave = await enroll_in_browser(story, "dave", "Dave laptop", code=needs(story.codes.get("dave"), "dave's code"))
    assert (await story.gw.store.get_device(dave.device_id)).status == "pending_approval"
    await approve_on_devices_page(story, dave, "Dave laptop of dave")
    await certificate_issued(story, dave)
    entry = (await story.ledger())[-1]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("device.approve", "admin", dave.device_id)
    story.seqs["admin approves dave"] = entry["seq"]


# --------------------------------------------------------------------------- 2-3: carol, managed by dave


async def test_the_administrator_invites_carol_with_manager_dave_and_her_device_waits(story: ManagerStory) -> None:
    await invite_on_people_page(story, "carol", "Carol Example", manager="dave")
    story.seqs["invite carol"] = (await story.ledger())[-1]["seq"]
    carol = await enroll_in_browser(story, "carol", "Carol laptop", code=story.codes["carol"], shot="enroll-pending")
    assert (await story.gw.store.get_user("carol")).manager == "dave"
    assert (await story.gw.store.get_device(carol.device_id)).status == "pending_approval"
    story.waiting["carol"] = carol


async def test_dave_is_told_on_the_sign_in_page_and_opens_his_approvals(story: ManagerStory) -> None:
    carol = needs(story.waiting.get("carol"), "carol's waiting device")
    dave = story.devices["dave"]
    browsing = story.browsing["dave"] = await sign_in(story, dave, APPROVALS)
    page = browsing.page
    assert await listed(page) == [carol.device_id]
    row = await page.text_content(f'#approvals-body tr[data-device="{carol.device_id}"]') or ""
    assert "Carol Example (carol)" in row and "Carol laptop" in row
    assert "people you manage: carol" in (await page.text_content("#approvals-scope") or "")
    assert await page.get_by_role("navigation", name="Your pages").count() == 1
    await story.shots(page, "pending")
    # the sign-in page, where a signed-in person lands, points at what waits for them
    await page.goto(story.base + "/idwall/login")
    link = page.locator("#approvals-link a")
    assert await link.text_content() == "1 device waits for your approval: review and sign"
    await story.shots(page, "login-link")
    async with page.expect_navigation(url=story.base + APPROVALS):
        await link.click()


async def test_dave_not_an_administrator_approves_carols_device_with_his_passkey(story: ManagerStory) -> None:
    carol = needs(story.waiting.pop("carol", None), "carol's waiting device")
    page = page_of(story, "dave")
    assert (await story.gw.store.get_user("dave")).admin is False
    await page.wait_for_selector(f'#approvals-body tr[data-device="{carol.device_id}"]')
    await page.get_by_role("button", name="Approve… Carol laptop of carol").click()
    await sign_dialog(story, page, [f"Approve device {carol.device_id} (Carol laptop of carol)",
                                    "receives its certificate", "Signed by dave"], shot="sign")
    await status_says(page, "Approved Carol laptop of carol: the device is now active")
    await page.wait_for_selector("#approvals-empty:not([hidden])")
    assert await page.text_content("#approvals-empty") == "No device of the people you manage is waiting for approval."
    assert await page.evaluate("document.activeElement.id") == "approvals-heading"
    await story.shots(page, "approved")
    device = await story.gw.store.get_device(carol.device_id)
    assert (device.status, device.approved_by) == ("active", "dave")
    entry = (await story.ledger())[-1]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("device.approve", "dave", carol.device_id)
    story.seqs["dave approves carol"] = entry["seq"]
    await certificate_issued(story, carol)


# --------------------------------------------------------------------------- 4: the second device, and the attacks


async def test_carols_second_device_waits_for_dave(story: ManagerStory) -> None:
    phone = await enroll_in_browser(story, "carol-phone", "Carol phone", user="carol")
    story.waiting["carol-phone"] = phone
    page = page_of(story, "dave")
    assert await listed(page) == [phone.device_id]
    # keyboard only: the skip link, the pages, then the row's buttons; Escape cancels and nothing is signed
    assert await tab_order(page, 5) == ["Skip to approvals", "Approvals", "Sign-in page", "Approve…", "Reject…"]
    assert await page.get_attribute("#approvals-body button >> nth=0", "aria-label") == "Approve… Carol phone of carol"
    before = await story.ledger()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign[open]")
    assert await page.evaluate("document.activeElement.id") == "sign-ok"
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#sign[open]", state="detached")
    await status_says(page, "Cancelled: nothing was signed")
    assert await page.evaluate("document.activeElement.getAttribute('aria-label')") == "Approve… Carol phone of carol"
    assert await story.ledger() == before
    assert await page.get_by_role("status").count() == 1 and await page.get_by_role("heading", level=1).count() == 1


async def test_erin_who_manages_nobody_sees_nothing_and_her_approval_is_refused(story: ManagerStory) -> None:
    phone = needs(story.waiting.get("carol-phone"), "carol's second device")
    await invite_on_people_page(story, "erin", "Erin Example")
    erin = await enroll_in_browser(story, "erin", "Erin laptop", code=story.codes["erin"])
    await approve_on_devices_page(story, erin, "Erin laptop of erin")
    await certificate_issued(story, erin)
    browsing = story.browsing["erin"] = await sign_in(story, erin, APPROVALS)
    page = browsing.page
    assert await listed(page) == []
    assert await page.text_content("#approvals-empty") == "You manage nobody, so no device waits for your approval."
    assert await page.is_hidden("#approvals")
    await story.shots(page, "manages-nobody")
    answer = await page.evaluate("async () => (await fetch('/idwall/api/approvals')).json()")
    assert (answer["devices"], answer["reports"]) == ([], []), answer
    await refused(story, "erin", phone, "device owner's manager; erin is neither")
    await page.goto(story.base + "/idwall/login")
    assert await page.is_hidden("#approvals-link")


async def test_dave_cannot_approve_a_device_of_someone_he_does_not_manage(story: ManagerStory) -> None:
    phone = needs(story.waiting.get("carol-phone"), "carol's second device")
    erins = await enroll_in_browser(story, "erin-phone", "Erin phone", user="erin")
    page = page_of(story, "dave")
    await page.goto(story.base + APPROVALS)
    assert await listed(page) == [phone.device_id]  # not erin's
    await refused(story, "dave", erins, "device owner's manager; dave is neither")
    # an administrator sees both on the same page, with the console's navigation
    admin = page_of(story, "admin")
    await admin.goto(story.base + APPROVALS)
    assert sorted(await listed(admin)) == sorted([phone.device_id, erins.device_id])
    assert "everyone" in (await admin.text_content("#approvals-scope") or "")
    await story.shots(admin, "administrator")


async def test_dave_approves_carols_second_device_too(story: ManagerStory) -> None:
    phone = needs(story.waiting.pop("carol-phone", None), "carol's second device")
    page = page_of(story, "dave")
    await page.goto(story.base + APPROVALS)
    await page.get_by_role("button", name="Approve… Carol phone of carol").click()
    await sign_dialog(story, page, [f"Approve device {phone.device_id} (Carol phone of carol)", "Signed by dave"])
    await status_says(page, "Approved Carol phone of carol: the device is now active")
    await page.wait_for_selector("#approvals-empty:not([hidden])")
    entry = (await story.ledger())[-1]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("device.approve", "dave", phone.device_id)
    story.seqs["dave approves carol's phone"] = entry["seq"]
    story.waiting["revoke"] = phone


# --------------------------------------------------------------------------- 5: the administrator takes it away


async def test_the_administrator_revokes_the_second_device(story: ManagerStory) -> None:
    phone = needs(story.waiting.pop("revoke", None), "the approved second device")
    page = page_of(story, "admin")
    await page.goto(story.base + "/idwall/admin/devices")
    row = page.locator(f'#devices-body tr[data-device="{phone.device_id}"]')
    await row.get_by_role("button", name="Revoke… Carol phone of carol").click()
    await page.wait_for_selector("#confirm[open]")
    await page.fill("#confirm-reason", "lost phone")
    await page.click("#confirm-ok")
    await status_says(page, "Revoked Carol phone of carol")
    assert (await story.gw.store.get_device(phone.device_id)).status == "revoked"
    kill = (await story.ledger())[-1]
    assert (kill["type"], kill["data"]["target"], kill["actor"]) == ("kill", phone.device_id, "admin")
    story.seqs["kill"] = kill["seq"]


async def test_the_administrator_creates_a_token(story: ManagerStory) -> None:
    page = page_of(story, "admin")
    await page.goto(story.base + "/idwall/admin/tokens")
    await page.wait_for_selector('#admins-body tr[data-user="admin"]')
    await page.fill("#token-name", "soar playbook")
    await page.check("#token-kill")
    await page.fill("#token-ttl", "1h")
    await page.click("#token-create button[type=submit]")
    await sign_dialog(story, page, ["Create the automation token \u201csoar playbook\u201d with scope(s) kill"])
    await page.wait_for_selector("#token-result:not([hidden])")
    assert (await page.text_content("#token-secret") or "").strip().startswith("idw_")
    await page.click("#token-done")
    entry = (await story.ledger())[-1]
    assert entry["type"] == "token.create"
    story.seqs["token.create"] = entry["seq"]


# --------------------------------------------------------------------------- 6: the ledger


async def test_the_ledger_shows_every_entry_with_its_signer_and_the_chain_verified(story: ManagerStory) -> None:
    assert len(story.seqs) == 7, story.seqs
    page = page_of(story, "admin")
    entries = await ledger_verified(story, page)
    signers = {"invite dave": "admin", "admin approves dave": "admin", "invite carol": "admin",
               "dave approves carol": "dave", "dave approves carol's phone": "dave", "token.create": "admin"}
    where = {"admin": "Admin laptop of admin", "dave": "Dave laptop of dave"}
    for what, seq in story.seqs.items():
        text = await page.locator(f'#ledger-body tr[data-seq="{seq}"]').text_content() or ""
        kind = entries[seq - 1]["type"]
        assert kind in text, (what, text)
        if what in signers:
            signer = signers[what]
            assert re.search(rf"{signer} with passkey \S+… on {where[signer]}", text), (what, text)
    assert "no passkey needed (admin)" in (await page.locator(
        f'#ledger-body tr[data-seq="{story.seqs["kill"]}"]').text_content() or "")
    assert entries[story.seqs["invite carol"] - 1]["approval"]["action"]["manager"] == "dave"


async def test_idwall_audit_verify_passes(story: ManagerStory) -> None:
    done = await asyncio.to_thread(run_cli, "audit", "verify", "--config", str(story.gw.init["config"]),
                                   "--root=" + needs(story.root, "the root fingerprint"))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "ok" in done.stdout.lower(), done.stdout
