"""``idwall relay``: run the verifying relay beside a TCP workload (:mod:`idwall.relay`) until SIGTERM/SIGINT.

    idwall relay --listen HOST:PORT --upstream tcp://host:port --jwks URL --audience NAME
                 [--allow-from CIDR]... [--issuer URL] [--htu tcp://host:port] [--ca FILE]

Logs are JSON lines on stderr; the first, ``relay.listening``, says where it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import ssl
from urllib.parse import urlsplit

from ..logs import event, setup_logging
from ..relay import LOOPBACK, Relay, RelaySettings
from ..upstream import AssertionVerifier, JWKSCache
from .client import _ssl_context
from .output import usage


def _host_port(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise usage(f"{flag} must be HOST:PORT (e.g. 127.0.0.1:6432), got {text!r}")
    return host, int(port)


def _tcp_url(text: str, flag: str) -> tuple[str, int]:
    if not text.lower().startswith("tcp://"):
        raise usage(f"{flag} must be tcp://host:port, got {text!r}")
    return _host_port(text[len("tcp://"):], flag)


def _networks(values: list[str] | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not values:
        return LOOPBACK
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise usage(f"--allow-from must be an address or CIDR such as 10.0.0.10/32, got {value!r}") from None
    return tuple(networks)


def settings_from_args(args: argparse.Namespace) -> tuple[RelaySettings, AssertionVerifier]:
    """The relay's settings and verifier from its flags (usage errors name the flag)."""
    listen_host, listen_port = _host_port(args.listen, "--listen")
    up_host, up_port = _tcp_url(args.upstream, "--upstream")
    jwks = urlsplit(args.jwks)
    if jwks.scheme != "https" or not jwks.hostname:
        raise usage(f"--jwks must be the gateway's https:// JWKS URL (…/.well-known/idwall/jwks.json), got "
                    f"{args.jwks!r}")
    issuer = args.issuer or f"https://{jwks.netloc}"
    shown = f"[{listen_host}]" if ":" in listen_host else listen_host
    htu = args.htu or f"tcp://{shown}:{listen_port}"
    _tcp_url(htu, "--htu")
    ctx: ssl.SSLContext = _ssl_context(args.ca)
    verifier = AssertionVerifier(keys=JWKSCache(args.jwks, ssl_context=ctx), issuer=issuer, audience=args.audience)
    settings = RelaySettings(listen_host=listen_host, listen_port=listen_port, upstream_host=up_host,
                             upstream_port=up_port, htu=htu.lower(), allow_from=_networks(args.allow_from))
    return settings, verifier


async def _run(settings: RelaySettings, verifier: AssertionVerifier) -> None:
    relay = Relay(settings, verifier)
    server = await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = server.sockets[0].getsockname()
    event("relay.listening", listen=f"{address[0]}:{address[1]}", upstream=f"{settings.upstream_host}:"
          f"{settings.upstream_port}", audience=verifier.audience, htu=settings.htu,
          allow_from=[str(n) for n in settings.allow_from])
    await stop.wait()
    await relay.close()


def cmd_relay(args: argparse.Namespace) -> int:
    """Run the relay until SIGTERM or SIGINT; exit 0."""
    settings, verifier = settings_from_args(args)
    setup_logging()
    try:
        asyncio.run(_run(settings, verifier))
    except OSError as exc:
        raise usage(f"--listen {args.listen}: {exc.strerror or exc}") from None
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``idwall relay`` and its flags."""
    p = commands.add_parser("relay", help="verify PROXY v2 identity from the gateway in front of a TCP workload")
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    p.add_argument("--upstream", required=True, help="the workload, tcp://host:port")
    p.add_argument("--jwks", required=True, help="the gateway's JWKS URL, https://gw/.well-known/idwall/jwks.json")
    p.add_argument("--audience", required=True, help="the gateway route's name (or its configured audience)")
    p.add_argument("--allow-from", action="append", metavar="CIDR",
                   help="gateway addresses that may connect (repeatable; default: loopback only)")
    p.add_argument("--issuer", help="the gateway's public URL (default: the JWKS URL's origin)")
    p.add_argument("--htu", help="tcp://host:port the gateway's route names for this relay (default: tcp://LISTEN)")
    p.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else the system store)")
    p.set_defaults(func=cmd_relay)
