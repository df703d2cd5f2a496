"""The admin console's directory API: people, devices, the ledger searched and verified, token revocation.

Who may call what (tokens in :mod:`idwall.tokens`; the admin session as in :mod:`idwall.web.api_admin`):

    GET  /idwall/api/admin/users                 admin session, or a token with scope read
    GET  /idwall/api/admin/devices               admin session, or a token with scope read
    GET  /idwall/api/admin/audit/search          admin session, or a token with scope read
    GET  /idwall/api/admin/audit/verify          admin session, or a token with scope read
    POST /idwall/api/admin/tokens/{id}/revoke    admin session only (``token.revoke`` in the ledger)

Lists are pages: ``limit`` (1..500, default 100) and ``after`` (the last id, or seq, of the previous page);
the answer's ``next`` is what to pass as ``after`` for the following page, or null after the last one.
Nothing here answers a certificate, a public key, a token or a token's hash.

Verifying the ledger replays every stored entry with :func:`idwall.audit.verify_ledger` (what
``idwall audit verify`` runs), pinning the ledger key from the configuration and the root fingerprint that
the request names, else the configured one (``ledger.root``), so a ledger replaced as a whole fails. It is bounded: entries are read a page at a time and replayed in a worker
thread, one verification at a time per root (concurrent requests share it), and a replay that takes longer
than :data:`VERIFY_BUDGET` stops and says how far it got (``complete: false``) instead of holding the
request open; ``idwall audit verify`` checks a ledger of any size offline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..audit import VerifyResult, verify_ledger
from ..encoding import b64url_encode
from ..errors import BadRequest
from ..node import Node
from ..model import DirectoryDevice, DirectoryUser
from ..store.base import StoreError
from . import api_admin
from .context import NODE

routes = web.RouteTableDef()

DEFAULT_LIMIT, MAX_LIMIT = 100, 500
MAX_ID_LENGTH = 128
#: wall-clock seconds one verification may replay for before it answers what it verified so far
VERIFY_BUDGET = 20.0
VERIFY_PAGE = 1000
DEVICE_STATUSES = ("active", "pending_approval", "revoked")
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SEQ = re.compile(r"[0-9]{1,15}")
_ROOT = re.compile(r"[A-Za-z0-9_-]{43}")
_TYPE = re.compile(r"[a-z][a-z0-9._]{0,63}")


# -- query parameters (pure) -----------------------------------------------------------------------


def limit_param(value: str | None) -> int:
    """``limit`` of a page: 1..500, default 100; BadRequest otherwise."""
    if value is None:
        return DEFAULT_LIMIT
    if not _SEQ.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"query parameter 'limit' must be an integer from 1 to {MAX_LIMIT}, got {value[:30]!r}")
    return int(value)


def id_param(name: str, value: str | None) -> str | None:
    """An id in the query (user, device, ``after``): 1-128 characters of [A-Za-z0-9._:-], or None when absent."""
    if value is None or value == "":
        return None
    if not _ID.fullmatch(value):
        raise BadRequest(f"query parameter {name!r} must be an id of 1-{MAX_ID_LENGTH} characters of "
                         f"[A-Za-z0-9._:-], got {value[:30]!r}")
    return value


def seq_param(value: str | None) -> int:
    """``after`` of a ledger page: a seq (0 or more), default 0."""
    if value is None or value == "":
        return 0
    if not _SEQ.fullmatch(value):
        raise BadRequest(f"query parameter 'after' must be a ledger seq (0 or more), got {value[:30]!r}")
    return int(value)


def status_param(value: str | None) -> str | None:
    """A device ``status`` filter: one of :data:`DEVICE_STATUSES`, or None when absent."""
    if value is None or value == "":
        return None
    if value not in DEVICE_STATUSES:
        raise BadRequest(f"query parameter 'status' must be one of {', '.join(DEVICE_STATUSES)}, got {value[:30]!r}")
    return value


def type_param(value: str | None) -> str | None:
    """A ledger entry ``type`` filter such as ``device.approve``, or None when absent."""
    if value is None or value == "":
        return None
    if not _TYPE.fullmatch(value):
        raise BadRequest(f"query parameter 'type' must be an entry type such as device.approve, got {value[:30]!r}")
    return value


def root_param(value: str | None) -> str | None:
    """A root fingerprint to pin (43 characters of base64url), or None when absent."""
    if value is None or value == "":
        return None
    if not _ROOT.fullmatch(value):
        raise BadRequest("query parameter 'root' must be the root fingerprint as `idwall audit verify --root` "
                         "takes it: 43 characters of base64url")
    return value


def check_known(request: web.Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {', '.join(unknown)[:100]}; this endpoint takes "
                         f"{', '.join(allowed)}")
    repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
    if repeated:
        raise BadRequest(f"query parameter(s) {', '.join(repeated)} given more than once")


# -- views (pure) ----------------------------------------------------------------------------------


def device_view(device: DirectoryDevice) -> dict[str, Any]:
    """A device as the API shows it: status, certificate expiry, who approved it; no certificate."""
    return {"id": device.id, "user": device.user_id, "user_name": device.user_name, "name": device.name,
            "status": device.status, "enrolled_at": device.enrolled_at, "not_after": device.not_after,
            "approved_by": device.approved_by, "revoked_at": device.revoked_at, "credentials": device.credentials}


def user_view(entry: DirectoryUser) -> dict[str, Any]:
    """A user with manager, devices, passkeys (id and device, never the public key) and last login."""
    user = entry.user
    return {"id": user.id, "name": user.name, "email": user.email, "groups": list(user.groups),
            "admin": user.admin, "manager": entry.manager, "created_at": user.created_at,
            "devices": [device_view(d) for d in entry.devices],
            "credentials": [{"id": b64url_encode(c.id), "device_id": c.device_id, "created_at": c.created_at,
                             "sign_count": c.sign_count} for c in entry.credentials],
            "last_login": entry.last_login}


def next_after(items: list[Any], limit: int, key: Any) -> Any:
    """The ``after`` of the following page, or None when this page was the last (shorter than ``limit``)."""
    return key(items[-1]) if len(items) == limit else None


def verify_answer(result: VerifyResult, *, complete: bool, pinned: bool, budget: float) -> dict[str, Any]:
    """The verify endpoint's answer: ``idwall audit verify --json``'s fields, plus ``complete`` and ``pinned``."""
    reason = re.sub(r"^seq \d+: ", "", result.reason)
    if not complete:
        reason = (f"not finished: {result.entries} entries verified (to seq {result.seq}) within {budget:g} s; "
                  "run idwall audit verify for the whole ledger")
    ok = result.ok and complete
    return {"ok": ok, "complete": complete, "entries": result.entries, "seq": result.seq, "reason": reason,
            "root": result.root, "pinned_root": pinned,
            "head": f"{result.seq}:{result.head}" if ok and result.head else None}


# -- handlers --------------------------------------------------------------------------------------


@routes.get("/idwall/api/admin/users")
async def list_users(request: web.Request) -> web.Response:
    """A page of users with groups, admin flag, manager, devices, passkeys and last passkey login."""
    node = request.app[NODE]
    await api_admin.require_admin(request, scope="read")
    check_known(request, ("after", "limit"))
    limit = limit_param(request.query.get("limit"))
    after = id_param("after", request.query.get("after")) or ""
    users = await node.store.directory_users(after=after, limit=limit)
    return web.json_response({"users": [user_view(u) for u in users],
                              "next": next_after(users, limit, lambda u: u.user.id)})


@routes.get("/idwall/api/admin/devices")
async def list_devices(request: web.Request) -> web.Response:
    """A page of devices (``?status=`` active, pending_approval or revoked narrows it)."""
    node = request.app[NODE]
    await api_admin.require_admin(request, scope="read")
    check_known(request, ("status", "after", "limit"))
    limit = limit_param(request.query.get("limit"))
    status = status_param(request.query.get("status"))
    after = id_param("after", request.query.get("after")) or ""
    devices = await node.store.directory_devices(status=status, after=after, limit=limit)
    return web.json_response({"devices": [device_view(d) for d in devices],
                              "next": next_after(devices, limit, lambda d: d.id)})


@routes.get("/idwall/api/admin/audit/search")
async def search_audit(request: web.Request) -> web.Response:
    """Ledger entries as stored, oldest first, after seq ``after``; ``type`` and ``user`` narrow them."""
    node = request.app[NODE]
    await api_admin.require_admin(request, scope="read")
    check_known(request, ("type", "user", "after", "limit"))
    limit = limit_param(request.query.get("limit"))
    after = seq_param(request.query.get("after"))
    kind = type_param(request.query.get("type"))
    user = id_param("user", request.query.get("user"))
    entries = await node.store.search_ledger(type=kind, user=user, after=after, limit=limit)
    return web.json_response({"entries": entries, "next": next_after(entries, limit, lambda e: e["seq"])})


@dataclass
class _Verification:
    """One replay of the stored ledger in a worker thread, stopped at ``deadline`` (monotonic seconds)."""

    node: Node
    loop: asyncio.AbstractEventLoop
    deadline: float
    stopped: bool = False

    def entries(self) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            if time.monotonic() > self.deadline:
                self.stopped = True
                return
            # the store belongs to the event loop's thread: read each page there
            pending = asyncio.run_coroutine_threadsafe(
                self.node.store.ledger_entries(after=after, limit=VERIFY_PAGE), self.loop)
            try:
                page = pending.result(timeout=VERIFY_BUDGET)
            except concurrent.futures.TimeoutError:
                pending.cancel()
                raise StoreError("the store did not answer while the ledger was being verified") from None
            if not page:
                return
            yield from page
            after = page[-1]["seq"]


async def _verify(node: Node, root: str | None) -> dict[str, Any]:
    run = _Verification(node, asyncio.get_running_loop(), time.monotonic() + VERIFY_BUDGET)
    public_key = node.ledger_key.public_key()
    result = await asyncio.to_thread(lambda: verify_ledger(run.entries(), root=root, ledger_public_key=public_key))
    return verify_answer(result, complete=not run.stopped, pinned=root is not None, budget=VERIFY_BUDGET)


# The app is frozen once started, so this module's per-app state (running verifications by root) lives beside it.
_running: "weakref.WeakKeyDictionary[web.Application, dict[str | None, asyncio.Task[dict[str, Any]]]]" = \
    weakref.WeakKeyDictionary()


@routes.get("/idwall/api/admin/audit/verify")
async def verify_audit(request: web.Request) -> web.Response:
    """Verify the whole stored chain as ``idwall audit verify`` does, pinned to ``?root=`` or ``ledger.root``."""
    node = request.app[NODE]
    await api_admin.require_admin(request, scope="read")
    check_known(request, ("root",))
    # a root named in the request is checked instead of the configured pin (ledger.root), never neither
    root = root_param(request.query.get("root")) or node.config.ledger.root
    running = _running.setdefault(request.app, {})
    task = running.get(root)
    if task is None:
        task = running[root] = asyncio.ensure_future(_verify(node, root))
        # forgotten once done: the next request verifies afresh, and roots never asked again take no memory
        task.add_done_callback(lambda _: running.pop(root, None))
    # shielded: a client that goes away does not cancel the verification others may be waiting for
    return web.json_response(await asyncio.shield(task))


@routes.post("/idwall/api/admin/tokens/{token_id}/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token at once (an administrator's session, no passkey: it only takes access away), ledgered."""
    return await api_admin.revoke_token(request)
