"""Connections as a load balancer makes them: a socket bound to a chosen loopback source, and what the
gateway's admin API then says about the connection's client address."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import pytest

from tests.helpers.gateway import GatewayUnderTest
from tests.helpers.kill import KillBed

__all__ = ["raw_socket", "refused", "sessions_seen"]


async def raw_socket(port: int, source: str, host: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to ``host:port`` from ``source`` (any 127/8 address), not yet speaking TLS."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return sock


async def sessions_seen(gateway: GatewayUnderTest, sock: socket.socket, device: object) -> list[dict]:
    """A proxied request over ``sock`` (TLS with ``device``'s certificate), then the admin sessions list on it."""
    token = await KillBed(gateway, None).token(["read"])  # type: ignore[arg-type]
    reader, writer = await asyncio.open_connection(sock=sock, ssl=gateway.ssl(device), server_hostname="localhost")
    writer.write(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    writer.write(f"GET /idwall/api/admin/sessions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    return json.loads(body)["sessions"]


async def refused(gateway: GatewayUnderTest, sock: socket.socket, device: object) -> None:
    """TLS with ``device``'s certificate over ``sock`` never gets to an answer: the gateway closes it."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=gateway.ssl(device), server_hostname="localhost"), 5)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        if not await asyncio.wait_for(reader.read(1), 5):
            raise ConnectionError("closed")
