"""idwall.web.app: the gateway's own application, everything under ``/idwall/`` and ``/.well-known/idwall/``.

What it promises, tested over a real gateway (the engine on a real TLS port in front, a SQLite file):

- the JWKS is public, may be cached for a minute and holds public keys only;
- ``/idwall/healthz`` says ok, the time and how many client connections are open;
- ``/idwall/metrics`` answers this machine without a login, another address only for an administrator;
- every route the app declares is reachable through the TLS port, and every other path under its two
  prefixes is a 404 problem+json whatever the method, never proxied;
- what it serves carries nosniff, no-referrer and HSTS (and no-store on the API) without overriding a
  handler's own caching; proxied answers carry what the upstream sent;
- a request body is held to ``limits.api_body``, with a Content-Length or without one;
- every hostile body to every JSON endpoint is a 4xx problem and stores nothing (below).

The caller of the hostile-body tests is an administrator with a fresh session on its device's mTLS
connection, so each request gets past authentication to the body: login and actions need the session,
the kill switch an administrator. Three sets of bodies, for each of the seven JSON endpoints:

- the raw hostile bodies of test_jsonbody.py (deep nesting, long integers,
  lone surrogates, NaN, duplicate keys, not UTF-8, ...), answered with the
  same status and message as :func:`idwall.jsonbody.parse_json_object` gives;
- a realistic body for the endpoint with one member replaced, anywhere in it:
  by a value of another JSON type (a list where a string belongs), or by a
  value no field accepts (a lone surrogate, a 25-digit integer, a string over
  the limit, 40 levels of nesting);
- for enroll/begin and login/finish, bodies drawn by hypothesis.

The realistic bodies are built to fail at the end even when every member is
valid (an unknown invite code, an assertion for a challenge never issued, a
registration for another challenge, a kill of a user that does not exist is
valid but its template is never sent as is), so a mutation that happens to be
valid still changes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idwall import passkeys
from idwall.encoding import b64url_encode
from idwall.errors import PROBLEM_BASE, PayloadTooLarge
from idwall.jsonbody import json_type
from idwall.testing.authenticator import SoftAuthenticator
from idwall.web import pages
from idwall.web.app import build_app
from tests.helpers.api import begin_enroll, bootstrap, call_fresh, counts, login, make_csr
from tests.helpers.gateway import running_gateway
from tests.helpers.hostile_json import HOSTILE_BODIES, json_values

pytestmark = pytest.mark.asyncio

JSON = {"Content-Type": "application/json"}


# -- JWKS, health and metrics ----------------------------------------------------------------------------


async def test_jwks_is_public_cacheable_for_a_minute_and_holds_no_private_key(gateway) -> None:
    async with gateway.session() as anon:
        async with anon.get(gateway.url + "/.well-known/idwall/jwks.json") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "public, max-age=60"
            jwks = await resp.json()
    assert jwks == gateway.running.node.keys.jwks()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"]), "an EC private key is its 'd' member"


async def test_healthz_says_ok_the_time_and_the_open_connections(gateway) -> None:
    clients = [gateway.session(await gateway.device("alice")), gateway.session(await gateway.device("bob"))]
    try:
        for client in clients:
            async with client.get(gateway.url + "/app") as resp:
                assert resp.status == 200
        status, health, _ = await call_fresh(gateway, "GET", "/idwall/healthz")
    finally:
        for client in clients:
            await client.close()
    assert status == 200 and health["status"] == "ok"
    assert abs(health["time"] - time.time()) < 5
    assert health["connections"] == 3, "the two devices' connections and the one asking"


def _gauge(metrics: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus text exposition."""
    (value,) = [float(line.split()[1]) for line in metrics.splitlines() if line.startswith(name + " ")]
    return value


async def test_metrics_answer_this_machine_without_a_login_and_count_what_is_live_now(gateway) -> None:
    alice = await gateway.device("alice")
    async with gateway.session(alice) as client:
        async with client.get(gateway.url + "/app") as resp:  # alice's session is live on a connection
            assert resp.status == 200
        status, metrics, headers = await call_fresh(gateway, "GET", "/idwall/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain"), metrics
        assert _gauge(metrics, "idwall_live_sessions") == 1
        assert _gauge(metrics, "idwall_live_connections") == 2, "alice's and the scraper's"
    # counted when scraped: once alice's connection is gone, so is her live session
    for _ in range(50):
        metrics = (await call_fresh(gateway, "GET", "/idwall/metrics"))[1]
        if _gauge(metrics, "idwall_live_sessions") == 0:
            break
        await asyncio.sleep(0.1)
    assert _gauge(metrics, "idwall_live_sessions") == 0 and _gauge(metrics, "idwall_live_connections") == 1


async def test_metrics_from_another_address_need_an_administrators_session(gateway) -> None:
    """Off this machine, metrics need an admin session (or a read token).

    Tests bind 127.0.0.1 only, so each client's live connection is given a TEST-NET address as its peer after
    its first request: the same connection then asks for the metrics, as a client elsewhere would.
    """
    answers: dict[str, tuple[int, str]] = {}
    for name, device in (("anonymous", None), ("alice", await gateway.device("alice")),
                         ("root", await gateway.device("root", admin=True))):
        async with gateway.session(device) as client:
            async with client.get(gateway.url + "/idwall/healthz") as resp:
                assert resp.status == 200
            [conn] = [c for c in gateway.running.node.registry if c.remote == "127.0.0.1"]
            conn.remote = "192.0.2.7"
            async with client.get(gateway.url + "/idwall/metrics") as resp:
                answers[name] = resp.status, await resp.text()
    assert answers["anonymous"][0] == 403 and "/no-client-certificate" in answers["anonymous"][1]
    assert answers["alice"][0] == 403 and "/forbidden" in answers["alice"][1]
    assert answers["root"][0] == 200 and _gauge(answers["root"][1], "idwall_live_sessions") == 1


# -- routing: the declared routes, and nothing else under the two prefixes -------------------------------


def _declared_routes(gateway: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app declares but the fallbacks, a value in place of each variable."""
    app = build_app(gateway.running.node, gateway.running.engine)
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or "{tail" in path:  # HEAD answers as GET; the fallbacks are tested below
            continue
        found.append((route.method, re.sub(r"\{[^}]+\}", "x-test", path)))
    return found


async def test_every_declared_route_is_reachable_through_the_tls_port(gateway) -> None:
    routes = _declared_routes(gateway)
    assert {("GET", "/idwall/healthz"), ("POST", "/idwall/api/enroll/begin"), ("GET", "/idwall/login"),
            ("POST", "/idwall/api/admin/kill"), ("GET", "/.well-known/idwall/jwks.json")} <= set(routes)
    device = await gateway.device("alice")  # a session: a request the engine proxied would be answered
    for method, path in routes:
        status, body, _ = await call_fresh(gateway, method, path, device=device)
        assert "no IDWall endpoint" not in str(body), (method, path, status)
        assert not (isinstance(body, dict) and "raw_path" in body), f"{method} {path} went to the upstream"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_every_other_path_under_the_prefixes_is_a_404_problem_never_proxied(gateway, method: str) -> None:
    device = await gateway.device("alice")
    # a path of an endpoint that takes another method is no endpoint for this one (no 405 listing methods)
    taken = "/idwall/api/login/begin" if method == "GET" else "/idwall/healthz"
    for path in ("/idwall/nope", "/idwall/api/nope", "/idwall/api/", "/.well-known/idwall/nope", taken):
        status, problem, headers = await call_fresh(gateway, method, path, device=device)
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), (path, problem)
        assert problem["type"] == PROBLEM_BASE + "not-found"
        assert problem["detail"] == f"no IDWall endpoint {method} {path}"
    status, problem, _ = await call_fresh(gateway, method, "/idwall", device=device)
    assert status == 404 and problem["type"] == PROBLEM_BASE + "not-found"


# -- security headers --------------------------------------------------------------------------------------


#: one answer of each kind the app gives, to a client without a certificate: (path, status)
OWN_ANSWERS = [("/idwall/api/me", 403), ("/idwall/api/enroll/enr-none", 404), ("/idwall/healthz", 200),
               ("/.well-known/idwall/jwks.json", 200), ("/idwall/login", 403), ("/idwall/static/idwall.js", 200),
               ("/idwall/nope", 404)]


async def test_what_the_gateway_serves_carries_its_security_headers(gateway) -> None:
    for path, expected in OWN_ANSWERS:
        status, _, headers = await call_fresh(gateway, "GET", path)
        assert status == expected, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert headers["Strict-Transport-Security"] == "max-age=31536000", path
        if path.startswith("/idwall/api/"):
            assert headers["Cache-Control"] == "no-store", path
    # a handler's own caching is kept, not replaced
    assert (await call_fresh(gateway, "GET", "/.well-known/idwall/jwks.json"))[2]["Cache-Control"] == \
        "public, max-age=60"
    assert (await call_fresh(gateway, "GET", "/idwall/static/idwall.js"))[2]["Cache-Control"] == \
        pages.STATIC_CACHE_CONTROL


async def test_proxied_answers_carry_what_the_upstream_sent(gateway) -> None:
    device = await gateway.device("alice")
    status, _, headers = await call_fresh(gateway, "GET", "/app", device=device)
    assert status == 200
    added = {"X-Content-Type-Options", "Referrer-Policy", "Strict-Transport-Security", "Cache-Control"} & set(headers)
    assert not added, "the echo upstream sends none of these"


# -- the body limit ----------------------------------------------------------------------------------------


async def test_a_body_is_held_to_the_configured_api_body_with_or_without_a_length(tmp_path, upstream) -> None:
    async with running_gateway(tmp_path, upstream.url,
                               edit=lambda text: text.replace("api_body: 64k", "api_body: 8k")) as gw:
        limit = gw.config.limits.api_body
        assert limit == 8192
        body = json.dumps({"code": "no-such-invite-code", "csr_pem": make_csr()[1], "device_name": "laptop"}).encode()
        fits = body + b" " * (limit - len(body))  # white space after the object: the same JSON, the limit's size
        for data, expected in ((fits, 404), (fits + b" ", 413)):
            for framing in ("Content-Length", "chunked"):
                async with gw.session() as anon:
                    async with anon.post(gw.url + "/idwall/api/enroll/begin", headers=JSON,
                                         data=data if framing == "Content-Length" else _pieces(data, 1000)) as resp:
                        problem = await resp.json(content_type=None)
                assert resp.status == expected, (framing, len(data), problem)


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("size", [50, 700])
async def test_a_body_arriving_in_pieces_is_read_whole(gateway, size: int) -> None:
    """Chunked, with pauses: the body is read to its end, not cut at the first piece that arrived."""
    body = json.dumps({"code": "no-such-invite-code", "csr_pem": make_csr()[1], "device_name": "laptop"}).encode()
    async with gateway.session() as anon:
        async with anon.post(gateway.url + "/idwall/api/enroll/begin", data=_pieces(body, size),
                             headers={"Content-Type": "application/json"}) as resp:
            problem = await resp.json(content_type=None)
    assert (resp.status, problem["type"]) == (404, "https://idwall.dev/problems/not-found"), problem
    oversized = b'{"a": "' + b"x" * gateway.config.limits.api_body + b'"}'
    async with gateway.session() as anon:
        async with anon.post(gateway.url + "/idwall/api/enroll/begin", data=_pieces(oversized, 16 * 1024),
                             headers={"Content-Type": "application/json"}) as resp:
            problem = await resp.json(content_type=None)
    assert resp.status == 413 and "over the limit" in problem["detail"], problem


# -- hostile bodies to every JSON endpoint -----------------------------------------------------------------


ENDPOINTS = ["/idwall/api/enroll/begin", "/idwall/api/enroll/finish", "/idwall/api/login/begin",
             "/idwall/api/login/finish", "/idwall/api/actions/begin", "/idwall/api/actions/finish",
             "/idwall/api/admin/kill"]
#: values of every JSON type: each replaces a member whose type is another
OTHER_TYPES: list[Any] = [None, True, 7, 2.5, "text", ["text"], {"k": "text"}]
#: values that no member of any endpoint accepts, whatever its type
NEVER_VALID: list[Any] = ["\ud800", "x\udfffy", "x" * 40_000, 10**25, -(10**25), json.loads("[" * 40 + "]" * 40)]


@dataclass
class Armed:
    """An administrator's mTLS client with a fresh session, and a realistic body for each endpoint."""

    client: aiohttp.ClientSession
    templates: dict[str, dict[str, Any]]


def _assertion(auth: SoftAuthenticator, credential_id: bytes) -> dict[str, Any]:
    """A validly signed assertion for a challenge the gateway never issued."""
    options = passkeys.authentication_options(rp_id="localhost", challenge=os.urandom(32), allow=[credential_id],
                                              timeout_ms=60_000, user_verification="required")
    return auth.get(options)


@pytest.fixture
async def armed(gateway) -> AsyncIterator[Armed]:  # type: ignore[no-untyped-def]
    admin = await bootstrap(gateway)
    _, status, begun = await begin_enroll(gateway, user="admin", device_name="spare")
    assert status == 200, begun
    other_challenge = begun["options"] | {"challenge": b64url_encode(os.urandom(32))}
    registration = SoftAuthenticator(origin=gateway.url).create(other_challenge)
    credential_id = next(iter(admin.auth.credentials))
    templates = {
        "/idwall/api/enroll/begin": {"code": "no-such-invite-code", "csr_pem": make_csr()[1], "device_name": "laptop"},
        "/idwall/api/enroll/finish": {"enrollment_id": begun["enrollment_id"], "credential": registration},
        "/idwall/api/login/begin": {},  # what the login page sends; it reads no member
        "/idwall/api/login/finish": {"credential": _assertion(admin.auth, credential_id)},
        "/idwall/api/actions/begin": {"action": {"type": "invite.create", "user": "bob", "name": "Bob",
                                                 "email": "bob@example.com", "groups": ["eng"], "admin": False}},
        "/idwall/api/actions/finish": {"action_id": "no-such-action",
                                       "credential": _assertion(admin.auth, credential_id)},
        "/idwall/api/admin/kill": {"scope": "user", "target": "nobody", "reason": "input test",
                                   "revoke_devices": False},
    }
    async with gateway.session(admin) as client:
        status, answer = await login(gateway, admin, client)
        assert status == 200, answer
        yield Armed(client, templates)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every member and item under ``node``, containers included."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = []
    for key, child in children:
        found += [prefix + (key,), *_paths(child, prefix + (key,))]
    return found


def _replaced(template: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(template)
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return body


def mutations(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``template`` with one member replaced by another type's value or by a value nothing accepts."""
    found = []
    for path in _paths(template):
        parent = template
        for part in path[:-1]:
            parent = parent[part]
        original = json_type(parent[path[-1]])
        values = [v for v in OTHER_TYPES if json_type(v) != original] + NEVER_VALID
        found += [(f"{'.'.join(map(str, path))} = {json.dumps(v)[:30]}", _replaced(template, path, v)) for v in values]
    return found


async def post(client: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, str, dict[str, Any] | None]:
    """POST ``data`` as JSON; the status, the content type and the parsed body (None when not JSON)."""
    async with client.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        text = await resp.text()
        try:
            return resp.status, resp.content_type, json.loads(text)
        except ValueError:
            return resp.status, resp.content_type, None


def problem_failure(status: int, content_type: str, problem: dict[str, Any] | None) -> str | None:
    """What is wrong with an answer that should be a 4xx problem+json, or None when nothing is."""
    if not 400 <= status < 500:
        return f"status {status}"
    if content_type != "application/problem+json":
        return f"content type {content_type}"
    if not isinstance(problem, dict) or not {"type", "title", "status", "detail"} <= problem.keys():
        return f"not a problem body: {problem!r:.200}"
    if problem["status"] != status or not problem["type"].startswith("https://idwall.dev/problems/"):
        return f"inconsistent problem {problem!r:.200}"
    return None


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_hostile_bodies_are_4xx_problems_and_store_nothing(gateway, armed: Armed, path: str) -> None:
    url = gateway.url + path
    before = await counts(gateway)
    failures = []
    for name, body, error, message in HOSTILE_BODIES:
        status, ctype, problem = await post(armed.client, url, body)
        failure = problem_failure(status, ctype, problem)
        expected = 413 if error is PayloadTooLarge else 400
        if failure is None and status != expected:
            failure = f"status {status}, expected {expected}"
        # the size is refused on Content-Length, before the body is read: that message says so its own way
        if failure is None and expected == 400 and message not in problem["detail"]:  # type: ignore[index]
            failure = f"detail {problem['detail']!r}, expected {message!r}"  # type: ignore[index]
        if failure:
            failures.append(f"{name}: {failure}")
    for name, body in mutations(armed.templates[path]):
        failure = problem_failure(*await post(armed.client, url, json.dumps(body).encode()))
        if failure:
            failures.append(f"{name}: {failure}")
    assert not failures, "\n".join(failures)
    assert await counts(gateway) == before


def _fuzzed_body(data: st.DataObject, template: dict[str, Any]) -> bytes:
    """Arbitrary bytes, an arbitrary JSON value, or the template with some members replaced by arbitrary JSON."""
    kind = data.draw(st.sampled_from(["bytes", "value", "template"]))
    if kind == "bytes":
        return data.draw(st.binary(max_size=300))
    if kind == "value":
        return json.dumps(data.draw(json_values)).encode()
    body = copy.deepcopy(template)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(body)
        if paths:
            body = _replaced(body, data.draw(st.sampled_from(paths)), data.draw(json_values))
    return json.dumps(body).encode()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
async def test_fuzzed_bodies_to_enroll_and_login_are_4xx_problems(gateway, armed: Armed,
                                                                  data: st.DataObject) -> None:
    for path in ("/idwall/api/enroll/begin", "/idwall/api/login/finish"):
        before = await counts(gateway)
        body = _fuzzed_body(data, armed.templates[path])
        status, ctype, problem = await post(armed.client, gateway.url + path, body)
        assert problem_failure(status, ctype, problem) is None, (path, body[:300], status, problem)
        assert await counts(gateway) == before
