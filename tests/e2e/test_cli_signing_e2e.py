"""Signing from the command line, end to end: ``idwall serve --workers 2``, the ``idwall`` CLI as a
subprocess, and Debian's Chromium with a CDP virtual passkey signing on the page the CLI prints.

The story (tests share the gateway, the browser and what earlier tests made):

1. the first administrator enrolls with ``idwall device enroll`` and signs in in the browser holding that
   device's certificate; ``idwall invite create`` prints the action, its check code and a link; the page
   shows the same action and check code, the passkey signs, and only the terminal prints the code;
2. the link does not open twice;
3. the invited person enrolls (held for approval), and ``idwall device approve`` releases the device;
   ``idwall admin grant`` and ``idwall token create --json`` sign the same way;
4. the link opened in that person's browser (another user's session) is refused, and the CLI says who;
5. declined on the page, the CLI stops; a device without a session is told to sign in first;
6. the session ends after the CLI began: the page asks to sign in, comes back with the link's secret kept
   for that tab only, and the CLI, which waited, finishes.

With two workers, the page and the CLI are served by whichever process the kernel picks: the hand-off goes
through the store. Screenshots go to SHOTS as cli-sign-*.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from tests.helpers.browser import (
    CHROMIUM, SHOTS, Console, add_credentials, anonymous_context, credentials_of, device_context, launch, state_of,
    virtual_authenticator,
)
from tests.helpers.process import gateway_process
from idwall.config import load_config
from idwall.pki import load_cert, load_private_key

import playwright.async_api as playwright_api

assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
WAIT = 20_000  # ms for a page state; a virtual authenticator answers in well under a second
CLI_WAIT = 60.0


@dataclass
class Person:
    """An enrolled device's files, and a browser context signed in with its certificate and passkey."""

    out: Path
    device_id: str
    credentials: list[dict[str, Any]]
    context: Any = None
    page: Any = None


@dataclass
class World:
    dir: Path
    base: str
    ca: str
    browser: Any
    cluster: Any
    console: Console
    device_ca: Any  # what anonymous_context needs to make a certificate no enrollment knows
    people: dict[str, Person] = field(default_factory=dict)
    code: str | None = None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    directory = tmp_path_factory.mktemp("cli-sign")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with gateway_process(directory, "http://127.0.0.1:9", workers=2,
                         edit=lambda text: text.replace("approval: none", "approval: admin")) as cluster:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NODE_EXTRA_CA_CERTS", cluster.info["ca_pem"])
            config = load_config(cluster.info["config"])
            device_ca = SimpleNamespace(device_ca_cert=load_cert(config.device_ca.cert),
                                        device_ca_key=load_private_key(config.device_ca.key))
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                try:
                    yield World(directory, cluster.info["public_url"], cluster.info["ca_pem"], browser, cluster,
                                Console(), device_ca)
                finally:
                    await browser.close()


@pytest.fixture(autouse=True)
def clean_console(world: World) -> Any:
    world.console.lines.clear()
    yield
    world.console.assert_clean()


def needs(value: Any, what: str) -> Any:
    if value is None:
        pytest.fail(f"{what} is missing: an earlier test of this module failed")
    return value


async def cli(*args: str) -> Any:
    """``python -m idwall ARGS`` as a subprocess (stdout: the result; stderr: the action, the link, progress)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO), env={k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")})


async def read_until(stream: Any, pattern: bytes) -> tuple[re.Match[bytes], bytes]:
    seen = b""
    while True:
        line = await asyncio.wait_for(stream.readline(), CLI_WAIT)
        seen += line
        found = re.search(pattern, line)
        if found:
            return found, seen
        if not line:
            pytest.fail(f"the CLI never printed {pattern!r}: {seen!r}")


async def finished(process: Any) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_WAIT)
    return process.returncode, stdout.decode(), stderr.decode()


async def signing(world: World, who: str, *args: str) -> tuple[Any, str, str, str]:
    """Start a signing verb as ``who``'s device; returns the process, the link, the check code, what it printed."""
    process = await cli(*args, "--gateway", world.base, "--dir", str(world.people[who].out))
    found, seen = await read_until(process.stderr, rb"^  (https://\S+/idwall/sign/\S+)$")
    code = re.search(rb"check code:\s+([0-9A-F]{4}-[0-9A-F]{4})", seen)
    assert code is not None, seen
    return process, found.group(1).decode(), code.group(1).decode(), seen.decode()


async def enroll(world: World, who: str, code: str, *, approve_as: str | None = None) -> Person:
    """``idwall device enroll``, the passkey made on its page in a browser without a certificate; with
    ``approve_as``, the device is held for approval and that administrator approves it from the CLI."""
    out = world.dir / f"{who}-device"
    process = await cli("device", "enroll", "--gateway", world.base, f"--code={code}", "--out", str(out), "--ca",
                        world.ca, "--name", f"{who} laptop", "--timeout", "120")
    found, _ = await read_until(process.stdout, rb"Open (https://\S+) in a browser")
    context = await anonymous_context(world.browser, world.device_ca, world.dir / f"{who}-anon")
    page = await context.new_page()
    world.console.attach(page)
    cdp, authenticator_id = await virtual_authenticator(context, page)
    await page.goto(found.group(1).decode())
    await page.click("#create")
    await page.wait_for_selector('#status[data-state="success"], #status[data-state="pending"]', timeout=WAIT)
    device_id = (await page.text_content("#device-id")) or ""
    credentials = await credentials_of(cdp, authenticator_id)
    await context.close()
    if approve_as is not None:
        assert await state_of(page) == "pending" if not page.is_closed() else True
        await approve(world, approve_as, device_id)
    status, stdout, stderr = await finished(process)
    assert status == 0, (stdout, stderr)
    person = Person(out, device_id, credentials)
    world.people[who] = person
    return person


async def sign_in(world: World, who: str) -> Any:
    """A browser context with ``who``'s device certificate and passkey, signed in."""
    person = world.people[who]
    person.context = await device_context(world.browser, world.base, person.out / "device.pem",
                                          person.out / "device-key.pem")
    person.page = await person.context.new_page()
    world.console.attach(person.page)
    cdp, authenticator_id = await virtual_authenticator(person.context, person.page)
    await add_credentials(cdp, authenticator_id, person.credentials)
    # back on the sign-in page afterwards, which then says so
    await person.page.goto(world.base + "/idwall/login?next=/idwall/login")
    async with person.page.expect_navigation(timeout=WAIT):
        await person.page.click("#signin")
    await person.page.wait_for_selector('#status[data-state="signed-in"]', timeout=WAIT)
    return person.page


async def approve(world: World, admin: str, device_id: str) -> None:
    process, link, _, _ = await signing(world, admin, "device", "approve", device_id)
    page = world.people[admin].page
    await page.goto(link)
    await page.wait_for_selector("#sign:not([hidden])", timeout=WAIT)
    assert await page.text_content("#summary") == f"Approve the pending device {device_id}: it gets its certificate."
    await page.click("#sign")
    await page.wait_for_selector('#status[data-state="signed"]', timeout=WAIT)
    status, stdout, stderr = await finished(process)
    assert status == 0, (stdout, stderr)
    assert stdout.strip() == f"Device {device_id} approved: active."


# --------------------------------------------------------------------------- 1-2


async def test_invite_create_is_signed_on_the_page_and_only_the_terminal_shows_the_code(world: World) -> None:
    await enroll(world, "admin", world.cluster.info["bootstrap_code"])
    page = await sign_in(world, "admin")
    process, link, check, printed = await signing(
        world, "admin", "invite", "create", "--user", "bob", "--name", "Bob Exämple", "--email", "bob@example.com",
        "--group", "eng", "--group", "ops")
    assert "Invite Bob Exämple <bob@example.com> as user bob, in groups eng, ops." in printed
    assert '"type":"invite.create"' in printed and '"actor":"admin"' in printed
    await page.goto(link)
    await page.wait_for_selector("#sign:not([hidden])", timeout=WAIT)
    assert await state_of(page) == "ready"
    assert "#" not in page.url  # the secret left the address bar
    assert await page.text_content("#check-code") == check
    assert await page.text_content("#summary") == "Invite Bob Exämple <bob@example.com> as user bob, in groups eng, ops."
    assert '"user":"bob"' in (await page.text_content("#canonical") or "")
    await page.screenshot(path=str(SHOTS / "cli-sign-ready.png"), full_page=True)
    await page.click("#sign")
    await page.wait_for_selector('#status[data-state="signed"]', timeout=WAIT)
    await page.screenshot(path=str(SHOTS / "cli-sign-signed.png"), full_page=True)
    status, stdout, stderr = await finished(process)
    assert status == 0, (stdout, stderr)
    code = re.search(r"^  (\S+)$", stdout, re.M)
    assert code is not None and stdout.startswith("Invite for bob created."), stdout
    world.code = code.group(1)
    assert world.code not in (await page.content())
    assert f"idwall device enroll --gateway {world.base} --code {world.code}" in stdout

    # the same link again, in a new tab of the same browser: refused, the page says it cannot be used
    again = await world.people["admin"].context.new_page()
    world.console.attach(again)
    await again.goto(link)
    await again.wait_for_selector('#status[data-state="ended"]', timeout=WAIT)
    assert "already" in (await again.text_content(".status-detail") or "")
    assert not await again.is_visible("#sign")
    await again.screenshot(path=str(SHOTS / "cli-sign-used.png"), full_page=True)
    await again.close()


# --------------------------------------------------------------------------- 3


async def test_device_approve_admin_grant_and_token_create(world: World) -> None:
    code = needs(world.code, "the invite code")
    bob = await enroll(world, "bob", code, approve_as="admin")
    assert (bob.out / "device.pem").is_file()
    page = world.people["admin"].page

    process, link, _, _ = await signing(world, "admin", "admin", "grant", "bob")
    await page.goto(link)
    await page.click("#sign")
    await page.wait_for_selector('#status[data-state="signed"]', timeout=WAIT)
    assert (await finished(process))[:2] == (0, "bob is now an administrator.\n")

    process, link, _, _ = await signing(world, "admin", "token", "create", "--name", "soar", "--scope", "kill",
                                        "--scope", "read", "--ttl", "1h", "--json")
    await page.goto(link)
    await page.click("#sign")
    await page.wait_for_selector('#status[data-state="signed"]', timeout=WAIT)
    status, stdout, stderr = await finished(process)
    assert status == 0, stderr
    answer = json.loads(stdout)
    assert answer["action"]["type"] == "token.create" and answer["action"]["scopes"] == ["kill", "read"]
    assert answer["result"]["token"] and answer["result"]["token"] not in await page.content()
    assert answer["result"]["token"] not in stderr

    # the ledger has each signed action with its passkey assertion, and verifies
    status, exported, _ = await finished(await cli("audit", "export", "--config", world.cluster.info["config"]))
    assert status == 0
    entries = [json.loads(line) for line in exported.splitlines()]
    assert [e["type"] for e in entries][-4:] == ["device.enroll", "device.approve", "admin.grant", "token.create"]
    assert all(e["approval"]["action"]["actor"] == "admin" for e in entries[-3:])
    status, verified, _ = await finished(await cli("audit", "verify", "--config", world.cluster.info["config"]))
    assert status == 0, verified


# --------------------------------------------------------------------------- 4-5


async def test_a_link_opened_in_another_users_browser_is_refused(world: World) -> None:
    needs(world.people.get("bob"), "bob's device")
    bob_page = await sign_in(world, "bob")
    process, link, _, _ = await signing(world, "admin", "admin", "revoke", "bob")
    await bob_page.goto(link)
    await bob_page.wait_for_selector('#status[data-state="other-session"]', timeout=WAIT)
    assert not await bob_page.is_visible("#sign")
    assert await bob_page.text_content("#summary") == ""  # nothing of the action reached that page
    await bob_page.screenshot(path=str(SHOTS / "cli-sign-other-session.png"), full_page=True)
    status, stdout, stderr = await finished(process)
    assert status == 1 and stdout == ""
    assert f"opened by another session (user bob, device {world.people['bob'].device_id})" in stderr
    assert "Traceback" not in stderr


async def test_declined_on_the_page_and_no_session(world: World) -> None:
    page = needs(world.people["admin"].page, "the admin's browser")
    process, link, _, _ = await signing(world, "admin", "admin", "revoke", "bob")
    await page.goto(link)
    await page.click("#decline")
    await page.wait_for_selector('#status[data-state="declined"]', timeout=WAIT)
    await page.screenshot(path=str(SHOTS / "cli-sign-declined.png"), full_page=True)
    status, stdout, stderr = await finished(process)
    assert status == 1 and "declined on the signing page; nothing was signed" in stderr, stderr

    # bob signs out in his browser: his device's CLI is then told to sign in first, and nothing is begun
    bob = world.people["bob"]
    await bob.page.goto(world.base + "/idwall/login")
    await bob.page.click("#signout")
    await bob.page.wait_for_selector("#signin:not([hidden])", timeout=WAIT)
    process = await cli("token", "create", "--name", "x", "--scope", "kill", "--ttl", "1h", "--gateway", world.base,
                        "--dir", str(bob.out))
    status, stdout, stderr = await finished(process)
    assert status == 1 and "has no live session: sign in at" in stderr and "/idwall/login" in stderr, stderr


# --------------------------------------------------------------------------- 6


async def test_a_session_that_ended_meanwhile_is_renewed_on_the_page_and_the_cli_goes_on(world: World) -> None:
    admin = needs(world.people["admin"].page, "the admin's browser") and world.people["admin"]
    process, link, _, _ = await signing(world, "admin", "admin", "revoke", "bob")
    page = admin.page
    await page.goto(world.base + "/idwall/login")
    await page.click("#signout")
    await page.wait_for_selector("#signin:not([hidden])", timeout=WAIT)
    await page.goto(link)
    await page.wait_for_selector('#status[data-state="login"]', timeout=WAIT)
    await page.screenshot(path=str(SHOTS / "cli-sign-login.png"), full_page=True)
    await page.click("#status-link")
    await page.wait_for_selector("#signin:not([hidden])", timeout=WAIT)
    await page.click("#signin")
    await page.wait_for_selector("#sign:not([hidden])", timeout=WAIT)  # back on the signing page, link intact
    assert await page.text_content("#summary") == "Take administrator rights away from bob."
    await page.click("#sign")
    await page.wait_for_selector('#status[data-state="signed"]', timeout=WAIT)
    status, stdout, stderr = await finished(process)
    assert (status, stdout) == (0, "bob is no longer an administrator.\n"), stderr
