"""The WebSocket opening handshake (RFC 6455 §4): what a client must send, and what an upstream must answer.

Only a handshake that passes :func:`client_problem` is forwarded, and only an upstream ``101`` that passes
:func:`upstream_problem` is relayed; after that the gateway splices bytes and parses no frame.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from .h1 import RequestHead
from .h1_upstream import ResponseHead

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` an upstream must answer for ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def client_problem(head: RequestHead) -> str | None:
    """Why ``head`` is not a valid WebSocket handshake (RFC 6455 §4.2.1), or None when it is one."""
    if head.method != b"GET":
        return "a WebSocket handshake is a GET"
    if head.version != b"1.1":
        return "a WebSocket handshake needs HTTP/1.1"
    if head.upgrade != b"websocket" or not head.connection_upgrade:
        return "a WebSocket handshake carries 'Upgrade: websocket' and 'Connection: Upgrade'"
    if head.has_body:
        return "a WebSocket handshake has no body"
    if head.ws_version != b"13":
        return "Sec-WebSocket-Version must be 13"
    key = head.ws_key
    if key is None:
        return "Sec-WebSocket-Key is missing"
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def upstream_problem(request: RequestHead, response: ResponseHead) -> str | None:
    """Why the upstream's ``101`` does not complete ``request``'s handshake (RFC 6455 §4.1), or None."""
    if response.upgrade != b"websocket" or not response.connection_upgrade:
        return "the upstream's 101 does not carry 'Upgrade: websocket' and 'Connection: Upgrade'"
    assert request.ws_key is not None
    if response.ws_accept != accept_for(request.ws_key):
        return "the upstream's Sec-WebSocket-Accept does not match the key"
    return None
