"""The end-user pages (how to enroll, the enrollment passkey page, the login page, the signing page for an action
the command line began), the admin console's pages (People, Devices, Admins & tokens, Ledger, Incidents), the
approvals page of anyone who approves devices (administrators, and managers under ``devices.approval: manager``),
and their static files.

Every page is a small HTML document rendered with :class:`string.Template`;
every value that goes into it is escaped with :func:`html.escape` on the way in
(:func:`render`), so a device name, user name or ``next`` value cannot become
markup. The pages carry no inline script or style: all behaviour lives in
``static/*.js`` and all presentation in ``static/idwall.css``, so the strict
Content-Security-Policy below holds without ``'unsafe-inline'``.

What the server knows when the page is requested (the enrollment's user and
device, the connection's device and session, the safe ``next`` path) is
rendered into the HTML and into ``data-`` attributes; the scripts then drive
the passkey ceremonies against the JSON API (/tmp/api_contract.md).

Static files are served from a fixed allow-list only: a name that is not in
the list is a 404 whatever it contains (``..``, encoded slashes, other files in
the directory).
"""

from __future__ import annotations

import hashlib
import html
import re
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from aiohttp import web

from .. import policy
from ..errors import Forbidden, IDWallError, Unauthenticated
from ..sign_requests import REQUEST_ID_RE
from ..model import Enrollment, Resolved
from ..self_recovery import RecoveryCase, case_words
from . import api_admin, api_approvals, api_recover
from .context import NODE, conn_for, with_session

routes = web.RouteTableDef()

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    # Pages show who a device belongs to: never keep them in a shared cache or the back/forward history.
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

STATIC_DIR = Path(__file__).parent / "static"

_JS, _CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
# name -> content type. The SOC console's admin.js and admin.css are served by api_admin itself.
STATIC_FILES: Mapping[str, str] = {"idwall.css": _CSS, **{f"{name}.js": _JS for name in (
    "idwall", "enroll", "login", "sign", "console", "people", "devices", "tokens", "ledger", "renew", "approvals",
    "incidents")}}
#: libraries served as published, from static/vendor/ (its README names each one's version and licence)
VENDOR_FILES: Mapping[str, str] = {"uPlot.iife.min.js": _JS, "uPlot.min.css": _CSS}


@dataclass(frozen=True)
class ConsolePage:
    """One page of the admin console: its title, script, the heading the skip link goes to, its body file."""

    title: str
    script: str
    skip: str


# /idwall/admin/<name> -> its page; static/console.html is the shell (navigation, live regions, the signing and
# confirmation dialogs) and static/console-<name>.html the body. All data comes from the admin API, written as
# text by the page's script.
CONSOLE_PAGES: Mapping[str, ConsolePage] = {
    "people": ConsolePage("People", "people.js", "people-heading"),
    "devices": ConsolePage("Devices", "devices.js", "devices-heading"),
    "tokens": ConsolePage("Admins & tokens", "tokens.js", "admins-heading"),
    "ledger": ConsolePage("Ledger", "ledger.js", "ledger-heading"),
    "incidents": ConsolePage("Incidents", "incidents.js", "incidents-heading"),
}
#: the console's navigation, the SOC console's live sessions first (admin.html holds the first five), then the
#: approvals page that managers who are not administrators use too
CONSOLE_NAV = (("/idwall/admin", "Sessions"), ("/idwall/admin/people", "People"),
               ("/idwall/admin/devices", "Devices"), ("/idwall/admin/tokens", "Admins & tokens"),
               ("/idwall/admin/ledger", "Ledger"), ("/idwall/admin/incidents", "Incidents"),
               ("/idwall/approvals", "Approvals"))
#: the approvals page's navigation for someone who is not an administrator (the console would refuse them)
OWN_NAV = (("/idwall/approvals", "Approvals"), ("/idwall/login", "Sign-in page"))
# Names are not content-hashed, so a browser revalidates after a short while (a cheap 304 by ETag).
STATIC_CACHE_CONTROL = "public, max-age=300, must-revalidate"

# Enrollment ids the API hands out are URL-safe tokens; anything else cannot be one.
_ENROLLMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Markup(str):
    """HTML that was built from escaped parts and must not be escaped again."""


def render(template: string.Template, **values: object) -> Markup:
    """``template`` with every value HTML-escaped (quotes too), except values that are already :class:`Markup`."""
    escaped = {key: value if isinstance(value, Markup) else html.escape(str(value), quote=True)
               for key, value in values.items()}
    return Markup(template.substitute(escaped))


LAYOUT = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title · IDWall</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/idwall/static/idwall.css">
$script_tag</head>
<body>
<header class="brand"><span class="logo" aria-hidden="true">◆</span> IDWall</header>
<main id="main" $attrs>
<h1>$title</h1>
$notice$body
</main>
<footer><p>IDWall gateway at <code>$public_url</code></p></footer>
</body>
</html>
""")

SCRIPT_TAG = string.Template('<script type="module" src="/idwall/static/$name"></script>\n')

STATUS = string.Template("""<div id="status" class="status" role="status" aria-live="polite" data-state="$state">
<p class="status-title">$status_title</p>
<p class="status-detail">$status_detail</p>
<p class="status-next">$status_next</p>
<p class="status-link"$link_hidden><a id="status-link" href="$link">$link_text</a></p>
</div>""")

ENROLL_HELP = string.Template("""<p>A device is enrolled once: it gets a TLS key that never leaves it, and your passkey vouches
for that key. After that, the device's certificate and your passkey are all you need to sign in.</p>
<ol class="steps">
<li>Ask an administrator for an <strong>invite</strong>. They create it by signing with their own passkey and
give you a one-time <strong>enrollment code</strong> (it expires after a short while).</li>
<li>On the device, run:
<pre><code>idwall device enroll --gateway $public_url --code CODE</code></pre>
The command makes the device's key and prints the link of a page like this one.</li>
<li>Open that link in a browser, press <strong>Create passkey</strong> and confirm with your fingerprint, face or
PIN.</li>
<li>Back in the terminal, the command writes the device certificate (<code>device.pem</code>,
<code>device.p12</code>) and the gateway's CA (<code>ca.pem</code>). Import <code>device.p12</code> into your browser or
system keychain, then open <a href="/idwall/login">the sign-in page</a>.</li>
</ol>
$status
<p>Lost a device, or cut off by a reset? Enroll a new one for your user id without a code:</p>
<pre><code>idwall device enroll --gateway $public_url --user YOUR-USER-ID</code></pre>
<p>It stays on hold until you approve it on its page with a passkey you still hold (no device certificate
needed), or an administrator approves it.</p>""")

ENROLL_PAGE = string.Template("""<dl class="facts" id="facts"$facts_hidden>
<dt>User</dt><dd id="who">$user</dd>
<dt>Device</dt><dd id="device">$device_name</dd>
<dt>Expires</dt><dd id="expires">$expires</dd>
</dl>
$status
<p><button type="button" id="create" class="primary" hidden>Create passkey</button></p>
<section id="recover" aria-labelledby="recover-heading"$recover_hidden>
<h2 id="recover-heading">Approve this device with a passkey you hold</h2>
<dl class="facts">
<dt>Device</dt><dd id="recover-device">$device_name</dd>
<dt>Started</dt><dd id="recover-started">$started</dd>
<dt>From address</dt><dd id="recover-source">$source</dd>
</dl>
<p id="recover-warning" class="warning"><strong>Only continue if you started this on your own device just now.</strong>
If you did not, close this page: someone may be trying to get a device approved in your name. Approving it
gives that device a certificate of yours.</p>
<p><button type="button" id="recover-button" class="primary" hidden>Approve with my passkey</button></p>
</section>
<div id="result" hidden>
<dl class="facts">
<dt>Device id</dt><dd><code id="device-id"></code></dd>
</dl>
<div id="root" hidden>
<p><strong>Root fingerprint</strong><br><code id="root-fingerprint" class="wrap"></code></p>
<p>This is the first administrator's passkey: the root of trust of the audit ledger. Write it down somewhere
safe. <code>idwall audit verify --root=FINGERPRINT</code> uses it to prove that nobody replaced the ledger.</p>
</div>
</div>""")

LOGIN_PAGE = string.Template("""<dl class="facts" id="identity"$identity_hidden>
<dt>User</dt><dd id="who">$user</dd>
<dt>Device</dt><dd id="device">$device_name</dd>
<dt>Session</dt><dd id="session">$session</dd>
</dl>
$status
<p class="actions">
<button type="button" id="signin" class="primary"$signin_hidden>Sign in with passkey</button>
<a id="continue" class="button primary" href="$next"$continue_hidden>Continue</a>
<button type="button" id="signout"$signout_hidden>Sign out</button>
</p>
<p id="approvals-link"$approvals_hidden><a href="/idwall/approvals">$approvals_text</a></p>""")


@dataclass(frozen=True)
class State:
    """One state of a page's status region: what happened, and what to do next."""

    state: str
    title: str
    detail: str
    next: str
    link: str = ""
    link_text: str = ""


ENROLL_LINK = ("/idwall/enroll", "How to enroll a device")


def _status(state: State) -> Markup:
    return render(STATUS, state=state.state, status_title=state.title, status_detail=state.detail,
                  status_next=state.next, link=state.link or "/idwall/enroll", link_text=state.link_text,
                  link_hidden=_hidden(not state.link))


def _attrs(data: Mapping[str, str]) -> Markup:
    """``data-*`` attributes, each value escaped."""
    return Markup(" ".join(f'data-{name}="{html.escape(value, quote=True)}"' for name, value in data.items()))


NOTICE = string.Template("""<aside id="incident-notice" class="status" role="alert" data-state="incident">
<p class="status-title">$title</p>
<p>$body</p>
<p>Contact: $contact</p>
</aside>
""")


async def incident_notice(request: web.Request) -> Markup:
    """``incident.notice`` while an incident is active (the login, enrollment and recovery pages show it)."""
    node = request.app[NODE]
    notice = node.config.incident.notice
    if notice is None or not await node.store.active_incidents():
        return Markup("")
    return render(NOTICE, title=notice.title, body=notice.body, contact=notice.contact)


def _page(request: web.Request, *, title: str, script: str | None, body: Markup, data: Mapping[str, str],
          status: int = 200, notice: Markup = Markup("")) -> web.Response:
    public_url = request.app[NODE].config.public_url
    # Module scripts run deferred, after the document is parsed, and may import the shared helper.
    tag = render(SCRIPT_TAG, name=script) if script else Markup("")
    text = render(LAYOUT, title=title, script_tag=tag, body=body, attrs=_attrs(data), public_url=public_url,
                  notice=notice)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _hidden(flag: bool) -> Markup:
    return Markup(" hidden" if flag else "")


# --------------------------------------------------------------------------- enrollment


@routes.get("/idwall/enroll")
async def enroll_help(request: web.Request) -> web.Response:
    """How to enroll a device; where the 403 "no client certificate" answer points."""
    node = request.app[NODE]
    public_url = node.config.public_url
    conn = conn_for(request)
    resolved = await node.resolve(conn)
    if resolved is not None and resolved.device.status == "active":
        state = State("enrolled", f"This browser already presents the certificate of device {resolved.device.name}.",
                      f"It belongs to {resolved.user.id}.", "Enroll other devices as above.",
                      "/idwall/login", "Sign in")
    else:
        state = State("info", "This browser has no usable device certificate.",
                      "Pages behind IDWall only open on an enrolled device.",
                      "Follow the steps above, or ask your administrator for an invite.")
    body = render(ENROLL_HELP, public_url=public_url, status=_status(state))
    return _page(request, title="Enroll a device", script=None, body=body, data={"page": "enroll-help"},
                 notice=await incident_notice(request))


def _enrollment_state(status: str, expired: bool) -> State:
    if status == "begun" and expired:
        return State("expired", "This enrollment has expired.", "Enrollment links only work for a few minutes.",
                     "Run idwall device enroll again (with a new code if this one was used).")
    if status == "begun":
        return State("ready", "Ready to create your passkey.",
                     "Your passkey will vouch for this device's key.",
                     "Press Create passkey and confirm with your fingerprint, face or PIN.")
    if status == "pending_approval":
        return State("pending", "Waiting for approval.",
                     "Your passkey was created; an administrator (or another passkey of yours) must approve "
                     "this device.", "Keep the terminal open: the command finishes once the device is approved.")
    if status == "active":
        return State("success", "Your device is enrolled; return to the terminal.",
                     "This enrollment link is used up; the terminal saves the device certificate.",
                     "To enroll another device, ask for a new invite.")
    return State("failed", "This enrollment cannot be used.", f"Its status is {status}.",
                 "Start again with idwall device enroll and a new code.")


def recovery_state(case: RecoveryCase) -> State:
    """What a waiting self-service device's page says: approve it yourself, or who must and why."""
    return State("recover" if case.case == "self" else "pending", *case_words(case))


async def _recovery(request: web.Request, enrollment: Enrollment) -> RecoveryCase | None:
    """The recovery case of a waiting self-service enrollment (None for any other)."""
    if enrollment.status != "pending_approval" or enrollment.invite_id is not None or enrollment.device_id is None:
        return None
    return await api_recover.case_of(request.app[NODE], enrollment.user_id, enrollment.device_id)


@routes.get("/idwall/enroll/{enrollment_id}")
async def enroll_page(request: web.Request) -> web.Response:
    """The passkey page of one enrollment (the CLI prints its URL)."""
    node = request.app[NODE]
    enrollment_id = request.match_info["enrollment_id"]
    enrollment = await node.store.get_enrollment(enrollment_id) if _ENROLLMENT_ID.fullmatch(enrollment_id) else None
    if enrollment is None:
        state = State("unknown", "Unknown enrollment.", "No enrollment has this link.",
                      "Check that you opened the link the terminal printed, or run idwall device enroll again.")
        # Nothing is known about it: no table of dashes, just the state and what to do.
        body = render(ENROLL_PAGE, user="—", device_name="—", expires="—", facts_hidden=_hidden(True),
                      status=_status(state), started="—", source="—", recover_hidden=_hidden(True))
        return _page(request, title="Create your passkey", script="enroll.js", body=body, status=404,
                     data={"page": "enroll", "enrollment-id": enrollment_id}, notice=await incident_notice(request))
    who = f"{enrollment.name} ({enrollment.user_id})" if enrollment.name and enrollment.name != enrollment.user_id \
        else enrollment.user_id
    state = _enrollment_state(enrollment.status, enrollment.expires_at <= node.clock())
    case = await _recovery(request, enrollment)
    if case is not None:
        state = recovery_state(case)
    body = render(ENROLL_PAGE, user=who, device_name=enrollment.device_name, expires=_when(enrollment.expires_at),
                  facts_hidden=_hidden(False), status=_status(state), started=_when(enrollment.created_at),
                  source=enrollment.source or "unknown",
                  recover_hidden=_hidden(case is None or case.case != "self"))
    return _page(request, title="Create your passkey", script="enroll.js", body=body,
                 data={"page": "enroll", "enrollment-id": enrollment_id}, notice=await incident_notice(request))


# --------------------------------------------------------------------------- login


def _login_state(*, has_cert: bool, resolved: Resolved | None, signed_in: bool, reason: str | None) -> State:
    if not has_cert:
        return State("no-certificate", "This browser has no device certificate.",
                     "Signing in needs an enrolled device: the browser must present its IDWall certificate.",
                     "Enroll this device, or import your device.p12 and reopen this page.", *ENROLL_LINK)
    if resolved is None:
        return State("unknown-device", "This device certificate is not enrolled.",
                     "The gateway does not know the certificate this browser presented, or it was removed.",
                     "Enroll the device again.", *ENROLL_LINK)
    if resolved.device.status == "revoked":
        return State("revoked", "This device was revoked.",
                     "An administrator or the security team cut this device off.",
                     "Enroll it again with a new invite.", *ENROLL_LINK)
    if resolved.device.status != "active":
        return State("pending", "This device is waiting for approval.",
                     "Its enrollment is complete, but an administrator (or another passkey of yours) must approve it.",
                     "Try again once it is approved.")
    if signed_in:
        return State("signed-in", "You are signed in.", "Your session is bound to this device.",
                     "Continue to the page you wanted, sign in again for a fresh passkey check, or sign out.")
    if reason == "expired":
        return State("expired", "Your session ended, sign in again.",
                     "Sessions end after a while, or after a time without use.",
                     "Press Sign in with passkey.")
    return State("ready", "Sign in with your passkey.", "Use a passkey bound to this device.",
                 "Press Sign in with passkey and confirm with your fingerprint, face or PIN.")


@routes.get("/idwall/login")
async def login_page(request: web.Request) -> web.Response:
    """The passkey sign-in page: needs the device certificate; returns to a safe ``next`` afterwards."""
    node = request.app[NODE]
    next_path = policy.safe_next(request.query.get("next"))
    reason = request.query.get("reason")
    conn = conn_for(request)
    resolved = await node.resolve(conn)
    session = node.live_session(conn, now=node.clock())
    state = _login_state(has_cert=conn.cert_sha256 is not None, resolved=resolved, signed_in=session is not None,
                         reason=reason)
    user = device_name = session_text = "—"
    if resolved is not None:
        user = resolved.user.name if resolved.user.name == resolved.user.id \
            else f"{resolved.user.name} ({resolved.user.id})"
        device_name = f"{resolved.device.name} ({resolved.device.status.replace('_', ' ')})"
        session_text = (f"signed in {_when(session.auth_time)}, ends {_when(session.expires_at)}"
                        if session is not None else "not signed in")
    can_sign_in = state.state in ("ready", "expired", "signed-in")
    waiting = await _waiting_text(request, resolved) if session is not None else ""
    body = render(LOGIN_PAGE, user=user, device_name=device_name, session=session_text, status=_status(state),
                  next=next_path, identity_hidden=_hidden(resolved is None),
                  signin_hidden=_hidden(not can_sign_in), continue_hidden=_hidden(session is None),
                  signout_hidden=_hidden(session is None), approvals_hidden=_hidden(not waiting),
                  approvals_text=waiting)
    status = 403 if state.state in ("no-certificate", "unknown-device", "revoked") else 200
    return _page(request, title="Sign in", script="login.js", body=body, status=status,
                 data={"page": "login", "next": next_path, "state": state.state, "reason": reason or ""},
                 notice=await incident_notice(request))


# --------------------------------------------------------------------------- signing from the command line


SIGN_PAGE = string.Template("""<p>A command on your device asks your passkey to sign the action below. Nothing happens unless you
sign it, and the result goes back to that command only.</p>
<dl class="facts" id="facts" hidden>
<dt>Action</dt><dd id="summary"></dd>
<dt>Signed by</dt><dd id="actor"></dd>
<dt>Check code</dt><dd><code id="check-code"></code> (the terminal shows the same)</dd>
<dt>Sign before</dt><dd id="expires"></dd>
</dl>
<details id="exact" hidden><summary>The exact action the passkey signs</summary>
<pre><code id="canonical" class="wrap"></code></pre></details>
$status
<p class="actions">
<button type="button" id="sign" class="primary" hidden>Sign with passkey</button>
<button type="button" id="decline" hidden>Decline</button>
</p>""")


@routes.get("/idwall/sign/{request_id}")
async def sign_page(request: web.Request) -> web.Response:
    """The one-time page where the passkey signs an action the command line began (its script opens it)."""
    request_id = request.match_info["request_id"]
    if REQUEST_ID_RE.fullmatch(request_id):
        state, status = State("loading", "Opening the signing request…", "", ""), 200
    else:
        state, status = State("unknown", "Unknown signing link.", "No sign request has this address.",
                              "Open the exact link the terminal printed, or run the command again."), 404
        request_id = ""
    return _page(request, title="Sign an action", script="sign.js" if status == 200 else None, status=status,
                 body=render(SIGN_PAGE, status=_status(state)), data={"page": "sign", "request-id": request_id})


# --------------------------------------------------------------------------- the admin console's pages


NAV_ITEM = string.Template('    <li><a href="$href"$current>$label</a></li>')


def _console_nav(path: str, links: tuple[tuple[str, str], ...] = CONSOLE_NAV, label: str = "Console pages") -> Markup:
    items = [render(NAV_ITEM, href=href, label=text, current=Markup(' aria-current="page"' if href == path else ""))
             for href, text in links]
    nav = render(string.Template('<nav aria-label="$label">\n  <ul class="nav">\n'), label=label)
    return Markup(nav + "\n".join(items) + "\n  </ul>\n</nav>")


_console_cache: dict[str, bytes] = {}


def console_html(name: str) -> bytes:
    """The whole HTML of console page ``name`` (one of :data:`CONSOLE_PAGES`), built once."""
    body = _console_cache.get(name)
    if body is None:
        page = CONSOLE_PAGES[name]
        shell = string.Template((STATIC_DIR / "console.html").read_text(encoding="utf-8"))
        fragment = Markup((STATIC_DIR / f"console-{name}.html").read_text(encoding="utf-8"))
        body = _console_cache[name] = render(
            shell, title=page.title, script=page.script, skip=page.skip, skip_text=page.title.lower(),
            nav=_console_nav(f"/idwall/admin/{name}"), body=fragment).encode("utf-8")
    return body


@routes.get("/idwall/admin/{page}")
async def console_page(request: web.Request) -> web.Response:
    """People, Devices, Admins & tokens, Ledger, Incidents: for an administrator's fresh passkey session only.

    A browser without one is sent to the passkey login (and back here afterwards); a person who is not an
    administrator gets a page that says so, and no console.
    """
    name = request.match_info["page"]
    if name not in CONSOLE_PAGES:
        raise web.HTTPNotFound(reason="no such console page")
    browser = "text/html" in request.headers.get("Accept", "")
    try:
        await api_admin.require_admin(request, scope="read", allow_tokens=False)
    except Unauthenticated:
        if browser:
            raise web.HTTPSeeOther(location=policy.login_redirect(request.path)) from None
        raise
    except Forbidden as exc:
        if not browser:
            raise
        state = State("forbidden", "This console is for administrators.", exc.detail,
                      "Ask an administrator if you need access.", "/idwall/login", "Sign-in page")
        return _page(request, title="Administrators only", script=None, body=_status(state), status=403,
                     data={"page": "console-forbidden"})
    return web.Response(body=console_html(name), content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


# --------------------------------------------------------------------------- approvals


async def _waiting_text(request: web.Request, resolved: Resolved | None) -> str:
    """The login page's link text when devices wait for this signed-in user's approval, else ""."""
    if resolved is None:
        return ""
    waiting = await api_approvals.waiting_for(request.app[NODE], resolved.user, limit=100)
    count = len(waiting.devices)
    if not count:
        return ""
    return (f"{count}{'+' if count == 100 else ''} device{'s wait' if count > 1 else ' waits'} for your approval: "
            "review and sign")


@routes.get("/idwall/approvals")
async def approvals_page(request: web.Request) -> web.Response:
    """The devices waiting for the signed-in person's approval, approved or rejected there with their passkey.

    For any passkey session (what is listed comes from ``/idwall/api/approvals``, which answers only what
    this person may approve); a browser without one is sent to the passkey login and back here.
    """
    browser = "text/html" in request.headers.get("Accept", "")
    try:
        _, resolved, _ = await with_session(request)
    except IDWallError as exc:
        # the login page says what is wrong with this browser's certificate or session, then comes back
        if browser and exc.status in (401, 403):
            raise web.HTTPSeeOther(location=policy.login_redirect(request.path)) from None
        raise
    admin = resolved.user.admin
    body = _console_cache.get(f"approvals:{admin}")
    if body is None:
        shell = string.Template((STATIC_DIR / "console.html").read_text(encoding="utf-8"))
        fragment = Markup((STATIC_DIR / "approvals.html").read_text(encoding="utf-8"))
        nav = _console_nav("/idwall/approvals") if admin else _console_nav("/idwall/approvals", OWN_NAV, "Your pages")
        body = _console_cache[f"approvals:{admin}"] = render(
            shell, title="Approvals", script="approvals.js", skip="approvals-heading", skip_text="approvals",
            nav=nav, body=fragment).encode("utf-8")
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


# --------------------------------------------------------------------------- static files


@dataclass(frozen=True)
class _StaticFile:
    body: bytes
    content_type: str
    etag: str


_cache: dict[str, _StaticFile] = {}


def _load_static(name: str) -> _StaticFile | None:
    if name in STATIC_FILES:
        path, content_type = STATIC_DIR / name, STATIC_FILES[name]
    elif name in VENDOR_FILES:
        path, content_type = STATIC_DIR / "vendor" / name, VENDOR_FILES[name]
    else:
        return None
    cached = _cache.get(name)
    if cached is not None:
        return cached
    if not path.is_file():
        return None
    body = path.read_bytes()
    loaded = _StaticFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    _cache[name] = loaded
    return loaded


@routes.get("/idwall/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    """One file of the allow-list, with its content type, an ETag and Cache-Control."""
    found = _load_static(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound(reason="no such static file")
    headers = {"Cache-Control": STATIC_CACHE_CONTROL, "ETag": found.etag, "Content-Security-Policy": CSP}
    if found.etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = found.content_type
    return web.Response(body=found.body, headers=headers)


__all__ = ["CSP", "STATIC_FILES", "VENDOR_FILES", "Markup", "render", "routes"]
