"""idwall.incident.delivery: announcements reach real receivers signed, are retried, and never block.

Every receiver here is a real HTTP server on 127.0.0.1 that verifies each request with the Standard
Webhooks reference verifier, as a SOAR platform would.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from idwall.config.model import WebhookTarget
from idwall.incident.delivery import Webhooks
from tests.helpers.upstream_app import serve_app

SECRET = os.urandom(32)


def fast(attempt: int) -> float | None:
    """A retry schedule for tests: three quick retries, then give up."""
    return 0.01 if attempt <= 3 else None


@dataclass
class Receiver:
    url: str = ""
    #: statuses to answer, in order; after the list, 200
    statuses: list[int] = field(default_factory=list)
    hang: asyncio.Event | None = None
    verified: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        state.ids.append(request.headers["webhook-id"])
        state.arrived.set()
        if state.hang is not None:
            await state.hang.wait()
        status = state.statuses.pop(0) if state.statuses else 200
        if status == 200:
            state.verified.append(Webhook(SECRET).verify(body, dict(request.headers)))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, port = await serve_app(app)
    state.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        await runner.cleanup()


async def _settle(hooks: Webhooks, count: int = 1) -> None:
    for _ in range(500):
        if sum(d.state != "pending" for d in hooks.deliveries()) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"deliveries did not settle: {[d.as_json() for d in hooks.deliveries()]}")


async def test_an_announcement_arrives_signed_and_is_marked_delivered(receiver: Receiver) -> None:
    async with Webhooks([WebhookTarget(receiver.url, SECRET)], schedule=fast) as hooks:
        hooks.announce("kill", {"scope": "user", "target": "alice", "connections_closed": 3})
        await _settle(hooks)
        [delivery] = hooks.deliveries()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert receiver.verified == [{"type": "kill", "timestamp": receiver.verified[0]["timestamp"],
                                  "data": {"scope": "user", "target": "alice", "connections_closed": 3}}]


async def test_a_failing_receiver_gets_the_same_message_again_until_it_takes_it(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    async with Webhooks([WebhookTarget(receiver.url, SECRET)], schedule=fast) as hooks:
        hooks.announce("incident.stage", {"incident_id": "inc_1", "stage": 1})
        await _settle(hooks)
        [delivery] = hooks.deliveries()
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert len(set(receiver.ids)) == 1 and len(receiver.ids) == 3  # one webhook-id: receivers can drop repeats
    assert len(receiver.verified) == 1


async def test_a_receiver_that_never_takes_it_is_given_up_and_says_why(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    async with Webhooks([WebhookTarget(receiver.url, SECRET)], schedule=fast) as hooks:
        hooks.announce("kill", {"scope": "all"})
        await _settle(hooks)
        [delivery] = hooks.deliveries()
    assert delivery.as_json() == {"msg_id": delivery.msg_id, "type": "kill", "url": receiver.url, "state": "given_up",
                                  "attempts": 4, "last_status": 500, "last_error": None, "next_attempt_at": None}


async def test_an_unreachable_receiver_is_retried_and_given_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    async with Webhooks([WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET)], schedule=fast) as hooks:
        hooks.announce("kill", {"scope": "all"})
        await _settle(hooks)
        [delivery] = hooks.deliveries()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("given_up", 4, None)
    assert delivery.last_error == "ClientConnectorError"


async def test_a_hanging_receiver_blocks_neither_the_caller_nor_the_other_receivers(receiver: Receiver) -> None:
    hanging = Receiver()
    hanging.hang = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        hanging.arrived.set()
        await hanging.hang.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", stall)
    runner, port = await serve_app(app)
    try:
        targets = [WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET), WebhookTarget(receiver.url, SECRET)]
        async with Webhooks(targets, schedule=fast, timeout=30) as hooks:
            for n in range(5):
                assert hooks.announce("kill", {"n": n}) is None  # synchronous: nothing to await
            await asyncio.wait_for(hanging.arrived.wait(), 5)
            for _ in range(500):
                if len(receiver.verified) == 5:
                    break
                await asyncio.sleep(0.01)
            assert sorted(event["data"]["n"] for event in receiver.verified) == [0, 1, 2, 3, 4]
            stuck = [d for d in hooks.deliveries() if d.url != receiver.url]
            assert stuck and all(d.state == "pending" for d in stuck)
        # leaving the block cancels the stuck attempts instead of waiting 30 s for them
    finally:
        hanging.hang.set()
        await runner.cleanup()


async def test_a_full_queue_drops_and_records_it_instead_of_growing(receiver: Receiver) -> None:
    receiver.hang = asyncio.Event()
    async with Webhooks([WebhookTarget(receiver.url, SECRET)], schedule=fast, max_pending=2, timeout=30) as hooks:
        for n in range(4):
            hooks.announce("kill", {"n": n})
        states = [d.state for d in hooks.deliveries()]
    assert states == ["pending", "pending", "dropped", "dropped"]


async def test_no_receivers_means_nothing_is_kept() -> None:
    async with Webhooks([]) as hooks:
        hooks.announce("kill", {"scope": "all"})
        assert hooks.deliveries() == []
