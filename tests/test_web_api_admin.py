"""The admin API and the SOC console over real TLS: who may call what, strict inputs, what the answers say.

The attacks of the adversarial review (an admin session used from a proxied host's origin, tokens and the
host, unbounded kill targets) are at the end; each one's docstring says what got through before its fix.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from html.parser import HTMLParser

import aiohttp
import pytest

from idwall import tokens
from idwall.logs import JSONLineFormatter
from idwall.model import LedgerDraft
from idwall.web.api_admin import CSP
from tests.helpers.api import call, call_fresh

pytestmark = pytest.mark.asyncio


async def make_token(gateway, scopes, *, ttl: int = 3600, now: float | None = None) -> tokens.IssuedToken:
    """A token written straight into the store (the signed token.create action is tested elsewhere)."""
    issued = tokens.new_token(name="soar", scopes=scopes, ttl=ttl, created_by="admin",
                              now=time.time() if now is None else now)
    record = issued.record
    await gateway.store.create_token(record, LedgerDraft("token.create", "admin", record.id, {
        "token_id": record.id, "name": record.name, "scopes": list(record.scopes), "expires_at": int(record.expires_at)}))
    return issued


KILL_USER = {"scope": "user", "target": "nobody", "reason": "test", "revoke_devices": False}


async def test_fresh_admin_session_may_read_kill_and_open_the_console(gateway) -> None:
    admin = await gateway.device("root", admin=True, groups=("sec",))
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions", device=admin)
    assert status == 200, body
    assert [s["user"] for s in body["sessions"]] == ["root"]
    status, body, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", device=admin, body=KILL_USER)
    assert status == 200, body
    assert body["sessions_revoked"] == 0 and body["connections_closed"] == 0
    status, page, headers = await call_fresh(gateway, "GET", "/idwall/admin", device=admin,
                                       headers={"Accept": "text/html"})
    assert status == 200
    assert headers["Content-Security-Policy"] == CSP
    assert headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
    audit = InlineCodeFinder()
    audit.feed(page)
    assert audit.scripts == ["/idwall/static/admin.js"] and not audit.inline, audit.inline
    assert "/idwall/static/admin.css" in audit.styles
    assert all(audit.labelled(i) for i in audit.inputs), "every input has a label"
    for name, ctype in (("admin.js", "application/javascript"), ("admin.css", "text/css")):
        status, text, headers = await call_fresh(gateway, "GET", "/idwall/static/" + name)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(text) > 500
    js = (await call_fresh(gateway, "GET", "/idwall/static/admin.js"))[1]
    assert "innerHTML" not in js and "eval(" not in js, "attacker-controlled names are written as text only"


class StatusRegionFinder(HTMLParser):
    """The attributes of the element with id="status" and the text inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] | None = None
        self.text = ""
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif dict(attrs).get("id") == "status":
            self.attrs = dict(attrs)
            self._depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.text += data


async def test_console_status_region_is_in_the_page_before_its_first_message(gateway) -> None:
    # A live region that appears together with its text may not be announced: it must be there, empty, from the
    # start, and the script must only change its text.
    admin = await gateway.device("root", admin=True)
    status, page, _ = await call_fresh(gateway, "GET", "/idwall/admin", device=admin, headers={"Accept": "text/html"})
    assert status == 200
    finder = StatusRegionFinder()
    finder.feed(page)
    assert finder.attrs is not None, "the console has a status region"
    assert finder.attrs.get("role") == "status" and finder.attrs.get("aria-live") == "polite"
    assert "hidden" not in finder.attrs and "aria-hidden" not in finder.attrs, finder.attrs
    assert finder.text.strip() == ""
    js = (await call_fresh(gateway, "GET", "/idwall/static/admin.js"))[1]
    say = re.search(r"function say\(message\) \{(.*?)\n  \}", js, re.S)
    assert say is not None and "textContent" in say.group(1)
    assert "hidden" not in say.group(1) and '$("status").hidden' not in js, "only the region's text changes"
    css = (await call_fresh(gateway, "GET", "/idwall/static/admin.css"))[1]
    assert not re.search(r"\.status(:empty)?\s*\{[^}]*display:\s*none", css), "an empty region stays in the tree"


class InlineCodeFinder(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, styles and event handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline: list[str] = []
        self.inputs: list[dict[str, str | None]] = []
        self._stack: list[str] = []
        self._label_depth = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self._in_script = True
            if a.get("src"):
                self.scripts.append(a["src"] or "")
        if tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a.get("href") or "")
        if tag == "style":
            self.inline.append("<style>")
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"{tag}[{name}]")
        if tag == "label":
            self._label_depth += 1
        if tag == "input":
            self.inputs.append(dict(a, _in_label="yes" if self._label_depth else None))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "label":
            self._label_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script")

    @staticmethod
    def labelled(inp: dict[str, str | None]) -> bool:
        return bool(inp.get("_in_label") or inp.get("aria-label"))


async def test_a_user_without_the_admin_role_is_forbidden_everywhere(gateway) -> None:
    alice = await gateway.device("alice", groups=("eng",))
    for method, path, body in [("GET", "/idwall/api/admin/sessions", None), ("POST", "/idwall/api/admin/kill", KILL_USER),
                               ("GET", "/idwall/api/admin/audit", None), ("GET", "/idwall/api/admin/tokens", None),
                               ("GET", "/idwall/api/admin/kills", None), ("GET", "/idwall/admin", None)]:
        status, problem, _ = await call_fresh(gateway, method, path, device=alice, body=body)
        assert status == 403, (path, problem)
        assert problem["type"].endswith("/forbidden")
    assert len(await gateway.store.live_sessions(now=time.time())) == 1


async def test_an_old_passkey_login_needs_step_up_and_browsers_are_sent_to_login(gateway) -> None:
    stale = await gateway.device("root", admin=True, auth_time=time.time() - gateway.config.admin.fresh_auth - 1)
    status, problem, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", device=stale, body=KILL_USER)
    assert status == 401
    assert problem["step_up"] is True
    assert problem["login_url"] == gateway.url + "/idwall/login?next=/idwall/admin"
    status, _, headers = await call_fresh(gateway, "GET", "/idwall/admin", device=stale,
                                    headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 303 and headers["Location"] == "/idwall/login?next=/idwall/admin"
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/admin", device=stale, headers={"Accept": "*/*"})
    assert status == 401 and problem["step_up"] is True
    no_session = await gateway.device("root2", admin=True, with_session=False)
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions", device=no_session)
    assert status == 401 and problem["step_up"] is False


async def test_without_certificate_or_token_the_answer_points_at_enrollment(gateway) -> None:
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions")
    assert status == 403 and problem["type"].endswith("/no-client-certificate")
    assert problem["enroll_url"].endswith("/idwall/enroll")


async def test_scopes_do_not_imply_each_other(gateway) -> None:
    await gateway.device("alice")
    read = await make_token(gateway, ["read"])
    kill = await make_token(gateway, ["kill"])
    both = await make_token(gateway, ["kill", "read"])
    for path in ("/idwall/api/admin/sessions", "/idwall/api/admin/audit", "/idwall/api/admin/tokens",
                 "/idwall/api/admin/kills", "/idwall/api/admin/webhooks"):
        assert (await call_fresh(gateway, "GET", path, token=read.secret))[0] == 200, path
        assert (await call_fresh(gateway, "GET", path, token=both.secret))[0] == 200, path
        status, problem, _ = await call_fresh(gateway, "GET", path, token=kill.secret)
        assert status == 403 and problem["type"].endswith("/insufficient-scope"), path
    status, problem, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=read.secret, body=KILL_USER)
    assert status == 403 and problem["type"].endswith("/insufficient-scope")
    status, body, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=kill.secret, body=KILL_USER)
    assert status == 200, body
    entry = (await gateway.store.ledger_entries(after=body["audit_seq"] - 1, limit=1))[0]
    assert entry["type"] == "kill" and entry["actor"] == "token:" + kill.record.id
    assert (await call_fresh(gateway, "GET", "/idwall/admin", token=both.secret))[0] == 403  # the console is for people


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer a b", "Bearer abc=def", "Bearer " + "a" * 300,
    "Bearer idw_\u00e9", "Bearer\tidw_x", "NTLM TlRMTVNTUAAB",
])
async def test_malformed_authorization_is_401_even_over_an_admin_session(gateway, header) -> None:
    admin = await gateway.device("root", admin=True)
    for device in (None, admin):
        status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions", device=device,
                                        headers={"Authorization": header})
        assert status == 401, problem
        assert problem["type"].endswith("/invalid-token")


async def test_expired_revoked_and_unknown_tokens_are_refused_alike(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    expired = await make_token(gateway, ["kill", "read"], ttl=60, now=time.time() - 61)
    revoked = await make_token(gateway, ["kill", "read"])
    unknown = tokens.new_token(name="x", scopes=["kill"], ttl=60, created_by="a", now=time.time())
    status, body, _ = await call_fresh(gateway, "DELETE", f"/idwall/api/admin/tokens/{revoked.record.id}", token=revoked.secret)
    assert status == 403, "a token cannot revoke tokens"
    status, body, _ = await call_fresh(gateway, "DELETE", f"/idwall/api/admin/tokens/{revoked.record.id}", device=admin)
    assert status == 200 and body["revoked"] is True
    entry = (await gateway.store.ledger_entries(after=body["audit_seq"] - 1, limit=1))[0]
    assert (entry["type"], entry["actor"], entry["subject"]) == ("token.revoke", "root", revoked.record.id)
    assert (await call_fresh(gateway, "DELETE", f"/idwall/api/admin/tokens/{revoked.record.id}", device=admin))[0] == 404
    problems = []
    for secret in (expired.secret, revoked.secret, unknown.secret):
        status, problem, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=secret,
                                        body={"scope": "all", "reason": "x", "revoke_devices": False})
        assert status == 401
        problems.append(problem)
    assert problems[0] == problems[1] == problems[2]
    assert len(await gateway.store.live_sessions(now=time.time())) == 1, "nothing was killed"
    status, listing, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/tokens", device=admin)
    states = {t["id"]: t["status"] for t in listing["tokens"]}
    assert states == {expired.record.id: "expired", revoked.record.id: "revoked"}
    assert "hash" not in json.dumps(listing)


async def test_tokens_never_reach_the_logs(gateway) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JSONLineFormatter())
    logger = logging.getLogger("idwall")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        await gateway.device("alice")
        good = await make_token(gateway, ["kill"])
        revoked = await make_token(gateway, ["kill"])
        await gateway.store.revoke_token(revoked.record.id, now=time.time(),
                                         draft=LedgerDraft("token.revoke", "admin", revoked.record.id, {}))
        for secret in (good.secret, revoked.secret, good.secret + "x"):
            await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=secret,
                       body={"scope": "user", "target": "alice", "reason": "logs", "revoke_devices": False})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    logged = buffer.getvalue()
    assert '"kill"' in logged, "the kill itself is logged"
    for secret in (good.secret, revoked.secret):
        assert secret not in logged and secret[4:20] not in logged


async def test_audit_pages_through_the_ledger(gateway) -> None:
    reader = await make_token(gateway, ["read"])
    for _ in range(3):
        await gateway.device("u")
    status, first, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit?limit=2", token=reader.secret)
    assert status == 200
    assert [e["seq"] for e in first["entries"]] == [1, 2] and first["next"] == 2
    assert {"seq", "time", "type", "actor", "subject", "data", "prev", "hash", "sig"} <= set(first["entries"][0])
    status, rest, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/audit?after={first['next']}&limit=1000",
                                 token=reader.secret)
    seqs = [e["seq"] for e in rest["entries"]]
    assert seqs == list(range(3, 3 + len(seqs))) and rest["next"] == seqs[-1]
    status, empty, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/audit?after={rest['next']}", token=reader.secret)
    assert empty == {"entries": [], "next": rest["next"]}
    status, default, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit", token=reader.secret)
    assert default["entries"][0]["seq"] == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "after=-1",
                                   "after=1.5", "after=+1", "after=1e3", "limit=%EF%BC%91", "after=" + "9" * 30])
async def test_audit_refuses_bad_paging(gateway, query) -> None:
    reader = await make_token(gateway, ["read"])
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit?" + query, token=reader.secret)
    assert status == 400 and problem["type"].endswith("/bad-request"), problem


async def test_sessions_list_filters_and_counts_connections(gateway) -> None:
    reader = await make_token(gateway, ["read"])
    alice = await gateway.device("alice", groups=("eng", "oncall"), name="Alice A")
    bob = await gateway.device("bob", groups=("ops",))
    clients = [gateway.session(alice), gateway.session(alice), gateway.session(bob)]
    try:
        for client in clients:
            async with client.get(gateway.url + "/x", headers={"User-Agent": "kill-test/1"}) as resp:
                assert resp.status == 200
        status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions", token=reader.secret)
        by_user = {s["user"]: s for s in body["sessions"]}
        assert set(by_user) == {"alice", "bob"}
        a = by_user["alice"]
        assert a["connections"] == 2 and by_user["bob"]["connections"] == 1
        assert a["session_id"] == alice.session_id and a["device_id"] == alice.device_id
        assert a["name"] == "Alice A" and a["groups"] == ["eng", "oncall"]
        assert a["remote"] == "127.0.0.1" and a["user_agent"] == "kill-test/1"
        assert a["bytes"] > 0 and a["auth_time"] <= a["last_seen"] <= time.time() + 1
        for query, users in [("user=alice", {"alice"}), ("group=ops", {"bob"}), ("group=oncall", {"alice"}),
                             (f"device={bob.device_id}", {"bob"}), ("user=alice&group=ops", set()),
                             ("user=nobody", set())]:
            status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions?" + query, token=reader.secret)
            assert status == 200 and {s["user"] for s in body["sessions"]} == users, query
        status, _, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/sessions?user=" + "x" * 201, token=reader.secret)
        assert status == 400
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("raw, ctype", [
    (b"not json", "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": "x"}', "text/plain"),
    (b"[]", "application/json"),
    (b'{"scope": "everyone", "target": "alice", "reason": "x"}', "application/json"),
    (b'{"scope": "user", "reason": "x"}', "application/json"),
    (b'{"scope": "user", "target": "", "reason": "x"}', "application/json"),
    (b'{"scope": "user", "target": 7, "reason": "x"}', "application/json"),
    (b'{"scope": "user", "target": "alice"}', "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": "   "}', "application/json"),
    (b'{"scope": "all", "target": "alice", "reason": "x"}', "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": "x", "revoke_devices": "yes"}', "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": "x", "revoke_devices": null}', "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": "x", "revoke_device": true}', "application/json"),
    (b'{"scope": "user", "scope": "all", "target": "alice", "reason": "x"}', "application/json"),
    (b'{"scope": "user", "target": "alice", "reason": NaN}', "application/json"),
    (json.dumps({"scope": "user", "target": "alice", "reason": "x" * 501}).encode(), "application/json"),
    (b"\xff\xfe", "application/json"),
])
async def test_bad_kill_bodies_are_400_and_kill_nothing(gateway, raw, ctype) -> None:
    await gateway.device("alice")
    killer = await make_token(gateway, ["kill"])
    status, problem, headers = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=killer.secret, raw=raw,
                                          headers={"Content-Type": ctype})
    assert status == 400, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["type"].endswith("/bad-request") and problem["detail"]
    assert len(await gateway.store.live_sessions(now=time.time())) == 1


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}])
async def test_cross_site_requests_cannot_use_an_admin_session(gateway, headers) -> None:
    admin = await gateway.device("root", admin=True)
    await gateway.device("alice")
    body = {"scope": "user", "target": "alice", "reason": "csrf", "revoke_devices": True}
    status, problem, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", device=admin, body=body,
                                    headers=headers)
    assert status == 403, problem
    assert len(await gateway.store.live_sessions(now=time.time())) == 2
    status, answer, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", device=admin, body=body,
                                   headers={"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and answer["sessions_revoked"] == 1 and answer["devices_revoked"] == 1


async def test_admin_killing_everyone_gets_the_answer_then_loses_the_connection(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    alice = await gateway.device("alice")
    async with gateway.session(alice) as other:
        async with other.get(gateway.url + "/warm") as resp:
            assert resp.status == 200
        payload = json.dumps({"scope": "all", "target": None, "reason": "incident", "revoke_devices": False}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port, ssl=gateway.ssl(admin),
                                                       server_hostname="localhost")
        try:
            writer.write(b"POST /idwall/api/admin/kill HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
            raw = b""
            while True:  # until the gateway closes the connection
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                raw += chunk
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw
        assert re.search(rb"(?im)^connection: close\r?$", head)
        answer = json.loads(body)
        assert answer["sessions_revoked"] == 2 and answer["connections_closed"] == 2
        async with other.get(gateway.url + "/after") as resp:  # aiohttp reconnects: the session is gone
            assert resp.status == 401
    assert await gateway.store.live_sessions(now=time.time()) == []


async def test_recent_kills_say_who_and_how_many_connections(gateway) -> None:
    reader = await make_token(gateway, ["read", "kill"])
    alice = await gateway.device("alice", groups=("eng",))
    await gateway.device("bob", groups=("eng",))
    async with gateway.session(alice) as client:
        async with client.get(gateway.url + "/warm") as resp:
            assert resp.status == 200
        status, answer, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=reader.secret,
                                       body={"scope": "group", "target": "eng", "reason": "phish",
                                             "revoke_devices": False})
    assert answer["connections_closed"] == 1 and answer["sessions_revoked"] == 2
    other_seq = (await gateway.store.kill(scope="all", target=None, revoke_devices=False, now=time.time(),
                                          draft=LedgerDraft("kill", "system", "*", {"scope": "all", "target": None,
                                                                                     "reason": "elsewhere",
                                                                                     "revoke_devices": False}))).audit_seq
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/kills", token=reader.secret)
    assert status == 200
    newest, older = body["kills"][:2]
    assert newest["audit_seq"] == other_seq and newest["connections_closed"] is None
    assert older == {"audit_seq": answer["audit_seq"], "time": older["time"], "actor": "token:" + reader.record.id,
                     "scope": "group", "target": "eng", "reason": "phish", "revoke_devices": False, "sessions": 2,
                     "devices": 0, "connections_closed": 1}


# -- adversarial review: the admin API belongs to the gateway's own origin, not to every proxied host ------


def _named(gateway, name: str, device=None) -> aiohttp.ClientSession:
    """A client that names ``name`` in TLS (SNI) and Host, as a browser on that host does (the test
    certificate covers only localhost, so the name is not checked against it)."""
    ctx = gateway.ssl(device)
    ctx.check_hostname = False
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1))


@pytest.mark.parametrize("path", ["/idwall/api/admin/sessions", "/idwall/api/admin/audit",
                                  "/idwall/api/admin/tokens", "/idwall/admin"])
async def test_admin_session_is_not_usable_from_a_proxied_hosts_origin(gateway, path: str) -> None:
    """Before: /idwall/ is served on every host, so a page of a proxied app (wiki.localhost) could fetch
    /idwall/api/admin/* same-origin on its own host; the admin's browser presented the client certificate
    and the app's script read live sessions and the whole ledger."""
    admin = await gateway.device("root", admin=True)
    foreign = f"wiki.localhost:{gateway.port}"
    async with _named(gateway, "wiki.localhost", admin) as client:
        async with client.get(gateway.url + path, headers={"Host": foreign, "Accept": "application/json"},
                              server_hostname="wiki.localhost", allow_redirects=False) as resp:
            assert resp.status == 403, await resp.text()
            assert resp.content_type == "application/problem+json"
    async with gateway.session(admin) as client:
        async with client.get(gateway.url + path, headers={"Host": foreign, "Accept": "application/json"},
                              allow_redirects=False) as resp:
            assert resp.status == 421, "a Host other than the connection's TLS server name is misdirected"
        async with client.get(gateway.url + path, headers={"Accept": "application/json"},
                              allow_redirects=False) as resp:
            assert resp.status == 200, await resp.text()


async def test_tokens_are_not_bound_to_the_host(gateway) -> None:
    """A SOAR playbook may address the gateway by any name; only ambient (certificate) sessions are pinned."""
    issued = tokens.new_token(name="soar", scopes=["read"], ttl=600, created_by="admin", now=time.time())
    record = issued.record
    await gateway.store.create_token(record, LedgerDraft("token.create", "admin", record.id, {
        "token_id": record.id, "name": record.name, "scopes": list(record.scopes),
        "expires_at": int(record.expires_at)}))
    async with _named(gateway, "gw.internal") as client:
        async with client.get(gateway.url + "/idwall/api/admin/sessions", server_hostname="gw.internal",
                              headers={"Host": "gw.internal", "Authorization": f"Bearer {issued.secret}"}) as resp:
            assert resp.status == 200, await resp.text()


# -- adversarial review: kill, bounded target ---------------------------------------------------------


@pytest.mark.parametrize("target", ["x" * 5000, "bob\x00", "bob\n{\"forged\": 1}"],
                         ids=["huge", "NUL", "newline"])
async def test_kill_target_is_bounded(gateway, target: str) -> None:
    """Before: a kill target of any length and any characters (up to the 64 KiB body) went into the ledger."""
    issued = tokens.new_token(name="soar", scopes=["kill"], ttl=600, created_by="admin", now=time.time())
    record = issued.record
    await gateway.store.create_token(record, LedgerDraft("token.create", "admin", record.id, {
        "token_id": record.id, "name": record.name, "scopes": list(record.scopes),
        "expires_at": int(record.expires_at)}))
    before = len(await gateway.store.ledger_entries())
    async with gateway.session() as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/admin/kill",
                                     {"scope": "user", "target": target, "reason": "test"},
                                     headers={"Authorization": f"Bearer {issued.secret}"})
    assert status == 400, problem
    assert len(await gateway.store.ledger_entries()) == before


async def test_webhook_deliveries_are_listed_for_readers_and_hidden_from_everyone_else(gateway) -> None:
    user = await gateway.device("mallory")
    read = await make_token(gateway, ["read"])
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/webhooks", token=read.secret)
    assert (status, body) == (200, {"deliveries": []})  # this gateway has no receivers configured
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/webhooks", device=user)
    assert status == 403 and "deliveries" not in problem
    status, problem, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/webhooks")
    assert status in (401, 403) and "deliveries" not in problem
