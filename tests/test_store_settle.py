"""idwall.store.settle: what a kill leaves for after its answer is written out on time, on both backends; a write
that fails (the database gone) is logged and done again when the store closes, the sessions revoked all along.

Real stores (a SQLite file, a fresh PostgreSQL schema); the database is cut off through a TCP relay.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from idwall import logs
from idwall.store import settle
from tests.helpers.records import NOW
from tests.helpers.store import BACKENDS, Relay, draft, dump, enroll, login, opened, place


@pytest.fixture(params=BACKENDS)
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return await place(request, tmp_path)


@pytest.fixture
def log_lines():  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    saved = logs.logger.handlers[:], logs.logger.level, logs.logger.propagate
    logs.setup_logging("info", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.logger.handlers[:], _, logs.logger.propagate = saved
    logs.logger.setLevel(saved[1])


async def test_a_kills_sessions_are_written_out_soon_after_it_while_the_store_stays_open(
        where: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "SETTLE_AFTER", 0.05)
    async with opened(where) as store:
        session = await login(store, await enroll(store, "alice"))
        await store.kill(scope="all", target=None, revoke_devices=False, now=NOW + 5, draft=draft("kill", "*"))
        assert len((await dump(store))["kill_pending"]) == 1
        await asyncio.sleep(0.3)
        rows = await dump(store)
        assert rows["kill_pending"] == []
        assert [r for r in rows["kill_revocations"] if r[2] == session.id] != []
        got = await store.get_session(session.id)
        assert got is not None and (got.revoked_at, got.revoke_reason) == (NOW + 5, "kill")


async def test_a_write_out_that_fails_is_logged_and_done_at_close_the_sessions_revoked_meanwhile(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, log_lines) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(settle, "SETTLE_AFTER", 0.05)
    relay = Relay()
    await relay.start()
    async with opened(pg_url) as other:
        async with opened(relay.url(pg_url), pool_size=2) as store:
            alice = await enroll(store, "alice")
            session = await login(store, alice)
            await store.kill(scope="user", target="alice", revoke_devices=False, now=NOW + 5,
                             draft=draft("kill", "alice"))
            await relay.cut()
            await asyncio.sleep(0.3)
            failed = [line for line in log_lines() if line["event"] == "store.settle_failed"]
            assert failed and failed[0]["level"] == "warning" and "password" not in json.dumps(failed)
            seen = await other.resolve_certificate(alice.device.cert_sha256 or b"", now=NOW + 6)
            assert seen is not None and seen.session is None  # still revoked, by the pending row
            await relay.start()
            assert len((await dump(other))["kill_pending"]) == 1
        assert (await dump(other))["kill_pending"] == []  # written out as the store closed
        got = await other.get_session(session.id)
        assert got is not None and got.revoke_reason == "kill"
