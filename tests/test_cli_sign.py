"""The signing verbs of the command line (:mod:`idwall.cli.sign`): flags, the checks on what the gateway says
it will sign, the result as printed, usage errors, and the real CLI process against a real gateway, with the
page's part (open, passkey, approve) played by the test over the same mTLS certificate.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from idwall import cli
from idwall.challenges import action_challenge
from idwall.cli.output import CLIError
from idwall.cli.parser import build_parser
from idwall.cli.sign import checked_action, result_lines
from idwall.encoding import b64url_encode
from idwall.enrollment import invite_id_of
from tests.helpers.api import bootstrap, call, enroll, invite, login
from tests.helpers.cli import REPO, unset_idwall_env
from tests.helpers.upstream_app import serve_app

GW = "https://gw.example:8443"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_idwall_env(monkeypatch)


def _built(*argv: str) -> dict[str, Any]:
    args = build_parser().parse_args([*argv, "--gateway", GW])
    return args.build(args)


# --------------------------------------------------------------------------- flags


def test_each_verb_asks_for_its_action() -> None:
    assert _built("invite", "create", "--user", "bob", "--name", "Bob", "--email", "b@x.io", "--group", "eng",
                  "--group", "ops", "--admin") == {"type": "invite.create", "user": "bob", "name": "Bob",
                                                   "email": "b@x.io", "groups": ["eng", "ops"], "admin": True}
    # --manager is a field newer gateways take: sent only when given
    assert _built("invite", "create", "--user", "bob", "--name", "B", "--email", "b@x.io", "--manager",
                  "alice")["manager"] == "alice"
    assert _built("device", "approve", "dev-7") == {"type": "device.approve", "device_id": "dev-7"}
    assert _built("admin", "grant", "bob") == {"type": "admin.grant", "user": "bob"}
    assert _built("admin", "revoke", "bob") == {"type": "admin.revoke", "user": "bob"}
    assert _built("token", "create", "--name", "soar", "--scope", "kill", "--scope", "read", "--scope", "kill",
                  "--ttl", "1h") == {"type": "token.create", "name": "soar", "scopes": ["kill", "read"], "ttl": "1h"}


@pytest.mark.parametrize("argv", [
    ["token", "create", "--name", "x", "--scope", "admin", "--ttl", "1h"],
    ["token", "create", "--name", "x", "--ttl", "1h"],
    ["invite", "create", "--user", "bob", "--name", "Bob"],
    ["admin", "grant"],
    ["device", "approve"],
], ids=["unknown scope", "no scope", "no email", "no user", "no device"])
def test_missing_or_wrong_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--gateway", GW]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "words"), [
    (["admin", "grant", "bob", "--gateway", "http://gw.example"], "https://"),
    (["admin", "grant", " ", "--gateway", GW], "--user must be printable and not empty"),
    (["invite", "create", "--user", "bob", "--name", "B\x1b[31m", "--email", "b@x.io", "--gateway", GW],
     "--name must be printable"),
    (["admin", "grant", "bob", "--gateway", GW, "--dir", "/nonexistent"], "cannot use the device certificate"),
], ids=["plain http", "empty user", "control character", "no device files"])
def test_bad_values_are_one_line_usage_errors(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- what the gateway says it will sign


ASKED = {"type": "admin.grant", "user": "bob"}


def _answer(action: dict[str, Any]) -> dict[str, Any]:
    return {"action": action, "action_id": b64url_encode(action_challenge(action))}


def test_the_action_asked_for_plus_the_envelope_is_accepted() -> None:
    full = {**ASKED, "actor": "admin", "nonce": "n" * 43, "not_after": 1_800_000_300}
    assert checked_action(_answer(full), ASKED) == full


@pytest.mark.parametrize("action", [
    {"type": "admin.grant", "user": "mallory", "actor": "admin", "nonce": "n", "not_after": 1},
    {"type": "admin.grant", "user": "bob", "admin": True, "actor": "admin", "nonce": "n", "not_after": 1},
    {"type": "admin.grant", "user": "bob", "actor": "admin", "nonce": "n"},
    {"type": "admin.revoke", "user": "bob", "actor": "admin", "nonce": "n", "not_after": 1},
], ids=["changed field", "added field", "no not_after", "other type"])
def test_a_changed_action_is_refused_before_any_link(action: dict[str, Any]) -> None:
    with pytest.raises(CLIError, match="different action than asked for"):
        checked_action(_answer(action), ASKED)


def test_an_action_id_that_is_not_the_actions_challenge_is_refused() -> None:
    full = {**ASKED, "actor": "admin", "nonce": "n", "not_after": 1}
    other = _answer({**full, "nonce": "m"})["action_id"]
    with pytest.raises(CLIError, match="not the challenge"):
        checked_action({"action": full, "action_id": other}, ASKED)
    with pytest.raises(CLIError, match="no action"):
        checked_action({"action_id": other}, ASKED)


def test_results_as_printed() -> None:
    invite_lines = result_lines({"type": "invite.create", "user": "bob"}, {"code": "C0DE", "expires_at": 0}, GW)
    assert invite_lines == ["Invite for bob created. Enrollment code (single use, shown once, valid until "
                            "1970-01-01 00:00:00 UTC):", "  C0DE", "On the new device they run:",
                            f"  idwall device enroll --gateway {GW} --code C0DE"]
    assert result_lines({"type": "token.create", "name": "soar", "scopes": ["kill"]},
                        {"token": "T\x1b[0m", "token_id": "tok-1", "expires_at": 3600}, GW)[1] == "  T [0m"
    assert result_lines({"type": "admin.grant"}, {"user": "bob", "admin": True}, GW) == ["bob is now an administrator."]
    assert result_lines({"type": "admin.revoke"}, {"user": "bob", "admin": False}, GW) == [
        "bob is no longer an administrator."]
    assert result_lines({"type": "device.approve"}, {"device_id": "dev-7", "status": "active"}, GW) == [
        "Device dev-7 approved: active."]
    assert result_lines({"type": "user.set_manager"}, {"user": "bob"}, GW) == ['user.set_manager done: {"user": "bob"}']


# --------------------------------------------------------------------------- the real CLI and a real gateway


async def _start(gateway: Any, device: Any, *argv: str) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", *argv, "--gateway", gateway.url, "--cert", str(device.cert_path), "--key",
        str(device.key_path), "--ca", gateway.init["ca_pem"], stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(REPO))


async def _link(process: Any) -> tuple[str, str]:
    seen = b""
    while b"/idwall/sign/" not in seen:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        if not line:
            break
        seen += line
    found = re.search(rb"  (https://\S+/idwall/sign/(sgn-\S+))#(\S+)\n", seen)
    assert found is not None, seen
    return found.group(2).decode(), found.group(3).decode()


async def _done(process: Any) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def _page_signs(gateway: Any, device: Any, request_id: str, secret: str) -> None:
    async with gateway.session(device) as page:
        status, opened = await call(page, "POST", gateway.url + "/idwall/api/sign/open",
                                    {"request_id": request_id, "secret": secret})
        assert status == 200, opened
        status, answer = await call(page, "POST", gateway.url + "/idwall/api/sign/approve", {
            "request_id": request_id, "secret": secret, "credential": device.auth.get(opened["options"])})
        assert status == 200, answer


async def test_the_cli_prints_the_action_waits_for_the_page_and_prints_the_code(gateway) -> None:
    admin = await bootstrap(gateway)
    assert (await login(gateway, admin))[0] == 200
    process = await _start(gateway, admin, "invite", "create", "--user", "bob", "--name", "Bob", "--email",
                           "bob@example.com", "--json")
    request_id, secret = await _link(process)
    await _page_signs(gateway, admin, request_id, secret)
    status, out, err = await _done(process)
    assert status == 0, err
    answer = json.loads(out)
    assert answer["action"]["user"] == "bob" and answer["action"]["actor"] == "admin"
    assert (await gateway.store.get_invite(invite_id_of(answer["result"]["code"]))).user_id == "bob"
    assert answer["result"]["code"] not in err  # the secret goes to stdout only
    await enroll(gateway, answer["result"]["code"])  # and it works


async def test_a_refused_begin_is_one_line_and_exit_1(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        bob = await enroll(gateway, await invite(gateway, admin, client, "bob"))
    assert (await login(gateway, bob))[0] == 200
    status, out, err = await _done(await _start(gateway, bob, "admin", "grant", "bob"))
    assert status == 1 and out == ""
    assert err.startswith("idwall: admin.grant refused: Forbidden: admin.grant must be signed by an administrator")
    assert "(HTTP 403)" in err and "Traceback" not in err


async def test_without_a_session_the_cli_says_where_to_sign_in(gateway) -> None:
    admin = await bootstrap(gateway)  # enrolled, never signed in
    status, _, err = await _done(await _start(gateway, admin, "admin", "grant", "admin"))
    assert status == 1 and "has no live session: sign in at" in err and "/idwall/login" in err


async def test_a_declined_request_ends_the_cli_with_exit_1(gateway) -> None:
    admin = await bootstrap(gateway)
    assert (await login(gateway, admin))[0] == 200
    process = await _start(gateway, admin, "token", "create", "--name", "soar", "--scope", "kill", "--ttl", "1h")
    request_id, secret = await _link(process)
    async with gateway.session(admin) as page:
        assert (await call(page, "POST", gateway.url + "/idwall/api/sign/decline",
                           {"request_id": request_id, "secret": secret}))[0] == 200
    status, out, err = await _done(process)
    assert (status, out) == (1, "") and "declined on the signing page; nothing was signed" in err


async def test_a_gateway_that_changes_the_action_gets_no_link(gateway, tmp_path: Path) -> None:
    """A gateway (or something in its place) that answers begin with another action than asked for: the CLI
    stops before printing any link, so nobody is asked to sign what was not typed."""
    admin = await bootstrap(gateway)

    async def begin(request: web.Request) -> web.Response:
        asked = (await request.json())["action"]
        action = {**asked, "user": "mallory", "actor": "admin", "nonce": "n" * 43, "not_after": 2_000_000_000}
        return web.json_response({**_answer(action), "request_id": "sgn-" + "a" * 22, "poll_secret": "p" * 43,
                                  "link": "https://localhost/idwall/sign/x#y", "expires_in": 300})

    app = web.Application()
    app.router.add_post("/idwall/api/sign/requests", begin)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(gateway.dir / "certs" / "server.pem", gateway.dir / "certs" / "server-key.pem")
    runner, port = await serve_app(app, ctx)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "idwall", "admin", "grant", "bob", "--gateway", f"https://localhost:{port}",
            "--cert", str(admin.cert_path), "--key", str(admin.key_path), "--ca", gateway.init["ca_pem"],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
        status, out, err = await _done(process)
    finally:
        await runner.cleanup()
    assert status == 1 and "different action than asked for (fields user)" in err
    assert "/idwall/sign/" not in err


async def test_an_untrusted_gateway_certificate_is_refused(gateway, tmp_path: Path) -> None:
    admin = await bootstrap(gateway)
    other_ca = tmp_path / "other"
    assert cli.main(["init", "--dir", str(other_ca), "--json"]) == 0
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "idwall", "admin", "grant", "bob", "--gateway", gateway.url, "--cert",
        str(admin.cert_path), "--key", str(admin.key_path), "--ca", str(other_ca / "certs" / "ca.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    status, _, err = await _done(process)
    assert status == 1 and "TLS certificate is not trusted" in err
