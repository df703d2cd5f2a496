"""idwall.engine.h1_upstream with byte strings only (no socket): an upstream's answers, their hygiene and
what the gateway writes back to the client (:func:`response_bytes`).

:class:`UpstreamConnection` is fed reads and judged by the events it returns, as h11's tests judge its state
machine; every read boundary must give the same events as one read. One test runs over a real socket: an
upstream's ``101`` to a request that asked for no upgrade is a 502 on the wire.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idwall.engine.h1 import END, LAST_CHUNK, HeadLimits, Refused, Upgrade, chunk_header
from idwall.engine.h1_upstream import ResponseHead, UpstreamConnection, response_bytes
from idwall.engine import headers as H
from tests.helpers.engine import BOUNDED, NAMES, SMALL, VALUES, body_of, check_fields, cuts_in, header_cases
from tests.helpers.engine import header_fields, normal, refusals, split, upstream_events, well_formed
from tests.helpers.gateway import start_test_gateway
from tests.helpers.http_wire import Message, exchange, field_key, tls_context


# --- responses (UpstreamConnection) ---------------------------------------------------------------


def response(status: bytes = b"200 OK", *fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"\r\n".join([b"HTTP/%s %s" % (version, status), *fields]) + b"\r\n\r\n" + body


OK = response(b"200 OK", b"Content-Type: text/plain", b"Content-Length: 2", body=b"ok")


def test_a_response_is_its_head_body_and_end() -> None:
    events, conn = upstream_events(OK)
    head = events[0]
    assert isinstance(head, ResponseHead) and normal(events)[1:] == [("body", b"ok"), ("end",)]
    assert (head.status, head.reason, head.content_length, head.chunked, head.keep_alive) == (
        200, b"OK", 2, False, True)
    assert head.lines == [b"Content-Type: text/plain\r\n"] and conn.reusable


@pytest.mark.parametrize("data", [
    OK,
    response(b"200 OK", b"Transfer-Encoding: chunked", body=b"2;x=y\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n"),
    response(b"100 Continue") + response(b"103 Early Hints", b"Link: </a>") + OK,
], ids=["content-length", "chunked", "after-1xx"])
def test_every_read_boundary_gives_the_response_of_one_read(data: bytes) -> None:
    whole = normal(upstream_events(data)[0])
    for point in range(1, len(data)):
        assert normal(upstream_events(data[:point], data[point:])[0]) == whole, point
    assert normal(upstream_events(*(data[i:i + 1] for i in range(len(data))))[0]) == whole


def test_1xx_answers_are_skipped() -> None:
    """RFC 9110 §15.2: 100 Continue and 103 Early Hints are not relayed; the final answer is."""
    events, conn = upstream_events(response(b"100 Continue") + response(b"102 Processing")
                                   + response(b"103 Early Hints", b"Link: </style.css>; rel=preload") + OK)
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [200] and conn.reusable
    assert body_of(events) == b"ok"


def test_101_is_relayed_only_when_an_upgrade_was_expected() -> None:
    """DESIGN "WebSockets": a 101 for anything else is a 502."""
    switch = response(b"101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                      b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") + b"\x81\x02hi"
    events, conn = upstream_events(switch, upgrade=True)
    head = events[0]
    assert isinstance(head, ResponseHead) and events[1:] == [END, Upgrade(b"\x81\x02hi")]
    assert (head.status, head.upgrade, head.connection_upgrade, head.ws_accept) == (
        101, b"websocket", True, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    assert head.lines == [b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"] and not conn.reusable
    events, conn = upstream_events(switch, upgrade=False)
    assert normal(events) == [("refused", 502)] and not conn.reusable


def test_101_without_upgrade_fields_stops_after_its_head() -> None:
    """The head reaches websocket.upstream_problem, which refuses it; nothing after it is relayed."""
    events, conn = upstream_events(response(b"101 Switching Protocols") + b"raw", upgrade=True)
    head, end, refusal = events
    assert isinstance(head, ResponseHead) and end is END and isinstance(refusal, Refused)
    assert refusal.status == 502 and head.upgrade is None and not conn.reusable


def test_an_ordinary_answer_to_an_upgrade_ends_the_connection() -> None:
    events, conn = upstream_events(OK, upgrade=True)
    assert normal(events)[1:] == [("body", b"ok"), ("end",)] and not conn.reusable


def test_a_head_response_ends_at_its_head() -> None:
    """RFC 9110 §9.3.2: no body, whatever Content-Length says; llhttp cannot be told, so not reused."""
    events, conn = upstream_events(response(b"200 OK", b"Content-Length: 20"), b"not a body", method=b"HEAD")
    assert normal(events)[1:] == [("end",)] and events[0].content_length == 20  # type: ignore[attr-defined]
    assert not conn.reusable and conn.receive_data(OK) == []


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_end_at_their_head_and_keep_the_connection(status: bytes) -> None:
    """RFC 9112 §6.3 item 1."""
    events, conn = upstream_events(response(status))
    assert normal(events)[1:] == [("end",)] and conn.reusable


def test_a_close_delimited_body_ends_at_eof() -> None:
    """RFC 9112 §6.3 item 8."""
    events, conn = upstream_events(response(b"200 OK"), b"all of ", b"this", eof=True)
    assert normal(events)[1:] == [("body", b"all of this"), ("end",)] and not conn.reusable


@pytest.mark.parametrize(("reads", "detail"), [
    pytest.param((), "without answering", id="nothing"),
    pytest.param((b"HTTP/1.1 200 OK\r\nContent-Le",), "in the middle", id="mid-head"),
    pytest.param((response(b"200 OK", b"Content-Length: 5", body=b"abc"),), "in the middle", id="short-body"),
    pytest.param((response(b"200 OK", b"Transfer-Encoding: chunked", body=b"5\r\nabc"),), "in the middle",
                 id="mid-chunk"),
    pytest.param((response(b"100 Continue"),), "in the middle", id="after-1xx"),
])
def test_a_truncated_answer_at_eof_is_refused(reads: tuple[bytes, ...], detail: str) -> None:
    """RFC 9112 §8: an incomplete message must not be relayed as complete."""
    events, conn = upstream_events(*reads, eof=True)
    assert isinstance(events[-1], Refused) and events[-1].status == 502 and detail in events[-1].detail
    assert END not in events and not conn.reusable and conn.eof() == []


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked, chunked"])
def test_a_response_coding_other_than_chunked_is_refused(coding: bytes) -> None:
    """The gateway relays no coding it would have to undo to re-frame (RFC 9112 §6.1)."""
    events, conn = upstream_events(response(b"200 OK", b"Transfer-Encoding: " + coding, body=b"0\r\n\r\n"))
    assert normal(events) == [("refused", 502)] and not conn.reusable


@pytest.mark.parametrize("fields", [
    (b"Transfer-Encoding: chunked", b"Content-Length: 2"),   # RFC 9112 §6.3 item 3
    (b"Content-Length: 2", b"Content-Length: 3"),            # RFC 9112 §6.3 item 5
    (b"Content-Length: -2",),
    (b"X-Fold: a", b" b"),                                   # RFC 9112 §5.2
], ids=["te-and-cl", "two-lengths", "negative-length", "obs-fold"])
def test_ambiguous_response_framing_is_refused(fields: tuple[bytes, ...]) -> None:
    events, conn = upstream_events(response(b"200 OK", *fields, body=b"ok"))
    assert normal(events) == [("refused", 502)] and not conn.reusable


RESPONSE_DROPPED = [b"X-IDWall-User", b"x-idwall-assertion", b"X_IDWall_User", b"X.IDWall.Assertion",
                    b"Keep-Alive", b"Proxy-Authenticate", b"Trailer", b"TE", b"Upgrade", b"Proxy-Connection"]


@pytest.mark.parametrize("name", RESPONSE_DROPPED)
def test_identity_and_hop_by_hop_fields_never_reach_the_client(name: bytes) -> None:
    """An upstream cannot speak for the gateway (X-IDWall-*, any spelling) or for the hop (RFC 9110 §7.6.1)."""
    events, _ = upstream_events(response(b"200 OK", name + b": from-upstream", b"X-App: kept",
                                         b"Content-Length: 0"))
    assert events[0].lines == [b"X-App: kept\r\n"]  # type: ignore[attr-defined]


def test_fields_a_response_connection_lists_are_removed() -> None:
    events, conn = upstream_events(response(b"200 OK", b"Connection: X-Hop, close", b"X-Hop: 1", b"x-hop: 2",
                                            b"X-App: kept", b"Content-Length: 0"))
    assert events[0].lines == [b"X-App: kept\r\n"] and not conn.reusable  # type: ignore[attr-defined]


def test_response_trailers_are_dropped() -> None:
    events, conn = upstream_events(response(b"200 OK", b"Transfer-Encoding: chunked",
                                            body=b"2\r\nok\r\n0\r\nX-IDWall-User: root\r\n\r\n"))
    assert normal(events)[1:] == [("body", b"ok"), ("end",)] and conn.reusable
    assert normal(events)[0][3] == ()  # no field lines


@pytest.mark.parametrize(("data", "reusable"), [
    (OK, True),
    (response(b"200 OK", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), True),
    (response(b"200 OK", b"Connection: close", b"Content-Length: 0"), False),
    (response(b"200 OK", b"Content-Length: 0", version=b"1.0"), False),   # an HTTP/1.0 upstream keeps nothing
    (response(b"200 OK", b"Connection: keep-alive", b"Content-Length: 0", version=b"1.0"), False),
    (response(b"200 OK", body=b"close-delimited"), False),
])
def test_reusable(data: bytes, reusable: bool) -> None:
    assert upstream_events(data)[1].reusable is reusable


def test_one_connection_carries_one_answer_per_request() -> None:
    conn = UpstreamConnection(HeadLimits())
    for method in (b"GET", b"POST", b"GET"):
        conn.expect(method=method, upgrade=False)
        assert normal(conn.receive_data(OK))[1:] == [("body", b"ok"), ("end",)] and conn.reusable


def test_a_second_answer_in_the_same_read_is_not_relayed() -> None:
    """Two answers to one request would hand the client's next request the upstream's second (splitting)."""
    events, conn = upstream_events(OK + response(b"200 OK", b"Content-Length: 4", body=b"evil"))
    assert normal(events)[1:] == [("body", b"ok"), ("end",)] and not conn.reusable
    assert conn.receive_data(OK) == [] and conn.eof() == []


def test_a_response_head_is_bounded() -> None:
    """The upstream side allows 4x the head and 2x the fields of a request, and no more."""
    limits = SMALL
    fields = [b"X-F%d: v" % i for i in range(2 * limits.max_fields)]
    over, _ = upstream_events(response(b"200 OK", *fields, b"Content-Length: 0"), limits=limits)
    at_limit, _ = upstream_events(response(b"200 OK", *fields[1:], b"Content-Length: 0"), limits=limits)
    assert normal(over) == [("refused", 502)] and normal(at_limit)[-1] == ("end",)
    conn = UpstreamConnection(limits)
    conn.expect(method=b"GET", upgrade=False)
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    for _ in range(5 * limits.max_head // 100):
        events += conn.receive_data(b"v" * 100)
    assert normal(events) == [("refused", 502)]


def test_an_endless_response_trailer_is_bounded() -> None:
    conn = UpstreamConnection(SMALL)
    conn.expect(method=b"GET", upgrade=False)
    events = conn.receive_data(response(b"200 OK", b"Transfer-Encoding: chunked", body=b"2\r\nok\r\n0\r\nX-T: "))
    for _ in range(5 * SMALL.max_head // 100):
        events += conn.receive_data(b"v" * 100)
    assert normal(events)[1:] == [("body", b"ok"), ("refused", 502)]


# --- what the gateway writes to the client --------------------------------------------------------


def _response_head(status: int, *fields: bytes, method: bytes = b"GET") -> ResponseHead:
    reason = {200: b"OK", 204: b"No Content", 304: b"Not Modified", 404: b"Not Found"}[status]
    events, _ = upstream_events(response(b"%d %s" % (status, reason), *fields), method=method)
    head = events[0]
    assert isinstance(head, ResponseHead)
    return head


@pytest.mark.parametrize(("status", "fields", "method", "client", "close", "framing", "chunked", "closes"), [
    (200, (b"Content-Length: 5",), b"GET", b"1.1", False, b"Content-Length: 5\r\n", False, False),
    (200, (b"Content-Length: 5",), b"GET", b"1.0", False, b"Content-Length: 5\r\n", False, False),
    (200, (b"Transfer-Encoding: chunked",), b"GET", b"1.1", False, b"Transfer-Encoding: chunked\r\n", True, False),
    (200, (), b"GET", b"1.1", False, b"Transfer-Encoding: chunked\r\n", True, False),  # close-delimited upstream
    # HTTP/1.0 has no chunked coding (RFC 9112 §7): the body ends where the connection does
    (200, (b"Transfer-Encoding: chunked",), b"GET", b"1.0", False, b"Connection: close\r\n", False, True),
    (200, (), b"GET", b"1.0", False, b"Connection: close\r\n", False, True),
    (200, (b"Content-Length: 5",), b"HEAD", b"1.1", False, b"Content-Length: 5\r\n", False, False),  # §9.3.2
    (200, (b"Transfer-Encoding: chunked",), b"HEAD", b"1.1", False, b"", False, False),
    (204, (b"Content-Length: 5",), b"GET", b"1.1", False, b"", False, False),  # RFC 9110 §8.6: MUST NOT
    (204, (), b"GET", b"1.1", False, b"", False, False),
    (304, (b"Content-Length: 5",), b"GET", b"1.1", False, b"Content-Length: 5\r\n", False, False),  # §8.6: MAY
    (304, (), b"GET", b"1.1", False, b"", False, False),
    (404, (b"Content-Length: 5",), b"GET", b"1.1", True, b"Content-Length: 5\r\nConnection: close\r\n", False, True),
])
def test_response_bytes_framing(status: int, fields: tuple[bytes, ...], method: bytes, client: bytes, close: bool,
                                framing: bytes, chunked: bool, closes: bool) -> None:
    head = _response_head(status, b"X-App: a", *fields, method=method)
    data, is_chunked, will_close = response_bytes(head, method=method, client_version=client, close=close,
                                                  extra=b"X-Extra: e\r\n")
    assert data == b"HTTP/1.1 %d %s\r\nX-App: a\r\nX-Extra: e\r\n%s\r\n" % (status, head.reason, framing)
    assert (is_chunked, will_close) == (chunked, closes)


# --- hypothesis -----------------------------------------------------------------------------------


@st.composite
def valid_responses(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, int, bool]:
    """A final answer (maybe after 1xx), and (its body, the method asked, its status, whether it ends at EOF)."""
    data = b"".join(response(s) for s in draw(st.lists(st.sampled_from([b"100 Continue", b"103 Early Hints"]),
                                                       max_size=2)))
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500]))
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD"]))
    fields = [name + b": " + value for name, value in draw(st.lists(st.tuples(NAMES, VALUES), max_size=4))
              if name.lower() not in H.HOP_BY_HOP and name.lower() != b"content-length"
              and not H.is_identity(name.lower())]
    body = draw(st.binary(max_size=40)) if status not in (204, 304) and method != b"HEAD" else b""
    framing = draw(st.sampled_from(["length", "chunked", "close"])) if body else "length"
    if framing == "length":
        fields.append(b"Content-Length: %d" % len(body))
        framed = body
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        framed = chunk_header(len(body)) + body + b"\r\n" + LAST_CHUNK
    else:
        framed = body
    data += response(b"%d Status" % status, *fields, body=framed)
    return data, body, method, status, framing == "close"


@BOUNDED
@given(valid_responses(), st.data())
def test_property_any_reads_give_the_response_of_one_read(generated: tuple[bytes, bytes, bytes, int, bool],
                                                          draw: st.DataObject) -> None:
    """(c) The upstream side: a valid answer cut anywhere gives the same events as in one read."""
    data, body, method, status, at_eof = generated
    cuts = draw.draw(cuts_in(data))
    whole, _ = upstream_events(data, method=method, eof=at_eof)
    assert [e.status for e in whole if isinstance(e, ResponseHead)] == [status]
    assert body_of(whole) == body and whole[-1] is END
    assert normal(upstream_events(*split(data, cuts), method=method, eof=at_eof)[0]) == normal(whole)


@BOUNDED
@given(st.binary(max_size=300), st.lists(st.integers(1, 400), max_size=6), st.booleans(), st.booleans())
def test_property_arbitrary_upstream_bytes_give_events_or_a_refusal(noise: bytes, cuts: list[int], upgrade: bool,
                                                                   eof: bool) -> None:
    """(c) Whatever an upstream sends (and whenever it closes), events or a 502 refusal, never an exception."""
    events, conn = upstream_events(*split(b"HTTP/1.1 " + noise, cuts), upgrade=upgrade, eof=eof)
    well_formed(events)
    if eof:
        assert not conn.reusable and conn.eof() == []


# --- the response header vectors (tests/vectors/headers) ------------------------------------------


@pytest.mark.parametrize("case", header_cases("response-hostile.json"))
def test_response_header_vectors(case: dict[str, Any]) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + header_fields(case) + b"\r\n"
    events, _ = upstream_events(raw, eof=True)
    if case.get("error"):
        assert refusals(events), case["rfc"]
        return
    head = next(ev for ev in events if isinstance(ev, ResponseHead))
    written, _, _ = response_bytes(head, method=b"GET", client_version=b"1.1", close=False)
    check_fields(case, written)
    message = Message.parse(written.split(b"\r\n\r\n", 1)[0])
    assert not [n for n, _ in message.headers if field_key(n).startswith("x-idwall-")]


# --- over the wire ---------------------------------------------------------------------------------


async def test_upstream_101_to_a_plain_request_is_a_502(tmp_path: Path) -> None:
    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(switch, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway = await start_test_gateway(tmp_path, f"http://127.0.0.1:{port}")
    try:
        device = await gateway.device("alice")
        answer = await exchange(gateway.port, tls_context(gateway.init["ca_pem"], device.cert_path, device.key_path),
                                b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.status == 502 and b"raw" not in answer.raw
    finally:
        await gateway.running.stop(drain=1)
        server.close()
