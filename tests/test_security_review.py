"""Adversarial review of the enrollment, login, signed-action and admin APIs: each test is an attack that must fail.

Every test here failed before its fix (see the docstring of each one for what got through).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from idwall import tokens
from idwall.enrollment import MAX_OPEN_ENROLLMENTS, MAX_PENDING_DEVICES
from idwall.store.base import LedgerDraft
from idwall.testing.authenticator import SoftAuthenticator
from idwall.web.api_login import MAX_OPEN_CEREMONIES
from tests.helpers.api import begin_enroll, bootstrap, call, counts, enroll, finish_enroll, invite, login

pytestmark = pytest.mark.asyncio


async def _enrollments(gateway: Any, *, user: str) -> int:
    return await gateway.store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM enrollments WHERE user_id = ?", (user,)).fetchone()[0])


async def _ceremonies(gateway: Any, device_id: str) -> int:
    return await gateway.store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM ceremonies WHERE device_id = ?", (device_id,)).fetchone()[0])


# -- unauthenticated clients cannot fill the store through enroll/begin and enroll/finish ------------


async def test_self_service_begin_is_bounded_per_user(gateway) -> None:
    """Before: anyone who knew a user id could POST enroll/begin {user} without end, a stored row (CSR included)
    each time, and expired rows were never removed."""
    await gateway.device("alice")
    before = await _enrollments(gateway, user="alice")
    for _ in range(MAX_OPEN_ENROLLMENTS):
        _, status, begun = await begin_enroll(gateway, user="alice")
        assert status == 200, begun
    _, status, problem = await begin_enroll(gateway, user="alice")
    assert status == 429, problem
    assert problem["status"] == 429 and problem["detail"]
    assert await _enrollments(gateway, user="alice") == before + MAX_OPEN_ENROLLMENTS
    # once those have expired the user can start again, and long-expired ones are forgotten
    gw = gateway.running.node
    real = gw.clock
    gw.clock = lambda: real() + 2 * 3600  # type: ignore[method-assign]
    try:
        _, status, begun = await begin_enroll(gateway, user="alice")
        assert status == 200, begun
        assert await _enrollments(gateway, user="alice") == before + 1
    finally:
        gw.clock = real  # type: ignore[method-assign]


async def test_invite_begin_is_bounded_per_code_and_does_not_block_other_users(gateway) -> None:
    """The same bound per invite code: a leaked code cannot be used to write rows without end."""
    code = gateway.init["bootstrap_code"]
    for _ in range(MAX_OPEN_ENROLLMENTS):
        assert (await begin_enroll(gateway, code=code))[1] == 200
    before = await counts(gateway)
    _, status, problem = await begin_enroll(gateway, code=code)
    assert status == 429, problem
    assert await counts(gateway) == before
    # another user's self-service is not held up by this invite's enrollments
    await gateway.device("bob")
    assert (await begin_enroll(gateway, user="bob"))[1] == 200


async def test_self_service_finish_is_bounded_in_pending_devices(gateway) -> None:
    """Before: each finished self-service enrollment added a pending device, a credential and a device.enroll
    ledger entry (which can never be removed) for any user id, with a software passkey and no secret at all."""
    await gateway.device("carol")
    auth = SoftAuthenticator(origin=gateway.url)
    for _ in range(MAX_PENDING_DEVICES):
        _, status, begun = await begin_enroll(gateway, user="carol")
        assert status == 200, begun
        status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
        assert status == 200 and answer["status"] == "pending_approval", answer
    before = await counts(gateway)
    _, status, problem = await begin_enroll(gateway, user="carol")
    assert status == 429, problem
    assert await counts(gateway) == before


async def test_pending_bound_is_also_enforced_at_finish(gateway) -> None:
    """The check at begin is advisory; the one that counts runs in the finish transaction."""
    await gateway.device("dave")
    auth = SoftAuthenticator(origin=gateway.url)
    begun_all = []
    for _ in range(MAX_PENDING_DEVICES + 1):
        _, status, begun = await begin_enroll(gateway, user="dave")
        assert status == 200, begun
        begun_all.append(begun)
    for begun in begun_all[:MAX_PENDING_DEVICES]:
        assert (await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"])))[0] == 200
    before = await counts(gateway)
    last = begun_all[-1]
    status, problem = await finish_enroll(gateway, last["enrollment_id"], auth.create(last["options"]))
    assert status == 429, problem
    assert await counts(gateway) == before
    assert (await gateway.store.get_enrollment(last["enrollment_id"])).status == "begun"


# -- login ceremonies per device ----------------------------------------------------------------------


async def test_login_ceremonies_per_device_are_bounded_and_the_newest_still_works(gateway) -> None:
    """Before: every login/begin stored a ceremony row; one device could hold any number of them."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        begun = []
        for _ in range(MAX_OPEN_CEREMONIES + 5):
            status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
            assert status == 200, answer
            begun.append(answer)
        assert await _ceremonies(gateway, admin.device_id) == MAX_OPEN_CEREMONIES
        # the oldest was dropped: its assertion finds no ceremony
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                     {"credential": admin.auth.get(begun[0]["options"])})
        assert status == 409, problem
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                    {"credential": admin.auth.get(begun[-1]["options"])})
        assert status == 200, answer


# -- cross-site writes: logout ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},
], ids=["foreign origin", "sec-fetch-site cross-site", "opaque origin"])
async def test_logout_refuses_cross_site_requests(gateway, headers: dict[str, str]) -> None:
    """Before: logout read no body, so a cross-site <form method=post> (no preflight) ended the session: the
    browser presents the client certificate to any site's requests."""
    device = await gateway.device("erin")
    async with gateway.session(device) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/logout",
                                     data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                           **headers})
        assert status == 403, problem
        session = await gateway.store.get_session(device.session_id)
        assert session.revoked_at is None
        # our own page (same origin) still signs out
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/logout",
                                    headers={"Origin": gateway.url})
        assert status == 200, answer


# -- the admin API belongs to the gateway's own origin, not to every proxied host -------------------------


def _named(gateway, name: str, device=None) -> aiohttp.ClientSession:
    """A client that names ``name`` in TLS (SNI) and Host, as a browser on that host does (the test
    certificate covers only localhost, so the name is not checked against it)."""
    ctx = gateway.ssl(device)
    ctx.check_hostname = False
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1))


@pytest.mark.parametrize("path", ["/idwall/api/admin/sessions", "/idwall/api/admin/audit",
                                  "/idwall/api/admin/tokens", "/idwall/admin"])
async def test_admin_session_is_not_usable_from_a_proxied_hosts_origin(gateway, path: str) -> None:
    """Before: /idwall/ is served on every host, so a page of a proxied app (wiki.localhost) could fetch
    /idwall/api/admin/* same-origin on its own host; the admin's browser presented the client certificate
    and the app's script read live sessions and the whole ledger."""
    admin = await gateway.device("root", admin=True)
    foreign = f"wiki.localhost:{gateway.port}"
    async with _named(gateway, "wiki.localhost", admin) as client:
        async with client.get(gateway.url + path, headers={"Host": foreign, "Accept": "application/json"},
                              server_hostname="wiki.localhost", allow_redirects=False) as resp:
            assert resp.status == 403, await resp.text()
            assert resp.content_type == "application/problem+json"
    async with gateway.session(admin) as client:
        async with client.get(gateway.url + path, headers={"Host": foreign, "Accept": "application/json"},
                              allow_redirects=False) as resp:
            assert resp.status == 421, "a Host other than the connection's TLS server name is misdirected"
        async with client.get(gateway.url + path, headers={"Accept": "application/json"},
                              allow_redirects=False) as resp:
            assert resp.status == 200, await resp.text()


async def test_tokens_are_not_bound_to_the_host(gateway) -> None:
    """A SOAR playbook may address the gateway by any name; only ambient (certificate) sessions are pinned."""
    issued = tokens.new_token(name="soar", scopes=["read"], ttl=600, created_by="admin", now=time.time())
    record = issued.record
    await gateway.store.create_token(record, LedgerDraft("token.create", "admin", record.id, {
        "token_id": record.id, "name": record.name, "scopes": list(record.scopes),
        "expires_at": int(record.expires_at)}))
    async with _named(gateway, "gw.internal") as client:
        async with client.get(gateway.url + "/idwall/api/admin/sessions", server_hostname="gw.internal",
                              headers={"Host": "gw.internal", "Authorization": f"Bearer {issued.secret}"}) as resp:
            assert resp.status == 200, await resp.text()


# -- kill: bounded target --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["x" * 5000, "bob\x00", "bob\n{\"forged\": 1}"],
                         ids=["huge", "NUL", "newline"])
async def test_kill_target_is_bounded(gateway, target: str) -> None:
    """Before: a kill target of any length and any characters (up to the 64 KiB body) went into the ledger."""
    issued = tokens.new_token(name="soar", scopes=["kill"], ttl=600, created_by="admin", now=time.time())
    record = issued.record
    await gateway.store.create_token(record, LedgerDraft("token.create", "admin", record.id, {
        "token_id": record.id, "name": record.name, "scopes": list(record.scopes),
        "expires_at": int(record.expires_at)}))
    before = len(await gateway.store.ledger_entries())
    async with gateway.session() as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/admin/kill",
                                     {"scope": "user", "target": target, "reason": "test"},
                                     headers={"Authorization": f"Bearer {issued.secret}"})
    assert status == 400, problem
    assert len(await gateway.store.ledger_entries()) == before


# -- never zero administrators ---------------------------------------------------------------------------


async def test_two_admins_revoking_themselves_at_once_leave_one_admin(gateway) -> None:
    """Before: the last-admin check ran before the transaction; two admins revoking themselves concurrently
    both passed it, and nobody was left who could sign an invite or a grant."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "second", is_admin=True)
    second = await enroll(gateway, code)
    clients = [gateway.session(admin), gateway.session(second)]
    try:
        begun = []
        for device, client in zip((admin, second), clients):
            assert (await login(gateway, device, client))[0] == 200
            status, answer = await call(client, "POST", gateway.url + "/idwall/api/actions/begin",
                                        {"action": {"type": "admin.revoke", "user": device.user_id}})
            assert status == 200, answer
            begun.append(answer)
        results = await asyncio.gather(*(
            call(client, "POST", gateway.url + "/idwall/api/actions/finish",
                 {"action_id": b["action_id"], "credential": device.auth.get(b["options"])})
            for device, client, b in zip((admin, second), clients, begun)))
    finally:
        for client in clients:
            await client.close()
    assert sorted(status for status, _ in results) == [200, 409], results
    assert [u.id for u in await gateway.store.list_users() if u.admin] != []


async def test_an_invite_cannot_demote_the_last_admin(gateway) -> None:
    """An invite for an existing user overwrites the user's role at finish; it must not leave no admin."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "admin", is_admin=False)
    _, status, begun = await begin_enroll(gateway, code=code)
    assert status == 200, begun
    before = await counts(gateway)
    status, problem = await finish_enroll(gateway, begun["enrollment_id"],
                                          SoftAuthenticator(origin=gateway.url).create(begun["options"]))
    assert status == 409, problem
    assert await counts(gateway) == before
    assert (await gateway.store.get_user("admin")).admin
