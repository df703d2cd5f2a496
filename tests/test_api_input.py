"""API input over the real gateway: every hostile body to every JSON endpoint is a 4xx problem and stores nothing.

The caller is an administrator with a fresh session on its device's mTLS
connection, so each request gets past authentication to the body: login and
actions need the session, the kill switch an administrator. Three sets of
bodies, for each of the seven JSON endpoints:

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
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idwall import passkeys
from idwall.encoding import b64url_encode
from idwall.errors import PayloadTooLarge
from idwall.jsonbody import json_type
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import begin_enroll, bootstrap, counts, login, make_csr
from tests.helpers.hostile_json import HOSTILE_BODIES, json_values

pytestmark = pytest.mark.asyncio

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
