"""The answers the engine writes itself, as bytes: problem+json (RFC 9457), redirects, ``100 Continue``.

None of them names the gateway's software; every one is ``no-store`` and ``nosniff``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from ..errors import IDWallError

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROBLEM_TYPE = b"application/problem+json"

_COMMON = b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


def problem(error: IDWallError, *, close: bool, head: bool = False) -> bytes:
    """The problem+json answer for ``error`` (no body for a HEAD request, as RFC 9110 §9.3.2 says)."""
    body = json.dumps(error.problem()).encode()
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (error.status, _reason(error.status)),
        b"Content-Type: application/problem+json\r\nContent-Length: %d\r\n" % len(body),
        _COMMON,
        b"Connection: close\r\n" if close else b"",
        b"\r\n",
        b"" if head else body,
    ))


def redirect(location: str, *, close: bool) -> bytes:
    """A ``303 See Other`` to ``location`` (a same-origin path the caller made safe)."""
    return b"".join((
        b"HTTP/1.1 303 See Other\r\nLocation: ", location.encode("ascii"), b"\r\nContent-Length: 0\r\n",
        _COMMON,
        b"Connection: close\r\n" if close else b"",
        b"\r\n",
    ))


def status_error(status: int, detail: str) -> IDWallError:
    """An error for a protocol refusal (400, 414, 431, 501, 505, ...), with its own problem type."""
    error = IDWallError(detail)
    error.status = status
    phrase = _reason(status).decode()
    error.title = phrase
    error.slug = phrase.lower().replace(" ", "-")
    return error
