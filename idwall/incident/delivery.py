"""Webhook delivery: announce an event to every configured receiver, retry with back-off, never block.

:meth:`Webhooks.announce` is synchronous and O(1): a kill or an incident stage calls it and goes on, so
a slow, failing or unreachable receiver can delay nothing. Each (message, receiver) pair is a
:class:`Delivery` whose state (pending, delivered, given up, dropped) the SOC reads from
:meth:`Webhooks.deliveries`. A retry is the same message (same ``webhook-id``), so receivers can drop
repeats. Pending deliveries live in memory: a gateway restart loses the ones not yet delivered (the
ledger still holds every event they announced).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..config.model import WebhookTarget
from ..logs import event
from .webhooks import WebhookMessage, new_message, retry_delay, signed_headers

__all__ = ["Delivery", "Webhooks"]

_KEEP = 1000  # deliveries remembered for the SOC view, newest last
_WORKERS_PER_RECEIVER = 2


@dataclass
class Delivery:
    """One message to one receiver, as it stands."""

    msg_id: str
    event_type: str
    url: str
    state: str = "pending"  # pending | delivered | given_up | dropped
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The delivery as the admin API shows it."""
        return {"msg_id": self.msg_id, "type": self.event_type, "url": self.url, "state": self.state,
                "attempts": self.attempts, "last_status": self.last_status, "last_error": self.last_error,
                "next_attempt_at": self.next_attempt_at}


_Item = tuple[WebhookTarget, WebhookMessage, Delivery]


class Webhooks:
    """The receivers of one gateway process; use as ``async with Webhooks(targets) as hooks:``."""

    def __init__(self, targets: Sequence[WebhookTarget], *, schedule: Callable[[int], float | None] = retry_delay,
                 timeout: float = 5.0, max_pending: int = 10_000, clock: Callable[[], float] = time.time,
                 ssl_context: Any = None) -> None:
        self._targets = tuple(targets)
        self._schedule = schedule
        self._timeout = timeout
        self._max_pending = max_pending
        self._clock = clock
        self._ssl = ssl_context
        # one queue per receiver: a receiver that hangs holds up its own messages, never another's
        self._queues: list[asyncio.Queue[_Item]] = [
            asyncio.Queue() for _ in self._targets]
        self._recent: collections.deque[Delivery] = collections.deque(maxlen=_KEEP)
        self._pending = 0
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    async def __aenter__(self) -> Webhooks:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        self._workers = [asyncio.create_task(self._work(queue), name="webhooks")
                         for queue in self._queues for _ in range(_WORKERS_PER_RECEIVER)]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for timer in self._timers:
            timer.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def announce(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Queue ``event_type`` for every receiver and return at once; a full queue drops it (and says so)."""
        if not self._targets:
            return
        message = new_message(event_type, data, now=self._clock())
        for target, queue in zip(self._targets, self._queues):
            delivery = Delivery(message.msg_id, event_type, target.url)
            self._recent.append(delivery)
            if self._pending >= self._max_pending:
                delivery.state = "dropped"
                event("webhook.dropped", msg_id=message.msg_id, type=event_type, receiver=_host(target.url),
                      pending=self._pending)
                continue
            self._pending += 1
            queue.put_nowait((target, message, delivery))

    def deliveries(self) -> list[Delivery]:
        """The most recent deliveries, oldest first."""
        return list(self._recent)

    async def _work(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            target, message, delivery = await queue.get()
            await self._attempt(target, message, delivery, queue)

    async def _attempt(self, target: WebhookTarget, message: WebhookMessage, delivery: Delivery,
                       queue: asyncio.Queue[_Item]) -> None:
        assert self._session is not None
        delivery.attempts += 1
        delivery.next_attempt_at = None
        try:
            async with self._session.post(target.url, data=message.body, headers=signed_headers(target.secret, message),
                                          ssl=self._ssl, allow_redirects=False) as answer:
                delivery.last_status, delivery.last_error = answer.status, None
                ok = 200 <= answer.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            delivery.last_status, delivery.last_error = None, type(exc).__name__
            ok = False
        if ok:
            delivery.state = "delivered"
            self._pending -= 1
            event("webhook.delivered", msg_id=message.msg_id, type=message.event_type, receiver=_host(target.url),
                  attempts=delivery.attempts)
            return
        delay = self._schedule(delivery.attempts)
        if delay is None:
            delivery.state = "given_up"
            self._pending -= 1
            event("webhook.given_up", msg_id=message.msg_id, type=message.event_type, receiver=_host(target.url),
                  attempts=delivery.attempts, status=delivery.last_status, error=delivery.last_error)
            return
        delivery.next_attempt_at = self._clock() + delay
        event("webhook.retry", msg_id=message.msg_id, type=message.event_type, receiver=_host(target.url),
              attempts=delivery.attempts, status=delivery.last_status, error=delivery.last_error, retry_in=delay)
        self._later(delay, queue, (target, message, delivery))

    def _later(self, delay: float, queue: asyncio.Queue[_Item],
               item: _Item) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            queue.put_nowait(item)
        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)


def _host(url: str) -> str:
    # Receivers' URLs may carry tokens in their path or query: logs name the host only.
    return urlsplit(url).netloc
