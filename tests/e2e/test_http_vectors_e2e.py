"""The HTTP wire vectors (tests/vectors/http/, schema in its README.md) against a real gateway.

A real gateway from ``idwall init``, real TLS with a device certificate that has a live session, raw bytes
on the socket, and a raw recording upstream: each row is judged only by the answer on the wire, whether the
connection was closed, and what reached the upstream. Every violation of a row is reported together.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.helpers.gateway import GatewayUnderTest, start_test_gateway
from tests.helpers.http_wire import (
    Answer,
    Message,
    Received,
    RecordingUpstream,
    exchange,
    request_bytes,
    tls_context,
    vector_params,
    websocket_accept,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: what reached the upstream is checked this long after the answer, so a late forward is still seen
SETTLE = 0.1
SMUGGLED = b"/smuggled"
SOFTWARE = ("python", "aiohttp", "uvloop", "httptools", "llhttp", "idwall")
JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

ROUTES = """routes:
  - name: app
    match: {{path: /}}
    upstream: {upstream}
  - name: ws
    match: {{path: /ws}}
    upstream: {upstream}
    websockets: true
  - name: other
    match: {{host: other.localhost, path: /}}
    upstream: {upstream}
"""
#: only the cross-site gateway has it: today's config refuses the key, and that must not hide the other files
PORTAL_ROUTE = """  - name: portal
    match: {{path: /portal}}
    upstream: {upstream}
    websockets: true
    cross_site: {{origins: ["https://portal.example"]}}
"""
#: request-target prefix of each route a cross_site row may name
ROUTE_PATHS = {"app": "/", "ws": "/ws", "portal": "/portal"}


@dataclass
class Wire:
    """A started gateway, the recording upstream behind it, and TLS contexts for alice's device."""

    gateway: GatewayUnderTest
    upstream: RecordingUpstream
    context: ssl.SSLContext
    context_any_sni: ssl.SSLContext

    async def send(self, row: dict[str, Any]) -> tuple[bytes, Answer]:
        """Send ``row``'s request on a new connection; the upstream's record starts empty for it."""
        self.upstream.reset()
        request = request_bytes(row, self.gateway.port)
        sni = row.get("sni", "localhost")
        answer = await exchange(self.gateway.port, self.context if sni == "localhost" else self.context_any_sni,
                                request, server_hostname=sni, head_request=request.startswith(b"HEAD "),
                                wait_close=row.get("close", False))
        await asyncio.sleep(SETTLE)
        return request, answer


def _edit(upstream: str, extra: str) -> Callable[[str], str]:
    """Replace the routes of the config ``idwall init`` wrote with :data:`ROUTES` (+ ``extra``)."""
    def edit(text: str) -> str:
        return text[: text.index("\nroutes:") + 1] + (ROUTES + extra).format(upstream=upstream)
    return edit


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recording() -> AsyncIterator[RecordingUpstream]:
    upstream = await RecordingUpstream().start()
    yield upstream
    await upstream.close()


@contextlib.asynccontextmanager
async def _wire(tmp: Path, upstream: RecordingUpstream, extra: str) -> AsyncIterator[Wire]:
    gateway = await start_test_gateway(tmp, upstream.url, edit=_edit(upstream.url, extra))
    try:
        device = await gateway.device("alice")
        ca = gateway.init["ca_pem"]
        yield Wire(gateway, upstream, tls_context(ca, device.cert_path, device.key_path),
                   tls_context(ca, device.cert_path, device.key_path, check_hostname=False))
    finally:
        await gateway.running.stop(drain=1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire(tmp_path_factory: pytest.TempPathFactory, recording: RecordingUpstream) -> AsyncIterator[Wire]:
    """Routes ``app``, ``ws`` and ``other``: config keys that exist today."""
    async with _wire(tmp_path_factory.mktemp("wire"), recording, "") as value:
        yield value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cross_site_wire(tmp_path_factory: pytest.TempPathFactory,
                          recording: RecordingUpstream) -> AsyncIterator[Wire]:
    """The same routes plus ``portal``, which lists ``https://portal.example`` in ``cross_site.origins``."""
    async with _wire(tmp_path_factory.mktemp("cross-site"), recording, PORTAL_ROUTE) as value:
        yield value


# --------------------------------------------------------------------------- checks


def _statuses(row: dict[str, Any]) -> list[int]:
    status = row["status"]
    return status if isinstance(status, list) else [status]


def _problem_violations(answer: Answer, type_suffix: str | None) -> list[str]:
    """RFC 9457 problem+json with type, title, status (= the answer's) and detail."""
    assert answer.head is not None
    content_type = (answer.head.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/problem+json":
        return [f"Content-Type {content_type or 'missing'!r}, expected application/problem+json"]
    try:
        body = json.loads(answer.body)
    except ValueError:
        return [f"problem body is not JSON: {answer.body[:120]!r}"]
    if not isinstance(body, dict):
        return [f"problem body is not an object: {body!r}"]
    found = [f"problem lacks {key!r}: {body}" for key in ("type", "title", "status", "detail") if key not in body]
    if body.get("status") != answer.status:
        found.append(f"problem status {body.get('status')!r} is not the answer's {answer.status}")
    if type_suffix and not str(body.get("type", "")).endswith(type_suffix):
        found.append(f"problem type {body.get('type')!r} does not end with {type_suffix!r}")
    return found


def _is_jwt(value: str) -> bool:
    if not JWT.fullmatch(value):
        return False
    first = value.split(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


def _forwarded_violations(row: dict[str, Any], received: Received, expect_upgrade: bool) -> list[str]:
    found = []
    if "path" in row and received.target != row["path"]:
        found.append(f"upstream request-target {received.target!r}, expected {row['path']!r}")
    if expect_upgrade and not received.has_token("upgrade", "websocket"):
        found.append("the upstream got no WebSocket upgrade")
    assertions = received.values("x-idwall-assertion")
    if len(assertions) != 1 or not _is_jwt(assertions[0]):
        found.append(f"upstream X-IDWall-Assertion values {[a[:40] for a in assertions]}, expected one JWT")
    forwarded_for = received.values("x-forwarded-for")
    if forwarded_for != ["127.0.0.1"]:
        found.append(f"upstream X-Forwarded-For {forwarded_for}, expected ['127.0.0.1']")
    for name in row.get("absent", []):
        if received.values(name):
            found.append(f"{name} reached the upstream: {received.values(name)}")
    return found


def _violations(row: dict[str, Any], request: bytes, answer: Answer, upstream: list[Received]) -> list[str]:
    found = []
    seen = b"".join(bytes(r.raw) for r in upstream)
    if SMUGGLED in seen:
        found.append("the upstream received /smuggled")
    statuses = _statuses(row)
    if answer.status not in statuses:
        found.append(f"status {answer.status}, expected {' or '.join(map(str, statuses))}: {answer.describe()}")
    elif answer.status is not None and answer.status >= 400:
        found += _problem_violations(answer, row.get("problem"))
    if answer.head is not None:
        for name in ("server", "x-powered-by"):
            value = answer.head.get(name) or ""
            if any(word in value.lower() for word in SOFTWARE):
                found.append(f"the answer names the software: {name}: {value}")
        if answer.status == 101:
            key = Message.parse(request.split(b"\r\n\r\n")[0]).get("sec-websocket-key") or ""
            if answer.head.get("sec-websocket-accept") != websocket_accept(key):
                found.append(f"Sec-WebSocket-Accept {answer.head.get('sec-websocket-accept')!r}, "
                             f"expected {websocket_accept(key)!r}")
    if row.get("close") and not answer.closed:
        found.append(f"the connection stayed open after the answer (then read {answer.rest[:120]!r})")
    mode = row.get("upstream", "none" if min(statuses) >= 400 else "forwarded")
    lines = [r.start or repr(bytes(r.raw[:60])) for r in upstream]
    if mode == "none" and upstream:
        found.append(f"the upstream received {len(upstream)} request(s): {lines}")
    if mode == "forwarded":
        if len(upstream) != 1:
            found.append(f"the upstream received {len(upstream)} requests, expected 1: {lines}")
        else:
            found += _forwarded_violations(row, upstream[0], expect_upgrade=101 in statuses)
    lowered = seen.decode("latin-1").lower()
    found += [f"the upstream received the client's {text!r}" for text in row.get("never", []) if text.lower() in lowered]
    return found


async def _check(wire: Wire, row: dict[str, Any]) -> None:
    request, answer = await wire.send(row)
    found = _violations(row, request, answer, wire.upstream.requests)
    assert not found, f"{row['id']} ({row['cite']}):\n  " + "\n  ".join(found)


def _cross_site(row: dict[str, Any]) -> dict[str, Any]:
    """A cross_site row in the general form: ``refused`` and ``served`` spelled out."""
    target = row["request"].split(" ", 2)[1]
    prefix = ROUTE_PATHS[row["route"]]
    assert target.startswith(prefix), f"{row['id']}: {target} is not on route {row['route']} ({prefix})"
    if row["expect"] == "refused":
        return {**row, "status": 403, "problem": "/cross-site-refused", "upstream": "none"}
    assert row["expect"] == "served", row["expect"]
    return {**row, "status": row.get("status", 200), "upstream": "forwarded"}


# --------------------------------------------------------------------------- one test per file


@pytest.mark.parametrize("row", vector_params("framing.jsonl"))
async def test_framing(wire: Wire, row: dict[str, Any]) -> None:
    await _check(wire, row)


@pytest.mark.parametrize("row", vector_params("host.jsonl"))
async def test_host(wire: Wire, row: dict[str, Any]) -> None:
    await _check(wire, row)


@pytest.mark.parametrize("row", vector_params("spoofed_headers.jsonl"))
async def test_spoofed_headers(wire: Wire, row: dict[str, Any]) -> None:
    await _check(wire, row)


@pytest.mark.parametrize("row", vector_params("websocket.jsonl"))
async def test_websocket(wire: Wire, row: dict[str, Any]) -> None:
    await _check(wire, row)


@pytest.mark.parametrize("row", vector_params("cross_site.jsonl"))
async def test_cross_site(cross_site_wire: Wire, row: dict[str, Any]) -> None:
    await _check(cross_site_wire, _cross_site(row))
