"""idwall.engine.answers: the engine's own answers, read back as HTTP by the upstream-side parser (llhttp).

Each answer must be a complete, correctly framed HTTP/1.1 response: problem+json (RFC 9457) with type,
title, status and detail, ``no-store`` and ``nosniff``, no header naming the software, and no body on a
HEAD answer while Content-Length still says what a GET would have carried (RFC 9110 §9.3.2, §8.6).
"""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from idwall.access import CrossSiteRefused, Misdirected
from idwall.engine.answers import CONTINUE, PROBLEM_TYPE, problem, redirect, status_error
from idwall.engine.h1 import END
from idwall.engine.h1_upstream import ResponseHead
from idwall.errors import (
    PROBLEM_BASE,
    BadRequest,
    Forbidden,
    IDWallError,
    NoClientCertificate,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tests.helpers.engine import body_of, upstream_events
from tests.helpers.http_wire import Message


def read_back(data: bytes, *, method: bytes = b"GET") -> tuple[Message, bytes, bool]:
    """The answer's head (as sent), its body, and whether the connection may carry another request."""
    events, conn = upstream_events(data, method=method)
    assert isinstance(events[0], ResponseHead) and events[-1] is END, events
    head = Message.parse(data.split(b"\r\n\r\n", 1)[0])
    return head, body_of(events), conn.reusable


def assert_common(head: Message) -> None:
    assert head.get("cache-control") == "no-store" and head.get("x-content-type-options") == "nosniff"
    assert head.get("server") is None and head.get("x-powered-by") is None
    assert len({field for field, _ in head.headers}) == len(head.headers), "a field written twice"


def test_continue() -> None:
    """RFC 9110 §15.2.1: an interim answer, nothing but its status line."""
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


ERRORS = [BadRequest("bad"), PayloadTooLarge("big"), Unauthenticated("log in", login_url="https://gw/login"),
          NoClientCertificate("enroll", enroll_url="https://gw/idwall/enroll"), Forbidden("no"), NotFound("where"),
          UpstreamError("down"), UpstreamTimeout("slow"), Unavailable("store"), CrossSiteRefused("other site"),
          Misdirected("other host"), IDWallError("oops")]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("close", [False, True])
def test_a_problem_is_problem_json_framed_by_its_length(error: IDWallError, close: bool) -> None:
    head, body, reusable = read_back(problem(error, close=close))
    assert head.start == f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}"
    assert head.get("content-type") == PROBLEM_TYPE.decode() and head.get("content-length") == str(len(body))
    assert_common(head)
    assert (head.get("connection") == "close") is close and reusable is not close
    document = json.loads(body)
    assert document == {"type": PROBLEM_BASE + error.slug, "title": error.title, "status": error.status,
                        "detail": error.detail, **error.extra}


def test_a_problem_for_a_head_request_has_no_body_but_its_length() -> None:
    error = Forbidden("no")
    full = problem(error, close=False)
    data = problem(error, close=False, head=True)
    assert data == full[: full.index(b"\r\n\r\n") + 4]
    head, body, _ = read_back(data, method=b"HEAD")
    assert body == b"" and head.get("content-length") == str(len(json.dumps(error.problem())))


def test_a_problem_never_carries_the_log_detail() -> None:
    """errors.py: detail is for the client, log_detail for the log only."""
    data = problem(UpstreamError("the upstream refused", log_detail="app: ConnectionRefusedError(10.0.0.7)"),
                   close=True)
    assert b"10.0.0.7" not in data and b"ConnectionRefusedError" not in data


@pytest.mark.parametrize("close", [False, True])
def test_a_redirect_is_a_303_without_a_body(close: bool) -> None:
    """RFC 9110 §15.4.4: See Other, to the login page (a same-origin path)."""
    head, body, reusable = read_back(redirect("/idwall/login?next=/app%3Fq%3D1", close=close))
    assert head.start == "HTTP/1.1 303 See Other" and head.get("location") == "/idwall/login?next=/app%3Fq%3D1"
    assert body == b"" and head.get("content-length") == "0"
    assert_common(head)
    assert (head.get("connection") == "close") is close and reusable is not close


def test_a_redirect_refuses_a_location_that_is_not_ascii() -> None:
    """A Location is ASCII (RFC 9110 §10.2.2, RFC 3986): never written as raw UTF-8."""
    with pytest.raises(UnicodeEncodeError):
        redirect("/idwall/login?next=/é", close=False)


@pytest.mark.parametrize(("status", "title", "slug"), [
    (400, "Bad Request", "bad-request"),
    (408, "Request Timeout", "request-timeout"),
    # Python names it as RFC 2616 did until 3.13, RFC 9110 §15.5.15 as "URI Too Long": either is the phrase
    (414, "Request-URI Too Long" if HTTPStatus(414).phrase.startswith("Request") else "URI Too Long",
     "request-uri-too-long" if HTTPStatus(414).phrase.startswith("Request") else "uri-too-long"),
    (417, "Expectation Failed", "expectation-failed"),
    (431, "Request Header Fields Too Large", "request-header-fields-too-large"),
    (501, "Not Implemented", "not-implemented"),
    (505, "HTTP Version Not Supported", "http-version-not-supported"),
    (599, "Error", "error"),  # no registered phrase: a generic one, never a crash
])
def test_status_error_gives_each_refusal_its_own_problem_type(status: int, title: str, slug: str) -> None:
    error = status_error(status, "what the parser said")
    assert (error.status, error.title, error.slug, error.detail) == (status, title, slug, "what the parser said")
    head, body, _ = read_back(problem(error, close=True))
    assert head.start == f"HTTP/1.1 {status} {title}"
    assert json.loads(body)["type"] == PROBLEM_BASE + slug


def test_status_error_does_not_change_the_error_classes() -> None:
    """Each refusal is its own instance: the class attributes of IDWallError stay as they were."""
    status_error(431, "x")
    assert (IDWallError.status, IDWallError.slug, IDWallError.title) == (500, "internal", "Internal error")
