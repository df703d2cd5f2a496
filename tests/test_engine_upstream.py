"""idwall.engine.upstream over real sockets: the pool of idle upstream connections.

Sequential requests of several client connections share one pooled upstream connection.
"""

from __future__ import annotations


import pytest

from tests.helpers.proxy import Proxy

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("fresh_upstream")]


async def test_requests_share_pooled_upstream_connections(proxy: Proxy) -> None:
    async with proxy.client() as client:
        for _ in range(5):
            async with client.get(proxy.url + "/who") as response:
                assert response.status == 200
    async with proxy.client() as other:
        async with other.get(proxy.url + "/who") as response:
            assert response.status == 200
    peers = {entry["peer_port"] for entry in proxy.upstream.seen}
    assert len(proxy.upstream.seen) == 6 and len(peers) == 1, "six sequential requests, one upstream connection"
