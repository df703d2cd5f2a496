"""Sans-IO HTTP/1.1 for an upstream's answers: bytes in, events out (the client side is :mod:`.h1`).

    upstream = UpstreamConnection(limits)
    upstream.expect(method=b"GET", upgrade=False)
    for event in upstream.receive_data(data):    # ResponseHead, bytes, END, Upgrade, Refused

An answer is relayed only as the gateway re-frames it (:func:`response_bytes`). Refused (502): a
malformed head or framing, a transfer coding other than ``chunked``, Transfer-Encoding with
Content-Length, a ``101`` for a request that asked for no upgrade, and a second answer in the read that
ended the first. ``1xx`` answers other than ``101`` are not relayed; hop-by-hop fields, the fields a
``Connection`` header lists, and every field of the gateway's namespace are removed.
"""

from __future__ import annotations

import httptools

from . import headers as H
from .h1 import END, NO_EVENTS, HeadLimits, Refused, Stop, Upgrade, tokens, unlisted

__all__ = ["ResponseHead", "UpstreamConnection", "response_bytes"]


class ResponseHead:
    """An upstream's response head: status, reason, the fields that reach the client, and its framing."""

    __slots__ = ("status", "reason", "lines", "content_length", "chunked", "keep_alive", "upgrade",
                 "connection_upgrade", "ws_accept", "_listed")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.lines: list[bytes] = []
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade: bytes | None = None
        self.connection_upgrade = False
        self.ws_accept: bytes | None = None
        self._listed: list[bytes] | None = None

    def __repr__(self) -> str:
        return f"ResponseHead({self.status} {self.reason!r})"


class UpstreamConnection:
    """The upstream side of one connection: call :meth:`expect` before each request, then feed its bytes."""

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self._max_fields = 2 * limits.max_fields
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[object] = []
        self._head: ResponseHead | None = None
        self._head_request = False
        self._upgrade = False
        self._in_head = False
        self._informational = False
        self._size = 0
        self._fields = 0
        self._dead = False
        self._in_body = False
        self._bodied = False
        #: False once this connection cannot carry another request (close, HEAD, close-delimited, upgrade)
        #: bytes still to come of a Content-Length body that outlived the read of its head
        self._body_left = 0
        self.reusable = True

    def close(self) -> None:
        """As :meth:`ServerConnection.close`."""
        self._dead = True
        self.reusable = False
        self._parser = None

    def expect(self, *, method: bytes, upgrade: bool) -> None:
        """Get ready for the response to a request with ``method`` (``upgrade``: a validated handshake)."""
        self._head_request = method == b"HEAD"
        self._upgrade = upgrade
        self._head = None

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the upstream; return the events they complete."""
        if self._dead:
            return []
        if self._body_left:
            return self._counted_body(data)
        events = self._events = []
        head = self._head
        self._bodied = False
        try:
            self._parser.feed_data(data)
        except Stop:
            pass
        except httptools.HttpParserUpgrade as exc:
            if not self._dead:
                self._dead = True
                self.reusable = False
                events.append(Upgrade(data[exc.args[0]:]))
        except httptools.HttpParserError as exc:
            self._refuse(f"malformed response from the upstream: {exc}")
        if (self._in_head or self._in_body) and self._head is head and not self._dead:
            # as for requests: reads that carry no body byte (head, chunk lines, trailer section) are bounded
            if self._bodied:
                self._size = 0
            else:
                self._size += len(data)
                if self._size > 4 * self._limits.max_head:
                    what = "response head" if self._in_head else "chunk lines and trailer section"
                    self._refuse(f"{what} over {4 * self._limits.max_head} bytes")
        self._events = NO_EVENTS
        return events

    def _counted_body(self, data: bytes) -> list[object]:
        """As the request side's: a Content-Length body's bytes pass as they are, not through llhttp."""
        left = self._body_left
        if len(data) < left:
            self._body_left = left - len(data)
            return [data]
        self._body_left = 0
        self._in_body = False
        self._parser = httptools.HttpResponseParser(self)
        if self._upgrade:
            self.reusable = False  # as on_message_complete: the refused handshake's connection is not reused
        if len(data) > left:
            # bytes after the answer, in the read that ended it: never relayed, and the connection not reused
            self.reusable = False
            self._dead = True
            return [data[:left], END]
        return [data, END]

    def eof(self) -> list[object]:
        """The upstream closed its side: the end of a close-delimited body, or a truncated answer."""
        self.reusable = False
        if self._dead:
            return []
        self._dead = True
        head = self._head
        if head is not None and self._in_body and head.content_length is None and not head.chunked:
            return [END]
        if head is None and not self._in_head:
            return [Refused(502, "the upstream closed the connection without answering")]
        return [Refused(502, "the upstream closed the connection in the middle of its answer")]

    def _refuse(self, detail: str) -> None:
        self.reusable = False
        if not self._dead:
            self._dead = True
            self._events.append(Refused(502, detail))

    def _stop(self, detail: str) -> None:
        self._refuse(detail)
        raise Stop

    # -- llhttp callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head is not None and self._head.status >= 200:
            # a second answer to one request, in the read that ended the first: it is never relayed (the
            # client would take it for the answer to its next request), and the connection is not reused
            self.reusable = False
            self._dead = True
            raise Stop
        self._head = ResponseHead()
        self._in_head = True
        self._in_body = False
        self._size = self._fields = 0

    def on_status(self, reason: bytes) -> None:
        head = self._head
        if head is not None:
            head.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if not self._in_head or head is None:
            return  # trailer fields are dropped
        self._fields += 1
        if self._fields > self._max_fields:
            self._stop(f"the upstream sent more than {self._max_fields} header fields")
        lower = name.lower()
        action = H.RESPONSE_ACTIONS.get(lower)
        if action is None:
            if lower[:2] in H.IDENTITY_STARTS and H.is_identity(lower):
                return
            head.lines.append(name + b": " + value + b"\r\n")
            return
        if action == H.DROP:
            return
        if action == H.LENGTH:
            head.content_length = int(value.strip())
        elif action == H.CODING:
            if value.strip().lower() != b"chunked":
                self._stop(f"the upstream used transfer coding {value[:40]!r}; only chunked is relayed")
            head.chunked = True
        elif action == H.CONNECTION:
            for token in tokens(value):
                if token == b"close":
                    head.keep_alive = False
                elif token == b"upgrade":
                    head.connection_upgrade = True
                elif token != b"keep-alive":
                    if head._listed is None:
                        head._listed = []
                    head._listed.append(token)
        elif action == H.UPGRADE:
            head.upgrade = value.strip().lower()
        elif action == H.WS_ACCEPT:
            head.ws_accept = value.strip()
            head.lines.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._in_head = False
        status = self._parser.get_status_code()
        head.status = status
        version = self._parser.get_http_version()
        if version == "1.0":
            head.keep_alive = False  # an HTTP/1.0 upstream keeps nothing open that the gateway relies on
        if head._listed:
            head.lines = unlisted(head.lines, head._listed)
        if status == 101:
            if not self._upgrade:
                self._stop("the upstream switched protocols (101) for a request that asked for no upgrade")
            self._events.append(head)
            return
        if 100 <= status < 200:
            self._informational = True  # 100 Continue, 103 Early Hints: the gateway relays none of them
            return
        self._informational = False
        if not head.keep_alive:
            self.reusable = False
        self._events.append(head)
        if self._head_request:
            # A response to HEAD has no body whatever its Content-Length says; llhttp cannot be told, so the
            # message ends here and this connection is not reused.
            self.reusable = False
            self._dead = True
            self._events.append(END)
            raise Stop
        self._in_body = True
        if head.content_length is None and not head.chunked and status not in (204, 304):
            self.reusable = False  # delimited by the upstream closing
        elif head.content_length and status not in (204, 304):
            self._body_left = head.content_length

    def on_body(self, body: bytes) -> None:
        self._bodied = True
        if self._body_left:
            self._body_left -= len(body)
        if not self._dead and not self._informational:
            self._events.append(body)

    def on_message_complete(self) -> None:
        self._body_left = 0
        if self._dead:
            return
        if self._informational:
            self._informational = False
            return
        self._in_body = False
        if self._upgrade:
            # the handshake was refused (an ordinary answer): this connection carried an Upgrade request
            self.reusable = False
        self._events.append(END)


def response_bytes(head: ResponseHead, *, method: bytes, client_version: bytes, close: bool,
                   extra: bytes = b"") -> tuple[bytes, bool, bool]:
    """The response head for the client, whether its body is to be sent chunked, and whether to close after.

    A length-delimited body keeps its Content-Length; a chunked or close-delimited one is chunked for an
    HTTP/1.1 client and close-delimited for an HTTP/1.0 one (which then must be closed after it).
    """
    status = head.status
    chunked = False
    if head.content_length is not None and status != 204 and status >= 200:  # RFC 9110 §8.6: MUST NOT
        framing = b"Content-Length: %d\r\n" % head.content_length
    elif method == b"HEAD" or status in (204, 304) or status < 200:
        framing = b""
    elif client_version == b"1.1":
        framing, chunked = b"Transfer-Encoding: chunked\r\n", True
    else:
        framing, close = b"", True
    connection = b"Connection: close\r\n" if close else b""
    return (b"".join((b"HTTP/1.1 %d " % status, head.reason, b"\r\n", *head.lines, extra, framing, connection,
                      b"\r\n")), chunked, close)
