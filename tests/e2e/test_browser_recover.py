"""Self-service recovery in real Chromium (Debian's, through Playwright) with no admin involved (issue 11's "must
show"), and its refusal once a playbook marked the passkeys suspect, on one gateway in front of the whoami app.

The story, in order (the tests share the gateway, the browser and what earlier tests made):

1. bob enrolls a laptop (invite code) and a phone (self-service, approved by the administrator) on the enrollment
   page in Chromium: two devices, two passkeys;
2. the "device lost" playbook runs through the incident API with an automation token: bob's certificates are
   revoked, and the stolen laptop's passkey with it;
3. ``idwall device enroll --user bob`` starts a tablet; its page, in a Chromium context that presents no client
   certificate, shows what is being approved (device, when, from where) and the warning, and bob approves it
   with the phone's passkey, the only one offered; the polling CLI saves the certificate; the ledger's
   ``device.recover`` is signed by the phone's passkey;
4. the tablet's certificate (the CLI's files) signs bob in, and he reaches the whoami app;
5. a ransomware playbook marks bob's passkeys suspect: the page of his next self-service device refuses
   self-recovery, names the incident and says an administrator must approve; the administrator signs
   ``device.approve`` and the page, still open, shows the device active;
6. ``idwall audit verify --config --root`` passes on the ledger.

Every page state is captured as recover-*.png in helpers.browser.SHOTS.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_asyncio

import playwright.async_api as playwright_api

from idwall.demo import start_upstream, whoami_app
from idwall.encoding import b64url_encode
from idwall.testing.fixtures import free_port
from idwall.upstream import AssertionVerifier, JWKSCache
from tests.helpers.api import Enrolled, begin_enroll, bootstrap, call, call_fresh, invite, login, sign
from tests.helpers.browser import (
    CEREMONY_TIMEOUT, CHROMIUM, LIGHT, SHOT_WIDE, BrowserDevice, Console, Story, add_credentials, anonymous_context,
    credentials_of, enroll_in_browser, enrollment_answer, launch, needs, sign_in, virtual_authenticator,
)
from tests.helpers.cli import run_cli
from tests.helpers.gateway import start_test_gateway

# a missing browser must fail the suite, never skip it
assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]  # tests/e2e/ is two levels below the repository

RUN = "/idwall/api/admin/incidents"
PLAYBOOKS = """
incident:
  notice: {title: "Security incident in progress", body: "Enroll a new device and approve it with a passkey you hold.",
           contact: "soc@example.com"}
  playbooks:
    device-lost:
      trigger: a device lost
      stages:
        - {scope: target, steps: [kill, revoke_devices]}
    ransomware:
      trigger: ransomware detected
      stages:
        - {scope: groups, groups: [eng], steps: [kill, revoke_devices, suspect_passkeys]}
"""


@dataclass
class RecoverStory(Story):
    """The administrator (a software passkey, over the API), the incident token, and what the browser made."""

    admin: Enrolled | None = None
    admin_client: Any = None
    token: str | None = None
    incidents: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def story(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RecoverStory]:
    """``idwall init`` with the playbooks, the whoami upstream (verifying assertions), the gateway and Chromium."""
    directory = tmp_path_factory.mktemp("recover")
    upstream_port = free_port()
    gw = await start_test_gateway(directory, f"http://127.0.0.1:{upstream_port}", extra_yaml=PLAYBOOKS)
    verifier = AssertionVerifier(keys=JWKSCache(gw.url + "/.well-known/idwall/jwks.json",
                                                ssl_context=ssl.create_default_context(cafile=gw.init["ca_pem"])),
                                 issuer=gw.url, audience="whoami")
    upstream = await start_upstream(whoami_app(verifier), upstream_port)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NODE_EXTRA_CA_CERTS", gw.init["ca_pem"])
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                made = RecoverStory(gw, browser, Console(), "recover")
                try:
                    yield made
                finally:
                    if made.admin_client is not None:
                        await made.admin_client.close()
                    await browser.close()
    finally:
        await gw.running.stop(drain=1)
        await upstream.cleanup()


@pytest.fixture(autouse=True)
def clean_console(story: RecoverStory) -> Iterator[None]:
    """No test may leave a CSP violation or a script error in any page."""
    yield from story.console.watched()


async def run_playbook(story: RecoverStory, playbook: str, **targets: list[str]) -> str:
    """Run ``playbook`` through the incident API with the automation token; its incident id."""
    body: dict[str, Any] = {"playbook": playbook, "reason": "e2e", **({"targets": targets} if targets else {})}
    status, done, _ = await call_fresh(story.gw, "POST", RUN, token=needs(story.token, "the incident token"),
                                       body=body)
    assert status == 200 and done["state"] == "complete", done
    story.incidents[playbook] = done["incident_id"]
    return str(done["incident_id"])


async def start_cli_enroll(story: RecoverStory, out: Path, name: str) -> tuple[Any, str]:
    """``python -m idwall device enroll --user bob`` in a subprocess; returns it and the page URL it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", "device", "enroll", "--gateway", story.base, "--user", "bob", "--out",
        str(out), "--ca", story.gw.init["ca_pem"], "--name", name, "--timeout", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    found = re.search(rb"Open (https://\S+) in a browser", line)
    assert found, line
    return process, found.group(1).decode()


async def open_new_device_page(story: RecoverStory, who: str, url: str,
                               passkeys: list[dict[str, Any]]) -> tuple[Any, Any, Any, str]:
    """The enrollment page ``url`` in a context with no client certificate whose authenticator holds
    ``passkeys``; the passkey for the new device is created there."""
    context = await anonymous_context(story.browser, story.gw.running.node, story.gw.dir / f"{who}-anon", SHOT_WIDE,
                                      **LIGHT)
    page = await story.page_in(context)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    # held as server-side credentials: the new device's own passkey is then created beside them (a discoverable one
    # of the same user would replace them), as a security key or a synced passkey would hold them
    await add_credentials(cdp, authenticator_id, [{**c, "isResidentCredential": False} for c in passkeys])
    await page.goto(url)
    await page.wait_for_selector("#create:not([hidden])")
    await page.click("#create")
    return context, page, cdp, authenticator_id


async def cli_saved(process: Any, out: Path) -> None:
    """The polling ``idwall device enroll`` finished: it picked the certificate up and saved the device files."""
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, (stdout, stderr)
    # (whether it printed the waiting line depends on whether a poll fell between the passkey and the approval)
    assert b"Device enrolled" in stdout, stderr
    assert all((out / name).stat().st_size > 0 for name in ("device.pem", "device-key.pem", "device.p12", "ca.pem"))


# --------------------------------------------------------------------------- 1: bob's two devices


async def test_bob_enrolls_a_laptop_and_a_phone_in_chromium(story: RecoverStory) -> None:
    gw = story.gw
    story.admin = admin = await bootstrap(gw)
    story.root = admin.answer["root_fingerprint"]
    story.admin_client = client = gw.session(admin)
    assert (await login(gw, admin, client))[0] == 200
    code = await invite(gw, admin, client, "bob", groups=["eng"])
    status, made = await sign(gw, admin, client, {"type": "token.create", "name": "ir", "scopes": ["incident"],
                                                  "ttl": "1h"})
    assert status == 200, made
    story.token = made["result"]["token"]
    await enroll_in_browser(story, "laptop", "Bob laptop", code=code)
    phone = await enroll_in_browser(story, "phone", "Bob phone", user="bob")
    status, approved = await sign(gw, admin, client, {"type": "device.approve", "device_id": phone.device_id})
    assert status == 200, approved
    phone.cert.write_text((await enrollment_answer(story, phone.enrollment_id))["certificate_pem"])
    assert [(await gw.store.get_device(d.device_id)).status for d in story.devices.values()] == ["active", "active"]


# --------------------------------------------------------------------------- 2: the laptop is stolen


async def test_the_device_lost_playbook_revokes_bobs_certificates_and_the_laptops_passkey(story: RecoverStory) -> None:
    laptop, phone = needs(story.devices.get("laptop"), "bob's laptop"), needs(story.devices.get("phone"), "his phone")
    await run_playbook(story, "device-lost", users=["bob"], devices=[laptop.device_id])
    store = story.gw.store
    assert {d: (await store.get_device(d)).status for d in (laptop.device_id, phone.device_id)} == {
        laptop.device_id: "revoked", phone.device_id: "revoked"}
    revoked = {c.device_id: c.revoked_at is not None for c in await store.user_passkeys("bob")}
    assert revoked == {laptop.device_id: True, phone.device_id: False}


# --------------------------------------------------------------------------- 3-4: the tablet, no admin involved


async def test_bob_approves_a_new_tablet_with_his_phones_passkey_and_no_certificate(story: RecoverStory) -> None:
    laptop, phone = story.devices["laptop"], story.devices["phone"]
    # the tablet's authenticator holds both old passkeys (synced): only the phone's may vouch
    out = story.gw.dir / "tablet-device"
    process, url = await start_cli_enroll(story, out, "Bob tablet")
    context, page, cdp, authenticator_id = await open_new_device_page(story, "tablet", url,
                                                                      laptop.credentials + phone.credentials)
    try:
        await page.wait_for_selector("#recover-button:not([hidden])", timeout=CEREMONY_TIMEOUT)
        assert await page.get_attribute("#status", "data-state") == "recover"
        assert await page.is_visible("#incident-notice")
        assert await page.text_content("#recover-device") == "Bob tablet"
        assert await page.text_content("#recover-source") == "127.0.0.1"
        assert (await page.text_content("#recover-started") or "").strip()
        warning = await page.text_content("#recover-warning") or ""
        assert "Only continue if you started this on your own device just now." in warning
        await story.shots(page, "self")
        before = await story.ledger()
        await page.click("#recover-button")
        await page.wait_for_selector('#status[data-state="success"]', timeout=CEREMONY_TIMEOUT)
        assert await page.is_hidden("#recover")
        await story.shots(page, "approved")
        held = {c["credentialId"] for c in laptop.credentials + phone.credentials}
        tablet_passkeys = [c for c in await credentials_of(cdp, authenticator_id) if c["credentialId"] not in held]
        assert len(tablet_passkeys) == 1, tablet_passkeys
        # the terminal that started it picks the certificate up, as after an administrator's approval
        await cli_saved(process, out)
    finally:
        await context.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    entries = await story.ledger()
    assert [e["type"] for e in entries[len(before):]] == ["device.recover"]
    entry = entries[-1]
    (phone_passkey,) = [b64url_encode(c.id) for c in await story.gw.store.user_passkeys("bob")
                        if c.device_id == phone.device_id]
    assert (entry["actor"], entry["approval"]["credential_id"]) == ("bob", phone_passkey)
    enrollment_id = url.rsplit("/", 1)[1]
    answer = await enrollment_answer(story, enrollment_id)
    assert answer["status"] == "active", answer
    story.devices["tablet"] = BrowserDevice(answer["device_id"], enrollment_id, out / "device.pem",
                                            out / "device-key.pem", tablet_passkeys)


async def recovery_of(story: RecoverStory, playbook: str) -> dict[str, Any]:
    """The recovery dashboard's answer for the incident ``playbook`` ran, read with the administrator's session."""
    status, answer = await call(story.admin_client, "GET",
                                story.gw.url + f"{RUN}/{story.incidents[playbook]}/recovery", None)
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


async def test_bob_signs_in_with_the_tablet_and_reaches_the_app(story: RecoverStory) -> None:
    tablet = needs(story.devices.get("tablet"), "the recovered tablet")
    waiting = await recovery_of(story, "device-lost")
    assert (waiting["totals"]["users_back"], [w["user"] for w in waiting["not_back"]]) == (0, ["bob"]), waiting
    browsing = await sign_in(story, tablet, "/hello")
    try:
        text = await browsing.page.text_content("body") or ""
        assert '"bob"' in text and '"bob@example.com"' in text, text[:400]  # the identity the app verified
        await story.shots(browsing.page, "app")
    finally:
        await browsing.context.close()
    # the SOC's recovery dashboard counts him back, by the recovered device, with no one else involved
    back = await recovery_of(story, "device-lost")
    assert (back["totals"]["users_back"], back["totals"]["back_by_how"], back["not_back"]) == (
        1, {"recovered": 1, "approved": 0, "re-enrolled": 0, "logged_in": 0}, []), back


# --------------------------------------------------------------------------- 5: suspect passkeys


async def test_suspect_passkeys_refuse_self_recovery_until_an_administrator_approves(story: RecoverStory) -> None:
    tablet = needs(story.devices.get("tablet"), "the recovered tablet")
    incident = await run_playbook(story, "ransomware")
    _, status, begun = await begin_enroll(story.gw, user="bob", device_name="Bob watch")
    assert status == 200, begun
    context, page, _, _ = await open_new_device_page(story, "watch", begun["enroll_url"], tablet.credentials)
    try:
        await page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('marked your passkeys suspect')",
            timeout=CEREMONY_TIMEOUT)
        said = await page.text_content("#status") or ""
        assert incident in said and "Waiting for an administrator." in said and "device.approve" in said
        assert await page.is_hidden("#recover") and await page.is_hidden("#recover-button")
        await story.shots(page, "suspect")
        # the only way in is an approver: the administrator signs device.approve, the open page follows
        watch = (await enrollment_answer(story, begun["enrollment_id"]))["device_id"]
        status, approved = await sign(story.gw, needs(story.admin, "the administrator"), story.admin_client,
                                      {"type": "device.approve", "device_id": watch})
        assert status == 200 and approved["result"]["status"] == "active", approved
        await page.wait_for_selector('#status[data-state="success"]', timeout=CEREMONY_TIMEOUT)
        await story.shots(page, "approved-by-admin")
    finally:
        await context.close()
    assert (await enrollment_answer(story, begun["enrollment_id"]))["status"] == "active"
    # the suspect passkey cannot sign device.recover even when a client skips the page's refusal
    async with story.gw.session() as anon:
        status, refused = await call(anon, "POST", story.gw.url + f"/idwall/api/enroll/{begun['enrollment_id']}"
                                                                  "/recover/begin", {})
    assert status == 409, refused  # no longer waiting


# --------------------------------------------------------------------------- 6: the ledger


async def test_idwall_audit_verify_passes(story: RecoverStory) -> None:
    assert len(story.incidents) == 2, story.incidents
    done = await asyncio.to_thread(run_cli, "audit", "verify", "--config", str(story.gw.init["config"]),
                                   "--root=" + needs(story.root, "the root fingerprint"))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "ok" in done.stdout.lower(), done.stdout
