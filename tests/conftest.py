"""Shared fixtures: a real gateway (real TLS, real SQLite file) in front of a real upstream on 127.0.0.1.

The pieces live in ``tests/helpers``; this file only turns them into fixtures.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.helpers.gateway import GatewayUnderTest, Upstream, echo_upstream, running_gateway
from tests.helpers.store import new_schema, postgres_database

# Hypothesis writes .hypothesis/ (failing examples, and caches) into the working directory unless told
# otherwise; a test run must not write into the source tree. Keep no examples, and the caches in /tmp.
# A test's own @settings inherit the profile.
settings.register_profile("idwall", database=None)
settings.load_profile("idwall")
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"idwall-hypothesis-{os.getuid()}")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An upstream that echoes what it received (headers included) as JSON, and a WebSocket echo."""
    async with echo_upstream() as up:
        yield up


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayUnderTest]:
    """``idwall init`` + a started gateway whose ``whoami`` route (path ``/``) goes to the echo upstream."""
    async with running_gateway(tmp_path, upstream.url) as gut:
        yield gut


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own (``idwall_test_<random>``), dropped when it ends."""
    with postgres_database() as url:
        yield url


@pytest.fixture
async def pg_url(postgres_url: str) -> str:
    """A fresh, empty schema of this test's own in the session's PostgreSQL database, as a store URL."""
    return await new_schema(postgres_url)
