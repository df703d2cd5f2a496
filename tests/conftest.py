"""Shared fixtures: a real gateway (real TLS, real SQLite file) in front of a real upstream on 127.0.0.1.

The pieces live in ``tests/helpers``; this file only turns them into fixtures.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.helpers.gateway import GatewayUnderTest, Upstream, echo_upstream, running_gateway
from tests.helpers.kill import KillBed, kill_bed
from tests.helpers.process import Cluster, gateway_process
from tests.helpers.proxy import Proxy, reset, running_app_upstream, running_proxy
from tests.helpers.store import new_schema, postgres_database
from tests.helpers.upstream_app import AppUpstream
from tests.helpers.workers import threaded_echo_upstream

# Hypothesis writes .hypothesis/ (failing examples, and caches) into the working directory unless told
# otherwise; a test run must not write into the source tree. Keep no examples, and the caches in /tmp.
# A test's own @settings inherit the profile.
settings.register_profile("idwall", database=None)
settings.load_profile("idwall")
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"idwall-hypothesis-{os.getuid()}")


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    """Every test starts with the cyclic collector on. A large cut pauses it until the burial of what it cut
    (idwall.connections.Registry._bury, half a second later), which a test whose loop ends first never sees."""
    gc.enable()
    yield


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


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[KillBed]:
    """A gateway in front of a slow stream and a WebSocket echo, for kill tests (``tests/helpers/kill.py``)."""
    async with kill_bed(tmp_path) as value:
        yield value


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """``idwall serve --workers 2`` as real processes in front of a threaded echo upstream."""
    with threaded_echo_upstream() as upstream_url, gateway_process(tmp_path, upstream_url, workers=2) as c:
        yield c


# -- the engine's wire-test bed (tests/helpers/proxy.py): one gateway per test module that asks for it -----
# A module using them runs its tests on the module's event loop: pytestmark = pytest.mark.asyncio(loop_scope="module").


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app_upstream() -> AsyncIterator[AppUpstream]:
    """The app upstream (streams, uploads, slow and dying answers, a WebSocket echo), for one test module."""
    async with running_app_upstream() as up:
        yield up


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory, app_upstream: AppUpstream) -> AsyncIterator[Proxy]:
    """A gateway on the routes of ``tests.helpers.proxy.ROUTES`` in front of ``app_upstream``, for one module."""
    async with running_proxy(tmp_path_factory.mktemp("engine"), app_upstream) as value:
        yield value


@pytest.fixture
def fresh_upstream(app_upstream: AppUpstream) -> None:
    """``app_upstream`` as new: nothing seen, its events re-armed (use it autouse in a module sharing it)."""
    reset(app_upstream)
