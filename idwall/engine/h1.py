"""Sans-IO HTTP/1.1 (RFC 9112) for the proxied path: bytes in, events out, in the shape of h11.

    client = ServerConnection(limits)
    for event in client.receive_data(data):      # RequestHead, bytes (body), END, Upgrade, Refused
        ...
    (the upstream side, in the same shape, is :mod:`idwall.engine.h1_upstream`)

Parsing is llhttp's (through httptools), which already refuses most ambiguous framing: Transfer-Encoding
with Content-Length, repeated or malformed lengths, obs-fold, bare CR and LF, NUL and other controls,
whitespace before a colon, bad chunk sizes and extensions. What llhttp lets through and this module
refuses as well: Transfer-Encoding on HTTP/1.0 and any coding but one final ``chunked`` (``gzip,
chunked``), HTTP/0.9 and versions other than 1.0 and 1.1, ``CONNECT``, a request without or with two
``Host`` fields, a fragment, ``*`` or another authority in the request target, and any upgrade but a
WebSocket handshake without a body. Trailer fields are dropped. A refusal is a :class:`Refused` event and
the end of the connection: no byte after it is read as HTTP, so nothing can hide behind it.

Both directions are re-framed: the upstream sees only the gateway's framing of what the gateway parsed,
and the client only the gateway's framing of what the upstream sent, so a second parser has nothing to
read differently. Header hygiene happens while parsing (tables in :mod:`idwall.engine.headers`): kept
fields are stored as ready-to-write lines in the client's order and spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httptools

from . import headers as H

__all__ = ["END", "HeadLimits", "LAST_CHUNK", "NO_EVENTS", "Refused", "RequestHead", "ServerConnection", "Stop", "Upgrade",
           "chunk_header", "request_bytes", "tokens", "unlisted"]


class _End:
    """The message is complete (h11's EndOfMessage); one instance, compared by identity."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _End()
LAST_CHUNK = b"0\r\n\r\n"
#: a connection's event list between two reads: callbacks run only inside receive_data, and an append
#: outside one would fail loudly on this tuple rather than share state
NO_EVENTS: Any = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """The peer broke the protocol: answer ``status`` (client side) and close; nothing more is parsed."""

    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The connection switched protocols after the head; ``rest`` is what followed the head in the same read."""

    rest: bytes


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Bounds on a message head: one line (request line or field), the whole head, the number of fields."""

    max_line: int = 8192
    max_head: int = 32768
    max_fields: int = 100


class Stop(Exception):
    """Raised from a parser callback to stop llhttp at once (httptools re-raises it from feed_data)."""


class RequestHead:
    """A request's head as the gateway will act on it; ``lines`` are the fields it forwards, ready to write."""

    __slots__ = ("method", "target", "version", "lines", "host", "content_length", "chunked", "keep_alive",
                 "expect_continue", "upgrade", "connection_upgrade", "origin", "fetch_site", "accept",
                 "ws_key", "ws_version", "preflight", "user_agent", "_listed", "_hosts", "_keep_alive_asked")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.lines: list[bytes] = []
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.connection_upgrade = False
        self.origin: bytes | None = None
        self.fetch_site: bytes | None = None
        self.accept: bytes | None = None
        self.ws_key: bytes | None = None
        self.ws_version: bytes | None = None
        self.preflight = False
        self.user_agent: bytes | None = None
        self._listed: list[bytes] | None = None
        self._hosts = 0
        self._keep_alive_asked = False

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"RequestHead({self.method.decode()} {self.target[:80]!r} HTTP/{self.version.decode()})"


#: a request line (after optional empty lines) whose parts are separated by more than one space or a tab
_LOOSE_REQUEST_LINE = re.compile(rb"[\r\n]*[A-Za-z]+(?: [ \t]|\t)|[\r\n]*[A-Za-z]+ \S+(?: [ \t]|\t)")


def tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


def unlisted(lines: list[bytes], listed: list[bytes]) -> list[bytes]:
    """``lines`` without the fields a Connection header named (RFC 9110 §7.6.1), ``_`` read as ``-``."""
    names = {token.replace(b"_", b"-") for token in listed}
    return [line for line in lines if line.split(b":", 1)[0].lower().replace(b"_", b"-") not in names]


class ServerConnection:
    """The client side of one connection: request heads, body chunks and ends, in order."""

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self._max_fields, self._max_line, self._max_head = limits.max_fields, limits.max_line, limits.max_head
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[object] = []
        self._head: RequestHead | None = None
        self._url = b""
        self._size = self._fields = self._dribbled = 0
        self._dead = False
        self._in_head = False
        self._in_message = False
        #: the start of a request line that has not ended yet, when its message began at the start of a read
        self._line = b""
        #: whether the read being parsed carried a body byte
        self._bodied = False
        #: bytes still to come of a Content-Length body that outlived the read of its head
        self._body_left = 0

    @property
    def dead(self) -> bool:
        """True once the connection refused something or switched protocols: nothing more is parsed."""
        return self._dead

    def close(self) -> None:
        """Let go of the parser: it holds this object's callbacks, a cycle only the cyclic collector would
        otherwise find; nothing is parsed afterwards."""
        self._dead = True
        self._parser = None

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the client; return the events they complete."""
        if self._dead:
            return []
        if self._body_left:
            return self._counted_body(data)
        events = self._events = []
        head = self._head
        self._bodied = False
        if not self._in_message or self._line:
            # a request line split over reads ("G", "ET  /") is judged on all of it, not on each read alone
            line = self._line + data if self._line else data
            if _LOOSE_REQUEST_LINE.match(line):
                # llhttp (not built strict) reads "GET  /" and "GET\t/" as "GET /"; the gateway re-serialises the
                # line, so no upstream could read it otherwise, but such a line comes from no real client
                self._refuse(400, "request line with more than one space between its parts (RFC 9112 §3)")
                return events
            # kept until the line ends; past max_line the target is refused (414) before the line could end
            unfinished = b"\n" not in line.lstrip(b"\r\n") and len(line) <= self._limits.max_line + 64
            self._line = line if unfinished else b""
        try:
            self._parser.feed_data(data)
        except Stop:
            pass
        except httptools.HttpParserUpgrade as exc:
            if not self._dead:
                self._dead = True
                events.append(Upgrade(data[exc.args[0]:]))
        except httptools.HttpParserInvalidMethodError as exc:
            if "invalid method" in str(exc).lower():
                self._refuse(501, "unknown request method (RFC 9110 §9.1: methods are case-sensitive tokens)")
            else:
                self._refuse(400, f"malformed request line: {exc} (RFC 9112 §3)")
        except httptools.HttpParserInvalidURLError as exc:
            self._refuse(400, f"invalid request target: {exc}")
        except httptools.HttpParserError as exc:
            if "invalid http version" in str(exc).lower():
                self._refuse(505, "only HTTP/1.0 and HTTP/1.1 are served (RFC 9112 §2.3)")
            else:
                self._refuse(400, f"malformed request: {exc} (RFC 9112)")
        if self._in_message and self._head is head and not self._dead:
            # llhttp holds an unfinished field itself, of the head or of the trailer section, and reads chunk
            # lines without a callback: count the reads of one message that carry no body byte, so none of
            # them can grow past the limit (by at most one read). A read that began a new message is not
            # counted: what it carried of the message before is no part of the new head.
            if self._bodied:
                self._dribbled = 0
            else:
                self._dribbled += len(data)
                if self._dribbled > self._limits.max_head:
                    what = "request head" if self._in_head else "chunk lines and trailer section"
                    self._refuse(431, f"{what} over {self._limits.max_head} bytes")
        self._events = NO_EVENTS  # an idle connection keeps no event
        return events

    def _counted_body(self, data: bytes) -> list[object]:
        """Bytes of a Content-Length body already framed by its head: passed on as they are, not through
        llhttp (whose body callback copies every byte); the parser is replaced once the body ends."""
        left = self._body_left
        if len(data) < left:
            self._body_left = left - len(data)
            return [data]
        self._body_left = 0
        self._in_message = False
        self._head = None
        self._parser = httptools.HttpRequestParser(self)
        events: list[object] = [data[:left] if len(data) > left else data, END]
        if len(data) > left:
            events += self.receive_data(data[left:])
        return events

    def _refuse(self, status: int, detail: str) -> None:
        if not self._dead:
            self._dead = True
            self._events.append(Refused(status, detail))

    def _stop(self, status: int, detail: str) -> None:
        self._refuse(status, detail)
        raise Stop

    # -- llhttp callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._head = RequestHead()
        self._url = b""
        self._size = self._fields = self._dribbled = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if len(self._url) > self._limits.max_line:
            self._stop(414, f"request target over {self._limits.max_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if not self._in_head or head is None:
            return  # a trailer field: dropped (RFC 9112 §7.1.2 lets a proxy discard them)
        self._fields += 1
        size = len(name) + len(value)
        self._size += size + 4
        if self._fields > self._max_fields or size + 2 > self._max_line or self._size > self._max_head:
            self._too_large(name, size)
        lower = name.lower()
        action = H.REQUEST_ACTIONS.get(lower)
        if action is None:
            if lower.startswith(H.IDENTITY_PREFIX) or name.translate(None, H.NAME_CHARS):
                return
            head.lines.append(name + b": " + value + b"\r\n")
            return
        if action == H.DROP:
            return
        if action == H.HOST:
            head._hosts += 1
            head.host = value.strip()
        elif action == H.LENGTH:
            head.content_length = int(value.strip())  # llhttp allows digits only, and one field
            return  # the gateway writes its own framing
        elif action == H.CODING:
            head.chunked = True
            if value.strip().lower() != b"chunked":
                self._stop(400, "Transfer-Encoding other than a single final 'chunked' (RFC 9112 §6.1)")
            return
        elif action == H.CONNECTION:
            for token in tokens(value):
                if token == b"close":
                    head.keep_alive = False
                elif token == b"upgrade":
                    head.connection_upgrade = True
                elif token == b"keep-alive":
                    head._keep_alive_asked = True
                elif token not in H.NOT_CONNECTION_LISTABLE:
                    if head._listed is None:
                        head._listed = []
                    head._listed.append(token)
            return
        elif action == H.UPGRADE:
            head.upgrade = value.strip().lower()
            return
        elif action == H.EXPECT:
            if value.strip().lower() != b"100-continue":
                self._stop(417, "the only expectation served is 100-continue (RFC 9110 §10.1.1)")
            head.expect_continue = True
            return  # the gateway answers it itself
        elif action == H.ORIGIN:
            head.origin = value.strip()
        elif action == H.FETCH_SITE:
            head.fetch_site = value.strip().lower()
        elif action == H.ACCEPT:
            head.accept = value
        elif action == H.WS_KEY:
            if head.ws_key is not None:
                self._stop(400, "more than one Sec-WebSocket-Key (RFC 6455 §11.3.1)")
            head.ws_key = value.strip()
        elif action == H.WS_VERSION:
            head.ws_version = value.strip()
        elif action == H.PREFLIGHT:
            head.preflight = True
        elif action == H.USER_AGENT:
            head.user_agent = value
        head.lines.append(name + b": " + value + b"\r\n")

    def _too_large(self, name: bytes, size: int) -> None:
        limits = self._limits
        if self._fields > limits.max_fields:
            self._stop(431, f"more than {limits.max_fields} header fields")
        if size + 2 > limits.max_line:
            self._stop(431, f"header field {name[:40]!r} over {limits.max_line} bytes")
        self._stop(431, f"request head over {limits.max_head} bytes")

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            if version == "0.9":
                self._stop(400, "HTTP/0.9 requests are not served (RFC 9112 §2.3)")
            self._stop(505, "only HTTP/1.0 and HTTP/1.1 are served (RFC 9112 §2.3)")
        head.version = version.encode()
        head.method = parser.get_method()
        if head.method == b"CONNECT":
            self._stop(400, "CONNECT is not served: the gateway is not a forward proxy")
        if version == "1.0":
            head.keep_alive = head.keep_alive and head._keep_alive_asked  # RFC 9112 §9.3
            head.expect_continue = False  # RFC 9110 §10.1.1: MUST ignore it (1.0 has no 1xx to wait for)
            if head.chunked:
                self._stop(400, "Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1)")
        if head._hosts > 1:
            self._stop(400, "more than one Host field (RFC 9112 §3.2)")
        if head.host is None and version == "1.1":
            self._stop(400, "HTTP/1.1 request without Host (RFC 9112 §3.2)")
        head.target = self._target(head)
        if head.upgrade is not None and head.connection_upgrade:
            if head.upgrade not in (b"websocket", b"idwall-tcp"):
                self._stop(400, f"upgrade to {head.upgrade[:40]!r} is not served; only websocket "
                                "(and idwall-tcp, a tunnel) is")
            if head.has_body or head.method != b"GET":
                self._stop(400, "an upgrade (a WebSocket handshake, a tunnel) is a GET without a body "
                                "(RFC 6455 §4.2.1)")
        if head._listed:
            head.lines = unlisted(head.lines, head._listed)
        self._events.append(head)
        if head.content_length and not head.chunked:
            self._body_left = head.content_length

    def _target(self, head: RequestHead) -> bytes:
        url = self._url
        if b"#" in url:
            self._stop(400, "fragment in the request target (RFC 9112 §3.2)")
        if url[:1] == b"/":
            return url
        lower = url[:8].lower()
        if lower.startswith(b"https://"):
            rest = url[8:]
            # the authority ends at the first "/" or "?" (RFC 3986 §3.2): "https://host?q=/x" asks for "/"
            slash, qmark = rest.find(b"/"), rest.find(b"?")
            end = min(len(rest) if slash < 0 else slash, len(rest) if qmark < 0 else qmark)
            authority, path = rest[:end], rest[end:]
            if head.host is None or authority.lower() != head.host.lower() or b"@" in authority:
                self._stop(400, "absolute-form request target for another authority (RFC 9112 §3.2.2)")
            return path if path[:1] == b"/" else b"/" + path
        if lower.startswith(b"http://"):
            self._stop(400, "absolute-form http:// target: the gateway serves https only")
        self._stop(400, f"request target {url[:40]!r} is neither an absolute path nor this gateway's URL")
        raise AssertionError("unreachable")

    def on_body(self, body: bytes) -> None:
        self._bodied = True
        if self._body_left:
            self._body_left -= len(body)
        if not self._dead:
            self._events.append(body)

    def on_message_complete(self) -> None:
        self._body_left = 0
        self._in_message = False
        self._head = None  # the event carries it on; an idle connection keeps no head
        if not self._dead:
            self._events.append(END)


# -- what the gateway writes ----------------------------------------------------------------------------


def request_bytes(head: RequestHead, target: bytes, extra: bytes) -> bytes:
    """The request head for the upstream: always HTTP/1.1, the kept fields, ``extra`` lines, our framing."""
    if head.chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
    elif head.content_length is not None:
        framing = b"Content-Length: %d\r\n" % head.content_length
    else:
        framing = b""
    return b"".join((head.method, b" ", target, b" HTTP/1.1\r\n", *head.lines, extra, framing, b"\r\n"))


def chunk_header(size: int) -> bytes:
    """The line that starts a chunk of ``size`` bytes (RFC 9112 §7.1)."""
    return b"%x\r\n" % size
