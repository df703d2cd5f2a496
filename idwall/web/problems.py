"""problem+json answers (RFC 9457) and strict JSON request bodies.

The middleware is the one place where errors become HTTP: every
:class:`~idwall.errors.IDWallError` maps to its problem type; anything else is
logged with its traceback and answered as a bare 500, never with the trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..errors import BadRequest, IDWallError, PayloadTooLarge
from ..jsonbody import field, parse_json_object
from ..logs import event
from .context import NoClientConnection

__all__ = ["PROBLEM_TYPE", "field", "problem_middleware", "problem_response", "read_json_object"]

PROBLEM_TYPE = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(error: IDWallError, *, headers: dict[str, str] | None = None) -> web.Response:
    """The problem+json response for ``error``."""
    return web.Response(status=error.status, text=json.dumps(error.problem()), content_type=PROBLEM_TYPE,
                        headers=headers)


_HTTP_TITLES = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed"),
                413: ("payload-too-large", "Request body too large")}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into problem+json; never leak a stack trace."""
    try:
        return await handler(request)
    except IDWallError as exc:
        if exc.status >= 500 or exc.log_detail:
            event("request.error", level=logging.WARNING if exc.status < 500 else logging.ERROR,
                  path=request.path, status=exc.status, problem=exc.slug, detail=exc.log_detail or exc.detail)
        return problem_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug, title = _HTTP_TITLES.get(exc.status, ("http-error", exc.reason))
        err = IDWallError(exc.reason)
        err.status, err.slug, err.title = exc.status, slug, title
        return problem_response(err, headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except NoClientConnection:
        # Nobody to answer: drop the app-side connection. The response below is never written (aiohttp
        # finds the transport gone and lets it go quietly), where raising would log a traceback and a 500.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=400)
    except ConnectionError:
        raise
    except Exception:
        logging.getLogger("idwall").exception("unhandled error on %s", request.path)
        return problem_response(IDWallError("an unexpected error occurred; it was logged"))


async def read_json_object(request: web.Request, *, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, or a precise :class:`BadRequest`.

    The body is read up to ``limit`` bytes and refused beyond (413), whatever the
    Content-Length says, so a lying or absent length cannot make us buffer more.
    What it must be then (depth, numbers, strings, counts) is
    :func:`idwall.jsonbody.parse_json_object`'s to judge; :func:`field` (from
    there too) reads one typed member.
    """
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise BadRequest(f"expected Content-Type application/json, got {ctype or 'none'!r}")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; the limit is {limit}")
    body = bytearray()
    # read(n) answers with what has arrived so far: a body that comes in pieces takes several reads
    while len(body) <= limit and (piece := await request.content.read(limit + 1 - len(body))):
        body += piece
    if len(body) > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    return parse_json_object(bytes(body), max_bytes=limit)
