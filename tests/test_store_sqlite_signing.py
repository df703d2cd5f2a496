"""Sign requests in a real SQLite file and on a fresh PostgreSQL schema (the same tests on both backends,
helpers/store.py): the per-device bound, reads, and the compare-and-set moves that make a link single use (two
moves from the same state: only one wins)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idwall.store.base import AlreadyUsed, Expired, LimitReached, Missing
from idwall.store.sqlite.signing import KEEP_AFTER_EXPIRY
from tests.helpers.clock import Clock
from tests.helpers.records import NOW, sign_request
from tests.helpers.store import BACKENDS, opened, place


@pytest.fixture(params=BACKENDS)
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where this test's store lives: a SQLite file, or a PostgreSQL schema (a second store there is a second
    process's, or node's, connection)."""
    return await place(request, tmp_path)


async def test_a_request_is_stored_and_read_back_as_it_was(where: Path | str) -> None:
    async with opened(where) as store:
        request = sign_request()
        await store.create_sign_request(request, max_per_device=8)
        assert await store.get_sign_request(request.id) == request
        assert await store.get_sign_request("sgn-other") is None


async def test_moves_are_compare_and_set(where: Path | str) -> None:
    async with opened(where) as store:
        request = sign_request()
        await store.create_sign_request(request, max_per_device=8)
        moved = await store.move_sign_request(request.id, expect=("waiting",), state="opened", credential=None,
                                              detail=None, now=NOW)
        assert moved.state == "opened"
        with pytest.raises(AlreadyUsed, match="already opened"):
            await store.move_sign_request(request.id, expect=("waiting",), state="opened", credential=None,
                                          detail=None, now=NOW)
        signed = await store.move_sign_request(request.id, expect=("opened",), state="signed", credential='{"id":1}',
                                               detail=None, now=NOW)
        assert signed.credential == '{"id":1}'
        collected = await store.move_sign_request(request.id, expect=("signed",), state="collected",
                                                  credential=None, detail=None, now=NOW)
        assert collected.credential is None and (await store.get_sign_request(request.id)) == collected


async def test_of_two_concurrent_opens_one_wins(where: Path | str) -> None:
    async with opened(where) as first, opened(where) as second:
        request = sign_request()
        await first.create_sign_request(request, max_per_device=8)
        results = await asyncio.gather(*(store.move_sign_request(request.id, expect=("waiting",), state="opened",
                                                                 credential=None, detail=None, now=NOW)
                                         for store in (first, second)), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["AlreadyUsed", "SignRequest"]


async def test_a_move_after_expiry_or_of_an_unknown_request_is_refused(where: Path | str) -> None:
    async with opened(where) as store:
        request = sign_request(expires_at=NOW + 10)
        await store.create_sign_request(request, max_per_device=8)
        with pytest.raises(Expired):
            await store.move_sign_request(request.id, expect=("waiting",), state="opened", credential=None,
                                          detail=None, now=NOW + 10)
        with pytest.raises(Missing):
            await store.move_sign_request("sgn-other", expect=("waiting",), state="opened", credential=None,
                                          detail=None, now=NOW)
        assert (await store.get_sign_request(request.id)).state == "waiting"  # type: ignore[union-attr]


async def test_a_device_has_at_most_max_live_requests(where: Path | str) -> None:
    async with opened(where) as store:
        for n in range(3):
            await store.create_sign_request(sign_request(f"sgn-{n}"), max_per_device=3)
        with pytest.raises(LimitReached, match="3 sign requests"):
            await store.create_sign_request(sign_request("sgn-3"), max_per_device=3)
        # another device is not held back, and an ended request frees its place
        await store.create_sign_request(sign_request("sgn-4", device_id="dev-2"), max_per_device=3)
        await store.move_sign_request("sgn-0", expect=("waiting",), state="declined", credential=None, detail="no",
                                      now=NOW)
        await store.create_sign_request(sign_request("sgn-5"), max_per_device=3)


async def test_expired_requests_are_forgotten_a_while_after_their_expiry(where: Path | str) -> None:
    clock = Clock()
    async with opened(where, clock=clock) as store:
        await store.create_sign_request(sign_request("sgn-old", expires_at=NOW + 10), max_per_device=8)
        clock.now = NOW + 10 + KEEP_AFTER_EXPIRY - 1
        await store.create_sign_request(sign_request("sgn-new", expires_at=clock.now + 300), max_per_device=8)
        assert await store.get_sign_request("sgn-old") is not None  # a late poll is still told it expired
        clock.now = NOW + 10 + KEEP_AFTER_EXPIRY
        await store.create_sign_request(sign_request("sgn-newer", expires_at=clock.now + 300), max_per_device=8)
        assert await store.get_sign_request("sgn-old") is None
