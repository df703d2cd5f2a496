"""Signing from the command line, over real mTLS: begin on one connection of the admin's device (the CLI),
open and sign on another connection of the same certificate (the page), collect and finish on the first.

Each attack of docs/cli-signing.md is a test that tries to get past a check and fails: a second open, an
open from another user's (or another admin's) session, a forged id or secret, a collect from another
session, a link past its action's deadline, an assertion over a changed action, a bearer token.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from idwall.challenges import action_challenge
from idwall.encoding import b64url_decode, b64url_encode
from idwall.enrollment import invite_id_of
from idwall.sign_requests import MAX_OPEN_PER_DEVICE, UNKNOWN, check_code
from tests.helpers.api import bootstrap, call, counts, enroll, invite, ledger_ok, login, sign

BEGIN, OPEN, APPROVE, DECLINE, COLLECT = (f"/idwall/api/sign/{name}"
                                          for name in ("requests", "open", "approve", "decline", "collect"))
FINISH = "/idwall/api/actions/finish"
INVITE = {"type": "invite.create", "user": "bob", "name": "Bob", "email": "bob@example.com", "groups": ["eng"],
          "admin": False}


async def _admin(gateway: Any) -> Any:
    admin = await bootstrap(gateway)
    assert (await login(gateway, admin))[0] == 200  # the session belongs to the certificate, not a connection
    return admin


async def _begin(gateway: Any, client: Any, action: dict[str, Any] = INVITE) -> dict[str, Any]:
    status, begun = await call(client, "POST", gateway.url + BEGIN, {"action": action})
    assert status == 200, begun
    return begun


def _secret(begun: dict[str, Any]) -> str:
    return begun["link"].split("#", 1)[1]


async def _page(gateway: Any, client: Any, path: str, begun: dict[str, Any], **extra: Any) -> tuple[int, Any]:
    return await call(client, "POST", gateway.url + path,
                      {"request_id": begun["request_id"], "secret": _secret(begun), **extra})


async def _collect(gateway: Any, client: Any, begun: dict[str, Any]) -> tuple[int, Any]:
    return await call(client, "POST", gateway.url + COLLECT,
                      {"request_id": begun["request_id"], "poll_secret": begun["poll_secret"]})


async def test_the_cli_begins_the_page_signs_and_only_the_cli_gets_the_code(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        action = begun["action"]
        assert {k: action[k] for k in INVITE} == INVITE and action["actor"] == "admin"
        assert begun["action_id"] == b64url_encode(action_challenge(action))
        assert begun["check_code"] == check_code(action_challenge(action))
        assert begun["summary"] == "Invite Bob <bob@example.com> as user bob, in group eng."
        assert begun["link"].startswith(f"{gateway.url}/idwall/sign/{begun['request_id']}#")
        assert begun["expires_in"] == gateway.config.webauthn.timeout
        assert (await _collect(gateway, cli, begun)) == (200, {"state": "waiting"})

        status, opened = await _page(gateway, page, OPEN, begun)
        assert status == 200, opened
        assert opened["action"] == action and opened["check_code"] == begun["check_code"]
        assert opened["options"]["challenge"] == begun["action_id"]
        assert (await _collect(gateway, cli, begun)) == (200, {"state": "opened"})
        status, approved = await _page(gateway, page, APPROVE, begun, credential=admin.auth.get(opened["options"]))
        assert (status, approved) == (200, {"request_id": begun["request_id"], "state": "signed"})

        status, collected = await _collect(gateway, cli, begun)
        assert status == 200 and collected["state"] == "signed" and collected["action_id"] == begun["action_id"]
        status, done = await call(cli, "POST", gateway.url + FINISH,
                                  {"action_id": collected["action_id"], "credential": collected["credential"]})
        assert status == 200, done
        # the assertion is handed over once, and the page was never given the code
        status, again = await _collect(gateway, cli, begun)
        assert status == 410 and "already collected" in again["detail"]
    code = done["result"]["code"]
    assert code not in json.dumps([opened, approved])
    assert (await gateway.store.get_invite(invite_id_of(code))).user_id == "bob"
    entry = (await ledger_ok(gateway))[-1]
    assert entry["type"] == "invite.create" and entry["approval"]["action"] == action
    stored = await gateway.store.get_sign_request(begun["request_id"])
    assert stored.state == "collected" and stored.credential is None
    db = b"".join(p.read_bytes() for p in gateway.dir.glob("idwall.db*"))
    assert _secret(begun).encode() not in db and begun["poll_secret"].encode() not in db and code.encode() not in db


async def test_the_link_opens_once(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        status, opened = await _page(gateway, page, OPEN, begun)
        assert status == 200
        status, problem = await _page(gateway, page, OPEN, begun)
        assert status == 410 and "already opened" in problem["detail"]
        # the first page can still sign what it showed
        assert (await _page(gateway, page, APPROVE, begun, credential=admin.auth.get(opened["options"])))[0] == 200


async def _other_user(gateway: Any, admin: Any, cli: Any, user: str, *, is_admin: bool) -> Any:
    other = await enroll(gateway, await invite(gateway, admin, cli, user, is_admin=is_admin))
    assert (await login(gateway, other))[0] == 200
    return other


async def test_a_link_opened_from_another_users_session_is_refused_and_cancels_the_request(gateway) -> None:
    """Both a non-admin and another administrator: the action names its signer, and the request belongs to
    the session that began it; a leaked link is cancelled, and the terminal is told who opened it."""
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        for user, is_admin in (("mallory", False), ("carol", True)):
            other = await _other_user(gateway, admin, cli, user, is_admin=is_admin)
            begun = await _begin(gateway, cli)
            async with gateway.session(other) as theirs:
                status, problem = await _page(gateway, theirs, OPEN, begun)
                assert status == 403 and "another session" in problem["detail"], problem
                assert "action" not in problem and "options" not in problem
            status, told = await _collect(gateway, cli, begun)
            assert status == 200 and told["state"] == "refused"
            assert f"user {user}" in told["detail"] and other.device_id in told["detail"]
            # and the owner cannot use the cancelled link either
            status, problem = await _page(gateway, page, OPEN, begun)
            assert status == 410 and "cancelled" in problem["detail"]


async def _opened_beside_carol(gateway: Any, admin: Any, cli: Any, page: Any) -> tuple[Any, dict, dict]:
    """A second administrator, carol, signed in on her own device; and a request of admin's, opened on his page."""
    carol = await _other_user(gateway, admin, cli, "carol", is_admin=True)
    begun = await _begin(gateway, cli)
    status, opened = await _page(gateway, page, OPEN, begun)
    assert status == 200, opened
    return carol, begun, opened


async def test_another_session_cannot_approve_with_the_secret_after_the_owner_opened(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        carol, begun, opened = await _opened_beside_carol(gateway, admin, cli, page)
        # carol signs the same action with her own passkey: her assertion cannot be her signature over it
        async with gateway.session(carol) as theirs:
            status, problem = await _page(gateway, theirs, APPROVE, begun,
                                          credential=carol.auth.get(opened["options"] | {"allowCredentials": []}))
            assert status == 403, problem
        assert (await _collect(gateway, cli, begun))[1]["state"] == "refused"


async def test_a_forged_id_or_wrong_secret_is_unknown_and_changes_nothing(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        guesses = [("sgn-" + secrets.token_urlsafe(16), _secret(begun)),
                   (begun["request_id"], secrets.token_urlsafe(32)),
                   (begun["request_id"], begun["poll_secret"]),  # the poll secret does not open the page
                   (begun["request_id"], "x")]
        for request_id, secret in guesses:
            for path in (OPEN, APPROVE, DECLINE):
                status, problem = await call(page, "POST", gateway.url + path,
                                             {"request_id": request_id, "secret": secret, "credential": {}})
                assert status == 404 and problem["detail"] == UNKNOWN, (path, problem)
        status, problem = await call(cli, "POST", gateway.url + COLLECT,
                                     {"request_id": begun["request_id"], "poll_secret": _secret(begun)})
        assert status == 404 and problem["detail"] == UNKNOWN
        assert (await gateway.store.get_sign_request(begun["request_id"])).state == "waiting"
        assert (await _page(gateway, page, OPEN, begun))[0] == 200


async def test_collecting_from_another_session_is_refused_and_leaves_the_assertion(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        carol, begun, opened = await _opened_beside_carol(gateway, admin, cli, page)
        assert (await _page(gateway, page, APPROVE, begun, credential=admin.auth.get(opened["options"])))[0] == 200
        async with gateway.session(carol) as theirs:
            status, problem = await _collect(gateway, theirs, begun)
            assert status == 403 and "credential" not in problem
        async with gateway.session() as anonymous:
            status, problem = await _collect(gateway, anonymous, begun)
            assert status == 403 and problem["type"].endswith("/no-client-certificate")
        status, collected = await _collect(gateway, cli, begun)
        assert status == 200 and collected["state"] == "signed"


async def test_after_not_after_the_link_and_the_collect_are_gone(gateway) -> None:
    admin = await _admin(gateway)
    node = gateway.running.node
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        late = begun["action"]["not_after"] + 1
        real = node.clock
        node.clock = lambda: late  # type: ignore[method-assign]
        try:
            status, problem = await _page(gateway, page, OPEN, begun)
            assert status == 410 and "expired" in problem["detail"]
            status, problem = await _collect(gateway, cli, begun)
            assert status == 410 and "expired" in problem["detail"]
        finally:
            node.clock = real  # type: ignore[method-assign]
        assert (await gateway.store.get_sign_request(begun["request_id"])).state == "waiting"


async def test_an_assertion_over_a_changed_action_is_refused(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        _, opened = await _page(gateway, page, OPEN, begun)
        # the same action with one field changed (bob made an admin): its challenge is another one
        changed = begun["action"] | {"admin": True}
        forged = opened["options"] | {"challenge": b64url_encode(action_challenge(changed))}
        before = await counts(gateway)
        status, problem = await _page(gateway, page, APPROVE, begun, credential=admin.auth.get(forged))
        assert status == 400 and problem["type"].endswith("/webauthn-rejected"), problem
        assert await counts(gateway) == before
        assert (await gateway.store.get_sign_request(begun["request_id"])).state == "opened"
        # and the CLI's finish checks the signature against the action it began, whatever reaches it
        status, problem = await call(cli, "POST", gateway.url + FINISH,
                                     {"action_id": begun["action_id"], "credential": admin.auth.get(forged)})
        assert status == 400 and problem["type"].endswith("/webauthn-rejected")
        assert await counts(gateway) == before | {"ceremonies": before["ceremonies"] - 1}  # no invite, no entry


async def test_declined_on_the_page_stops_the_cli(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        begun = await _begin(gateway, cli)
        assert (await _page(gateway, page, OPEN, begun))[0] == 200
        assert (await _page(gateway, page, DECLINE, begun)) == (200, {"request_id": begun["request_id"],
                                                                      "state": "declined"})
        status, told = await _collect(gateway, cli, begun)
        assert status == 200 and told["state"] == "declined" and "declined" in told["detail"]
        status, problem = await _page(gateway, page, APPROVE, begun, credential={})
        assert status == 410


async def test_a_token_is_never_enough(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli:
        status, made = await sign(gateway, admin, cli, {"type": "token.create", "name": "soar",
                                                        "scopes": ["kill", "read"], "ttl": "1h"})
        assert status == 200, made
    bearer = {"Authorization": f"Bearer {made['result']['token']}"}
    async with gateway.session() as anonymous:
        status, problem = await call(anonymous, "POST", gateway.url + BEGIN, {"action": INVITE}, headers=bearer)
        assert status == 403 and problem["type"].endswith("/no-client-certificate")
    async with gateway.session(admin) as cli:
        assert (await call(cli, "POST", gateway.url + "/idwall/api/logout", {}))[0] == 200
        before = await counts(gateway)
        status, problem = await call(cli, "POST", gateway.url + BEGIN, {"action": INVITE}, headers=bearer)
        assert status == 401 and "/idwall/login" in problem["login_url"]
        assert await counts(gateway) == before


async def test_a_non_admin_cannot_begin_an_admin_action(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli:
        bob = await _other_user(gateway, admin, cli, "mallory", is_admin=False)
    async with gateway.session(bob) as theirs:
        before = await counts(gateway)
        status, problem = await call(theirs, "POST", gateway.url + BEGIN,
                                     {"action": {"type": "admin.grant", "user": "mallory"}})
        assert status == 403 and "administrator" in problem["detail"]
        assert await counts(gateway) == before
        assert await gateway.store.read(lambda c: c.execute("SELECT COUNT(*) FROM sign_requests").fetchone()[0]) == 0


async def test_bad_input_is_a_clear_400_and_stores_nothing(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli:
        before = await counts(gateway)
        for body, words in (({}, "action"), ({"action": []}, "action"),
                            ({"action": {"type": "admin.grant"}}, "missing user"),
                            ({"action": INVITE | {"nonce": "x"}}, "unexpected field")):
            status, problem = await call(cli, "POST", gateway.url + BEGIN, body)
            assert status == 400 and words in problem["detail"], (body, problem)
        for path, body in ((OPEN, {"request_id": 1, "secret": "x"}), (OPEN, {"request_id": "sgn-x"}),
                           (APPROVE, {"request_id": "sgn-x", "secret": "x", "credential": "x"}),
                           (COLLECT, {"request_id": "sgn-x"})):
            status, problem = await call(cli, "POST", gateway.url + path, body)
            assert status == 400, (path, problem)
        assert await counts(gateway) == before


async def test_a_device_has_a_bounded_number_of_open_requests(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli:
        for _ in range(MAX_OPEN_PER_DEVICE):
            await _begin(gateway, cli)
        status, problem = await call(cli, "POST", gateway.url + BEGIN, {"action": INVITE})
        assert status == 429 and "already waiting" in problem["detail"]


async def test_another_sites_page_cannot_open_a_link(gateway) -> None:
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli:
        begun = await _begin(gateway, cli)
        status, problem = await call(cli, "POST", gateway.url + OPEN,
                                     {"request_id": begun["request_id"], "secret": _secret(begun)},
                                     headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert status == 403 and problem["type"].endswith("/cross-site-refused")
        assert (await gateway.store.get_sign_request(begun["request_id"])).state == "waiting"


async def test_every_verb_of_the_cli_signs_through_a_request(gateway) -> None:
    """device.approve, admin.grant/revoke and token.create go the same way as invite.create."""
    admin = await _admin(gateway)
    async with gateway.session(admin) as cli, gateway.session(admin) as page:
        await _other_user(gateway, admin, cli, "bob", is_admin=False)
        results = []
        for action in ({"type": "admin.grant", "user": "bob"}, {"type": "admin.revoke", "user": "bob"},
                       {"type": "token.create", "name": "soar", "scopes": ["kill"], "ttl": "1h"}):
            begun = await _begin(gateway, cli, action)
            _, opened = await _page(gateway, page, OPEN, begun)
            assert (await _page(gateway, page, APPROVE, begun, credential=admin.auth.get(opened["options"])))[0] == 200
            _, collected = await _collect(gateway, cli, begun)
            status, done = await call(cli, "POST", gateway.url + FINISH,
                                      {"action_id": begun["action_id"], "credential": collected["credential"]})
            assert status == 200, done
            results.append(done["result"])
    assert results[0] == {"user": "bob", "admin": True} and results[1] == {"user": "bob", "admin": False}
    assert results[2]["token"] and b64url_decode(results[2]["token_id"].split("-", 1)[-1]) is not None
    assert [e["type"] for e in (await ledger_ok(gateway))[-3:]] == ["admin.grant", "admin.revoke", "token.create"]
