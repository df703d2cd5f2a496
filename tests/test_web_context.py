"""idwall.web.context: a handler of the gateway's own app acts on the client connection the engine names.

The engine forwards each request for ``/idwall/`` to the app on a private unix socket, naming the client
connection in ``X-IDWall-Conn`` as ``<per-process secret>.<connection id>``. What the module promises:

- a request without that secret (no header, another secret, no id, an id that is no number) is not
  answered for any connection: it learns nothing and changes nothing;
- nor is one naming a connection that is gone or that the kill switch cut, whatever the secret;
- the connection is the one the request came on: a client that names another one in its own request,
  even with the right secret, is still answered as itself;
- the request facts the access decisions read are the request's own (Fetch Metadata in any letter case);
- a request to the API counts as activity on its connection.

Tested over a real gateway: through its TLS port as clients, and on the app's real unix socket (the
secret read from the running engine) for what only the engine is meant to send. The access verdicts
themselves (no certificate, not enrolled, no session) are tested with the endpoints that raise them.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
import pytest

from idwall.connections import Conn
from idwall.engine.io import INTERNAL_HEADER
from idwall.testing.fixtures import DeviceFiles
from tests.helpers.api import call, call_fresh

pytestmark = pytest.mark.asyncio

HEADER = INTERNAL_HEADER.decode()


async def on_app_socket(gateway: Any, method: str, path: str, conn_header: str | None) -> tuple[int | None, str]:
    """One request straight to the app's private unix socket, where only the engine connects.

    The status and body, or (None, "") when the app closes the connection without an answer.
    """
    headers = {} if conn_header is None else {HEADER: conn_header}
    connector = aiohttp.UnixConnector(path=gateway.running.engine.internal.unix)
    async with aiohttp.ClientSession(connector=connector) as client:
        try:
            async with client.request(method, "http://localhost" + path, headers=headers) as resp:
                return resp.status, await resp.text()
        except aiohttp.ServerDisconnectedError:
            return None, ""


def refused(answer: tuple[int | None, str], user: str) -> bool:
    """Whether an answer of the app is a refusal that says nothing about ``user``."""
    status, text = answer
    return (status is None or status >= 400) and user not in text


def conn_of(gateway: Any, device: DeviceFiles) -> Conn:
    """The one live connection presenting ``device``'s certificate."""
    (conn,) = gateway.running.node.registry.by_cert(device.cert_sha256)
    return conn


@asynccontextmanager
async def connected(gateway: Any, device: DeviceFiles) -> AsyncIterator[tuple[aiohttp.ClientSession, Conn]]:
    """A client of ``device`` and its connection, open and resolved (a proxied request went over it)."""
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 200
        yield client, conn_of(gateway, device)


async def session_live(gateway: Any, device: DeviceFiles) -> bool:
    return (await gateway.store.get_session(device.session_id)).revoked_at is None


async def test_without_the_engines_secret_a_request_is_answered_for_no_connection(gateway) -> None:
    alice = await gateway.device("alice")
    async with connected(gateway, alice) as (_, conn):
        conn_id = conn.id
        secret = gateway.running.engine.internal_secret.decode()
        for header in (None, "", str(conn_id), f"{'0' * len(secret)}.{conn_id}", f"{secret.upper()}.{conn_id}",
                       secret, f"{secret}.", f"{secret}.x{conn_id}", f"{secret}.{conn_id}.0"):
            assert refused(await on_app_socket(gateway, "GET", "/idwall/api/me", header), "alice"), header
            assert refused(await on_app_socket(gateway, "POST", "/idwall/api/logout", header), "alice"), header
            assert await session_live(gateway, alice), header
        # the same requests with the secret act for alice's connection: it is the secret that refused them
        status, text = await on_app_socket(gateway, "GET", "/idwall/api/me", f"{secret}.{conn_id}")
        assert status == 200 and '"id": "alice"' in text
        status, text = await on_app_socket(gateway, "POST", "/idwall/api/logout", f"{secret}.{conn_id}")
        assert status == 200 and not await session_live(gateway, alice)


async def test_a_connection_that_is_gone_is_acted_for_by_nobody(gateway) -> None:
    alice = await gateway.device("alice")
    async with connected(gateway, alice) as (_, conn):
        conn_id = conn.id
    for _ in range(50):  # the gateway sees the close a moment later
        if gateway.running.node.registry.get(conn_id) is None:
            break
        await asyncio.sleep(0.05)
    assert gateway.running.node.registry.get(conn_id) is None
    header = f"{gateway.running.engine.internal_secret.decode()}.{conn_id}"
    assert refused(await on_app_socket(gateway, "GET", "/idwall/api/me", header), "alice")
    assert refused(await on_app_socket(gateway, "POST", "/idwall/api/logout", header), "alice")
    assert await session_live(gateway, alice)


async def test_a_connection_the_kill_switch_cut_is_acted_for_by_nobody(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    alice = await gateway.device("alice")
    async with connected(gateway, alice) as (_, conn):
        status, answer, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/kill", device=admin, body={
            "scope": "device", "target": alice.device_id, "reason": "stolen", "revoke_devices": False})
        assert status == 200 and answer["connections_closed"] == 1, answer
    assert conn.killed
    header = f"{gateway.running.engine.internal_secret.decode()}.{conn.id}"
    assert refused(await on_app_socket(gateway, "GET", "/idwall/api/me", header), "alice")


async def test_a_client_naming_another_connection_is_answered_as_itself(gateway) -> None:
    alice, bob = await gateway.device("alice"), await gateway.device("bob")
    async with connected(gateway, alice) as (_, conn), gateway.session(bob) as on_bob, gateway.session() as anon:
        # the right secret even, which no client can know: the engine drops what a client sends in its name
        header = {HEADER: f"{gateway.running.engine.internal_secret.decode()}.{conn.id}"}
        status, me = await call(on_bob, "GET", gateway.url + "/idwall/api/me", headers=header)
        assert status == 200 and me["user"]["id"] == "bob", me
        status, problem = await call(anon, "GET", gateway.url + "/idwall/api/me", headers=header)
        assert status == 403 and problem["type"].endswith("/no-client-certificate"), problem
        status, ended = await call(on_bob, "POST", gateway.url + "/idwall/api/logout", headers=header)
        assert status == 200 and ended["session_id"] == bob.session_id
    assert await session_live(gateway, alice) and not await session_live(gateway, bob)


@pytest.mark.parametrize("value", ["Cross-Site", "CROSS-SITE"])  # lower case: test_web_api_login
async def test_fetch_metadata_is_read_in_any_letter_case(gateway, value: str) -> None:
    alice = await gateway.device("alice")
    async with gateway.session(alice) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/logout",
                                     headers={"Sec-Fetch-Site": value})
    assert status == 403 and problem["type"].endswith("/cross-site-refused"), problem
    assert await session_live(gateway, alice)


async def test_a_request_to_the_api_counts_as_activity_on_its_connection(gateway) -> None:
    alice = await gateway.device("alice")
    node = gateway.running.node
    async with connected(gateway, alice) as (client, conn):
        real = node.clock
        later = real() + 120
        node.clock = lambda: later  # type: ignore[method-assign]
        try:
            status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        finally:
            node.clock = real  # type: ignore[method-assign]
        assert status == 200 and me["user"]["id"] == "alice"
        assert conn.last_seen == later
