"""The load generator: one process holding keep-alive connections (uvloop, raw asyncio protocols, httptools).

The parent starts several of these (``multiprocessing`` spawn) and talks to each over a pipe. Every
connection presents its own device certificate and has at most one request in flight (no pipelining).
Each connection's first request is a warm-up: its response must be a 200 carrying the body the
upstream serves for that path, which proves the request went all the way through.

Modes:

``closed``  every connection sends its next request as soon as the previous response is complete, as
            fast as the server answers (saturation throughput).
``open``    requests arrive at a fixed mean rate (Poisson, seeded) whatever the server does, and go out on
            any connection with nothing in flight; one that finds none waits for the next free
            connection, and its latency counts from when it was due, so a stalled server is charged for
            the wait (no "coordinated omission").
``idle``    every connection makes its warm-up request and then sits idle until the parent says close.

Latency is measured from the moment a request is due (``closed``: when it is written) to the moment its
whole response has been read; requests due inside the parent's window are the ones counted.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import random
import ssl
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass

import httptools

#: the shortest sleep between two looks at the open-loop arrival schedule (seconds)
TICK = 0.001


@dataclass(frozen=True)
class ClientSpec:
    """What one client process connects to, with which certificates, and what it sends."""

    port: int
    tls: bool
    ca_pem: str
    #: one PEM file (device key and certificate) per connection; for plain HTTP only their number counts
    pems: tuple[str, ...]
    request: bytes
    expect_body: bytes
    mode: str
    #: ``open``: this process's mean request rate (requests/s)
    rate: float = 0.0
    seed: int = 0
    #: handshakes in progress at once while connecting
    parallel: int = 32
    #: seconds for every connection to be open and warm
    connect_timeout: float = 30.0


class BenchConnection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse the response incrementally, tell the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sent_at = 0.0
        self.in_flight = False
        self.messages = 0  # responses begun since the last request: more than one is an error
        self.complete = False
        self.body: bytearray | None = bytearray()  # kept for the warm-up response only
        self.closing = False
        self.warm: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.send(time.monotonic())

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            self.fail(f"{len(data)} bytes from the server with no request in flight")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"unparsable response: {exc}")
            return
        if self.messages > 1:
            self.fail("more than one response to one request")
        elif self.complete:
            self.in_flight = False
            body, self.body = self.body, None
            self.client.completed(self, self.parser.get_status_code(), body, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.client.drop(self, f"connection lost: {exc!r}")

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() != 200 and self.body is None:
            self.body = bytearray()  # for the error message

    def on_body(self, body: bytes) -> None:
        if self.body is not None:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    # -- used by the client ----------------------------------------------------------------------

    def send(self, due: float) -> None:
        """Write the request; its latency counts from ``due``."""
        assert self.transport is not None
        self.sent_at, self.in_flight, self.messages, self.complete = due, True, 0, False
        self.transport.write(self.client.spec.request)

    def fail(self, reason: str) -> None:
        if not self.closing:
            self.close()
            self.client.drop(self, reason)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """The connections of one process, the measured window, and what was recorded in it."""

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.window_start = self.window_end = float("inf")
        self.latencies = array("d")
        self.errors: Counter[str] = Counter()
        self.conns: list[BenchConnection] = []
        self.free: deque[BenchConnection] = deque()  # open: nothing in flight
        self.waiting: deque[float] = deque()  # open: due times of requests that found no free connection
        self.queued = 0  # open: requests due in the window that had to wait for a connection
        self.finished = asyncio.Event()  # closed/open: every connection has stopped after the window
        self.stopped = 0  # closed: connections closed after their last response

    def completed(self, conn: BenchConnection, status: int, body: bytearray | None, now: float) -> None:
        """A whole response arrived on ``conn``: record it, then send again or go idle, by mode."""
        if not conn.warm.done():
            if status != 200 or body != self.spec.expect_body:
                conn.fail(f"warm-up: expected 200 with the upstream's {len(self.spec.expect_body)}-byte body, "
                          f"got {status} with {len(body or b'')} bytes starting {bytes((body or b'')[:120])!r}")
                return
            conn.warm.set_result(None)
            if self.spec.mode != "closed":
                self.free.append(conn)
                return
        elif status != 200:
            self.errors[f"HTTP {status}: {bytes((body or b'')[:120])!r}"] += 1
        if self.window_start <= conn.sent_at < self.window_end:
            self.latencies.append(now - conn.sent_at)
        if self.spec.mode == "closed":
            if now < self.window_end:
                conn.send(now)
            else:
                conn.close()
                self.stopped += 1
                self.check_finished()
        elif self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.free.append(conn)
            self.check_finished()

    def drop(self, conn: BenchConnection, reason: str) -> None:
        """``conn`` failed or was closed by the server: count it, and stop waiting for it."""
        if not conn.warm.done():
            conn.warm.set_exception(RuntimeError(reason))
            return
        self.errors[reason] += 1
        if self.spec.mode == "idle":  # the parent counts what is still open
            return
        if conn in self.free:
            self.free.remove(conn)
        self.conns.remove(conn)
        self.check_finished()

    def check_finished(self) -> None:
        """Set ``finished`` once no connection has anything left to do after the window."""
        if self.spec.mode == "closed":
            done = self.stopped >= len(self.conns)
        else:  # a free connection would have taken any waiting request
            done = time.monotonic() >= self.window_end and len(self.free) == len(self.conns)
        if done:
            self.finished.set()

    def dispatch(self, due: float) -> None:
        """``open``: a request is due now; send it on a free connection or queue it for the next one."""
        if self.window_start <= due < self.window_end and not self.free:
            self.queued += 1
        if self.free:
            self.free.popleft().send(due)
        else:
            self.waiting.append(due)

    async def arrivals(self) -> None:
        """``open``: Poisson arrivals at ``spec.rate`` until the window ends.

        The client wakes at most once a millisecond (uvloop's timers count in milliseconds, and a
        shorter sleep would spin, taking CPU from the servers on a shared box); a request is due when
        the client notices it, so the client's own lateness is not counted as the server's latency,
        and the arrivals of one tick go out together.
        """
        rng = random.Random(self.spec.seed)
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= self.window_end:
                break
            while next_at <= now:
                self.dispatch(now)
                next_at += rng.expovariate(self.spec.rate)
            await asyncio.sleep(max(TICK, next_at - time.monotonic()))
        self.check_finished()

    async def connect(self) -> None:
        """Open every connection (``spec.parallel`` handshakes at a time) and wait until each is warm."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.spec.parallel)

        async def one(pem: str) -> None:
            async with gate:
                ctx: ssl.SSLContext | None = None
                if self.spec.tls:  # one context per connection: each presents its own certificate
                    ctx = ssl.create_default_context(cafile=self.spec.ca_pem)
                    ctx.load_cert_chain(pem)
                _, conn = await loop.create_connection(
                    lambda: BenchConnection(self), "127.0.0.1", self.spec.port, ssl=ctx,
                    server_hostname="localhost" if ctx else None)
                self.conns.append(conn)
                await conn.warm

        await asyncio.wait_for(asyncio.gather(*(one(pem) for pem in self.spec.pems)), self.spec.connect_timeout)

    def report(self) -> dict[str, object]:
        return {"latencies": self.latencies.tobytes(), "errors": dict(self.errors), "queued": self.queued}


async def receive(pipe: multiprocessing.connection.Connection, timeout: float) -> object:
    """The parent's next message, waited for off the event loop."""
    if not await asyncio.get_running_loop().run_in_executor(None, pipe.poll, timeout):
        raise RuntimeError(f"the parent sent nothing within {timeout:g} s")
    return pipe.recv()


async def client_async(spec: ClientSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Connect and warm up, report ready, then run the mode and report what was recorded."""
    client = Client(spec)
    started = time.monotonic()
    await client.connect()
    pipe.send(("ready", {"connect_s": time.monotonic() - started}))
    if spec.mode == "idle":
        while await receive(pipe, 900) == "count":  # anything else means close
            pipe.send(("count", sum(1 for conn in client.conns if not conn.closing)))
    else:
        client.window_start, client.window_end = await receive(pipe, 120)  # type: ignore[misc]
        if spec.mode == "open":
            await client.arrivals()
        await asyncio.wait_for(client.finished.wait(), max(0.0, client.window_end - time.monotonic()) + 30)
    for conn in client.conns:
        conn.close()
    pipe.send(("done", client.report()))


def client_main(spec: ClientSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of a client process."""
    try:
        import uvloop
        uvloop.run(client_async(spec, pipe))
    except BaseException as exc:  # the parent must hear about it rather than wait for a timeout
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
