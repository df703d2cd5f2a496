"""``idwall connect ROUTE``: the device side of a TCP tunnel (DESIGN.md "TCP services").

    idwall connect ROUTE --gateway URL [--listen 127.0.0.1:PORT] [--dir DIR] [--ca FILE] [--timeout 600]

It listens on a local port (loopback by default; port 0 picks one, and the first line printed says which).
Each connection accepted there becomes one tunnel over its own mTLS connection to the gateway, made with
the device certificate ``device enroll`` wrote to DIR (``device.pem``, ``device-key.pem``; the gateway's
CA is DIR's ``ca.pem`` unless ``--ca`` or ``IDWALL_CA`` says otherwise): ``GET /idwall/tunnel/ROUTE`` with
``Upgrade: idwall-tcp``; after the ``101`` the bytes flow both ways, and when the gateway ends the tunnel
(a kill, a logout, the session's end) the local connection ends with it at once.

When the session needs a passkey login (401), it prints the page to open and keeps trying, the local
connection waiting, for up to ``--timeout`` seconds. Any other refusal is printed as one line and ends that
local connection only; the listener keeps running until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .client import _gateway_url
from .output import CLIError, clean, usage

#: seconds between tunnel attempts while waiting for a passkey login
LOGIN_POLL = 1.0
#: the gateway's answer to a tunnel request: at most this much head and body, within this many seconds
MAX_ANSWER = 64 * 1024
ANSWER_TIMEOUT = 30.0
_READ = 64 * 1024
_ROUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class TunnelAnswer:
    """The gateway's answer to one tunnel request; after a 101 the streams carry the tunnel."""

    status: int
    problem: dict[str, object]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def _out(text: str) -> None:
    print(text, flush=True)


async def open_tunnel(gateway: str, ctx: ssl.SSLContext, route: str) -> TunnelAnswer:
    """Ask ``gateway`` for a tunnel to ``route`` on a new mTLS connection (``ctx`` holds the device key)."""
    parts = urlsplit(gateway)
    host = parts.hostname or ""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host, parts.port or 443, ssl=ctx, server_hostname=host, limit=MAX_ANSWER), ANSWER_TIMEOUT)
    writer.write(f"GET /idwall/tunnel/{route} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: idwall-tcp\r\n"
                 "Connection: upgrade\r\nUser-Agent: idwall-connect\r\n\r\n".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        problem: dict[str, object] = {}
        if status != 101:
            length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                           if k.strip().lower() == "content-length" and v.strip().isdigit()), 0)
            body = await asyncio.wait_for(reader.readexactly(min(length, MAX_ANSWER)), ANSWER_TIMEOUT)
            writer.close()
            with contextlib.suppress(ValueError):
                loaded = json.loads(body)
                problem = loaded if isinstance(loaded, dict) else {}
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
        writer.close()
        raise CLIError("the gateway's answer to the tunnel request is not HTTP") from None
    return TunnelAnswer(status, problem, reader, writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        while data := await reader.read(_READ):
            writer.write(data)
            await writer.drain()  # flow control: stop reading while the other side does not


class Connector:
    """The local listener's side: one tunnel per accepted connection."""

    def __init__(self, gateway: str, route: str, ctx: ssl.SSLContext, *, login_timeout: float) -> None:
        self.gateway = gateway
        self.route = route
        self.ctx = ctx
        self.login_timeout = login_timeout
        self._handlers: set[asyncio.Task[None]] = set()

    async def handle(self, local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        """Open the tunnel for one local connection (waiting for a login if needed), then splice."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(local_reader, local_writer)
        except asyncio.CancelledError:
            local_writer.transport.abort()  # shutting down: the local connection ends with the command
        finally:
            self._handlers.discard(task)

    async def close(self) -> None:
        """End every local connection and its tunnel (on SIGINT/SIGTERM)."""
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        try:
            tunnel = await self._tunnel()
        except (OSError, ssl.SSLError, asyncio.TimeoutError, CLIError) as exc:
            _out(f"idwall connect: {self.route}: cannot reach the gateway: {clean(exc) or type(exc).__name__}")
            tunnel = None
        if tunnel is None:
            local_writer.transport.abort()
            return
        pipes = [asyncio.ensure_future(_pipe(local_reader, tunnel.writer)),
                 asyncio.ensure_future(_pipe(tunnel.reader, local_writer))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            tunnel.writer.transport.abort()
            local_writer.transport.abort()  # the tunnel ended (or the local side did): nothing is held back

    async def _tunnel(self) -> TunnelAnswer | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.login_timeout
        waiting = False
        while True:
            answer = await open_tunnel(self.gateway, self.ctx, self.route)
            if answer.status == 101:
                if waiting:
                    _out(f"idwall connect: {self.route}: logged in, tunnel open")
                return answer
            login_url = answer.problem.get("login_url")
            if answer.status == 401 and isinstance(login_url, str) and login_url.startswith("https://"):
                if not waiting:
                    _out(f"idwall connect: {self.route}: log in with your passkey: open {clean(login_url, 2000)} "
                         "in a browser that holds this device's certificate; waiting")
                    waiting = True
                if loop.time() >= deadline:
                    _out(f"idwall connect: {self.route}: no login within {self.login_timeout:g}s; connection closed")
                    return None
                await asyncio.sleep(LOGIN_POLL)
                continue
            _out(f"idwall connect: {self.route}: refused ({answer.status} {clean(answer.problem.get('title', ''))}): "
                 f"{clean(answer.problem.get('detail', ''))}")
            return None


def _device_context(directory: Path, ca: str | None) -> ssl.SSLContext:
    cert, key = directory / "device.pem", directory / "device-key.pem"
    if not cert.is_file() or not key.is_file():
        raise usage(f"--dir {directory}: no device.pem and device-key.pem (run idwall device enroll --out "
                    f"{directory} first)")
    cafile = ca or os.environ.get("IDWALL_CA") or (str(directory / "ca.pem") if (directory / "ca.pem").is_file()
                                                    else None)
    try:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise usage(f"cannot load the device certificate or the CA: {exc}") from None
    return ctx


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise usage(f"--listen must be HOST:PORT such as 127.0.0.1:5432, got {text!r}")
    return host.strip("[]"), int(port)


async def _serve(connector: Connector, host: str, port: int) -> None:
    server = await asyncio.start_server(connector.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    _out(f"idwall connect: {connector.route} listening on {bound[0]}:{bound[1]}")
    async with server:
        await stop.wait()
        server.close()
        await connector.close()


def cmd_connect(args: argparse.Namespace) -> int:
    """Run the local listener until SIGINT/SIGTERM; exit 0."""
    gateway = _gateway_url(args.gateway)
    if not _ROUTE.fullmatch(args.route):
        raise usage(f"ROUTE must be the name of a TCP route (letters, digits, '.', '_', '-'), got {args.route!r}")
    host, port = _listen_address(args.listen)
    connector = Connector(gateway, args.route, _device_context(Path(args.dir), args.ca), login_timeout=args.timeout)
    try:
        asyncio.run(_serve(connector, host, port))
    except OSError as exc:
        print(f"idwall: --listen {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(commands: argparse._SubParsersAction, default_dir: Path) -> None:  # type: ignore[type-arg]
    """Register ``idwall connect`` and its flags."""
    p = commands.add_parser("connect", help="reach a TCP route (a database, SSH) through a local port")
    p.add_argument("route", metavar="ROUTE", help="the TCP route's name in the gateway's config")
    p.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    p.add_argument("--listen", default="127.0.0.1:0", help="local HOST:PORT (default: 127.0.0.1 and a free port)")
    p.add_argument("--dir", default=str(default_dir), help=f"the device's files (default: ./{default_dir})")
    p.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else DIR/ca.pem)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for a passkey login (default: 600)")
    p.set_defaults(func=cmd_connect)
