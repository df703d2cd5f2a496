"""The admin API and the SOC console: who is online, the kill switch, the audit ledger, tokens.

Who may call what (DESIGN.md "HTTP surface", tokens in :mod:`idwall.tokens`):

    POST   /idwall/api/admin/kill          admin session, or a token with scope kill
    GET    /idwall/api/admin/sessions      admin session, or a token with scope read
    GET    /idwall/api/admin/audit         admin session, or a token with scope read
    GET    /idwall/api/admin/kills         admin session, or a token with scope read
    GET    /idwall/api/admin/tokens        admin session, or a token with scope read
    DELETE /idwall/api/admin/tokens/{id}   admin session only
    GET    /idwall/admin                   admin session only (the SOC console page)

An admin session is a live session over the connection's device certificate,
of a user with the admin role, whose last passkey assertion is younger than
``admin.fresh_auth``; an older one gets 401 with ``step_up: true``. Requests
that change something on the strength of a session (not of a token) must not
come from another site: a browser presents its client certificate to
cross-site requests too, so a foreign ``Origin`` or ``Sec-Fetch-Site:
cross-site`` is refused. And since ``/idwall/`` is served on every host the
gateway proxies, a session is only honoured on the gateway's own address: a
proxied app's page must not read this API same-origin on its own host.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import access, killswitch, sessions, tokens
from ..connections import Conn
from ..errors import BadRequest, Forbidden
from ..logs import event
from ..model import LedgerDraft, Session, User
from ..node import Node
from .context import NODE, conn_for, facts, require
from .problems import read_json_object

routes = web.RouteTableDef()

CONSOLE_PATH = "/idwall/admin"
STATIC = Path(__file__).parent / "static"
#: the console's page, script and style; nothing inline, so the CSP can forbid inline code
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
KILL_FIELDS = frozenset({"scope", "target", "reason", "revoke_devices"})
RECENT_KILLS = 20
AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT = 100, 1000
MAX_FILTER_LENGTH = 200
_UNSIGNED = re.compile(r"[0-9]{1,15}")


# -- who is asking ---------------------------------------------------------------------------------


async def require_admin(request: web.Request, *, scope: str, allow_tokens: bool = True) -> str:
    """The actor behind an admin request (``"<user id>"`` or ``"token:<token id>"``), or raise.

    ``scope`` (``kill`` or ``read``) is what a bearer token must hold; an admin
    session holds both. ``allow_tokens=False`` is for what only a person may do
    (revoke tokens, open the console). Raises InvalidToken (401) for a bad,
    unknown, expired or revoked token, InsufficientScope (403), and otherwise the
    problem of :func:`idwall.access.admin_verdict`.
    """
    if scope not in tokens.SCOPES:
        raise ValueError(f"scope must be one of {tokens.SCOPES}, got {scope!r}")
    node = request.app[NODE]
    secret = tokens.parse_authorization(request.headers.getall("Authorization", []))
    if secret is not None:
        if not allow_tokens:
            raise Forbidden("this needs an administrator's passkey session; tokens cannot do it")
        found = await node.store.get_token_by_hash(tokens.token_hash(secret))
        try:
            token = tokens.authorize(found, secret=secret, scope=scope, now=node.clock())
        except tokens.InvalidToken:
            event("admin.token_refused", token_id=found.id if found else None, path=request.path)
            raise
        return "token:" + token.id
    conn = conn_for(request)
    await node.resolve(conn)
    now = node.clock()
    verdict = access.admin_verdict(conn, facts(request), now=now, cfg=node.access, seen=node.last_seen)
    if verdict.location is not None and request.path == CONSOLE_PATH:
        raise web.HTTPSeeOther(location=verdict.location)
    require(verdict)
    assert conn.resolved is not None and conn.resolved.session is not None
    node.last_seen[conn.resolved.session.id] = now
    return conn.resolved.user.id


# -- recent kills, with what this node cut ---------------------------------------------------------


@dataclass
class _KillLog:
    """The last kills from the ledger, read incrementally, and how many connections this node cut for each."""

    scanned: int = 0
    entries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_KILLS))
    closed: OrderedDict[int, int] = field(default_factory=OrderedDict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def record(self, audit_seq: int, connections_closed: int) -> None:
        self.closed[audit_seq] = connections_closed
        while len(self.closed) > 10 * RECENT_KILLS:
            self.closed.popitem(last=False)

    async def refresh(self, node: Node) -> None:
        """Read the ledger entries appended since the last call (the first call reads it all, once)."""
        async with self.lock:
            while True:
                batch = await node.store.ledger_entries(after=self.scanned, limit=AUDIT_MAX_LIMIT)
                if not batch:
                    return
                self.entries.extend(e for e in batch if e.get("type") == "kill")
                self.scanned = batch[-1]["seq"]


# The app is frozen once started, so per-app state of this module lives beside it, not in it.
_kill_logs: "weakref.WeakKeyDictionary[web.Application, _KillLog]" = weakref.WeakKeyDictionary()


def _kill_log(app: web.Application) -> _KillLog:
    log = _kill_logs.get(app)
    if log is None:
        log = _kill_logs[app] = _KillLog()
    return log


def _kill_view(entry: dict[str, Any], closed: dict[int, int]) -> dict[str, Any]:
    data = entry.get("data", {})
    return {"audit_seq": entry["seq"], "time": entry["time"], "actor": entry["actor"], "scope": data.get("scope"),
            "target": data.get("target"), "reason": data.get("reason"),
            "revoke_devices": data.get("revoke_devices", False),
            # entries before counts list the ids themselves
            "sessions": data.get("sessions_revoked", len(data.get("sessions", ()))),
            "devices": data.get("devices_revoked", len(data.get("devices", ()))),
            "connections_closed": closed.get(entry["seq"])}


# -- the kill switch -------------------------------------------------------------------------------


@routes.post("/idwall/api/admin/kill")
async def kill(request: web.Request) -> web.StreamResponse:
    """Revoke durably, cut every matching connection, then answer what was cut."""
    node = request.app[NODE]
    actor = await require_admin(request, scope="kill")
    body = await read_json_object(request, limit=node.config.limits.api_body)
    unknown = sorted(set(body) - KILL_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; a kill takes {sorted(KILL_FIELDS)}")
    scope, target = killswitch.check_request(body.get("scope"), body.get("target"), body.get("reason"),
                                             body.get("revoke_devices", False))
    conn = conn_for(request)
    outcome = await killswitch.kill(node, scope=scope, target=target, reason=body["reason"],
                                    revoke_devices=body.get("revoke_devices", False), actor=actor, spare=conn)
    _kill_log(request.app).record(outcome.audit_seq, outcome.connections_closed)
    if outcome.spared:
        # The kill matched the connection it arrived on: the engine closes it once this answer is out.
        conn.close_after_answer = True
    return web.json_response(outcome.as_json())


# -- live sessions ---------------------------------------------------------------------------------


def _filter_value(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_FILTER_LENGTH:
        raise BadRequest(f"query parameter {name!r} is longer than {MAX_FILTER_LENGTH} characters")
    return value


def session_rows(live: list[Session], *, users: dict[str, User], conns: dict[str, list[Conn]],
                 device_names: dict[str, str], last_seen: dict[str, float], now: float,
                 idle_timeout: int) -> list[dict[str, Any]]:
    """The sessions API rows: each usable session with what its live connections are doing."""
    rows = []
    for s in live:
        seen = max(last_seen.get(s.id, s.last_seen), s.last_seen)
        state = sessions.SessionState(s.id, s.auth_time, s.created_at, seen, s.expires_at, s.revoked_at is not None)
        if sessions.session_status(state, now=now, idle_timeout=idle_timeout) != sessions.ACTIVE:
            continue
        user = users.get(s.user_id)
        mine = conns.get(s.id, [])
        latest = max(mine, key=lambda c: c.last_seen, default=None)
        rows.append({
            "session_id": s.id, "user": s.user_id, "name": user.name if user else s.user_id,
            "groups": list(user.groups) if user else [], "device_id": s.device_id,
            "device_name": device_names.get(s.device_id, s.device_id),
            "remote": latest.remote if latest else None, "user_agent": latest.user_agent if latest else None,
            "since": s.created_at, "last_seen": max([seen, *(c.last_seen for c in mine)]),
            "bytes": sum(c.bytes_in + c.bytes_out for c in mine), "connections": len(mine),
            "activity": sorted({c.kind for c in mine}), "auth_time": s.auth_time, "expires_at": s.expires_at,
        })
    return rows


@routes.get("/idwall/api/admin/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Live sessions (``?user=``, ``?group=``, ``?device=`` narrow them) with their connections."""
    node = request.app[NODE]
    await require_admin(request, scope="read")
    want_user, want_group, want_device = (_filter_value(request, n) for n in ("user", "group", "device"))
    now = node.clock()
    users = {u.id: u for u in await node.store.list_users()}
    live = [s for s in await node.store.live_sessions(now=now)
            if (want_user is None or s.user_id == want_user)
            and (want_device is None or s.device_id == want_device)
            and (want_group is None or (s.user_id in users and want_group in users[s.user_id].groups))]
    by_session: dict[str, list[Conn]] = {}
    names: dict[str, str] = {}
    for conn in node.registry:
        if conn.session_id is not None and not conn.killed:
            by_session.setdefault(conn.session_id, []).append(conn)
        if conn.resolved is not None:
            names[conn.resolved.device.id] = conn.resolved.device.name
    for device_id in {s.device_id for s in live} - names.keys():
        device = await node.store.get_device(device_id)
        if device is not None:
            names[device_id] = device.name
    rows = session_rows(live, users=users, conns=by_session, device_names=names, last_seen=node.last_seen, now=now,
                        idle_timeout=node.config.session.idle_timeout)
    return web.json_response({"sessions": rows, "time": now})


# -- audit ledger and recent kills -----------------------------------------------------------------


def _int_param(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _UNSIGNED.fullmatch(text) or not low <= int(text) <= high:
        raise BadRequest(f"query parameter {name!r} must be an integer from {low} to {high}, got {text[:30]!r}")
    return int(text)


@routes.get("/idwall/api/admin/audit")
async def audit(request: web.Request) -> web.Response:
    """Ledger entries after ``after`` (default 0), at most ``limit`` (1..1000, default 100), as stored."""
    node = request.app[NODE]
    await require_admin(request, scope="read")
    after = _int_param(request, "after", default=0, low=0, high=10**15)
    limit = _int_param(request, "limit", default=AUDIT_DEFAULT_LIMIT, low=1, high=AUDIT_MAX_LIMIT)
    entries = await node.store.ledger_entries(after=after, limit=limit)
    return web.json_response({"entries": entries, "next": entries[-1]["seq"] if entries else after})


@routes.get("/idwall/api/admin/kills")
async def recent_kills(request: web.Request) -> web.Response:
    """The last 20 kills, newest first, with how many connections this node cut for each (null: not known here)."""
    node = request.app[NODE]
    await require_admin(request, scope="read")
    log = _kill_log(request.app)
    await log.refresh(node)
    return web.json_response({"kills": [_kill_view(e, log.closed) for e in reversed(log.entries)]})


@routes.get("/idwall/api/admin/webhooks")
async def webhook_deliveries(request: web.Request) -> web.Response:
    """This node's most recent webhook deliveries (kills, incident stages) and where each one stands."""
    node = request.app[NODE]
    await require_admin(request, scope="read")
    return web.json_response({"deliveries": [d.as_json() for d in node.webhooks.deliveries()]})


# -- tokens ----------------------------------------------------------------------------------------


@routes.get("/idwall/api/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """Every token, without its hash."""
    node = request.app[NODE]
    await require_admin(request, scope="read")
    now = node.clock()
    return web.json_response({"tokens": [tokens.public_view(t, now=now) for t in await node.store.list_tokens()]})


@routes.delete("/idwall/api/admin/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token (an administrator's session only), with a ``token.revoke`` ledger entry."""
    node = request.app[NODE]
    actor = await require_admin(request, scope="read", allow_tokens=False)
    token_id = request.match_info["token_id"]
    if len(token_id) > MAX_FILTER_LENGTH:
        raise BadRequest("token id is too long")
    seq = await node.store.revoke_token(token_id, now=node.clock(),
                                      draft=LedgerDraft("token.revoke", actor, token_id, {"token_id": token_id}))
    event("token.revoke", actor=actor, token_id=token_id, audit_seq=seq)
    return web.json_response({"token_id": token_id, "revoked": True, "audit_seq": seq})


# -- the SOC console -------------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


_ASSETS = {"admin.js": ("application/javascript", _asset("admin.js")),
           "admin.css": ("text/css", _asset("admin.css"))}
_PAGE = _asset("admin.html")


@routes.get(CONSOLE_PATH)
async def console(request: web.Request) -> web.Response:
    """The SOC console; browsers without a fresh admin session are sent to the passkey login."""
    await require_admin(request, scope="read", allow_tokens=False)
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                 "X-Frame-Options": "DENY"})


@routes.get("/idwall/static/admin.js")
@routes.get("/idwall/static/admin.css")
async def console_asset(request: web.Request) -> web.Response:
    """The console's script and style (public: they hold no data)."""
    content_type, body = _ASSETS[request.path.rsplit("/", 1)[1]]
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})
