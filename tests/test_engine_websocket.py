"""idwall.engine.websocket: the RFC 6455 opening handshake, both ways, on heads the parser made.

Heads come from :mod:`idwall.engine.h1` fed with bytes (as on the wire); a branch h1 never lets through
(a handshake with a body) is checked on a head built by hand, since the function must hold on its own.
"""

from __future__ import annotations

import base64

import pytest

from idwall.engine.h1 import RequestHead
from idwall.engine.h1_upstream import ResponseHead
from idwall.engine.websocket import GUID, accept_for, client_problem, upstream_problem
from tests.helpers.engine import HANDSHAKE, heads, request, server_events, upstream_events, vector_head
from tests.helpers.http_wire import load_vectors, websocket_accept

#: RFC 6455 §1.3: the sample nonce and the accept value the server must answer with
SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def parsed(*fields: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> RequestHead:
    """The head h1 makes of a request to /ws with ``fields`` (it must parse)."""
    found = heads(server_events(request(b"/ws", *fields, method=method, version=version)))
    assert len(found) == 1
    return found[0]


def answered(*fields: bytes) -> ResponseHead:
    """The head h1 makes of an upstream's 101 with ``fields``, for a validated handshake."""
    events, _ = upstream_events(b"\r\n".join([b"HTTP/1.1 101 Switching Protocols", *fields]) + b"\r\n\r\n",
                                upgrade=True)
    head = events[0]
    assert isinstance(head, ResponseHead) and head.status == 101
    return head


def without(name: bytes) -> tuple[bytes, ...]:
    return tuple(f for f in HANDSHAKE if not f.lower().startswith(name.lower() + b":"))


def test_the_rfc_6455_sample() -> None:
    """§1.3: base64(SHA-1(key + GUID)); the test tools compute it independently."""
    assert GUID == b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_for(SAMPLE_KEY) == SAMPLE_ACCEPT == websocket_accept(SAMPLE_KEY.decode()).encode()


def test_a_valid_handshake_has_no_problem() -> None:
    assert client_problem(parsed(*HANDSHAKE)) is None
    # §4.2.1 items 3 and 4: the tokens are case-insensitive, and Connection may list more
    assert client_problem(parsed(b"Upgrade: WebSocket", b"Connection: keep-alive, UPGRADE",
                                 b"Sec-WebSocket-Key: " + SAMPLE_KEY, b"Sec-WebSocket-Version: 13")) is None


@pytest.mark.parametrize(("fields", "method", "version", "problem"), [
    pytest.param((b"Upgrade: websocket", *HANDSHAKE[2:]), b"POST", b"1.1", "is a GET", id="post"),  # item 1
    pytest.param(HANDSHAKE, b"GET", b"1.0", "needs HTTP/1.1", id="http10"),                       # item 1
    pytest.param(without(b"Connection"), b"GET", b"1.1", "'Connection: Upgrade'", id="no-connection"),  # item 4
    pytest.param((b"Connection: keep-alive", *without(b"Connection")), b"GET", b"1.1", "'Connection: Upgrade'",
                 id="connection-without-upgrade"),
    pytest.param(without(b"Upgrade"), b"GET", b"1.1", "'Upgrade: websocket'", id="no-upgrade"),      # item 3
    pytest.param((*without(b"Sec-WebSocket-Version"), b"Sec-WebSocket-Version: 8"), b"GET", b"1.1",
                 "must be 13", id="version-8"),                                                       # item 6
    pytest.param(without(b"Sec-WebSocket-Version"), b"GET", b"1.1", "must be 13", id="no-version"),
    pytest.param(without(b"Sec-WebSocket-Key"), b"GET", b"1.1", "is missing", id="no-key"),           # item 5
    pytest.param((*without(b"Sec-WebSocket-Key"), b"Sec-WebSocket-Key: " + base64.b64encode(b"x" * 15)),
                 b"GET", b"1.1", "16 bytes", id="key-15-bytes"),
    pytest.param((*without(b"Sec-WebSocket-Key"), b"Sec-WebSocket-Key: " + base64.b64encode(b"x" * 17)),
                 b"GET", b"1.1", "16 bytes", id="key-17-bytes"),
    pytest.param((*without(b"Sec-WebSocket-Key"), b"Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="),
                 b"GET", b"1.1", "16 bytes", id="key-not-base64"),
    pytest.param((*without(b"Sec-WebSocket-Key"), b"Sec-WebSocket-Key: " + SAMPLE_KEY.rstrip(b"=")),
                 b"GET", b"1.1", "16 bytes", id="key-unpadded"),
    pytest.param((*without(b"Sec-WebSocket-Key"), b"Sec-WebSocket-Key: " + base64.urlsafe_b64encode(b"\xfb" * 16)),
                 b"GET", b"1.1", "16 bytes", id="key-base64url"),
])
def test_client_problems(fields: tuple[bytes, ...], method: bytes, version: bytes, problem: str) -> None:
    """RFC 6455 §4.2.1, one requirement broken at a time."""
    found = client_problem(parsed(*fields, method=method, version=version))
    assert found is not None and problem in found


def test_a_handshake_with_a_body_has_a_problem() -> None:
    """h1 refuses this before it is a head; the check holds on its own (DESIGN "WebSockets": no body)."""
    head = parsed(*HANDSHAKE)
    head.content_length = 5
    assert client_problem(head) == "a WebSocket handshake has no body"
    head.content_length, head.chunked = None, True
    assert client_problem(head) == "a WebSocket handshake has no body"


#: the refused rows of websocket.jsonl that h1 itself refuses (tests/test_engine_h1.py), not client_problem
REFUSED_BY_H1 = {"key-twice", "with-body", "with-chunked-body", "post", "upgrade-not-websocket-token"}
#: refused by the route (``websockets: false``, 403 in engine.io), not by the handshake
REFUSED_BY_ROUTE = {"route-without-websockets"}


@pytest.mark.parametrize("row", [r for r in load_vectors("websocket.jsonl") if r["id"] not in REFUSED_BY_H1],
                         ids=lambda r: r["id"])
def test_websocket_vector(row: dict[str, object]) -> None:
    """The pure counterpart of the wire test: what client_problem says of each row's head."""
    problem = client_problem(vector_head(row))
    if row["status"] == 400:
        assert problem is not None, row["id"]
    else:
        assert row["status"] == 101 or row["id"] in REFUSED_BY_ROUTE
        assert problem is None, (row["id"], problem)


def test_the_upstreams_101_completes_the_handshake() -> None:
    head = parsed(*HANDSHAKE)
    assert upstream_problem(head, answered(b"Upgrade: websocket", b"Connection: Upgrade",
                                           b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT)) is None
    assert upstream_problem(head, answered(b"upgrade: WEBSOCKET", b"connection: upgrade",
                                           b"sec-websocket-accept: " + SAMPLE_ACCEPT)) is None


@pytest.mark.parametrize(("fields", "problem"), [
    ((b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT), "'Upgrade: websocket'"),
    ((b"Upgrade: websocket", b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT), "'Connection: Upgrade'"),
    ((b"Upgrade: h2c", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT), "'Upgrade: websocket'"),
    ((b"Upgrade: websocket", b"Connection: Upgrade"), "does not match"),
    ((b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + accept_for(b"other")),
     "does not match"),
    ((b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT.lower()),
     "does not match"),
], ids=["no-upgrade", "no-connection", "other-protocol", "no-accept", "accept-for-another-key", "accept-case"])
def test_upstream_problems(fields: tuple[bytes, ...], problem: str) -> None:
    """RFC 6455 §4.1 (the client's checks of the server's handshake), which the gateway makes for its client."""
    found = upstream_problem(parsed(*HANDSHAKE), answered(*fields))
    assert found is not None and problem in found
