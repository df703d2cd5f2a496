"""Raw TCP for the tunnel and relay tests: a recording TCP service, a tunnel opened by hand over mTLS, a
gateway config with TCP routes, and reading until a peer closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from idwall import proxy_protocol

__all__ = ["Service", "Tunnel", "closed_within", "open_tunnel", "tcp_routes", "tcp_service"]


@dataclass
class Service:
    """A TCP service on 127.0.0.1: what each connection sent (and, with ``proxy``, its PROXY header)."""

    port: int
    received: list[bytearray] = field(default_factory=list)
    headers: list[proxy_protocol.ProxyHeader] = field(default_factory=list)
    closed: list[asyncio.Event] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connections(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections were accepted."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def tcp_service(*, proxy: bool = False, echo: bool = True, banner: bytes = b"",
                      read: bool = True) -> AsyncIterator[Service]:
    """A TCP service: ``banner`` first, then echo (or swallow) what arrives; ``proxy`` strips a PROXY v2 header
    first; ``read=False`` never reads (to fill the sender's buffers)."""
    service = Service(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got, done = bytearray(), asyncio.Event()
        service.received.append(got)
        service.closed.append(done)
        service.writers.append(writer)
        try:
            if banner:
                writer.write(banner)
            if not read:
                await reader.read(0)
                await asyncio.sleep(3600)
            buf = b""
            while proxy:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                parsed = proxy_protocol.parse(buf)
                if parsed is not None:
                    service.headers.append(parsed[0])
                    buf = buf[parsed[1]:]
                    break
            if buf:
                got += buf
                if echo:
                    writer.write(buf)
            while data := await reader.read(65536):
                got += data
                if echo:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, proxy_protocol.ProxyHeaderError):
            pass
        finally:
            done.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    service.port = server.sockets[0].getsockname()[1]
    try:
        yield service
    finally:
        server.close()
        for writer in service.writers:
            writer.transport.abort()


@dataclass
class Tunnel:
    """A tunnel request's answer: the status, the problem body (when not 101), and the open streams."""

    status: int
    head: bytes
    problem: dict[str, Any]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def open_tunnel(port: int, ctx: ssl.SSLContext, route: str, *, version: bytes = b"1.1",
                      fields: bytes = b"Upgrade: idwall-tcp\r\nConnection: upgrade\r\n", body: bytes = b"",
                      timeout: float = 10.0) -> Tunnel:
    """``GET /idwall/tunnel/<route>`` by hand over mTLS to the gateway on ``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    writer.write(b"GET /idwall/tunnel/%s HTTP/%s\r\nHost: localhost:%d\r\n%s\r\n%s" % (
        route.encode(), version, port, fields, body))
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        problem: dict[str, Any] = {}
        if status != 101:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            problem = json.loads(await reader.readexactly(length))
    return Tunnel(status, head, problem, reader, writer)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closes (EOF or reset) within ``seconds``; bytes read meanwhile are dropped."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


def tcp_routes(*routes: str) -> Any:
    """An ``edit`` for :func:`tests.helpers.gateway.start_test_gateway` that adds routes (YAML flow mappings)."""
    def edit(text: str) -> str:
        return text.replace("\nroutes:\n", "\nroutes:\n" + "".join(f"  - {r}\n" for r in routes), 1)
    return edit
