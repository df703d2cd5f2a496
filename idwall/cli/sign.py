"""The signing verbs: ``invite create``, ``device approve``, ``admin grant|revoke``, ``token create``.

Each grants access, so each needs a passkey signature over the exact action (DESIGN.md principle 3), and the
command line never holds a passkey. It talks to the gateway over mTLS with this device's certificate
(``--dir`` with ``device.pem``/``device-key.pem``, or ``--cert``/``--key``): sessions belong to the
certificate, so the command is in the session the browser with that certificate signed in to. It begins
the action (``/idwall/api/sign/requests``), checks that the action the gateway will have signed is the one
asked for and that its challenge is that action's, prints it in words and as canonical JSON with a check
code, and prints a one-time link. The passkey signs on that page; the command collects the assertion with
a secret that never left it, finishes the action itself (``/idwall/api/actions/finish``) and prints the
result, which nobody else is shown. An automation token is not enough for any of this.

Exit codes as the other verbs: 0 done, 1 refused, declined or expired, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..action_words import describe
from ..challenges import action_challenge
from ..encoding import b64url_encode, canonical_json
from ..sign_requests import check_code
# the one gateway call, its TLS and URL checks and the waiting line are client.py's, shared by every client verb
from .client import (POLL_INTERVAL, GatewayUnreachable, _call, _client, _gateway_url, _Progress, _ssl_context,
                     problem_line)
from .output import CONTROL, CLIError, clean, usage

DEFAULT_DIR = Path("idwall-device")
TOKEN_SCOPES = ("kill", "read", "incident")
ENVELOPE = ("actor", "nonce", "not_after")
#: how long past the action's own deadline the command keeps asking (clock skew, a slow last poll)
GRACE = 5.0


# --------------------------------------------------------------------------- the verbs' flags


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help="this device's files from idwall device enroll (device.pem, device-key.pem, ca.pem; "
                        "default: ./idwall-device)")
    p.add_argument("--cert", help="device certificate (default: DIR/device.pem)")
    p.add_argument("--key", help="device key (default: DIR/device-key.pem)")
    p.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else DIR/ca.pem, "
                                "else the system store)")
    p.add_argument("--json", action="store_true", help="print the signed action and its result as one JSON object")


def add_device_approve(device_cmds: Any) -> None:
    """``idwall device approve DEVICE_ID`` under the ``device`` verb."""
    p = device_cmds.add_parser("approve", help="approve a pending device (signed with your passkey in the browser)")
    p.add_argument("device_id", metavar="DEVICE_ID")
    _common(p)
    p.set_defaults(func=cmd_sign, build=lambda a: {"type": "device.approve", "device_id": a.device_id})


def add_sign_verbs(commands: Any) -> None:
    """``idwall invite create``, ``idwall admin grant|revoke``, ``idwall token create``."""
    p = commands.add_parser("invite", help="invite a person (signed with your passkey in the browser)")
    sub = p.add_subparsers(dest="invite_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="create a single-use enrollment code for a new person")
    c.add_argument("--user", required=True, help="user id (lower case: a-z 0-9 . _ -)")
    c.add_argument("--name", required=True, help="display name")
    c.add_argument("--email", required=True)
    c.add_argument("--group", action="append", default=[], help="a group (repeat for several)")
    c.add_argument("--admin", action="store_true", help="make the person an administrator")
    c.add_argument("--manager", help="user id of the person's manager")
    _common(c)
    c.set_defaults(func=cmd_sign, build=_invite)

    p = commands.add_parser("admin", help="administrator rights (signed with your passkey in the browser)")
    sub = p.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    for verb, kind in (("grant", "admin.grant"), ("revoke", "admin.revoke")):
        a = sub.add_parser(verb, help=f"{verb} administrator rights")
        a.add_argument("user", metavar="USER")
        _common(a)
        a.set_defaults(func=cmd_sign, build=lambda args, kind=kind: {"type": kind, "user": args.user})

    p = commands.add_parser("token", help="automation tokens (signed with your passkey in the browser)")
    sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = sub.add_parser("create", help="create an automation token (shown once)")
    t.add_argument("--name", required=True, help="what the token is for")
    t.add_argument("--scope", action="append", required=True, choices=TOKEN_SCOPES,
                   help="kill, read or incident (repeat for several)")
    t.add_argument("--ttl", required=True, help="lifetime, such as 1h, 30d (at most 365d)")
    _common(t)
    t.set_defaults(func=cmd_sign, build=lambda a: {"type": "token.create", "name": a.name,
                                                   "scopes": list(dict.fromkeys(a.scope)), "ttl": a.ttl})


def _invite(args: argparse.Namespace) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "invite.create", "user": args.user, "name": args.name, "email": args.email,
                              "groups": args.group, "admin": args.admin}
    if args.manager is not None:  # a field newer gateways take: sent only when asked for
        action["manager"] = args.manager
    return action


# --------------------------------------------------------------------------- talking to the gateway


def _device_tls(args: argparse.Namespace) -> ssl.SSLContext:
    directory = Path(args.dir).expanduser()
    cert = Path(args.cert) if args.cert else directory / "device.pem"
    key = Path(args.key) if args.key else directory / "device-key.pem"
    dir_ca = directory / "ca.pem"
    ca = args.ca or (None if os.environ.get("IDWALL_CA") or not dir_ca.is_file() else str(dir_ca))
    ctx = _ssl_context(ca)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise usage(f"cannot use the device certificate {cert} with key {key} "
                    f"({getattr(exc, 'strerror', None) or exc}); pass --dir with the files of idwall device enroll, "
                    "or --cert and --key") from None
    return ctx


def checked_action(body: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """The action the gateway will have signed, if it is the one asked for and ``action_id`` is its challenge.

    The gateway adds only ``actor``, ``nonce`` and ``not_after``; anything else changed or added is refused
    before any link is shown, so the terminal never asks to sign what the person did not type.
    """
    action = body.get("action")
    if not isinstance(action, dict):
        raise CLIError("the gateway's answer has no action")
    changed = sorted(k for k in set(action) | set(asked) if k not in ENVELOPE and action.get(k) != asked.get(k))
    if changed or not all(k in action for k in ENVELOPE):
        raise CLIError(f"the gateway would sign a different action than asked for (fields {', '.join(changed)}); "
                       "nothing was signed")
    try:
        challenge = action_challenge(action)
    except Exception:
        raise CLIError("the gateway's action is not canonical JSON; nothing was signed") from None
    if body.get("action_id") != b64url_encode(challenge):
        raise CLIError("the gateway's action_id is not the challenge of the action it showed; nothing was signed")
    return action


def _when(unix: Any) -> str:
    if not isinstance(unix, int):
        return "?"
    return datetime.fromtimestamp(unix, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(action: dict[str, Any], link: str) -> None:
    err = sys.stderr
    print(f"Sign this action with your passkey (as {clean(action['actor'])}):", file=err)
    print(f"  {clean(describe(action), 2000)}", file=err)
    print(f"  exact action: {clean(canonical_json(action).decode('utf-8'), 4000)}", file=err)
    print(f"  check code:   {check_code(action_challenge(action))} (the page shows the same)", file=err)
    print(f"Open this link in the browser signed in with this device's certificate (until "
          f"{_when(action['not_after'])}):", file=err)
    print(f"  {clean(link, 2000)}", file=err, flush=True)


async def _wait(session: Any, gateway: str, request_id: str, poll_secret: str, seconds: float) -> dict[str, Any]:
    """Poll until the page signed (the assertion), declined, or the request ended; bounded by its deadline."""
    url = f"{gateway}/idwall/api/sign/collect"
    progress = _Progress(sys.stderr)
    start = time.monotonic()
    note = ""
    try:
        while True:
            elapsed = time.monotonic() - start
            if elapsed > seconds + GRACE:
                raise CLIError("the link was not signed in time; nothing was signed (run the command again)")
            try:
                answer = await _call(session, "POST", url, payload={"request_id": request_id,
                                                                    "poll_secret": poll_secret})
            except GatewayUnreachable as exc:
                answer, note = None, f" (gateway unreachable, retrying: {exc})"
            if answer is not None:
                note = ""
                state = answer.body.get("state")
                if answer.status >= 500:
                    note = f" (gateway error {answer.status}, retrying)"
                elif answer.status == 401:
                    # the session ended meanwhile (signed out, idle): the page asks to sign in again, then goes on
                    note = " (the device's session ended: sign in again on the page)"
                elif answer.status == 410:
                    raise CLIError(f"the sign request ended: {problem_line(answer)}; nothing was signed")
                elif not 200 <= answer.status < 300:
                    raise CLIError(f"waiting for the signature failed: {problem_line(answer)}")
                elif state == "signed" and isinstance(answer.body.get("credential"), dict):
                    return answer.body["credential"]
                elif state in ("declined", "refused"):
                    raise CLIError(f"{clean(answer.body.get('detail') or state)}; nothing was signed")
                elif state == "opened":
                    note = " (the page is open)"
            progress.show("waiting for the passkey" + note, elapsed)
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        progress.done()


async def _sign(gateway: str, ctx: ssl.SSLContext, asked: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    async with _client(ctx) as session:
        begun = await _call(session, "POST", f"{gateway}/idwall/api/sign/requests", payload={"action": asked})
        if begun.status == 401:
            login = clean(begun.body.get("login_url") or f"{gateway}/idwall/login", 2000)
            raise CLIError(f"this device certificate has no live session: sign in at {login} in the browser that "
                           "uses this device's certificate, then run the command again")
        if not 200 <= begun.status < 300:
            raise CLIError(f"{asked['type']} refused: {problem_line(begun)}")
        action = checked_action(begun.body, asked)
        request_id, poll_secret = begun.body.get("request_id"), begun.body.get("poll_secret")
        link, seconds = begun.body.get("link"), begun.body.get("expires_in")
        if not (isinstance(request_id, str) and isinstance(poll_secret, str) and isinstance(link, str)
                and link.startswith("https://") and isinstance(seconds, int)):
            raise CLIError("the gateway's answer lacks request_id, poll_secret, an https link or expires_in")
        _show(action, link)
        credential = await _wait(session, gateway, request_id, poll_secret, float(seconds))
        done = await _call(session, "POST", f"{gateway}/idwall/api/actions/finish",
                           payload={"action_id": begun.body["action_id"], "credential": credential})
    if not 200 <= done.status < 300:
        raise CLIError(f"the gateway refused the signed {action['type']}: {problem_line(done)}")
    result = done.body.get("result")
    if not isinstance(result, dict):
        raise CLIError("the gateway's answer to the signed action has no result")
    return action, result


# --------------------------------------------------------------------------- the result


def result_lines(action: dict[str, Any], result: dict[str, Any], gateway: str) -> list[str]:
    """What the terminal prints once the action is done (secrets included: they are shown here only)."""
    kind = action["type"]
    if kind == "invite.create":
        code = clean(result.get("code"))
        return [f"Invite for {clean(action['user'])} created. Enrollment code (single use, shown once, valid until "
                f"{_when(result.get('expires_at'))}):", f"  {code}",
                "On the new device they run:", f"  idwall device enroll --gateway {clean(gateway)} --code {code}"]
    if kind == "token.create":
        return [f"Token {clean(action['name'])!r} created (id {clean(result.get('token_id'))}, scopes "
                f"{', '.join(action['scopes'])}, valid until {_when(result.get('expires_at'))}). Shown once:",
                f"  {clean(result.get('token'))}"]
    if kind in ("admin.grant", "admin.revoke"):
        now = "now an administrator" if result.get("admin") else "no longer an administrator"
        return [f"{clean(result.get('user'))} is {now}."]
    if kind == "device.approve":
        return [f"Device {clean(result.get('device_id'))} approved: {clean(result.get('status'))}."]
    return [f"{kind} done: {clean(json.dumps(result, sort_keys=True), 2000)}"]


def _check_text(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and (not item.strip() or CONTROL.search(item)):
                raise usage(f"--{name.replace('_', '-')} must be printable and not empty, got {item!r}")


def cmd_sign(args: argparse.Namespace) -> int:
    """Every signing verb: begin, show, wait for the passkey on the page, finish, print the result."""
    gateway = _gateway_url(args.gateway)
    _check_text(args, ("user", "name", "email", "group", "manager", "device_id", "ttl"))
    asked = args.build(args)
    ctx = _device_tls(args)
    action, result = asyncio.run(_sign(gateway, ctx, asked))
    if args.json:
        print(json.dumps({"action": action, "result": result}, sort_keys=True))
    else:
        print("\n".join(result_lines(action, result, gateway)))
    return 0
