"""Incident verbs: ``incident run|status|resume|end`` through the gateway's API, and the two store reports.

``incident run`` always asks the gateway for a dry run first: that report is what ``--dry-run`` prints (a
tabletop exercise), and what a real run shows before asking for confirmation (unless ``--yes``). The real run
is then started in the background on the gateway (``wait: false``) and followed stage by stage with a
``tqdm`` progress bar on stderr carrying the counts; the final report is the gateway's. ``users --privileged``
and ``report readiness`` read the store named by ``--config`` (like ``audit export``), never the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from datetime import datetime, timezone
from typing import Any

from ..incident.inventory import Holder, PrivilegedEntry, TokenInfo, privileged_inventory
from ..incident.readiness import DeviceExpiry, readiness_report
from ..incident.report import render_report
from .client import Answer, _call, _client, _gateway_url, _read_token, _ssl_context, problem_line
from .local import _config_path, _existing_sqlite, _load
from .output import CONTROL, CLIError, clean, usage

INCIDENTS = "/idwall/api/admin/incidents"
POLL_EVERY = 0.2
#: a run whose stages stop advancing for this long is reported (the gateway may have lost the run)
STALL_AFTER = 600.0
DIRECTORY_PAGE = 500
_COUNTS = ("sessions_revoked", "connections_closed", "devices_revoked")


class _Gateway:
    """The gateway URL, TLS context and token every incident verb uses."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url = _gateway_url(args.gateway)
        self.token = _read_token(args.token_file)
        self.ctx: ssl.SSLContext = _ssl_context(args.ca)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        async with _client(self.ctx) as session:
            return await _call(session, method, self.url + path, payload=body,
                               headers={"Authorization": f"Bearer {self.token}"})

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None, *, doing: str) -> dict[str, Any]:
        answer = asyncio.run(self.call(method, path, body))
        if not 200 <= answer.status < 300:
            raise CLIError(f"{doing} refused: {problem_line(answer)}")
        return answer.body


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    head = report.get("incident_id")
    if head:
        print(f"incident {clean(head)}: {clean(report.get('state'))}, {report.get('stages_committed')} of "
              f"{report.get('stages_total')} stage(s) committed")
    try:
        lines = render_report(report)
    except (KeyError, TypeError):
        raise CLIError(f"the gateway's report has an unexpected shape: {clean(json.dumps(report), 300)}") from None
    for line in lines:
        print(CONTROL.sub(" ", line)[:2000])  # the gateway's text, made printable; indentation kept


def _confirm(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise usage("a real run cuts the users above; pass --yes to confirm when not at a terminal "
                    "(or --dry-run to only see what it would do)")
    phrase = f"run {args.playbook}"
    print(f"Type {phrase!r} to run it for real: ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip() != phrase:
        raise usage("not confirmed; nothing was changed")


def _follow(gateway: _Gateway, incident_id: str, total: int) -> dict[str, Any]:
    """Poll the incident until its stages are all committed; a progress bar with the counts so far."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="stage", desc=f"incident {incident_id}", file=sys.stderr, dynamic_ncols=True)
    done, last_change = 0, time.monotonic()
    try:
        while True:
            status = gateway.ok("GET", f"{INCIDENTS}/{incident_id}", doing="status")
            committed = int(status.get("stages_committed", 0))
            if committed > done:
                bar.update(committed - done)
                done, last_change = committed, time.monotonic()
                sums = {name: sum((s.get("result") or {}).get(name, 0) for s in status.get("stages", []))
                        for name in _COUNTS}
                bar.set_postfix(sessions=sums["sessions_revoked"], connections=sums["connections_closed"],
                                devices=sums["devices_revoked"])
            state = status.get("state")
            if state in ("complete", "ended"):
                return status
            if state == "interrupted" or time.monotonic() - last_change > STALL_AFTER:
                raise CLIError(f"incident {incident_id} stopped after {committed} of {total} stage(s); "
                               f"idwall incident resume {incident_id} continues it")
            time.sleep(POLL_EVERY)
    finally:
        bar.close()


def cmd_incident_run(args: argparse.Namespace) -> int:
    """``idwall incident run``: the dry run, then (confirmed) the real run, followed stage by stage."""
    reason = args.reason.strip()
    if not reason:
        raise usage("--reason is empty; the audit ledger records why access was cut")
    gateway = _Gateway(args)
    body: dict[str, Any] = {"playbook": args.playbook, "reason": reason,
                            "targets": {"users": args.user or [], "devices": args.device or []}}
    rehearsal = gateway.ok("POST", INCIDENTS, {**body, "dry_run": True}, doing="dry run")
    if args.dry_run:
        _print_report(rehearsal, args.json)
        return 0
    if not args.json:
        _print_report(rehearsal, False)
    _confirm(args, rehearsal)
    begun = gateway.ok("POST", INCIDENTS, {**body, "wait": False}, doing="run")
    incident_id = begun.get("incident_id")
    if not isinstance(incident_id, str):
        raise CLIError(f"the gateway's answer names no incident: {clean(json.dumps(begun), 300)}")
    _print_report(_follow(gateway, clean(incident_id, 100), int(begun.get("stages_total") or 0)), args.json)
    return 0


def cmd_incident_status(args: argparse.Namespace) -> int:
    """``idwall incident status [ID]``: one incident's report, or the list of incidents."""
    gateway = _Gateway(args)
    if args.id:
        _print_report(gateway.ok("GET", f"{INCIDENTS}/{args.id}", doing="status"), args.json)
        return 0
    listed = gateway.ok("GET", INCIDENTS, doing="status")
    if args.json:
        print(json.dumps(listed, sort_keys=True))
        return 0
    rows = listed.get("incidents") or []
    if not rows:
        print("no incidents")
    for row in rows:
        print(clean(f"{row.get('incident_id')}  {row.get('playbook')}  {row.get('state')}  "
                    f"{row.get('stages_committed')}/{row.get('stages_total')} stage(s)  {_when(row.get('started_at'))}"
                    f"  {row.get('reason')}", 400))
    return 0


def cmd_incident_resume(args: argparse.Namespace) -> int:
    """``idwall incident resume ID``: continue an interrupted run from its first uncommitted stage."""
    gateway = _Gateway(args)
    _print_report(gateway.ok("POST", f"{INCIDENTS}/{args.id}/resume", doing="resume"), args.json)
    return 0


def cmd_incident_end(args: argparse.Namespace) -> int:
    """``idwall incident end ID``: restrictions lift; what was revoked stays revoked."""
    gateway = _Gateway(args)
    ended = gateway.ok("POST", f"{INCIDENTS}/{args.id}/end", doing="end")
    if args.json:
        print(json.dumps(ended, sort_keys=True))
    else:
        print(f"incident {clean(args.id, 100)} ended: its restrictions are lifted; revocations stay")
    return 0


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "never"
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


async def _holdings(args: argparse.Namespace) -> tuple[list[Holder], list[DeviceExpiry], list[TokenInfo], Any]:
    from ..store import open_store

    config = _load(_config_path(args.config))
    _existing_sqlite(config)
    store = await open_store(config.store, ledger_key=None)
    try:
        holders: list[Holder] = []
        expiries: list[DeviceExpiry] = []
        after = ""
        while page := await store.directory_users(after=after, limit=DIRECTORY_PAGE):
            for row in page:
                active = {d.id for d in row.devices if d.status == "active"}
                holders.append(Holder(row.user.id, row.user.name, row.user.admin, row.user.groups, len(active),
                                      tuple(c.device_id for c in row.credentials if c.device_id in active),
                                      row.last_login))
                expiries += [DeviceExpiry(d.id, row.user.id, d.not_after) for d in row.devices
                             if d.status == "active" and d.not_after is not None]
            after = page[-1].user.id
        now = time.time()
        tokens = [TokenInfo(t.id, t.name, t.scopes, t.created_by, t.expires_at) for t in await store.list_tokens()
                  if t.revoked_at is None and t.expires_at > now]
        return holders, expiries, tokens, config
    finally:
        await store.close()


def _entry_json(entry: PrivilegedEntry) -> dict[str, Any]:
    return {"kind": entry.kind, "id": entry.id, "name": entry.name, "why": list(entry.why),
            "last_login": entry.last_login, "devices": entry.devices, "credentials": entry.credentials,
            "created_by": entry.created_by, "expires_at": entry.expires_at}


def cmd_users(args: argparse.Namespace) -> int:
    """``idwall users --privileged``: admins, privileged groups' members, live tokens and who made them."""
    if not args.privileged:
        raise usage("idwall users lists the privileged inventory: pass --privileged")
    holders, _, tokens, config = asyncio.run(_holdings(args))
    entries = privileged_inventory(holders, tokens, privileged_groups=config.privileged.groups)
    if args.json:
        print(json.dumps({"privileged": [_entry_json(e) for e in entries]}, sort_keys=True))
        return 0
    for e in entries:
        if e.kind == "user":
            print(clean(f"user  {e.id}  ({'; '.join(e.why)})  last login {_when(e.last_login)}  "
                        f"{e.devices} device(s)  {e.credentials} passkey(s)", 400))
        else:
            print(clean(f"token {e.id} {e.name!r}  ({'; '.join(e.why)})  expires {_when(e.expires_at)}", 400))
    if not entries:
        print("nobody is privileged")
    return 0


def cmd_report_readiness(args: argparse.Namespace) -> int:
    """``idwall report readiness``: what would stop people getting back in by themselves after a reset."""
    holders, expiries, tokens, _ = asyncio.run(_holdings(args))
    report = readiness_report(holders, expiries, tokens, now=time.time())
    if args.json:
        print(json.dumps({"users": report.users, "ready": report.ready,
                          "findings": [{"kind": f.kind, "subject": f.subject, "detail": f.detail}
                                       for f in report.findings]}, sort_keys=True))
        return 0
    print(f"{report.users} user(s) checked: " + ("ready" if report.ready else f"{len(report.findings)} finding(s)"))
    for finding in report.findings:
        print(clean(f"{finding.kind}  {finding.subject}: {finding.detail}", 400))
    return 0


def _gateway_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    p.add_argument("--token-file", required=True, help="file holding a token with scope incident (status: or read)")
    p.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else the system store)")
    p.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")


def add_parsers(commands: Any) -> None:
    """``incident run|status|resume|end``, ``users --privileged``, ``report readiness``."""
    p = commands.add_parser("incident", help="run a rehearsed incident playbook, follow it, end it")
    verbs = p.add_subparsers(dest="incident_command", required=True, metavar="ACTION")
    r = verbs.add_parser("run", help="dry-run a playbook, then (confirmed) run it stage by stage")
    r.add_argument("playbook", help="a playbook name from incident.playbooks")
    r.add_argument("--reason", required=True, help="why; recorded in the audit ledger with every kill")
    r.add_argument("--dry-run", action="store_true", help="only print what each stage would cut; change nothing")
    r.add_argument("--yes", action="store_true", help="run without asking for confirmation")
    r.add_argument("--user", action="append", help="a target user (playbooks with a target stage); repeatable")
    r.add_argument("--device", action="append", help="a target device id; repeatable")
    _gateway_flags(r)
    r.set_defaults(func=cmd_incident_run)
    s = verbs.add_parser("status", help="one incident's report, or the list of incidents")
    s.add_argument("id", nargs="?", help="incident id (default: list them all)")
    _gateway_flags(s)
    s.set_defaults(func=cmd_incident_status)
    for name, func, text in (("resume", cmd_incident_resume, "continue an interrupted run"),
                             ("end", cmd_incident_end, "end an incident: restrictions lift, revocations stay")):
        e = verbs.add_parser(name, help=text)
        e.add_argument("id", help="incident id")
        _gateway_flags(e)
        e.set_defaults(func=func)

    u = commands.add_parser("users", help="the privileged inventory, from the store")
    u.add_argument("--privileged", action="store_true", help="admins, privileged groups' members, tokens")
    u.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml)")
    u.add_argument("--json", action="store_true", help="print one JSON object")
    u.set_defaults(func=cmd_users)
    rep = commands.add_parser("report", help="reports from the store")
    reports = rep.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    ready = reports.add_parser("readiness", help="who could not recover alone, expiring certificates, tokens")
    ready.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml)")
    ready.add_argument("--json", action="store_true", help="print one JSON object")
    ready.set_defaults(func=cmd_report_readiness)
