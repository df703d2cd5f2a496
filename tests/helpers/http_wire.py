"""Wire-level HTTP/1.1 test tools: a recording upstream, a raw TLS client, the HTTP vector loader.

They look at bytes, not at any parser the gateway uses, so a test built on them judges the gateway from
outside (black box):

* :class:`RecordingUpstream` is an asyncio TCP server on ``127.0.0.1:0`` that keeps every request it
  receives (raw bytes, request line, headers, body, trailers) and answers each with a small ``200``, or a
  correct ``101`` (right ``Sec-WebSocket-Accept``) to a WebSocket handshake, after which it only records.
* :func:`exchange` sends raw bytes over TLS (SNI of the caller's choice), reads the first answer by its own
  framing and, when asked, whether the server then closes the connection.
* :func:`load_vectors` reads ``tests/vectors/http/*.jsonl`` (schema in that folder's README.md) and
  :func:`request_bytes` turns a row's request into the bytes to send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from idwall.testing.fixtures import client_ssl_context

from .vectors import read_jsonl, vector_files

__all__ = [
    "Answer",
    "Message",
    "Received",
    "RecordingUpstream",
    "exchange",
    "field_key",
    "load_vectors",
    "request_bytes",
    "status_of",
    "tls_context",
    "vector_params",
    "websocket_accept",
]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 1 << 20


def field_key(name: str) -> str:
    """How the tests compare header names: lower case, ``_`` and ``.`` read as ``-`` (as CGI/WSGI servers do)."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def status_of(answer: bytes) -> int:
    """The status code of the raw HTTP/1.x answer ``answer`` (0 when it holds no status line: nothing came back)."""
    line = answer.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.") else 0


def websocket_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for ``key`` (RFC 6455 §4.2.2 item 5.4)."""
    return base64.b64encode(hashlib.sha1(key.strip().encode("latin-1") + _WS_GUID).digest()).decode()


@dataclass
class Message:
    """A message head as it was on the wire: the start line and the header fields, in order."""

    start: str
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, head: bytes) -> "Message":
        """Split a head (without its final empty line) on CRLF; a line without a colon keeps an empty value."""
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
        return cls(lines[0], headers)

    def values(self, name: str) -> list[str]:
        """Every value of the fields whose name reads as ``name`` (see :func:`field_key`)."""
        key = field_key(name)
        return [value for field_name, value in self.headers if field_key(field_name) == key]

    def get(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def has_token(self, name: str, token: str) -> bool:
        """True when a comma-separated value of ``name`` holds ``token`` (case-insensitive)."""
        return any(part.strip().lower() == token for value in self.values(name) for part in value.split(","))


@dataclass
class Received(Message):
    """One request as the upstream received it; ``raw`` is every byte of it (head, body, trailers)."""

    raw: bytearray = field(default_factory=bytearray)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.start.split(" ")[0]

    @property
    def target(self) -> str:
        parts = self.start.split(" ")
        return parts[1] if len(parts) > 1 else ""


class RecordingUpstream:
    """A raw HTTP/1.1 upstream that records what reaches it (see the module docstring).

    ``requests`` holds the requests that began since the last :meth:`reset`, complete or not; bytes that
    arrive on a connection already upgraded to a WebSocket belong to that connection's handshake, so a
    late close frame from an earlier test is never counted as a new request.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "RecordingUpstream":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def reset(self) -> None:
        self.requests = []

    def seen(self) -> bytes:
        """Everything the requests since the last reset carried, in one byte string."""
        return b"".join(bytes(request.raw) for request in self.requests)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, record and answer one request; False when the connection is done."""
        first = await reader.read(1)
        if not first:
            return False
        request = Received("", [], bytearray(first))
        self.requests.append(request)
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as exc:
            request.raw += exc.partial
            return False
        request.raw += head
        parsed = Message.parse(bytes(request.raw[: -len(_HEAD_END)]))
        request.start, request.headers = parsed.start, parsed.headers
        if request.has_token("transfer-encoding", "chunked"):
            await self._chunked(reader, request)
        else:
            length = request.get("content-length") or "0"
            if length.isdigit():
                request.body = await reader.readexactly(int(length))
                request.raw += request.body
        key = request.get("sec-websocket-key")
        if request.has_token("upgrade", "websocket") and key is not None:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + websocket_accept(key).encode() + _HEAD_END)
            await writer.drain()
            await _websocket_until_close(reader, writer)
            return False
        body = b"" if request.method == "HEAD" else b"ok"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body)
        await writer.drain()
        return not request.has_token("connection", "close")

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader, request: Received) -> None:
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            request.raw += line
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            request.raw += data
            body += data[:-2]
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            request.raw += line
            name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
            request.trailers.append((name, value.strip()))
        request.raw += line
        request.body = bytes(body)


async def _websocket_until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After a 101: read frames until the peer sends a close frame (answered with one) or goes away."""
    while chunk := await reader.read(65536):
        if chunk[0] & 0x0F == 0x8:
            writer.write(b"\x88\x00")
            await writer.drain()
            return


# --------------------------------------------------------------------------- the client side


@dataclass
class Answer:
    """What a raw exchange read: the first response, whatever followed it, and whether the server closed."""

    raw: bytes
    head: Message | None
    body: bytes
    rest: bytes
    closed: bool

    @property
    def status(self) -> int | None:
        if self.head is None:
            return None
        parts = self.head.start.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def describe(self) -> str:
        """A short form for assertion messages: the start line and the first bytes of the body."""
        if self.head is None:
            return f"no response ({len(self.raw)} bytes: {self.raw[:120]!r})"
        return f"{self.head.start!r}, body {self.body[:160]!r}"


def tls_context(ca_pem: str | Path, cert: str | Path, key: str | Path, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A client context trusting the gateway CA and presenting a device certificate.

    ``check_hostname=False`` still verifies the chain; it is for SNI names the server certificate does not
    cover (the gateway's test certificate names only ``localhost``).
    """
    context = client_ssl_context(ca_pem, cert, key)
    context.check_hostname = check_hostname
    return context


def _first_response_end(buf: bytes, *, head_request: bool) -> tuple[int, int] | None:
    """``(end of head, end of message)`` of the first response in ``buf``, or None while incomplete.

    A response framed by neither Content-Length nor chunked ends when the connection does.
    """
    head_end = buf.find(_HEAD_END)
    if head_end < 0:
        return None
    head = Message.parse(buf[:head_end])
    body_start = head_end + len(_HEAD_END)
    parts = head.start.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if head_request or status < 200 or status in (204, 304):
        return head_end, body_start
    length = head.get("content-length")
    if length is not None and length.isdigit():
        end = body_start + int(length)
        return (head_end, end) if len(buf) >= end else None
    if head.has_token("transfer-encoding", "chunked"):
        terminator = buf.find(b"\r\n0\r\n\r\n", body_start - 2)
        return (head_end, terminator + 7) if terminator >= 0 else None
    return None


async def _read(reader: asyncio.StreamReader, deadline: float) -> bytes | None:
    """The next bytes; ``b""`` when the server closed (or reset) the connection, None at the deadline."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return None
    try:
        return await asyncio.wait_for(reader.read(65536), remaining)
    except asyncio.TimeoutError:
        return None
    except (ConnectionError, ssl.SSLError):
        return b""


async def exchange(port: int, context: ssl.SSLContext, request: bytes, *, server_hostname: str = "localhost",
                   head_request: bool = False, wait_close: bool = False, timeout: float = 5.0,
                   close_timeout: float = 1.5) -> Answer:
    """Send ``request`` to ``127.0.0.1:port`` over TLS and read the first answer.

    The answer is read by its own framing (within ``timeout``); with ``wait_close`` the connection is then
    watched for up to ``close_timeout`` seconds more, and ``closed`` says whether the server ended it.
    Bytes after the first answer (a second response, say) are kept in ``rest``. A server that closes
    before reading everything is not an error: whatever it answered is returned.
    """
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname,
                                                   limit=_MAX_HEAD)
    buf = bytearray()
    closed = False
    try:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(request)
            await writer.drain()
        deadline = loop.time() + timeout
        while (ends := _first_response_end(bytes(buf), head_request=head_request)) is None:
            chunk = await _read(reader, deadline)
            if not chunk:
                closed = chunk == b""
                break
            buf += chunk
        if wait_close and not closed:
            deadline = loop.time() + close_timeout
            while (chunk := await _read(reader, deadline)) is not None:
                if not chunk:
                    closed = True
                    break
                buf += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    data = bytes(buf)
    ends = ends or _first_response_end(data, head_request=head_request)
    if ends is None and _HEAD_END in data:
        ends = (data.find(_HEAD_END), len(data))  # framed by the close
    if ends is None:
        return Answer(data, None, b"", b"", closed)
    head_end, end = ends
    return Answer(data, Message.parse(data[:head_end]), data[head_end + len(_HEAD_END):end], data[end:], closed)


# --------------------------------------------------------------------------- vectors

_REQUIRED = ("id", "cite", "request")
_KNOWN = frozenset(_REQUIRED) | {
    "sni", "status", "close", "problem", "upstream", "path", "never", "absent", "expect", "route", "note",
}


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The rows of ``tests/vectors/http/<name>``, checked: required keys, no unknown key, unique ids, latin-1."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in vector_files("http", name):
        for where, row in read_jsonl(path):
            missing = [key for key in _REQUIRED if key not in row]
            unknown = sorted(set(row) - _KNOWN)
            if missing or unknown:
                raise ValueError(f"{where}: missing {missing}, unknown {unknown}; keys are {sorted(_KNOWN)}")
            if row["id"] in seen:
                raise ValueError(f"{where}: id {row['id']!r} is used twice")
            seen.add(row["id"])
            row["request"].encode("latin-1")  # a character above U+00FF has no byte: UnicodeEncodeError names it
            rows.append(row)
    if not rows:
        raise ValueError(f"tests/vectors/http/{name}: no vectors")
    return rows


def vector_params(name: str) -> list[Any]:
    """``pytest.param`` per row of ``name``, with the row id as the test id."""
    return [pytest.param(row, id=row["id"]) for row in load_vectors(name)]


def request_bytes(row: dict[str, Any], port: int) -> bytes:
    """The row's request with ``{host}`` as ``localhost:PORT`` and ``{port}`` as the port, as latin-1 bytes."""
    return row["request"].replace("{host}", f"localhost:{port}").replace("{port}", str(port)).encode("latin-1")
