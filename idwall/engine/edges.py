"""What a client connection does off the steady request path: its end, flow control, idle compaction,
its first resolution, refusals and failures, timeouts, and the switch to a spliced WebSocket.

:class:`ClientEdges` is a base of :class:`idwall.engine.io.ClientProtocol`, which holds the steady path (a
request on a resolved connection, parsed, decided, forwarded, answered): keeping these here keeps that path
short to read, and it never calls into this module.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlsplit

from .. import access, httpnorm
from ..assertion import canonical_htu
from ..config import Route
from ..errors import IDWallError, Unavailable, UpstreamTimeout
from ..logs import event
from . import answers
from .h1 import Refused, RequestHead

# what a client connection is waiting for, which decides what its deadline means
IDLE, HEAD, BODY, UPSTREAM, SEND, NONE = range(6)
#: methods a request may be sent again with, on a pooled connection the upstream had closed unseen
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})

log = logging.getLogger("idwall.engine")


class ClientEdges(ABC):
    """The off-path half of a client connection (see the module docstring); the attributes are
    :class:`~idwall.engine.io.ClientProtocol`'s."""

    __slots__ = ()
    engine: Any
    node: Any
    transport: Any
    conn: Any
    h1: Any
    pending: list[object]
    ex: Any
    blocked: bool
    skipping: bool
    splice: Any
    deadline: float
    waiting: int
    idle_since: float
    pauses: set[str] | None
    anonymous: str | None
    closed: bool
    _host: bytes | None
    _hostname: str | None
    _authority: access.Verdict
    _htu_base: bytes
    _forwarded: bytes
    kept: Any

    # what the steady path provides (ClientProtocol)

    @abstractmethod
    def _wait(self, what: int, seconds: float) -> None:
        """Set the connection's deadline for ``what`` it now waits for."""

    @abstractmethod
    def _pump(self) -> None:
        """Go on with the events queued from the client."""

    @abstractmethod
    def _decide(self, head: RequestHead, route: Route, path: str, query: bytes) -> None:
        """Decide a request on a resolved connection, then forward or answer it."""

    @abstractmethod
    def _connect(self, ex: Any) -> Any:
        """Open an upstream connection for ``ex`` (a coroutine)."""

    @abstractmethod
    def _count(self, ex: Any) -> None:
        """Count an answered exchange."""

    @abstractmethod
    def upstream_events(self, upstream: Any, events: list[object]) -> None:
        """Relay what the upstream's parser made of its bytes."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.h1 is not None:
            self.h1.close()
            self.h1 = None
        self._return_kept()
        engine = self.engine
        engine.clients.discard(self)
        if self.anonymous is not None:
            left = engine.anonymous.get(self.anonymous, 1) - 1
            if left > 0:
                engine.anonymous[self.anonymous] = left
            else:
                engine.anonymous.pop(self.anonymous, None)
        if self.conn is None:
            return
        self.node.registry.remove(self.conn)
        ex, self.ex = self.ex, None
        if ex is not None:
            if ex.task is not None:
                ex.task.cancel()
            if ex.upstream is not None:
                ex.upstream.client = None
                ex.upstream.transport.abort()  # never pooled: it may be mid-answer
        if self.splice is not None:
            self.splice.splice_to = None
            self.splice.transport.abort()
            self.splice = None

    def eof_received(self) -> bool:
        if self.splice is None and self.ex is None and not self.pending:
            self.transport.close()
        return False  # a half-closed client gets its answer, then the connection closes

    def pause_writing(self) -> None:
        if self.splice is not None:
            self.splice.transport.pause_reading()
        elif self.ex is not None and self.ex.upstream is not None:
            self.ex.upstream.transport.pause_reading()
            self._wait(SEND, self.engine.config.limits.body_timeout)

    def resume_writing(self) -> None:
        if self.splice is not None:
            self.splice.transport.resume_reading()
        elif self.ex is not None and self.ex.upstream is not None:
            self.ex.upstream.transport.resume_reading()
            self._wait(UPSTREAM, self.ex.dest.timeout)

    def pause_reading(self, reason: str) -> None:
        if not self.pauses and not self.closed:
            self.transport.pause_reading()
        if self.pauses is None:
            self.pauses = set()
        self.pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if self.pauses is None:
            return
        self.pauses.discard(reason)
        if not self.pauses and not self.closed:
            self.transport.resume_reading()

    def compact(self) -> None:
        """Drop what an idle connection can rebuild on its next request: its parser (about 1 KiB) and its
        prepared assertion claims."""
        if self.waiting == IDLE and not self.pending and self.ex is None and self.h1 is not None:
            self.h1.close()
            self.h1 = None
            self.conn.claims = {}
            self._return_kept()

    def _return_kept(self) -> None:
        """Give the upstream connection kept for this connection's next request back to the pool."""
        kept, self.kept = self.kept, None
        if kept is not None and not kept.transport.is_closing():
            self.engine.pool.release(kept, self.engine.loop.time())

    def _address(self, host: bytes | None) -> None:
        """Work out, once per host a connection names, what its requests to that host share: the authority
        verdict (421 or not), the start of their ``htu``, and the forwarding header fields."""
        node = self.node
        self._host = host
        text = host.decode("latin-1") if host is not None else urlsplit(node.config.public_url).netloc
        try:
            self._htu_base = canonical_htu("https", text, "/").encode()[:-1]
            self._hostname = httpnorm.host_without_port(text) if host is not None else None
        except IDWallError as exc:
            self._authority = access.Verdict(access.MISDIRECTED, exc)
            return
        self._authority = access.authority_verdict(self._hostname, sni=self.conn.sni, cfg=node.access)
        self._forwarded = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: %s\r\n" % (
            self.conn.remote.encode(), host or b"")

    async def _resolve_then(self, head: RequestHead, route: Route, path: str, query: bytes) -> None:
        try:
            await self.node.resolve(self.conn)
        except ConnectionResetError:
            self.transport.abort()
            return
        except IDWallError as exc:
            self.blocked = False
            self._answer_error(exc, head, close=True)
            return
        except Exception as exc:  # the store failed in a way it does not name: fail closed, loudly
            log.exception("resolving a connection failed")
            self.blocked = False
            self._answer_error(Unavailable("the gateway cannot check this device right now",
                                           log_detail=repr(exc)), head, close=True)
            return
        self.blocked = False
        if self.closed:
            return
        self._decide(head, route, path, query)
        self._pump()


    def _splice(self, ex: Any, upstream: Any, rest: bytes) -> None:
        """After a validated 101: bytes both ways until either side closes (or a kill cuts the client)."""
        self.ex = None
        self._count(ex)
        upstream.client = None
        upstream.splice_to = self
        self.splice = upstream
        self.pending.clear()
        self._wait(NONE, 0)
        if rest:
            self.conn.bytes_out += len(rest)
            self.transport.write(rest)
        if ex.ws_rest:
            upstream.transport.write(ex.ws_rest)

    def upstream_lost(self, upstream: Any) -> None:
        if self.splice is upstream:
            self.splice = None
            self.transport.close()
            return
        ex = self.ex
        if ex is None or ex.upstream is not upstream:
            return
        if (not upstream.got_bytes and ex.reused and not ex.retried and not ex.head.has_body
                and ex.head.method in IDEMPOTENT):
            # a pooled connection the upstream had already closed: the request never reached it, send it again
            ex.retried, ex.reused, ex.upstream = True, False, None
            ex.out, ex.queued = [ex.request_bytes], len(ex.request_bytes)
            ex.task = asyncio.ensure_future(self._connect(ex))
            return
        events = upstream.parser().eof()
        self.upstream_events(upstream, events or [Refused(502, "the upstream closed the connection")])

    def _fail(self, ex: Any, error: IDWallError, *, upstream_fault: bool = False) -> None:
        """The exchange cannot go on: answer ``error`` if nothing was sent yet, else cut the connection."""
        if ex.task is not None:
            ex.task.cancel()
            ex.task = None
        if ex.upstream is not None:
            ex.upstream.client = None
            ex.upstream.transport.abort()
            ex.upstream = None
        resolved = self.conn.resolved
        event("upstream.failed" if upstream_fault or error.status >= 500 else "request.refused",
              level=logging.WARNING, status=error.status, route=ex.route.name if ex.route else "idwall",
              detail=error.log_detail or error.detail, user=resolved.user.id if resolved else None,
              device=resolved.device.id if resolved else None, session=self.conn.session_id)
        if ex.response_started:
            self.ex = None
            self._count(ex)
            self.transport.abort()
            return
        ex.status = error.status
        self.ex = None
        self._count(ex)
        self._answer(answers.problem(error, close=True, head=ex.head.method == b"HEAD"), close=True,
                     status=error.status, counted=True)

    def _answer(self, data: bytes, *, close: bool, status: int, route: Route | None = None,
                counted: bool = False) -> None:
        if not counted:
            self.engine.count(route.name if route is not None else None, status)
        self.transport.write(data)
        if close or self.engine.draining:
            self.closed = True
            self.pending.clear()
            self.transport.close()
            return
        self.skipping = True  # the request's own body (none) and end are still queued
        self._wait(IDLE, self.engine.config.limits.keepalive_timeout)

    def _answer_error(self, error: IDWallError, head: RequestHead, *, close: bool = False,
                      route: Route | None = None) -> None:
        close = close or head.has_body or not head.keep_alive
        self._answer(answers.problem(error, close=close, head=head.method == b"HEAD"), close=close,
                     status=error.status, route=route)

    def _answer_verdict(self, head: RequestHead, verdict: access.Verdict, *, route: Route | None = None) -> None:
        assert verdict.error is not None
        if verdict.kind == access.DENY:
            resolved = self.conn.resolved
            event("policy.deny", user=resolved.user.id if resolved else None,
                  device=resolved.device.id if resolved else None, session=self.conn.session_id,
                  route=route.name if route else None)
        if verdict.location is None:
            self._answer_error(verdict.error, head, close=verdict.kind == access.MISDIRECTED, route=route)
            return
        close = head.has_body or not head.keep_alive
        if verdict.kind == access.LOGIN and self.conn.resolved is not None:
            # the login page then says the session ended (expiry, logout, kill) rather than asking afresh
            self.blocked = True
            asyncio.ensure_future(self._redirect_to_login(verdict.location, close, route))
            return
        self._answer(answers.redirect(verdict.location, close=close), close=close, status=303, route=route)

    async def _redirect_to_login(self, location: str, close: bool, route: Route | None) -> None:
        resolved, conn = self.conn.resolved, self.conn
        try:
            if resolved is not None and conn.cert_sha256 is not None and await self.node.store.had_session(
                    resolved.device.id, conn.cert_sha256):
                location += "&reason=expired"
        except IDWallError:
            pass  # the plain login page is still right
        self.blocked = False
        if not self.closed:
            self._answer(answers.redirect(location, close=close), close=close, status=303, route=route)
            self._pump()

    def timed_out(self) -> None:
        """The deadline passed: answer what can still be answered, then close."""
        waiting, ex = self.waiting, self.ex
        self.deadline = 0.0
        if waiting in (IDLE, HEAD):
            if waiting == HEAD:
                self._answer(answers.problem(answers.status_error(408, "the request head took too long"),
                                             close=True), close=True, status=408)
            else:
                self.closed = True
                self.transport.close()
        elif ex is not None and waiting == BODY:
            self._fail(ex, answers.status_error(408, "the request body stalled (limits.body_timeout)"))
        elif ex is not None and waiting == UPSTREAM:
            self._fail(ex, UpstreamTimeout(f"the upstream did not answer within {ex.dest.timeout:g}s"),
                       upstream_fault=True)
        else:
            self.transport.abort()
