"""idwall.web.problems: the one place where errors become HTTP answers, and where JSON bodies are read.

What it promises:

- every :class:`~idwall.errors.IDWallError` answers ``application/problem+json`` with its status, type,
  title and detail (and its extra members), never its ``log_detail`` nor a stack trace; one that is a
  server error, or that has a ``log_detail``, is logged as ``request.error``;
- aiohttp's own HTTP errors (unknown path, wrong method, body over the app's size) are problems too, a 405
  keeping its ``Allow``; a redirect passes as it is;
- any other exception is logged with its traceback and answered as a bare 500 problem that says nothing of it;
- :func:`read_json_object` takes ``application/json`` only (parameters and letter case aside), refuses a
  Content-Length over the limit before reading a byte of the body, reads a body without a length to its
  end and refuses it once it passes the limit.

Tested on a small aiohttp app served on a real socket, with the real middleware and handlers that raise each
error of the tree or read a body; requests whose framing matters are written byte for byte. How every JSON
endpoint of a running gateway answers hostile bodies is in test_web_app.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import pkgutil
import re
from contextlib import contextmanager
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

import idwall
from idwall.audit.replay import LedgerViolation
from idwall.errors import PROBLEM_BASE, IDWallError
from idwall.passkeys import SignCountRegression
from idwall.web.problems import PROBLEM_TYPE, problem_middleware, read_json_object
from tests.helpers.upstream_app import serve_app

LIMIT = 4096
LOG_ONLY = "for the log only: internal id u-42"
SECRET = "a detail of the crash that must stay on the server"


def _every_idwall_error() -> dict[str, type[IDWallError]]:
    """Every class of the error tree, defined wherever in idwall (imported here so that all of them exist)."""
    for module in pkgutil.walk_packages(idwall.__path__, "idwall."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: dict[str, type[IDWallError]] = {}
    todo = [IDWallError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("idwall."):
            found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


ERRORS = _every_idwall_error()


def raised(cls: type[IDWallError]) -> IDWallError:
    """An instance of ``cls`` as the code raises it, with a log-only detail where the class takes one."""
    if cls is SignCountRegression:
        return SignCountRegression(stored=3, received=3)
    if cls is LedgerViolation:
        return LedgerViolation(7, "the hash does not chain")
    return cls(f"what a client may read of {cls.__name__}", log_detail=LOG_ONLY, hint="an extra member")


def problem_app() -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/raise/{name}")
    async def raise_error(request: web.Request) -> web.Response:
        raise raised(ERRORS[request.match_info["name"]])

    @routes.get("/crash")
    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError(SECRET)

    @routes.get("/only-get")
    async def only_get(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @routes.post("/read")
    async def read(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    @routes.get("/throttled")
    async def throttled(request: web.Request) -> web.Response:
        raise web.HTTPTooManyRequests()

    @routes.post("/json")
    async def echo_json(request: web.Request) -> web.Response:
        return web.json_response(await read_json_object(request, limit=LIMIT))

    app = web.Application(middlewares=[problem_middleware], client_max_size=LIMIT)
    app.add_routes(routes)
    return app


@pytest.fixture
async def served() -> AsyncIterator[int]:
    """The port of :func:`problem_app` on 127.0.0.1."""
    runner, port = await serve_app(problem_app())
    try:
        yield port
    finally:
        await runner.cleanup()


async def fetch(port: int, method: str, path: str, **kwargs: object) -> tuple[int, str, dict[str, str], str]:
    """Status, content type, headers and body of one request."""
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"http://127.0.0.1:{port}{path}", allow_redirects=False,
                                  **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, resp.content_type, dict(resp.headers), await resp.text()


@contextmanager
def idwall_records() -> Iterator[list[logging.LogRecord]]:
    """What the ``idwall`` logger records meanwhile, at every level."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("idwall")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- errors become problems ------------------------------------------------------------------------------


def test_the_whole_tree_is_here() -> None:
    assert {"IDWallError", "BadRequest", "LimitReached", "StoreError", "InvalidToken", "SignCountRegression",
            "LedgerViolation", "CrossSiteRefused", "Misdirected"} <= set(ERRORS)


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_every_idwall_error_answers_its_problem_and_nothing_more(served: int, name: str) -> None:
    cls = ERRORS[name]
    error = raised(cls)
    with idwall_records() as records:
        status, ctype, _, text = await fetch(served, "GET", f"/raise/{name}")
    assert status == cls.status and ctype == PROBLEM_TYPE
    assert json.loads(text) == {"type": PROBLEM_BASE + cls.slug, "title": cls.title, "status": cls.status,
                                "detail": error.detail, **error.extra}
    assert LOG_ONLY not in text and "Traceback" not in text
    logged = [(r.levelno, getattr(r, "fields", None)) for r in records if r.getMessage() == "request.error"]
    if cls.status >= 500 or error.log_detail:
        assert logged == [(logging.ERROR if cls.status >= 500 else logging.WARNING, {
            "path": f"/raise/{name}", "status": cls.status, "problem": cls.slug,
            "detail": error.log_detail or error.detail})]
    else:
        assert logged == []


async def test_an_unexpected_exception_is_a_bare_500_and_its_traceback_goes_to_the_log(served: int) -> None:
    with idwall_records() as records:
        status, ctype, _, text = await fetch(served, "GET", "/crash")
    assert status == 500 and ctype == PROBLEM_TYPE
    assert json.loads(text) == {"type": PROBLEM_BASE + "internal", "title": "Internal error", "status": 500,
                                "detail": "an unexpected error occurred; it was logged"}
    assert SECRET not in text and "Traceback" not in text and "RuntimeError" not in text
    (record,) = [r for r in records if r.exc_info]
    assert record.levelno == logging.ERROR and record.getMessage() == "unhandled error on /crash"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError and SECRET in str(record.exc_info[1])


async def test_aiohttps_own_http_errors_are_problems_and_a_redirect_passes(served: int) -> None:
    for method, path, kwargs, expected, slug, title in (
            ("GET", "/nope", {}, 404, "not-found", "Not found"),
            ("POST", "/only-get", {}, 405, "method-not-allowed", "Method not allowed"),
            ("POST", "/read", {"data": b"x" * (LIMIT + 1)}, 413, "payload-too-large", "Request body too large"),
            ("GET", "/throttled", {}, 429, "http-error", "Too Many Requests")):
        status, ctype, headers, text = await fetch(served, method, path, **kwargs)
        assert (status, ctype) == (expected, PROBLEM_TYPE), (path, text)
        problem = json.loads(text)
        assert (problem["type"], problem["title"], problem["status"]) == (PROBLEM_BASE + slug, title, expected)
        if expected == 405:
            assert set(headers["Allow"].split(",")) == {"GET", "HEAD"}
    status, _, headers, _ = await fetch(served, "GET", "/redirect")
    assert status == 302 and headers["Location"] == "/elsewhere"


# -- strict JSON request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                   "application/json ; charset=utf-8"])
async def test_a_json_body_is_read_whatever_the_parameters_and_case_of_its_type(served: int, ctype: str) -> None:
    status, _, _, text = await fetch(served, "POST", "/json", data=b'{"a": [1, "b"]}', headers={"Content-Type": ctype})
    assert status == 200 and json.loads(text) == {"a": [1, "b"]}


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/jsonl", "application/x-www-form-urlencoded",
                                   "application/problem+json", "multipart/form-data; boundary=x"])
async def test_any_other_content_type_is_a_bad_request(served: int, ctype: str | None) -> None:
    # aiohttp names a bytes body application/octet-stream when it is given no type: skip that default
    headers = {"Content-Type": ctype} if ctype else {}
    data = b'{"a": 1}'
    async with aiohttp.ClientSession(skip_auto_headers=[] if ctype else ["Content-Type"]) as client:
        async with client.post(f"http://127.0.0.1:{served}/json", data=data, headers=headers) as resp:
            problem = await resp.json(content_type=None)
    assert resp.status == 400 and problem["type"] == PROBLEM_BASE + "bad-request"
    assert problem["detail"] == f"expected Content-Type application/json, got {ctype or 'none'!r}"


async def raw_answer(port: int, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is; the status and body of the answer (read by its Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = re.search(rb"(?im)^content-length: *(\d+)\r$", head)
        assert length is not None, head
        return int(head.split()[1]), await asyncio.wait_for(reader.readexactly(int(length[1])), 5)
    finally:
        writer.close()


HEAD = b"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def test_a_content_length_over_the_limit_is_refused_before_any_of_the_body(served: int) -> None:
    # a gigabyte announced, one byte sent: the answer comes without waiting for the rest
    status, body = await raw_answer(served, HEAD + b"Content-Length: 1000000000\r\n\r\n{")
    problem = json.loads(body)
    assert status == 413 and problem["type"] == PROBLEM_BASE + "payload-too-large"
    assert problem["detail"] == f"the body is 1000000000 bytes; the limit is {LIMIT}"


def chunked(body: bytes, size: int) -> bytes:
    """``body`` framed as chunks of ``size`` bytes: a body without a length."""
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


async def test_a_body_without_a_length_is_read_to_the_limit_and_refused_past_it(served: int) -> None:
    at_limit = b'{"a": "' + b"x" * (LIMIT - 9) + b'"}'
    assert len(at_limit) == LIMIT
    status, body = await raw_answer(served, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(at_limit, 100))
    assert status == 200 and json.loads(body) == {"a": "x" * (LIMIT - 9)}
    over = b'{"a": "' + b"x" * (LIMIT - 8) + b'"}'
    status, body = await raw_answer(served, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(over, 100))
    problem = json.loads(body)
    assert status == 413 and problem["detail"] == f"the body is over the limit of {LIMIT} bytes"
