"""The end-user pages over real TLS: strict CSP and no inline code, escaping of every value, the static
allow-list against traversal, the login page's ``next`` against open redirects, and the page states the
server decides (no certificate, unknown or revoked device, signed in, expired session, enrollments)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from idwall import pki, tokens
from idwall.model import Enrollment, Incident, LedgerDraft, StageWork
from idwall.testing.fixtures import client_ssl_context, raw_https
from idwall.web import pages
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import begin_enroll, call_fresh, finish_enroll
from tests.helpers.approvals import enroll_waiting
from tests.helpers.gateway import running_gateway

EXPECTED_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
                "form-action 'self'")
OWN_STATIC = {"idwall.css": "text/css", "idwall.js": "text/javascript", "enroll.js": "text/javascript",
              "login.js": "text/javascript", "sign.js": "text/javascript", "console.js": "text/javascript",
              "people.js": "text/javascript", "devices.js": "text/javascript", "tokens.js": "text/javascript",
              "ledger.js": "text/javascript", "approvals.js": "text/javascript", "incidents.js": "text/javascript"}
CONSOLE_PAGES = ("/idwall/admin/people", "/idwall/admin/devices", "/idwall/admin/tokens", "/idwall/admin/ledger",
                 "/idwall/admin/incidents")


class Page(HTMLParser):
    """Collects what the checks need: every element with its attributes, and the text of each element by id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self.script_bodies: list[str] = []
        self.text = ""
        self.unlabelled: list[str] = []  # form controls neither inside a <label> nor named by aria-label
        self._labels = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        self._labels += tag == "label"
        if tag in ("input", "select", "textarea") and not self._labels and not attributes.get("aria-label"):
            self.unlabelled.append(attributes.get("id") or tag)
        if tag not in ("meta", "link", "br", "img", "input"):
            self._open.append((tag, attributes.get("id")))
            if attributes.get("id"):
                self.text_by_id[attributes["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        self._labels -= tag == "label"
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self.text += data
        for tag, element_id in self._open:
            if element_id:
                self.text_by_id[element_id] += data
        if self._open and self._open[-1][0] == "script":
            self.script_bodies.append(data)

    def by_id(self, element_id: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.elements if attrs.get("id") == element_id)

    def status(self) -> tuple[str | None, str]:
        return self.by_id("status").get("data-state"), " ".join(self.text_by_id["status"].split())


def assert_no_inline_code(page: Page) -> None:
    """No script without src, no inline handlers or styles, no style elements, no javascript: URLs."""
    for tag, attrs in page.elements:
        assert tag != "style", "inline <style> element"
        if tag == "script":
            assert attrs.get("src"), "inline <script> without src"
            assert attrs["src"].startswith("/idwall/static/")  # type: ignore[union-attr]
        for name, value in attrs.items():
            assert not name.lower().startswith("on"), f"inline handler {name} on <{tag}>"
            assert name.lower() != "style", f"style attribute on <{tag}>"
            if name in ("href", "src", "action"):
                assert not (value or "").strip().lower().startswith("javascript:"), f"{name}={value!r}"
    assert not "".join(page.script_bodies).strip()


async def assert_assets_served(gateway: Any, page: Page) -> None:
    """Every script and style sheet the page references under /idwall/static/ is served (from the allow-list)."""
    for tag, attrs in page.elements:
        ref = attrs.get("src") if tag == "script" else attrs.get("href") if tag == "link" else None
        if ref and ref.startswith("/idwall/static/"):
            async with gateway.session() as client:
                async with client.get(gateway.url + ref) as resp:
                    assert resp.status == 200, ref


async def fetch(client: Any, url: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with client.get(url, allow_redirects=False, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def add_enrollment(gateway: Any, *, device_name: str, user_id: str = "alice", name: str = "Alice",
                         expires_in: float = 300, enrollment_id: str = "enr-test") -> str:
    now = time.time()
    key = pki.generate_p256_key()
    csr_pem = pki.make_csr(key, "device")
    csr = pki.check_csr(csr_pem)
    await gateway.store.create_enrollment(Enrollment(
        enrollment_id, os.urandom(32), os.urandom(32), csr.spki_sha256, csr_pem, device_name, None, user_id, name,
        "", ("eng",), False, False, "begun", None, now, now + expires_in))
    return enrollment_id


# --------------------------------------------------------------------------- CSP and inline code


@pytest.mark.parametrize("path", ["/idwall/enroll", "/idwall/enroll/enr-test", "/idwall/enroll/no-such-id",
                                  "/idwall/login", "/idwall/login?next=/app&reason=expired",
                                  "/idwall/sign/sgn-AAAAAAAAAAAAAAAAAAAAAA", "/idwall/sign/not-a-request"])
async def test_pages_are_html_with_strict_csp_and_no_inline_code(gateway, path: str) -> None:
    await add_enrollment(gateway, device_name="laptop")
    device = await gateway.device("carol")
    for client_device in (None, device):
        async with gateway.session(client_device) as client:
            status, headers, text = await fetch(client, gateway.url + path)
        assert status in (200, 403, 404)
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Content-Security-Policy"] == EXPECTED_CSP
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        page = Page(text)
        assert_no_inline_code(page)
        assert page.by_id("status")["role"] == "status"
        assert page.by_id("status")["aria-live"] == "polite"
        await assert_assets_served(gateway, page)


async def test_page_csp_constant_is_the_required_policy() -> None:
    assert pages.CSP == EXPECTED_CSP
    assert "unsafe" not in pages.CSP


# --------------------------------------------------------------------------- static files


@pytest.mark.parametrize("name, ctype", sorted(OWN_STATIC.items()))
async def test_static_files_have_type_cache_control_and_etag(gateway, name: str, ctype: str) -> None:
    async with gateway.session() as client:
        async with client.get(f"{gateway.url}/idwall/static/{name}") as resp:
            assert resp.status == 200
            assert resp.content_type == ctype
            assert resp.charset == "utf-8"
            assert resp.headers["Cache-Control"] == pages.STATIC_CACHE_CONTROL
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            etag = resp.headers["ETag"]
            body = await resp.read()
        assert body == (pages.STATIC_DIR / name).read_bytes()
        async with client.get(f"{gateway.url}/idwall/static/{name}", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
            assert await resp.read() == b""
        async with client.get(f"{gateway.url}/idwall/static/{name}", headers={"If-None-Match": '"other"'}) as resp:
            assert resp.status == 200


TRAVERSALS = [
    "/idwall/static/../config",
    "/idwall/static/../pages.py",
    "/idwall/static/..%2Fpages.py",
    "/idwall/static/%2e%2e%2fpages.py",
    "/idwall/static/%2E%2E/pages.py",
    "/idwall/static/..%5Cpages.py",
    "/idwall/static/....//pages.py",
    "/idwall/static/./idwall.js/../../pages.py",
    "/idwall/static//etc/passwd",
    "/idwall/static/%2Fetc%2Fpasswd",
    "/idwall/static/idwall.js%00.py",
    "/idwall/static/idwall.js%2F",
    "/idwall/static/IDWALL.JS",
    "/idwall/static/idwall.js.bak",
    "/idwall/static/admin.html",
    "/idwall/static/",
    "/idwall/static/.",
    "/idwall/static/..",
    "/idwall/static/__init__.py",
]


async def test_static_allow_list_refuses_everything_else(gateway) -> None:
    # One gateway for the whole table (each target on its own raw connection, sent byte for byte).
    for target in TRAVERSALS:
        request = f"GET {target} HTTP/1.1\r\nHost: localhost:{gateway.port}\r\nConnection: close\r\n\r\n".encode()
        raw = await raw_https("127.0.0.1", gateway.port, gateway.ssl(), request)
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.split()[1] in (b"400", b"403", b"404"), (target, status_line)
        assert b"from aiohttp import web" not in body, target
        assert b"root:" not in body, target
        assert b"public_url" not in body, target


async def test_static_allow_list_names_only_files_of_the_static_directory() -> None:
    for name in pages.STATIC_FILES:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    for name in OWN_STATIC:
        assert (pages.STATIC_DIR / name).is_file()
    for name in pages.VENDOR_FILES:
        assert "/" not in name and (pages.STATIC_DIR / "vendor" / name).is_file()


async def test_vendored_libraries_are_served_as_published_and_nothing_else_of_their_folder(gateway) -> None:
    """uPlot's script and style sheet, byte for byte from static/vendor/; its licence and README are not served,
    nor is anything by its folder's path."""
    readme = (pages.STATIC_DIR / "vendor" / "README.md").read_text()
    async with gateway.session() as client:
        for name, ctype in (("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css")):
            assert name in readme
            async with client.get(f"{gateway.url}/idwall/static/{name}") as resp:
                assert resp.status == 200 and resp.content_type == ctype, name
                assert resp.headers["Content-Security-Policy"] == EXPECTED_CSP
                assert await resp.read() == (pages.STATIC_DIR / "vendor" / name).read_bytes()
        for path in ("vendor/uPlot.iife.min.js", "uPlot.LICENSE", "README.md", "vendor%2FuPlot.min.css"):
            async with client.get(f"{gateway.url}/idwall/static/{path}") as resp:
                assert resp.status in (400, 404), path  # an encoded slash is refused before routing


# --------------------------------------------------------------------------- escaping


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;\'"'


async def test_enrollment_values_are_escaped(gateway) -> None:
    await add_enrollment(gateway, device_name=HOSTILE, name=HOSTILE + " name", user_id="alice")
    async with gateway.session() as client:
        status, headers, text = await fetch(client, gateway.url + "/idwall/enroll/enr-test")
    assert status == 200
    assert "<script>alert" not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    page = Page(text)
    assert_no_inline_code(page)
    assert page.text_by_id["device"] == HOSTILE  # shown to the user exactly as entered, as text
    assert HOSTILE + " name (alice)" == page.text_by_id["who"]
    assert [tag for tag, _ in page.elements].count("img") == 0
    assert page.status()[0] == "ready"
    assert page.by_id("main")["data-enrollment-id"] == "enr-test"


async def test_login_page_escapes_user_and_device(gateway) -> None:
    device = await gateway.device("mallory", name=HOSTILE)
    async with gateway.session(device) as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login")
    assert status == 200
    assert "<script>alert" not in text
    page = Page(text)
    assert_no_inline_code(page)
    assert page.text_by_id["who"].startswith(HOSTILE)
    assert page.text_by_id["device"] == HOSTILE + " (active)"


def test_render_escapes_every_value_but_markup() -> None:
    import string

    out = pages.render(string.Template('<a href="$href">$text</a>$html'), href='"><script>', text="<b>",
                       html=pages.Markup("<i>ok</i>"))
    assert out == '<a href="&quot;&gt;&lt;script&gt;">&lt;b&gt;</a><i>ok</i>'


# --------------------------------------------------------------------------- login: next and states


OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    "/%0D%0ASet-Cookie:x=1",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " /app",
    "app",
    "",
    "/" + "a" * 5000,
]


async def test_login_next_open_redirect_attempts_become_root(gateway) -> None:
    device = await gateway.device("dave")
    async with gateway.session(device) as client:
        for hostile in OPEN_REDIRECTS:
            status, _, text = await fetch(client, gateway.url + "/idwall/login", params={"next": hostile})
            assert status == 200, hostile
            page = Page(text)
            assert page.by_id("main")["data-next"] == "/", hostile
            assert page.by_id("continue")["href"] == "/", hostile
            assert_no_inline_code(page)


@pytest.mark.parametrize("good", ["/", "/app/page", "/app/page?x=1&y=%2F", "/a/b;c=d", "/~user/"])
async def test_login_next_keeps_same_origin_paths(gateway, good: str) -> None:
    device = await gateway.device("erin")
    async with gateway.session(device) as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login", params={"next": good})
    page = Page(text)
    assert page.by_id("main")["data-next"] == good
    assert page.by_id("continue")["href"] == good


async def test_login_next_is_escaped_in_attributes(gateway) -> None:
    device = await gateway.device("dora")
    hostile = '/"><script>alert(1)</script>'
    async with gateway.session(device) as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/login", params={"next": hostile})
    assert "<script>alert" not in text
    page = Page(text)
    assert_no_inline_code(page)
    assert page.by_id("main")["data-next"] == hostile  # a same-origin path, harmless once escaped
    assert page.by_id("continue")["href"] == hostile


async def test_login_without_certificate_points_at_enrollment(gateway) -> None:
    async with gateway.session() as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login?next=/app")
    assert status == 403
    page = Page(text)
    state, words = page.status()
    assert state == "no-certificate"
    assert "This browser has no device certificate." in words
    assert page.by_id("status-link")["href"] == "/idwall/enroll"
    assert "hidden" in page.by_id("signin")
    assert "hidden" in page.by_id("signout")
    assert "hidden" in page.by_id("identity")


async def test_login_signed_in_shows_owner_and_sign_out(gateway) -> None:
    device = await gateway.device("frank", name="Frank's laptop")
    async with gateway.session(device) as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login?next=/wiki")
    page = Page(text)
    assert status == 200
    assert page.status()[0] == "signed-in"
    assert page.text_by_id["who"] == "Frank's laptop (frank)"  # register_device_directly names user and device alike
    assert "signed in" in page.text_by_id["session"]
    assert "hidden" not in page.by_id("signout")
    assert "hidden" not in page.by_id("continue")
    assert "hidden" not in page.by_id("signin")  # a fresh passkey check stays possible (step-up)
    assert "hidden" in page.by_id("approvals-link")  # frank approves nothing


async def test_login_signed_in_links_to_the_devices_waiting_for_this_persons_approval(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    await gateway.device("alice")
    await enroll_waiting(gateway, user="alice", device_name="Alice phone")  # self-service: it waits
    async with gateway.session(admin) as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/login")
    page = Page(text)
    assert page.status()[0] == "signed-in" and "hidden" not in page.by_id("approvals-link")
    assert " ".join(page.text_by_id["approvals-link"].split()) == "1 device waits for your approval: review and sign"
    assert [a["href"] for tag, a in page.elements if tag == "a" and a.get("href") == "/idwall/approvals"]
    no_session = await gateway.device("root", admin=True, with_session=False)
    async with gateway.session(no_session) as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/login")
    assert "hidden" in Page(text).by_id("approvals-link")  # only a signed-in person is told


async def test_login_without_session_and_expired_reason(gateway) -> None:
    device = await gateway.device("grace", with_session=False)
    async with gateway.session(device) as client:
        _, _, plain = await fetch(client, gateway.url + "/idwall/login")
        _, _, expired = await fetch(client, gateway.url + "/idwall/login?reason=expired")
    assert Page(plain).status()[0] == "ready"
    page = Page(expired)
    state, words = page.status()
    assert state == "expired"
    assert "Your session ended, sign in again." in words
    assert "hidden" in page.by_id("signout")
    assert "hidden" not in page.by_id("signin")


async def test_login_revoked_device(gateway) -> None:
    device = await gateway.device("heidi")
    await gateway.store.kill(scope="device", target=device.device_id, revoke_devices=True, now=time.time(),
                             draft=LedgerDraft("kill", "test", device.device_id, {"reason": "test"}))
    async with gateway.session(device) as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login")
    page = Page(text)
    assert status == 403
    assert page.status()[0] == "revoked"
    assert "hidden" in page.by_id("signin")


async def test_login_certificate_the_store_does_not_know(gateway, tmp_path: Path) -> None:
    gw = gateway.running.node
    key = pki.generate_p256_key()
    cert = pki.issue_device_cert(ca_cert=gw.device_ca_cert, ca_key=gw.device_ca_key,
                                 csr=pki.check_csr(pki.make_csr(key, "x")), device_id="dev-ghost",
                                 now=datetime.now(timezone.utc), ttl=600)
    cert_path, key_path = tmp_path / "ghost.pem", tmp_path / "ghost-key.pem"
    pki.write_cert(cert_path, cert)
    pki.write_private_key(key_path, key)
    ctx = client_ssl_context(gateway.init["ca_pem"], cert_path, key_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/login")
    assert status == 403
    assert Page(text).status()[0] == "unknown-device"


# --------------------------------------------------------------------------- enrollment states


async def test_enroll_help_page_names_the_command_and_the_invite(gateway) -> None:
    async with gateway.session() as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/enroll")
    assert status == 200
    page = Page(text)
    assert f"idwall device enroll --gateway {gateway.url} --code CODE" in page.text
    assert "invite" in page.text
    assert not any(tag == "script" for tag, _ in page.elements)


async def test_enroll_help_page_recognises_an_enrolled_browser(gateway) -> None:
    device = await gateway.device("ivan")
    async with gateway.session(device) as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/enroll")
    assert Page(text).status()[0] == "enrolled"


@pytest.mark.parametrize("enrollment_id", ["no-such-id", "%3Cscript%3E", "a" * 200, "..", "enr test"])
async def test_unknown_or_malformed_enrollment_is_404_with_a_next_step(gateway, enrollment_id: str) -> None:
    await add_enrollment(gateway, device_name="laptop")
    async with gateway.session() as client:
        status, _, text = await fetch(client, f"{gateway.url}/idwall/enroll/{enrollment_id}")
    assert status == 404
    assert "<script>" not in text
    if "data-page" in text:
        page = Page(text)
        assert page.status()[0] == "unknown"
        assert "hidden" in page.by_id("facts"), "no table of dashes for an enrollment nobody knows"
        assert_no_inline_code(page)


async def test_encoded_control_character_in_an_enrollment_path_is_refused_before_any_page(gateway) -> None:
    await add_enrollment(gateway, device_name="laptop")
    async with gateway.session() as client:
        status, headers, text = await fetch(client, f"{gateway.url}/idwall/enroll/enr-test%00")
    assert status == 400 and headers["Content-Type"] == "application/problem+json"
    assert "encoded control character" in text


async def test_expired_enrollment(gateway) -> None:
    await add_enrollment(gateway, device_name="old laptop", expires_in=-1)
    async with gateway.session() as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/enroll/enr-test")
    state, words = Page(text).status()
    assert state == "expired"
    assert "idwall device enroll" in words


# --------------------------------------------------------------------------- the JS helper's next check


SAFE_NEXT_CASES = [(bad, "/") for bad in OPEN_REDIRECTS if not bad.startswith("/") or bad.startswith(("//", "/\\"))
                   or "\t" in bad] + [
    ("/app?x=1", "/app?x=1"), ("/", "/"), ("/ok#frag", "/ok#frag"), (None, "/"), (42, "/"),
    ("/a\nb", "/"), ("/a b", "/"), ("/a\u0000", "/")]


def test_js_safe_next_accepts_only_single_slash_paths(tmp_path: Path) -> None:
    script = tmp_path / "check.mjs"
    helper = (pages.STATIC_DIR / "idwall.js").resolve().as_uri()
    script.write_text(
        f"import {{ safeNext }} from {json.dumps(helper)};\n"
        "const cases = JSON.parse(process.argv[2]);\n"
        "console.log(JSON.stringify(cases.map(([v]) => safeNext(v))));\n")
    cases = [[value, expected] for value, expected in SAFE_NEXT_CASES]
    out = subprocess.run(["node", str(script), json.dumps(cases)], capture_output=True, text=True, timeout=30,
                         check=True)
    results = json.loads(out.stdout)
    for (value, expected), got in zip(cases, results):
        assert got == expected, (value, got)


# enroll.js against a minimal DOM: every element the script asks for by id, and fetch answering one canned reply.
ENROLL_JS_RUNNER = """
const elements = new Map();
function element(key) {
  if (!elements.has(key)) {
    const node = { textContent: "", hidden: false, dataset: {}, disabled: false, href: "",
      addEventListener() {}, focus() {}, querySelector: (sel) => element(sel) };
    node.parentElement = node;
    elements.set(key, node);
  }
  return elements.get(key);
}
globalThis.window = globalThis;
globalThis.document = { getElementById: element };
const [initial, status, body] = JSON.parse(process.argv[2]);
for (const [id, text] of Object.entries(initial)) element(id).textContent = text;
element("main").dataset.enrollmentId = "enr-test";
globalThis.fetch = async () => ({
  ok: status < 400, status, headers: { get: () => "application/json" }, json: async () => body,
});
await import("./enroll.js");
await new Promise((resolve) => setTimeout(resolve, 50));
const out = {};
for (const [key, node] of elements) out[key] = { text: node.textContent, hidden: node.hidden };
console.log(JSON.stringify(out));
"""


def run_enroll_js(tmp_path: Path, initial: dict[str, str], status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """What enroll.js leaves in each element after the status answer ``answer`` (HTTP ``status``)."""
    for name in ("idwall.js", "enroll.js"):
        shutil.copy(pages.STATIC_DIR / name, tmp_path / name)
    runner = tmp_path / "run.mjs"
    runner.write_text(ENROLL_JS_RUNNER)
    out = subprocess.run(["node", str(runner), json.dumps([initial, status, answer])], capture_output=True,
                         text=True, timeout=30, check=True)
    return json.loads(out.stdout)


async def test_enroll_page_shows_name_and_user_id_and_the_script_keeps_them(gateway, tmp_path: Path) -> None:
    await add_enrollment(gateway, device_name="Bob's phone", user_id="bob", name="Bob Example")
    async with gateway.session() as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/enroll/enr-test")
    page = Page(text)
    assert page.text_by_id["who"] == "Bob Example (bob)"
    assert "hidden" not in page.by_id("facts")
    # The status answer names only the user id; the script must not replace the server's "Name (id)" with it.
    async with gateway.session() as client:
        async with client.get(gateway.url + "/idwall/api/enroll/enr-test") as resp:
            answer = await resp.json()
    assert answer["user"] == "bob"
    answer.pop("options", None)
    answer["status"] = "active"  # the path that never reaches the passkey API
    result = run_enroll_js(tmp_path, {"who": page.text_by_id["who"], "device": page.text_by_id["device"]}, 200, answer)
    assert result["who"]["text"] == "Bob Example (bob)"
    assert result["device"]["text"] == "Bob's phone"
    assert result[".status-title"]["text"] == "Your device is enrolled; return to the terminal."


def test_enroll_script_on_an_unknown_enrollment_hides_the_facts(tmp_path: Path) -> None:
    problem = {"type": "https://idwall.dev/problems/not-found", "title": "Not Found",
               "detail": "unknown enrollment; start again with your code"}
    result = run_enroll_js(tmp_path, {}, 404, problem)
    assert result["facts"]["hidden"] is True
    assert result[".status-title"]["text"] == "Unknown enrollment."
    assert result[".status-detail"]["text"] == "No enrollment has this link."


@pytest.mark.parametrize("name", sorted(n for n in OWN_STATIC if n.endswith(".js")))
def test_scripts_parse_as_modules(name: str) -> None:
    out = subprocess.run(["node", "--check", "--input-type=module"],
                         input=(pages.STATIC_DIR / name).read_text(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- the signing page


async def test_the_signing_page_is_a_shell_its_script_fills_from_the_api(gateway) -> None:
    """The server never sees the link's secret (it is in the fragment): the page holds no action, only the id."""
    async with gateway.session() as client:
        status, _, text = await fetch(client, f"{gateway.url}/idwall/sign/sgn-AAAAAAAAAAAAAAAAAAAAAA")
    assert status == 200
    page = Page(text)
    assert page.by_id("main")["data-request-id"] == "sgn-AAAAAAAAAAAAAAAAAAAAAA"
    assert page.status()[0] == "loading"
    assert "hidden" in page.by_id("facts") and "hidden" in page.by_id("sign") and "hidden" in page.by_id("decline")
    assert ("script", {"type": "module", "src": "/idwall/static/sign.js"}) in page.elements


@pytest.mark.parametrize("request_id", ["sgn-short", "%3Cscript%3E", "sgn-" + "A" * 23, "enr-AAAAAAAAAAAAAAAAAAAAAA"])
async def test_a_malformed_signing_link_is_404_without_a_script(gateway, request_id: str) -> None:
    async with gateway.session() as client:
        status, _, text = await fetch(client, f"{gateway.url}/idwall/sign/{request_id}")
    assert status == 404
    page = Page(text)
    assert page.status()[0] == "unknown" and page.by_id("main")["data-request-id"] == ""
    assert not any(tag == "script" for tag, _ in page.elements)


# --------------------------------------------------------------------------- the admin console's pages


async def console_shell_page(gateway: Any, device: Any, path: str) -> Page:
    """A page in the console's shell, fetched by ``device``'s browser: strict headers, no inline code, labelled
    controls, the live and alert regions in place (empty before their first message, so it is announced)."""
    async with gateway.session(device) as client:
        status, headers, text = await fetch(client, gateway.url + path, headers={"Accept": "text/html"})
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == EXPECTED_CSP and headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    page = Page(text)
    assert_no_inline_code(page)
    assert not page.unlabelled, page.unlabelled
    assert page.by_id("status")["role"] == "status" and page.by_id("status")["aria-live"] == "polite"
    assert page.text_by_id["status"] == ""
    assert page.by_id("alert")["role"] == "alert"
    return page


@pytest.mark.parametrize("path", CONSOLE_PAGES)
async def test_console_pages_are_strict_labelled_and_for_admins_only(gateway, path: str) -> None:
    page = await console_shell_page(gateway, await gateway.device("root", admin=True), path)
    current = [a for tag, a in page.elements if tag == "a" and a.get("aria-current") == "page"]
    assert [a["href"] for a in current] == [path]
    assert sum(tag == "h1" for tag, _ in page.elements) == 1
    await assert_assets_served(gateway, page)


async def test_console_scripts_write_text_never_markup() -> None:
    for name in ("console.js", "people.js", "devices.js", "tokens.js", "ledger.js", "approvals.js", "incidents.js"):
        script = (pages.STATIC_DIR / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in script, (name, sink)


async def test_console_pages_send_browsers_without_a_fresh_session_to_the_passkey_login(gateway) -> None:
    no_session = await gateway.device("root", admin=True, with_session=False)
    stale = await gateway.device("root2", admin=True, auth_time=time.time() - gateway.config.admin.fresh_auth - 1)
    for device in (no_session, stale):
        async with gateway.session(device) as client:
            status, headers, _ = await fetch(client, gateway.url + "/idwall/admin/ledger",
                                             headers={"Accept": "text/html,application/xhtml+xml"})
            assert status == 303 and headers["Location"] == "/idwall/login?next=/idwall/admin/ledger"
            status, headers, text = await fetch(client, gateway.url + "/idwall/admin/ledger")
            assert status == 401 and headers["Content-Type"].startswith("application/problem+json")
            assert json.loads(text)["login_url"].endswith("/idwall/login?next=/idwall/admin")


async def test_a_person_who_is_not_an_admin_gets_no_console(gateway) -> None:
    alice = await gateway.device("alice", groups=("eng",))
    async with gateway.session(alice) as client:
        for path in CONSOLE_PAGES:
            status, headers, text = await fetch(client, gateway.url + path, headers={"Accept": "text/html"})
            assert status == 403 and headers["Content-Type"] == "text/html; charset=utf-8"
            assert headers["Content-Security-Policy"] == EXPECTED_CSP
            page = Page(text)
            assert page.status() == ("forbidden", "This console is for administrators. user alice is not an "
                                     "administrator Ask an administrator if you need access. Sign-in page")
            assert not any(attrs.get("src", "").endswith(("people.js", "ledger.js")) for tag, attrs in page.elements
                           if tag == "script"), "no console script for a non-admin"
            status, headers, text = await fetch(client, gateway.url + path)
            assert status == 403 and json.loads(text)["type"].endswith("/forbidden")


async def test_tokens_open_no_console_page_and_unknown_pages_are_404(gateway) -> None:
    issued = tokens.new_token(name="soar", scopes=["read"], ttl=600, created_by="root", now=time.time())
    await gateway.store.create_token(issued.record, LedgerDraft("token.create", "root", issued.record.id, {}))
    async with gateway.session() as client:
        status, _, text = await fetch(client, gateway.url + "/idwall/admin/people",
                                      headers={"Authorization": f"Bearer {issued.secret}", "Accept": "text/html"})
    assert status == 403 and "passkey session" in text
    admin = await gateway.device("root", admin=True)
    async with gateway.session(admin) as client:
        for path in ("/idwall/admin/nope", "/idwall/admin/people.html", "/idwall/admin/..%2Fpeople"):
            status, headers, text = await fetch(client, gateway.url + path, headers={"Accept": "text/html"})
            assert status in (400, 404), (path, status)
            assert "<table" not in text


# --------------------------------------------------------------------------- the approvals page


@pytest.mark.parametrize(("admin", "nav", "links"), [
    (False, "Your pages", ["/idwall/approvals", "/idwall/login"]),
    (True, "Console pages", [href for href, _ in pages.CONSOLE_NAV]),
])
async def test_the_approvals_page_is_strict_labelled_and_for_any_passkey_session(
        gateway, admin: bool, nav: str, links: list[str]) -> None:
    page = await console_shell_page(gateway, await gateway.device("dave", admin=admin), "/idwall/approvals")
    assert sum(tag == "h1" for tag, _ in page.elements) == 1 and "Approvals" in page.text
    assert [a.get("aria-label") for tag, a in page.elements if tag == "nav"] == [nav]
    hrefs = [a["href"] for tag, a in page.elements if tag == "a" and a.get("href", "").startswith("/idwall/")]
    assert hrefs == links
    current = [a["href"] for tag, a in page.elements if tag == "a" and a.get("aria-current") == "page"]
    assert current == ["/idwall/approvals"]
    assert page.by_id("approvals-heading")["tabindex"] == "-1"  # focus returns there after each signature
    assert [a["src"] for tag, a in page.elements if tag == "script"] == ["/idwall/static/approvals.js"]
    # the sign dialog says in words what will be signed before the passkey prompt
    assert {"sign", "sign-words", "sign-json", "sign-ok", "sign-cancel"} <= set(page.text_by_id)
    await assert_assets_served(gateway, page)


async def test_the_console_nav_links_to_the_approvals_page(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    async with gateway.session(admin) as client:
        _, _, text = await fetch(client, gateway.url + "/idwall/admin/devices", headers={"Accept": "text/html"})
    assert ("a", {"href": "/idwall/approvals"}) in Page(text).elements


async def test_the_approvals_page_sends_browsers_without_a_session_to_the_passkey_login(gateway) -> None:
    no_session = await gateway.device("dave", with_session=False)
    for device in (no_session, None):
        async with gateway.session(device) as client:
            status, headers, _ = await fetch(client, gateway.url + "/idwall/approvals",
                                             headers={"Accept": "text/html,application/xhtml+xml"})
            assert status == 303 and headers["Location"] == "/idwall/login?next=/idwall/approvals"
            status, headers, text = await fetch(client, gateway.url + "/idwall/approvals")
            assert status in (401, 403) and headers["Content-Type"].startswith("application/problem+json"), text


NOTICE_YAML = """
incident:
  notice: {title: "Security incident", body: "Sign in again <b>now</b>.", contact: "soc@example.com"}
"""


async def test_the_incident_notice_shows_on_login_and_enrollment_pages_only_while_an_incident_is_active(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=NOTICE_YAML) as gw:
        pages_ = ("/idwall/login", "/idwall/enroll", "/idwall/enroll/enr-unknown")
        for path in pages_:
            _, text, _ = await call_fresh(gw, "GET", path)
            assert "incident-notice" not in text
        drill = Incident("inc-1", "drill", "drill", "admin", time.time(), {"stages": []}, 0, 0, 0)
        await gw.store.start_incident(drill, LedgerDraft("incident.start", "admin", "inc-1", {"incident_id": "inc-1"}))
        for path in pages_:
            _, text, _ = await call_fresh(gw, "GET", path)
            assert 'id="incident-notice"' in text and "Security incident" in text and "soc@example.com" in text
            assert "Sign in again &lt;b&gt;now&lt;/b&gt;." in text  # the configured text is escaped
        await gw.store.end_incident("inc-1", now=time.time(),
                                    draft=LedgerDraft("incident.end", "admin", "inc-1", {"incident_id": "inc-1"}))
        _, text, _ = await call_fresh(gw, "GET", "/idwall/login")
        assert "incident-notice" not in text


async def test_a_waiting_self_service_device_says_who_may_approve_it_and_what_is_approved(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None) as gw:
        await gw.device("bob")
        await gw.device("carol")
        drill = Incident("inc-7", "drill", "drill", "admin", time.time(), {"stages": []}, 1, 0, 0)
        await gw.store.start_incident(drill, LedgerDraft("incident.start", "admin", "inc-7", {"incident_id": "inc-7"}))
        await gw.store.commit_incident_stage("inc-7", 1, StageWork(users=("bob",), suspect=True), result={},
                                             now=time.time(), draft=LedgerDraft("incident.stage", "admin", "inc-7", {}))
        pages_: dict[str, str] = {}
        for user in ("bob", "carol"):
            _, status, begun = await begin_enroll(gw, user=user, device_name=f"{user}'s <tablet>")
            auth = SoftAuthenticator(origin=gw.url)
            status, answer = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
            assert status == 200 and answer["status"] == "pending_approval", answer
            _, pages_[user], _ = await call_fresh(gw, "GET", f"/idwall/enroll/{begun['enrollment_id']}")
        bob, carol = pages_["bob"], pages_["carol"]
        # bob's passkeys are suspect: an approver must sign, and no button offers his own passkey
        assert "Incident inc-7 marked your passkeys suspect" in bob and "Waiting for an administrator." in bob
        assert re.search(r'<section id="recover"[^>]* hidden>', bob)
        # carol may approve it herself: what is approved (device, when, from where) and the warning are shown
        assert 'data-state="recover"' in carol and "you can approve this device yourself" in carol
        assert not re.search(r'<section id="recover"[^>]* hidden>', carol)
        assert "carol&#x27;s &lt;tablet&gt;" in carol and '<dd id="recover-source">127.0.0.1</dd>' in carol
        assert "Only continue if you started this on your own device just now." in carol
