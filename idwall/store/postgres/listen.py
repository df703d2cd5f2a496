"""Hearing the trust events of every node: PostgreSQL ``LISTEN`` on a connection of its own, and a replay on
every reconnect.

Every event is inserted with ``pg_notify`` in its own transaction (:meth:`PostgresCore._event`), so the
notification goes out at commit, and never for a change that rolled back. A notification carries nothing a
node trusts: it only says "read the events table now". The node reads everything after the last event id it
applied, so a notification that is lost (the server delivers none to a listener that is disconnected) costs
nothing as long as the node reads again once it can hear again, which is what this listener makes it do:
it ``LISTEN``s first and only then calls ``on_event``, so every event is either committed before that read or
notified after it.

A connection that dies quietly (a partition, no RST) is found by a ``SELECT 1`` every ``check_every``
seconds; :attr:`EventListener.connected` and :attr:`EventListener.heard_at` say whether and when the node last
heard the database, for health and for refusing to serve on stale state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import asyncpg

from ...logs import event
from .core import CONNECT_TIMEOUT, DB_ERRORS, EVENTS_CHANNEL, log_detail

CHECK_EVERY = 1.0  # seconds between liveness checks of the listening connection
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # reconnect back-off (seconds), doubling


class EventListener:
    """A dedicated connection that ``LISTEN``s on :data:`~.core.EVENTS_CHANNEL` and calls ``on_event`` for each notification,
    and once after every (re)connect so the node replays what it may have missed."""

    def __init__(self, url: str, *, on_event: Callable[[], None], secrets: frozenset[str] = frozenset(),
                 check_every: float = CHECK_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._secrets = secrets
        self._on_event = on_event
        self._check_every = check_every
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        #: whether the listening connection is up right now
        self.connected = False
        #: when (``clock``) the database was last heard: a notification, a liveness check, a connect
        self.heard_at: float | None = None
        #: how many times the connection came up (the first time included)
        self.connects = 0

    def start(self) -> None:
        """Start listening in the background (connecting, and reconnecting for as long as it runs)."""
        self._task = asyncio.create_task(self._run(), name="idwall-pg-listen")

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the connection is up (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _notified(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.heard_at = self._clock()
        self._on_event()

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
            except DB_ERRORS as exc:
                event("store.listen_failed", level=logging.WARNING, error=log_detail(exc, self._secrets),
                      retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            try:
                await self._listen(conn)
            except DB_ERRORS as exc:
                event("store.listen_lost", level=logging.WARNING, error=log_detail(exc, self._secrets))
            finally:
                self.connected = False
                self._up.clear()
                conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(EVENTS_CHANNEL, self._notified)
        self.connected, self.heard_at = True, self._clock()
        self.connects += 1
        self._up.set()
        event("store.listening", channel=EVENTS_CHANNEL, connects=self.connects)
        # LISTEN is in place: whatever committed while we could not hear is read now, the rest is notified
        self._on_event()
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._check_every)
            except asyncio.TimeoutError:
                await conn.fetchval("SELECT 1", timeout=self._check_every)
                self.heard_at = self._clock()
        event("store.listen_lost", level=logging.WARNING, error="postgresql: the listening connection closed")
