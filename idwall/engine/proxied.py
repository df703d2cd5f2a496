"""Accepting behind a TCP load balancer: PROXY protocol v2 from trusted addresses, then TLS.

With TLS passthrough the load balancer cannot add a header, so the client's address arrives in a PROXY
v2 header before the TLS bytes. It is read straight off the socket, exactly as many bytes as the header
says and never one more, so the client's TLS hello stays in the kernel for the TLS layer that takes the
socket next. A connection from a trusted address must start with the header (or it is closed: a load
balancer that forgot it would otherwise make every client look like the load balancer); from anywhere
else no header is read, so nobody outside the trusted networks can claim an address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable, Sequence

from .. import proxy_protocol
from ..logs import event
from ..proxy_protocol import ProxyHeaderError

__all__ = ["ProxiedListener", "read_proxy_header"]

#: a PROXY v2 header's fixed part: signature (12), version and command, family, length (2)
FIXED = 16


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> proxy_protocol.ProxyHeader:
    """Consume exactly one PROXY v2 header from ``sock``; :class:`ProxyHeaderError` says what was wrong."""
    data = await _read_exactly(loop, sock, FIXED, signature=True)
    parsed = proxy_protocol.parse(data)  # checks the fixed part: version, command, family, length bound
    if parsed is None:
        data += await _read_exactly(loop, sock, int.from_bytes(data[14:16], "big"))
        parsed = proxy_protocol.parse(data)
        assert parsed is not None  # every byte the header said it has is there
    return parsed[0]


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, count: int, *,
                        signature: bool = False) -> bytes:
    # signature: refuse as soon as the first bytes cannot be the signature (a TLS hello, a v1 header)
    data = b""
    while len(data) < count:
        chunk = await loop.sock_recv(sock, count - len(data))
        if not chunk:
            raise ProxyHeaderError(f"the connection closed after {len(data)} of the header's bytes")
        data += chunk
        if signature and not proxy_protocol.SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("the connection does not start with the PROXY protocol v2 signature")
    return data


class ProxiedListener:
    """A listening socket whose trusted peers send PROXY v2; every connection then becomes TLS."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Callable[[str], asyncio.Protocol],
                 context: ssl.SSLContext, *, trusted: Sequence[str], handshake_timeout: float) -> None:
        self._loop = loop
        self._protocol = protocol
        self._context = context
        self._trusted = tuple(ipaddress.ip_network(n) for n in trusted)
        self._timeout = handshake_timeout
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def listen(self, host: str, port: int, *, reuse_port: bool) -> int:
        """Bind and start accepting; return the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._accepting = self._loop.create_task(self._accept(), name="idwall-accept")
        return int(sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting; connections still reading their header are dropped."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in self._pending:
            task.cancel()
        if self._sock is not None:
            self._sock.close()

    async def wait_closed(self) -> None:
        """Until the accept loop and every header read have ended."""
        await asyncio.gather(*(t for t in (self._accepting, *self._pending) if t is not None), return_exceptions=True)

    async def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, address = await self._loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE and friends: say so, breathe, go on accepting
                event("accept.failed", error=exc.strerror or str(exc))
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn, address[0]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _is_trusted(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self._trusted)

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        remote = peer
        try:
            if self._is_trusted(peer):
                header = await asyncio.wait_for(read_proxy_header(self._loop, conn), self._timeout)
                if header.source is not None:  # LOCAL (a health check) speaks for the balancer itself
                    remote = header.source[0]
            await self._loop.connect_accepted_socket(lambda: self._protocol(remote), conn, ssl=self._context,
                                                     ssl_handshake_timeout=self._timeout)
        except (ProxyHeaderError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            # Refused before anything was served: TLS failures of untrusted peers land here too.
            if isinstance(exc, (ProxyHeaderError, asyncio.TimeoutError)):
                event("proxy_protocol.refused", peer=peer,
                      reason=str(exc) or "no complete PROXY v2 header in time")
            conn.close()
