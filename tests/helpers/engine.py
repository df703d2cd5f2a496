"""Drive the sans-IO engine (:mod:`idwall.engine.h1`) with byte strings only, the way h11's tests do.

* :func:`server_events` / :func:`upstream_events` feed a fresh connection a sequence of reads and return
  every event; :func:`split` and :func:`split_points` make those reads.
* :func:`normal` turns events into plain tuples that compare by value: heads by every attribute the gateway
  acts on, consecutive body pieces joined (how a body is cut into events depends on the reads, not on the
  message), a refusal by its status (its detail is llhttp's wording, which may vary with the read).
* :func:`vector_head` parses one row of ``tests/vectors/http/`` into the :class:`RequestHead` the engine
  would act on (the pure counterpart of sending it over TLS).
* What the request side's and the upstream side's tests share: :data:`SMALL` limits, the :data:`BOUNDED`
  hypothesis settings and the field :data:`NAMES` / :data:`VALUES` and :func:`cuts_in` strategies,
  :func:`well_formed` (the invariant of any event sequence), and the header vector cases of
  ``tests/vectors/headers`` (:func:`header_cases`, :func:`header_fields`, :func:`check_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from idwall.engine import headers as H

from idwall.engine.h1 import (
    END,
    HeadLimits,
    Refused,
    RequestHead,
    ServerConnection,
    Upgrade,
)
from idwall.engine.h1_upstream import ResponseHead, UpstreamConnection

from .http_wire import Message, request_bytes
from .vectors import read_json, vector_files

__all__ = [
    "BOUNDED",
    "HANDSHAKE",
    "HOST",
    "LIMITS",
    "NAMES",
    "PORT",
    "SMALL",
    "SMUGGLED",
    "VALUES",
    "body_of",
    "check_fields",
    "cuts_in",
    "header_cases",
    "header_fields",
    "heads",
    "normal",
    "refusals",
    "request",
    "request_fields",
    "response_fields",
    "server_events",
    "split",
    "split_points",
    "upstream_events",
    "vector_bytes",
    "vector_events",
    "vector_head",
    "well_formed",
]

#: the defaults of ``limits.*`` (config/): line 8 KiB, head 32 KiB, 100 fields
LIMITS = HeadLimits()
#: limits small enough that a test reaches them in a few hundred bytes
SMALL = HeadLimits(max_line=256, max_head=1024, max_fields=8)
#: hypothesis settings of the engine's property tests: enough examples to find a boundary, no deadline on a loaded box
BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: the port the vector rows' ``{host}`` and ``{port}`` stand for in these tests (any port would do)
PORT = 8443
#: the target the vector rows pipeline after (or hide inside) the request under test
SMUGGLED = b"/smuggled"
#: the authority of the requests built here (the vector rows' ``{host}``)
HOST = b"localhost:%d" % PORT
#: the fields of a valid WebSocket opening handshake (RFC 6455 §1.3 sample key)
HANDSHAKE = (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             b"Sec-WebSocket-Version: 13")


def request(target: bytes = b"/x", *fields: bytes, method: bytes = b"GET", version: bytes = b"1.1",
            host: bytes | None = HOST, body: bytes = b"") -> bytes:
    """A request's bytes: the request line, ``Host`` (unless None), ``fields`` (``b"Name: value"``), ``body``."""
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += fields
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def server_events(*reads: bytes, limits: HeadLimits = LIMITS) -> list[object]:
    """Every event a new :class:`ServerConnection` makes of ``reads``, in order."""
    conn = ServerConnection(limits)
    events: list[object] = []
    for data in reads:
        events += conn.receive_data(data)
    return events


def upstream_events(*reads: bytes, method: bytes = b"GET", upgrade: bool = False, eof: bool = False,
                    limits: HeadLimits = LIMITS) -> tuple[list[object], UpstreamConnection]:
    """Every event a new :class:`UpstreamConnection`, expecting one answer, makes of ``reads`` (then EOF)."""
    conn = UpstreamConnection(limits)
    conn.expect(method=method, upgrade=upgrade)
    events: list[object] = []
    for data in reads:
        events += conn.receive_data(data)
    if eof:
        events += conn.eof()
    return events, conn


def split(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, duplicates and out-of-range points ignored)."""
    cuts = sorted({p for p in points if 0 < p < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def split_points(data: bytes, *, every_up_to: int = 4096, samples: int = 600) -> Sequence[int]:
    """Every point inside ``data`` when it is short; otherwise an even spread of about ``samples`` points."""
    if len(data) <= every_up_to:
        return range(1, len(data))
    return range(1, len(data), max(1, len(data) // samples))


def request_fields(head: RequestHead) -> tuple[Any, ...]:
    """Everything the gateway reads or forwards of a request head."""
    return (head.method, head.target, head.version, tuple(head.lines), head.host, head.content_length, head.chunked,
            head.keep_alive, head.expect_continue, head.upgrade, head.connection_upgrade, head.origin,
            head.fetch_site, head.accept, head.ws_key, head.ws_version, head.preflight, head.user_agent)


def response_fields(head: ResponseHead) -> tuple[Any, ...]:
    """Everything the gateway reads or relays of a response head."""
    return (head.status, head.reason, tuple(head.lines), head.content_length, head.chunked, head.keep_alive,
            head.upgrade, head.connection_upgrade, head.ws_accept)


def normal(events: Iterable[object]) -> list[tuple[Any, ...]]:
    """``events`` as comparable tuples (see the module docstring)."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, bytes):
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + event)
            elif event:
                out.append(("body", event))
        elif event is END:
            out.append(("end",))
        elif isinstance(event, RequestHead):
            out.append(("request", *request_fields(event)))
        elif isinstance(event, ResponseHead):
            out.append(("response", *response_fields(event)))
        elif isinstance(event, Upgrade):
            out.append(("upgrade", event.rest))
        elif isinstance(event, Refused):
            out.append(("refused", event.status))
        else:
            raise AssertionError(f"not an engine event: {event!r}")
    return out


def heads(events: Iterable[object]) -> list[RequestHead]:
    return [e for e in events if isinstance(e, RequestHead)]


def refusals(events: Iterable[object]) -> list[Refused]:
    return [e for e in events if isinstance(e, Refused)]


def body_of(events: Iterable[object]) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


def vector_bytes(row: dict[str, Any]) -> bytes:
    """``row``'s request as bytes, ``{host}`` as ``localhost:PORT``."""
    return request_bytes(row, PORT)


def vector_events(row: dict[str, Any], *reads_at: int) -> list[object]:
    """The events of ``row``'s request, cut at ``reads_at``."""
    return server_events(*split(vector_bytes(row), reads_at))


def vector_head(row: dict[str, Any]) -> RequestHead:
    """The one head the engine parses of ``row`` (the row must be one h1 itself accepts)."""
    events = vector_events(row)
    found = heads(events)
    assert len(found) == 1 and not refusals(events), f"{row['id']}: h1 made {events}"
    return found[0]


# -- what the request side's and the upstream side's tests share ------------------------------------------

_TCHAR = st.sampled_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_VCHAR = st.sampled_from(bytes(range(0x21, 0x7F)))
#: field names of token characters (RFC 9110 §5.6.2)
NAMES = st.lists(_TCHAR, min_size=1, max_size=12).map(bytes)
#: field values of visible characters and inner spaces
VALUES = st.lists(_VCHAR | st.just(ord(" ")), max_size=24).map(lambda v: bytes(v).strip(b" "))


def cuts_in(data: bytes) -> st.SearchStrategy[list[int]]:
    """Up to eight points to cut ``data`` at (see :func:`split`)."""
    return st.lists(st.integers(1, max(1, len(data) - 1)), max_size=8)


def well_formed(events: list[object]) -> None:
    """Only engine events; a refusal or a switch is the last event, and at most one of them. A head holds
    only what the gateway may act on: an origin-form target, HTTP/1.0 or 1.1, whole lines, no owned name."""
    for event in events:
        assert isinstance(event, (RequestHead, ResponseHead, bytes, Refused, Upgrade)) or event is END, event
        if isinstance(event, RequestHead):
            assert event.target[:1] == b"/" and event.version in (b"1.0", b"1.1") and event.method != b"CONNECT"
        if isinstance(event, (RequestHead, ResponseHead)):
            for line in event.lines:
                name = line.split(b":", 1)[0].lower()
                assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2], line
                assert not H.is_identity(name) and name not in H.FORWARDING | H.HOP_BY_HOP, line
    final = [i for i, e in enumerate(events) if isinstance(e, (Refused, Upgrade))]
    assert final in ([], [len(events) - 1]), events


def header_cases(name: str) -> list[Any]:
    """The cases of ``tests/vectors/headers/<name>``, as pytest params named by their ids."""
    [path] = vector_files("headers", name)
    cases = read_json(path)["cases"]
    return [pytest.param(case, id=case["id"]) for case in cases]


def header_fields(case: dict[str, Any]) -> bytes:
    """A header case's fields as the lines of a head."""
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in case["headers"])


def check_fields(case: dict[str, Any], written: bytes) -> None:
    """What the gateway wrote holds none of the case's ``absent`` fields and exactly its ``expect`` values."""
    message = Message.parse(written.split(b"\r\n\r\n", 1)[0])
    for name in case.get("absent", []):
        assert message.values(name) == [], f"{name} reached the other side ({case['rfc']})"
    for name, values in case.get("expect", {}).items():
        assert message.values(name) == values, case["rfc"]
