"""The admin console's directory API over real mTLS: who may read people, devices and the ledger, bounded pages,
the ledger verified in the gateway, and token revocation that takes effect on the very next request.

Ledgers that must verify are built only through the real API (bootstrap, passkey login, signed actions with a
software passkey); the devices written straight into the store (``gateway.device``) are for access checks.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from idwall.audit import verify_ledger
from idwall.testing.authenticator import SoftAuthenticator
from idwall.web import api_directory
from tests.helpers.api import (begin_enroll, bootstrap, call_fresh, enroll, finish_enroll, invite, ledger_ok, login,
                               sign)
from tests.helpers.gateway import running_gateway

pytestmark = pytest.mark.asyncio

READS = ("/idwall/api/admin/users", "/idwall/api/admin/devices", "/idwall/api/admin/audit/search",
         "/idwall/api/admin/audit/verify")


async def signed_in_admin(gateway):  # type: ignore[no-untyped-def]
    """The first administrator, enrolled with the bootstrap code and logged in with a software passkey."""
    admin = await bootstrap(gateway)
    status, answer = await login(gateway, admin)
    assert status == 200, answer
    return admin


async def token(gateway, admin, scopes: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """A token made by the signed ``token.create`` action; its result (``token``, ``token_id``)."""
    async with gateway.session(admin) as client:
        status, answer = await sign(gateway, admin, client, {"type": "token.create", "name": "soar-" + "-".join(scopes),
                                                            "scopes": scopes, "ttl": "1h"})
    assert status == 200, answer
    return answer["result"]


async def test_the_people_page_reads_users_with_devices_passkeys_and_last_login(gateway) -> None:
    admin = await signed_in_admin(gateway)
    async with gateway.session(admin) as client:
        code = await invite(gateway, admin, client, "alice", groups=["eng"])
    alice = await enroll(gateway, code, device_name="Alice laptop")
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/users", device=admin)
    assert status == 200, body
    assert [u["id"] for u in body["users"]] == ["admin", "alice"] and body["next"] is None
    root, person = body["users"]
    assert root["admin"] is True and root["last_login"] is not None
    assert person == {
        "id": "alice", "name": "Alice", "email": "alice@example.com", "groups": ["eng"], "admin": False,
        "manager": None, "created_at": person["created_at"], "last_login": None,
        "devices": [{"id": alice.device_id, "user": "alice", "user_name": "Alice", "name": "Alice laptop",
                     "status": "active", "enrolled_at": person["devices"][0]["enrolled_at"],
                     "not_after": person["devices"][0]["not_after"], "approved_by": "admin", "revoked_at": None,
                     "credentials": 1}],
        "credentials": [{"id": person["credentials"][0]["id"], "device_id": alice.device_id,
                         "created_at": person["credentials"][0]["created_at"], "sign_count": 0}]}
    assert person["devices"][0]["not_after"] > time.time() + 3600  # the certificate's expiry
    text = json.dumps(body)
    assert "BEGIN CERTIFICATE" not in text and "public_key" not in text


async def test_pages_are_bounded_and_continue_where_the_last_ended(gateway) -> None:
    admin = await gateway.device("root", admin=True)
    for name in ("dave", "bob", "carol"):
        await gateway.device(name)
    seen, after = [], ""
    for _ in range(5):
        status, body, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/users?limit=2&after={after}",
                                           device=admin)
        assert status == 200 and len(body["users"]) <= 2
        seen += [u["id"] for u in body["users"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seen == ["bob", "carol", "dave", "root"]
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/devices?limit=1", device=admin)
    assert status == 200 and len(body["devices"]) == 1 and body["next"] == body["devices"][0]["id"]


async def test_devices_are_filtered_by_status(gateway) -> None:
    admin = await signed_in_admin(gateway)
    async with gateway.session(admin) as client:
        code = await invite(gateway, admin, client, "alice")
    await enroll(gateway, code)
    # a second device enrolled self-service (by user id, no code) waits for approval
    _, status, begun = await begin_enroll(gateway, user="alice", device_name="Alice phone")
    assert status == 200, begun
    auth = SoftAuthenticator(origin=gateway.url)
    status, finished = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and finished["status"] == "pending_approval", finished
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/devices?status=pending_approval",
                                       device=admin)
    assert status == 200
    assert [(d["id"], d["name"], d["not_after"]) for d in body["devices"]] == [
        (finished["device_id"], "Alice phone", None)]
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/devices?status=active", device=admin)
    assert {d["user"] for d in body["devices"]} == {"admin", "alice"}


async def test_who_may_read_and_who_may_not(gateway) -> None:
    admin = await signed_in_admin(gateway)
    read = await token(gateway, admin, ["read"])
    kill = await token(gateway, admin, ["kill"])
    alice = await gateway.device("alice", groups=("eng",))
    for path in READS:
        status, body, _ = await call_fresh(gateway, "GET", path, device=admin)
        assert status == 200, (path, body)
        status, body, _ = await call_fresh(gateway, "GET", path, token=read["token"])
        assert status == 200, (path, body)
        status, problem, _ = await call_fresh(gateway, "GET", path, token=kill["token"])
        assert status == 403 and problem["type"].endswith("/insufficient-scope"), (path, problem)
        status, problem, _ = await call_fresh(gateway, "GET", path, device=alice)
        assert status == 403 and problem["type"].endswith("/forbidden"), (path, problem)
        status, problem, _ = await call_fresh(gateway, "GET", path)
        assert status == 403 and problem["type"].endswith("/no-client-certificate"), (path, problem)
        status, problem, headers = await call_fresh(gateway, "GET", path, token="idw_not-a-token")
        assert status == 401 and problem["type"].endswith("/invalid-token"), (path, problem)
        assert headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("query, says", [
    ("/idwall/api/admin/users?limit=0", "'limit' must be an integer from 1 to 500"),
    ("/idwall/api/admin/users?limit=501", "'limit' must be an integer from 1 to 500"),
    ("/idwall/api/admin/users?limit=ten", "'limit'"),
    ("/idwall/api/admin/users?after=%27%3B--", "'after' must be an id"),
    ("/idwall/api/admin/users?limit=1&limit=2", "more than once"),
    ("/idwall/api/admin/users?sort=name", "unknown query parameter(s) sort"),
    ("/idwall/api/admin/devices?status=lost", "'status' must be one of active, pending_approval, revoked"),
    ("/idwall/api/admin/devices?after=" + "a" * 129, "'after' must be an id"),
    ("/idwall/api/admin/audit/search?after=-1", "'after' must be a ledger seq"),
    ("/idwall/api/admin/audit/search?type=DROP%20TABLE", "'type' must be an entry type"),
    ("/idwall/api/admin/audit/search?user=%00", "'user' must be an id"),
    ("/idwall/api/admin/audit/verify?root=short", "'root' must be the root fingerprint"),
])
async def test_bad_parameters_are_problems_that_change_nothing(gateway, query: str, says: str) -> None:
    admin = await gateway.device("root", admin=True)
    before = await gateway.store.ledger_entries()
    status, problem, headers = await call_fresh(gateway, "GET", query, device=admin)
    assert status == 400, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["type"].endswith("/bad-request") and says in problem["detail"], problem
    assert await gateway.store.ledger_entries() == before


async def test_the_ledger_is_searched_by_type_and_user(gateway) -> None:
    admin = await signed_in_admin(gateway)
    async with gateway.session(admin) as client:
        await invite(gateway, admin, client, "alice")
        await invite(gateway, admin, client, "bob")
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/search?type=invite.create",
                                       device=admin)
    assert status == 200
    assert [e["subject"] for e in body["entries"]] == ["alice", "bob"]
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/search?user=bob", device=admin)
    assert [(e["type"], e["subject"]) for e in body["entries"]] == [("invite.create", "bob")]
    assert body["entries"][0]["approval"]["credential_id"]  # who approved it, with which passkey
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/search?limit=1&after=1", device=admin)
    assert [e["seq"] for e in body["entries"]] == [2] and body["next"] == 2


async def test_the_whole_chain_is_verified_in_the_gateway(gateway) -> None:
    admin = await signed_in_admin(gateway)
    async with gateway.session(admin) as client:
        await invite(gateway, admin, client, "alice")
    entries = await ledger_ok(gateway)
    expected = verify_ledger(entries)
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/verify", device=admin)
    assert status == 200
    assert body == {"ok": True, "complete": True, "entries": len(entries), "seq": entries[-1]["seq"],
                    "reason": f"verified {len(entries)} entries", "root": expected.root, "pinned_root": False,
                    "head": f"{entries[-1]['seq']}:{expected.head}"}
    status, body, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/audit/verify?root={expected.root}",
                                       device=admin)
    assert body["ok"] is True and body["pinned_root"] is True
    other_root = ("A" if expected.root[0] != "A" else "B") + expected.root[1:]
    status, body, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/audit/verify?root={other_root}",
                                       device=admin)
    assert status == 200 and body["ok"] is False and body["seq"] == 1
    assert "genesis credential fingerprint does not match" in body["reason"] and body["head"] is None


async def test_the_configured_root_is_pinned(tmp_path, upstream) -> None:
    # a root pinned in the configuration that the ledger's genesis does not match: a wholly replaced ledger
    other_root = "A" * 43
    def edit(text: str) -> str:
        return text.replace("  key: certs/ledger-key.pem", f"  key: certs/ledger-key.pem\n  root: {other_root}")

    async with running_gateway(tmp_path, upstream.url, edit=edit) as gateway:
        assert gateway.config.ledger.root == other_root
        admin = await signed_in_admin(gateway)
        status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/verify", device=admin)
        assert status == 200 and body["ok"] is False and body["seq"] == 1 and body["pinned_root"] is True
        assert other_root in body["reason"]
        real = verify_ledger(await gateway.store.ledger_entries()).root
        status, body, _ = await call_fresh(gateway, "GET", f"/idwall/api/admin/audit/verify?root={real}", device=admin)
        assert body["ok"] is True and body["root"] == real


async def test_a_tampered_entry_is_named(gateway) -> None:
    admin = await signed_in_admin(gateway)
    async with gateway.session(admin) as client:
        await invite(gateway, admin, client, "alice")
        await invite(gateway, admin, client, "bob")
    entries = await ledger_ok(gateway)
    target = next(e for e in entries if e["type"] == "invite.create" and e["subject"] == "alice")
    forged = dict(target, data=dict(target["data"], admin=True))
    await gateway.store.write(lambda c: c.execute("UPDATE ledger SET entry = ? WHERE seq = ?",
                                                  (json.dumps(forged), target["seq"])))
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/verify", device=admin)
    assert status == 200 and body["ok"] is False and body["complete"] is True
    assert body["seq"] == target["seq"] and body["entries"] == target["seq"] - 1
    assert "hash" in body["reason"], body


async def test_a_verification_over_its_time_budget_says_it_did_not_finish(gateway, monkeypatch) -> None:
    admin = await signed_in_admin(gateway)
    monkeypatch.setattr(api_directory, "VERIFY_BUDGET", 0.0)
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/audit/verify", device=admin)
    assert status == 200
    assert body["ok"] is False and body["complete"] is False and body["head"] is None
    assert body["reason"].startswith("not finished: 0 entries verified") and "idwall audit verify" in body["reason"]


async def test_a_revoked_token_stops_working_at_once(gateway) -> None:
    admin = await signed_in_admin(gateway)
    read = await token(gateway, admin, ["read"])
    path = f"/idwall/api/admin/tokens/{read['token_id']}/revoke"
    assert (await call_fresh(gateway, "GET", "/idwall/api/admin/users", token=read["token"]))[0] == 200
    # a token cannot revoke, not even itself: removing a token is a person's decision, made in the console
    status, problem, _ = await call_fresh(gateway, "POST", path, token=read["token"])
    assert status == 403 and "tokens cannot do it" in problem["detail"]
    status, body, _ = await call_fresh(gateway, "POST", path, device=admin, headers={"Origin": gateway.url})
    assert status == 200 and body["revoked"] is True, body
    # the attack: keep using it after revocation, on any endpoint it could read before
    for read_path in READS + ("/idwall/api/admin/sessions", "/idwall/api/admin/audit"):
        status, problem, _ = await call_fresh(gateway, "GET", read_path, token=read["token"])
        assert status == 401 and problem["type"].endswith("/invalid-token"), (read_path, problem)
    entries = await ledger_ok(gateway)
    assert entries[-1]["type"] == "token.revoke" and entries[-1]["subject"] == read["token_id"]
    assert entries[-1]["actor"] == "admin" and body["audit_seq"] == entries[-1]["seq"]
    status, problem, _ = await call_fresh(gateway, "POST", path, device=admin)
    assert status == 404 and "no active token" in problem["detail"]
    status, problem, _ = await call_fresh(gateway, "POST", "/idwall/api/admin/tokens/tok-nope/revoke", device=admin)
    assert status == 404
    status, body, _ = await call_fresh(gateway, "GET", "/idwall/api/admin/tokens", device=admin)
    listed = {t["id"]: t for t in body["tokens"]}
    assert listed[read["token_id"]]["revoked_at"] is not None
    assert read["token"] not in json.dumps(body) and "hash" not in json.dumps(body)
    assert len(await gateway.store.ledger_entries()) == len(entries)


async def test_revocation_from_another_site_or_by_a_non_admin_is_refused(gateway) -> None:
    admin = await signed_in_admin(gateway)
    kill = await token(gateway, admin, ["kill"])
    path = f"/idwall/api/admin/tokens/{kill['token_id']}/revoke"
    alice = await gateway.device("alice")
    before = await gateway.store.ledger_entries()
    # the admin's certificate is ambient: a foreign page that makes the browser POST here must not revoke
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, problem, _ = await call_fresh(gateway, "POST", path, device=admin, headers=headers)
        assert status == 403, (headers, problem)
    status, problem, _ = await call_fresh(gateway, "POST", path, device=alice)
    assert status == 403 and problem["type"].endswith("/forbidden")
    status, problem, _ = await call_fresh(gateway, "POST", path, token=kill["token"])
    assert status == 403
    assert await gateway.store.ledger_entries() == before
    assert (await call_fresh(gateway, "POST", "/idwall/api/admin/kill", token=kill["token"], body={
        "scope": "user", "target": "nobody", "reason": "still works", "revoke_devices": False}))[0] == 200


async def test_concurrent_verifications_share_one_replay_and_leave_nothing_behind(gateway) -> None:
    admin = await signed_in_admin(gateway)
    read = await token(gateway, admin, ["read"])
    roots = [None] + [("A" * 42) + c for c in "ABCD"]
    answers = await asyncio.gather(*(
        call_fresh(gateway, "GET", "/idwall/api/admin/audit/verify" + (f"?root={r}" if r else ""), token=read["token"])
        for r in roots for _ in range(3)))
    assert all(status == 200 for status, _, _ in answers)
    unpinned = [body for status, body, _ in answers[:3]]
    assert unpinned[0]["ok"] is True and unpinned.count(unpinned[0]) == 3
    assert all(body["ok"] is False and body["seq"] == 1 for _, body, _ in answers[3:])
    # every finished verification is forgotten: asking with ever new roots cannot pile up state
    assert all(not running for running in api_directory._running.values()), dict(api_directory._running)
