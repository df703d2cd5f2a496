"""``idwall relay``: a small verifying process beside a legacy TCP workload (DESIGN.md "TCP services").

The gateway reaches a ``tcp://`` route with ``proxy_protocol: v2`` by opening a connection to the relay
that starts with a PROXY v2 header whose TLV ``0xE0`` holds the signed identity assertion. For every
connection the relay:

1. accepts it only from a configured gateway address (``--allow-from``, loopback by default), else closes it;
2. reads exactly one PROXY v2 header within :data:`HEADER_TIMEOUT` (strict, :mod:`idwall.proxy_protocol`);
3. verifies the assertion with :mod:`idwall.upstream` (ES256 under the gateway's JWKS, ``iss``, ``aud``,
   ``exp``, ``iat``, ``cnf`` present, ``htm`` = ``TCP`` and ``htu`` = the address the gateway's route names),
   and refuses a ``jti`` it has already seen while that assertion lives (a replayed header);
4. only then connects to the workload, strips the header, and relays bytes both ways with flow control,
   closing each side when the other closes (a kill at the gateway cuts the workload's connection too).

Anything refused is closed without a byte reaching the workload. Every decision is one JSON log line
(``relay.refused``, ``relay.open``, ``relay.closed``) naming the user, device and session the verified
assertion vouched for; never the assertion itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import proxy_protocol
from .logs import event
from .upstream import AssertionVerifier, InvalidAssertion, JWKSUnavailable, VerifiedIdentity

__all__ = ["HEADER_TIMEOUT", "LOOPBACK", "Relay", "RelaySettings", "Replayed", "ReplayGuard", "allowed"]

#: seconds a connection has to deliver its PROXY header
HEADER_TIMEOUT = 10.0
#: seconds the workload has to accept a connection
CONNECT_TIMEOUT = 10.0
_READ = 64 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: who may connect when no ``--allow-from`` is given: a gateway on this host only
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class RelaySettings:
    """Where the relay listens, the workload behind it, who may connect, and what assertions must say."""

    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    #: the ``htu`` the gateway's route names: ``tcp://host:port`` of this relay as the gateway reaches it
    htu: str
    allow_from: tuple[Network, ...] = LOOPBACK
    header_timeout: float = HEADER_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT


def allowed(address: str, networks: Iterable[Network]) -> bool:
    """Whether ``address`` (an IPv4-mapped IPv6 address counts as its IPv4 one) lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks if network.version == ip.version)


class Replayed(Exception):
    """The assertion's ``jti`` was already used for a connection while it is still valid."""


class ReplayGuard:
    """The ``jti`` of every assertion accepted, kept until it expires: one assertion opens one connection."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def use(self, jti: str, *, expires: float, now: float) -> None:
        """Record ``jti`` (valid until ``expires``); raise :class:`Replayed` if it is already recorded."""
        if len(self._seen) > 1024:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        seen = self._seen.get(jti)
        if seen is not None and seen > now:
            raise Replayed(f"assertion {jti[:64]!r} was already used for a connection")
        self._seen[jti] = expires


class Relay:
    """The listener and its connections (see the module docstring)."""

    def __init__(self, settings: RelaySettings, verifier: AssertionVerifier, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.verifier = verifier
        self.clock = clock
        self.replays = ReplayGuard()
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> asyncio.Server:
        """Listen; the server's sockets say where."""
        self.server = await asyncio.start_server(self._accepted, self.settings.listen_host, self.settings.listen_port)
        return self.server

    async def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            if not allowed(str(peer[0]), self.settings.allow_from):
                self._refuse(writer, peer, "the connection does not come from a configured gateway address")
                return
            try:
                header, rest = await asyncio.wait_for(_read_header(reader), self.settings.header_timeout)
            except asyncio.TimeoutError:
                self._refuse(writer, peer, f"no complete PROXY v2 header within {self.settings.header_timeout:g}s")
                return
            except proxy_protocol.ProxyHeaderError as exc:
                self._refuse(writer, peer, str(exc))
                return
            identity = await self._verify(header, writer, peer)
            if identity is None:
                return
            await self._relay(reader, writer, peer, header, rest, identity)
        except (ConnectionError, OSError):
            writer.transport.abort()

    async def _verify(self, header: proxy_protocol.ProxyHeader, writer: asyncio.StreamWriter,
                      peer: tuple[str, int]) -> VerifiedIdentity | None:
        if header.command != proxy_protocol.PROXY:
            self._refuse(writer, peer, "a LOCAL PROXY header carries no client to relay")
            return None
        raw = header.assertion
        if raw is None:
            self._refuse(writer, peer, "the PROXY header carries no identity assertion (TLV 0xE0)")
            return None
        try:
            identity = await self.verifier.verify(raw.decode("ascii"), method="TCP", url=self.settings.htu,
                                                  now=self.clock())
            claims = identity.claims
            if not isinstance(claims.get("htm"), str):
                raise InvalidAssertion("the assertion is not bound to a connection (no htm/htu)")
            self.replays.use(claims["jti"], expires=float(claims["exp"]) + self.verifier.leeway, now=self.clock())
        except UnicodeDecodeError:
            self._refuse(writer, peer, "the assertion is not ASCII")
            return None
        except (InvalidAssertion, JWKSUnavailable) as exc:
            self._refuse(writer, peer, f"{exc.title}: {exc.detail}")
            return None
        except Replayed as exc:
            self._refuse(writer, peer, str(exc))
            return None
        return identity

    def _refuse(self, writer: asyncio.StreamWriter, peer: tuple[str, int], reason: str) -> None:
        event("relay.refused", level=logging.WARNING, remote=str(peer[0]), reason=reason)
        writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tuple[str, int],
                     header: proxy_protocol.ProxyHeader, rest: bytes, identity: VerifiedIdentity) -> None:
        who = {"user": identity.sub, "device": identity.device.get("id"), "device_name": identity.device.get("name"),
               "session": identity.sid, "device_cert": identity.cnf_x5t,
               "client": header.source[0] if header.source else None,
               "audience": self.verifier.audience}
        settings = self.settings
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(settings.upstream_host, settings.upstream_port), settings.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            event("relay.upstream_failed", level=logging.WARNING, detail=repr(exc), **who)
            writer.transport.abort()
            return
        event("relay.open", remote=str(peer[0]), **who)
        started = time.monotonic()
        if rest:
            up_writer.write(rest)
        counts = [len(rest), 0]
        pipes = [asyncio.ensure_future(_pipe(reader, up_writer, counts, 0)),
                 asyncio.ensure_future(_pipe(up_reader, writer, counts, 1))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for side in (writer, up_writer):
                side.transport.abort()  # one side ended: the other ends now, with nothing held back
            event("relay.closed", bytes_in=counts[0], bytes_out=counts[1],
                  seconds=round(time.monotonic() - started, 3), **who)


async def _read_header(reader: asyncio.StreamReader) -> tuple[proxy_protocol.ProxyHeader, bytes]:
    """One PROXY v2 header off the stream, and whatever followed it in the same reads."""
    buf = b""
    while True:
        chunk = await reader.read(_READ)
        if not chunk:
            raise proxy_protocol.ProxyHeaderError("the connection closed before a complete PROXY v2 header")
        buf += chunk
        parsed = proxy_protocol.parse(buf)
        if parsed is not None:
            header, used = parsed
            return header, buf[used:]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int], which: int) -> None:
    """Copy until ``reader`` ends; ``drain`` pauses reading while ``writer``'s peer does not read."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_READ):
            counts[which] += len(data)
            writer.write(data)
            await writer.drain()
