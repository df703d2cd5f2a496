"""The private PostgreSQL server of tests/helpers/postgres_server.py: a server of the test's own that it may stop
and restart (what it stored survives), that cuts its clients when stopped, and that is always torn down."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.helpers.postgres_server import private_postgres


async def test_a_private_server_keeps_its_data_across_a_stop_and_a_restart() -> None:
    with private_postgres() as server:
        conn = await asyncpg.connect(server.url, timeout=10)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        await asyncio.to_thread(server.stop)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")  # the fast stop cut the client
        with pytest.raises(OSError):
            await asyncpg.connect(server.url, timeout=5)  # and nothing listens while it is down
        await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(server.url, timeout=10)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 7
        finally:
            await conn.close()


def test_the_server_is_stopped_and_removed_even_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError):
        with private_postgres() as server:
            assert server.running()
            raise RuntimeError("the test failed")
    assert not server.directory.exists()
    with pytest.raises(OSError):
        asyncio.run(asyncpg.connect(server.url, timeout=5))
