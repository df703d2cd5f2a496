"""A kill test bed: a real gateway in front of an upstream with a slow stream and a WebSocket echo, kill tokens,
and victims holding real TLS connections (idle keep-alive, a streaming download, a WebSocket) to watch close.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from idwall import tokens
from idwall.model import LedgerDraft

from .gateway import GatewayUnderTest, start_test_gateway
from .upstream_app import serve_app

__all__ = ["CHUNK_EVERY", "KillBed", "RawConn", "SlowUpstream", "Victim", "kill_bed", "slow_upstream", "still_served", "ws_until_closed"]

#: how often the slow upstream writes one numbered chunk of its download (seconds)
CHUNK_EVERY = 0.01
#: the number of a chunk in the download, so a test can tell which chunks reached the client
MARK = re.compile(rb"#(\d{8})#")


@dataclass
class SlowUpstream:
    url: str = ""
    #: chunk index -> time.perf_counter() when the upstream wrote it
    produced: dict[int, float] = field(default_factory=dict)
    #: time the upstream saw its streaming client (the gateway) go away
    stream_stopped: list[float] = field(default_factory=list)


def _upstream_app(up: SlowUpstream) -> web.Application:
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            for i in range(2000):
                up.produced[len(up.produced)] = time.perf_counter()
                await response.write(b"#%08d#" % (len(up.produced) - 1) + b"." * 50 + b"\n")
                await asyncio.sleep(CHUNK_EVERY)
        except (ConnectionError, asyncio.CancelledError):
            up.stream_stopped.append(time.perf_counter())
            raise
        return response

    async def other(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str("hello")
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
            return ws
        return web.json_response({"path": request.path})

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


@dataclass
class KillBed:
    gw: GatewayUnderTest
    up: SlowUpstream

    async def token(self, scopes: list[str], *, ttl: int = 3600, now: float | None = None) -> str:
        issued = tokens.new_token(name="playbook", scopes=scopes, ttl=ttl, created_by="admin",
                                  now=time.time() if now is None else now)
        r = issued.record
        await self.gw.store.create_token(r, LedgerDraft("token.create", "admin", r.id, {
            "token_id": r.id, "name": r.name, "scopes": list(r.scopes), "expires_at": int(r.expires_at)}))
        return issued.secret

    async def kill(self, secret: str, body: dict) -> tuple[int, dict, float, float]:
        """POST the kill on a fresh connection (no client certificate); (status, answer, t_sent, t_answered)."""
        connector = aiohttp.TCPConnector(ssl=self.gw.ssl())
        async with aiohttp.ClientSession(connector=connector) as client:
            async with client.get(self.gw.url + "/idwall/healthz") as warm:  # TLS handshake outside the timing
                assert warm.status == 200
            sent = time.perf_counter()
            async with client.post(self.gw.url + "/idwall/api/admin/kill", json=body,
                                   headers={"Authorization": f"Bearer {secret}"}) as resp:
                answer = await resp.json(content_type=None)
                answered = time.perf_counter()
                return resp.status, answer, sent, answered


@contextlib.asynccontextmanager
async def kill_bed(tmp_path: Path, *, extra_yaml: str = "") -> AsyncIterator[KillBed]:
    """A gateway (``idwall init`` in ``tmp_path``, ``extra_yaml`` appended to its config) in front of the slow
    upstream, while the block runs."""
    async with slow_upstream() as up:
        gut = await start_test_gateway(tmp_path, up.url, extra_yaml=extra_yaml)
        try:
            yield KillBed(gut, up)
        finally:
            await gut.running.stop(drain=0.5)


@contextlib.asynccontextmanager
async def slow_upstream() -> AsyncIterator[SlowUpstream]:
    """The upstream alone (the slow download and the WebSocket echo), for gateways a test starts itself."""
    up = SlowUpstream()
    runner, port = await serve_app(_upstream_app(up))
    up.url = f"http://127.0.0.1:{port}"
    try:
        yield up
    finally:
        await runner.cleanup()


class RawConn:
    """One TLS connection speaking HTTP/1.1 by hand, so a close is seen exactly when it happens."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gw: GatewayUnderTest, device) -> "RawConn":
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=gw.ssl(device),
                                                       server_hostname="localhost")
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, bytes]:
        """One keep-alive request; (status, body)."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n".encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return status, await asyncio.wait_for(self.reader.readexactly(length), 5)

    async def start_stream(self, path: str) -> None:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head

    async def until_closed(self, seen: list[bytes] | None = None) -> float:
        """Read until the server closes or resets the connection; the perf_counter time it did."""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                if seen is not None:
                    seen.append(data)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        return time.perf_counter()

    def close(self) -> None:
        self.writer.close()


async def ws_until_closed(ws: aiohttp.ClientWebSocketResponse) -> float:
    try:
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                break
    except (ConnectionError, aiohttp.ClientError):
        pass
    return time.perf_counter()


@dataclass
class Victim:
    """A user holding a keep-alive connection, a streaming download and a WebSocket."""

    device: object
    keepalive: RawConn
    stream: RawConn
    ws_client: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    received: list[bytes] = field(default_factory=list)
    watchers: list[asyncio.Task[float]] = field(default_factory=list)

    @classmethod
    async def connect(cls, bed: KillBed, user: str) -> "Victim":
        device = await bed.gw.device(user, groups=("victims",))
        keepalive = await RawConn.open(bed.gw, device)
        assert (await keepalive.get("/ka"))[0] == 200
        stream = await RawConn.open(bed.gw, device)
        await stream.start_stream("/slow")
        ws_client = bed.gw.session(device)
        ws = await ws_client.ws_connect(bed.gw.url.replace("https", "wss") + "/ws")
        assert (await ws.receive_str(timeout=5)) == "hello"
        victim = cls(device, keepalive, stream, ws_client, ws)
        # the download is flowing before the kill
        first = await asyncio.wait_for(stream.reader.read(65536), 5)
        victim.received.append(first)
        victim.watchers = [asyncio.create_task(keepalive.until_closed()),
                           asyncio.create_task(stream.until_closed(victim.received)),
                           asyncio.create_task(ws_until_closed(ws))]
        await asyncio.sleep(3 * CHUNK_EVERY)
        return victim

    async def closed_times(self, timeout: float = 3.0) -> list[float]:
        done, pending = await asyncio.wait(self.watchers, timeout=timeout)
        assert not pending, f"{len(pending)} of the victim's connections are still open {timeout}s after the kill"
        return [t.result() for t in self.watchers]

    def chunk_indices(self) -> list[int]:
        return [int(m) for m in MARK.findall(b"".join(self.received))]

    async def close(self) -> None:
        for task in self.watchers:
            task.cancel()
        self.keepalive.close()
        self.stream.close()
        await self.ws_client.close()


async def still_served(conn: RawConn) -> bool:
    status, _ = await conn.get("/still-here")
    return status == 200
