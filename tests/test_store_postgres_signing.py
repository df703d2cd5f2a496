"""idwall.store.postgres.signing: what only several nodes on one database can get wrong. A device's bound of live
sign requests holds when its requests arrive on every node at once; a signed assertion is collected by exactly one
poll, whichever nodes the polls reach; and a sign request, not being trust state, is never held up behind another
node's trust write.

(The sign-request rules themselves run against this backend in tests/test_store_sqlite_signing.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import asyncpg

from idwall.model import SignRequest
from idwall.store.base import AlreadyUsed, LimitReached
from idwall.store.postgres.core import WRITE_LOCK
from tests.helpers.records import NOW, sign_request
from tests.helpers.store import opened

NODES = 4


async def test_a_devices_bound_holds_when_its_requests_reach_every_node_at_once(pg_url: str) -> None:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(opened(pg_url)) for _ in range(NODES)]
        results = await asyncio.gather(*(node.create_sign_request(sign_request(f"sgn-{n}-{i}"), max_per_device=3)
                                         for i in range(3) for n, node in enumerate(nodes)), return_exceptions=True)
        assert sum(r is None for r in results) == 3
        assert all(isinstance(r, LimitReached) for r in results if r is not None)
        stored = await nodes[0].read(lambda c: c.fetchval("SELECT COUNT(*) FROM sign_requests"))
        assert stored == 3
        # the bound is per device: another device's request still goes in at once
        await nodes[1].create_sign_request(sign_request("sgn-other", device_id="dev-2"), max_per_device=3)


async def test_a_signed_assertion_is_collected_by_one_poll_on_any_node(pg_url: str) -> None:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(opened(pg_url)) for _ in range(NODES)]
        request = sign_request(state="signed", credential='{"id":"assertion"}')
        await nodes[0].create_sign_request(request, max_per_device=8)
        results = await asyncio.gather(*(node.move_sign_request(request.id, expect=("signed",), state="collected",
                                                                credential=None, detail=None, now=NOW)
                                         for node in nodes * 2), return_exceptions=True)
        assert sum(isinstance(r, SignRequest) for r in results) == 1
        assert all(isinstance(r, AlreadyUsed) and "already collected" in str(r)
                   for r in results if not isinstance(r, SignRequest))
        kept = await nodes[-1].get_sign_request(request.id)
        assert kept is not None and (kept.state, kept.credential) == ("collected", None)


async def test_a_sign_request_is_not_held_up_behind_another_nodes_trust_write(pg_url: str) -> None:
    async with opened(pg_url) as store:
        writer = await asyncpg.connect(pg_url)  # another node in the middle of a long trust write
        try:
            tx = writer.transaction()
            await tx.start()
            await writer.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            request = sign_request()
            await asyncio.wait_for(store.create_sign_request(request, max_per_device=8), 10)
            moved = await asyncio.wait_for(store.move_sign_request(request.id, expect=("waiting",), state="opened",
                                                                   credential=None, detail=None, now=NOW), 10)
            assert moved.state == "opened"
            await tx.rollback()
        finally:
            await writer.close()
