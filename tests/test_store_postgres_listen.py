"""idwall.store.postgres.listen: every node hears every trust event. An event is notified at its commit (and
never when its transaction rolls back) to every listening store, and a listener that lost the database calls
for a replay as soon as it hears it again, so a node that reads the events after its last applied id misses
none, not even those committed while it was cut off; ``connected`` says whether it can hear right now.

Tested on the PostgreSQL server at 127.0.0.1:5432 with two stores on one schema (two nodes); the outage is a
TCP relay that is cut and restored.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from idwall.store import PostgresStore
from idwall.store.postgres import EventListener
from tests.helpers.records import NOW
from tests.helpers.store import Relay, draft, enroll, login, opened



class Follower:
    """What a node does with its listener: on each wake, read the events after the last one it applied."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.cursor = 0
        self.seen: list[str] = []
        self.wakes = 0
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._follow())

    def on_event(self) -> None:
        self.wakes += 1
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for ev in await self.store.events_after(self.cursor):
                self.cursor = ev.id
                self.seen.append(ev.payload.get("session") or ev.kind)

    async def until(self, condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), timeout)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_an_event_committed_on_one_node_wakes_the_other(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        follower = Follower(other)
        async with other.listening(follower.on_event) as listener:
            await listener.wait_connected(15)
            await follower.until(lambda: follower.wakes == 1)  # the replay after connecting: nothing yet
            victim = await login(one, await enroll(one, "alice"))
            await one.end_session(victim.id, now=NOW, reason="logout", draft=None)
            await follower.until(lambda: follower.seen == [victim.id, victim.id])  # session.login, session.end
            assert listener.connected and listener.connects == 1
        await follower.stop()


async def test_a_write_that_rolls_back_notifies_nobody(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        follower = Follower(other)
        async with other.listening(follower.on_event) as listener:
            await listener.wait_connected(15)
            await follower.until(lambda: follower.wakes == 1)

            async def half(conn: asyncpg.Connection) -> None:
                await one._event(conn, "user.changed", {"user": "alice"}, NOW)
                raise ValueError("the second half failed")

            with pytest.raises(ValueError):
                await one.write(half)
            await one.set_admin((await enroll(one, "bob")).user.id, True, draft("admin.grant", "bob"))
            await follower.until(lambda: follower.seen == ["user.changed"])
            await asyncio.sleep(0.2)
            assert follower.wakes == 2  # the replay, then the one commit: the rolled-back event was never sent
        await follower.stop()


async def test_events_committed_while_a_node_was_cut_off_are_replayed_when_it_hears_again(pg_url: str) -> None:
    relay = Relay()
    await relay.start()
    async with opened(pg_url) as one, opened(pg_url) as other:
        follower = Follower(other)
        listener = EventListener(relay.url(pg_url), on_event=follower.on_event)  # only the listener goes via the relay
        listener.start()
        try:
            await listener.wait_connected(15)
            first = await login(one, await enroll(one, "alice"))
            await follower.until(lambda: follower.seen == [first.id])
            await relay.cut()
            await follower.until(lambda: not listener.connected)
            # committed while the node cannot hear: the server delivers no notification for these to anyone
            missed = [await login(one, await enroll(one, f"user-{i}")) for i in range(3)]
            await relay.start()
            await listener.wait_connected(15)
            await follower.until(lambda: follower.seen == [first.id, *(m.id for m in missed)])
            assert listener.connects == 2
        finally:
            await listener.close()
        await follower.stop()


async def test_a_listener_that_cannot_reach_the_database_keeps_trying_and_reports_it(pg_url: str) -> None:
    relay = Relay()
    await relay.start()
    await relay.cut()  # the database is unreachable when the node starts
    heard: list[int] = []
    listener = EventListener(relay.url(pg_url), on_event=lambda: heard.append(1))
    listener.start()
    try:
        await asyncio.sleep(0.3)
        assert (listener.connected, listener.heard_at, heard) == (False, None, [])
        await relay.start()
        await listener.wait_connected(15)
        assert listener.connected and listener.heard_at is not None and heard == [1]  # and it asked for a replay
    finally:
        await listener.close()
