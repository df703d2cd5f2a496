"""The approvals page's read: the devices waiting for the signed-in person's approval.

    GET /idwall/api/approvals    a passkey session of any user, on the gateway's own address

Who may approve what is the rule :func:`idwall.actions.check_role` enforces when ``device.approve`` or
``device.reject`` is signed: an administrator approves every pending device; with ``devices.approval:
manager`` a user who is not an administrator approves the pending devices of the users whose manager they
are (read at this moment, so a former manager sees nothing more); anyone else approves nothing. The
answer lists exactly those devices and never another user's: a person who manages nobody gets an empty
list and ``reports: []``, so the page can say why. It is a page (``limit`` 1..500, ``after`` the last
device id) like the admin directory's lists.

A session counts only on the gateway's own host names, as for the admin API: ``/idwall/`` is served on every
proxied host too, and a proxied app's page must not read who waits for whom with the person's ambient
client certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..errors import Forbidden
from ..httpnorm import host_without_port
from ..node import Node
from ..model import DirectoryDevice, User
from .api_directory import check_known, device_view, id_param, limit_param, next_after
from .context import NODE, with_session

routes = web.RouteTableDef()

#: whose pending devices a person may approve: everyone's, those of the people they manage, or nobody's
SCOPES = ("all", "reports", "none")


def approval_scope(*, admin: bool, approval: str) -> str:
    """One of :data:`SCOPES` for a signer: administrators approve all; managers only under ``approval: manager``."""
    if admin:
        return "all"
    return "reports" if approval == "manager" else "none"


@dataclass(frozen=True)
class Waiting:
    """What waits for one person: the scope of their approvals, whom they manage, a page of pending devices."""

    scope: str
    reports: list[str]
    devices: list[DirectoryDevice]


async def waiting_for(node: Node, user: User, *, after: str = "", limit: int = 100) -> Waiting:
    """The pending devices ``user`` may approve now (a page of up to ``limit``, ids after ``after``)."""
    scope = approval_scope(admin=user.admin, approval=node.config.devices.approval)
    reports = await node.store.reports_of(user.id)
    if scope == "all":
        devices = await node.store.directory_devices(status="pending_approval", after=after, limit=limit)
    elif scope == "reports" and reports:
        devices = await node.store.pending_of_reports(user.id, after=after, limit=limit)
    else:
        devices = []
    return Waiting(scope, reports, devices)


def _on_own_address(request: web.Request, node: Node) -> None:
    hostname = host_without_port(request.host)
    if hostname is None or hostname.strip("[]") not in {h.strip("[]") for h in node.access.own_hosts}:
        raise Forbidden(f"approvals are answered to passkey sessions only at {node.config.public_url}")


@routes.get("/idwall/api/approvals")
async def approvals(request: web.Request) -> web.Response:
    """A page of the devices waiting for this session's user to approve, with who they manage and why."""
    node = request.app[NODE]
    _on_own_address(request, node)
    check_known(request, ("after", "limit"))
    limit = limit_param(request.query.get("limit"))
    after = id_param("after", request.query.get("after")) or ""
    _, resolved, session = await with_session(request)
    node.last_seen[session.id] = node.clock()
    waiting = await waiting_for(node, resolved.user, after=after, limit=limit)
    return web.json_response({
        "user": resolved.user.id, "admin": resolved.user.admin, "approval": node.config.devices.approval,
        "scope": waiting.scope, "reports": waiting.reports,
        "devices": [device_view(d) for d in waiting.devices],
        "next": next_after(waiting.devices, limit, lambda d: d.id)})


__all__ = ["SCOPES", "Waiting", "approval_scope", "routes", "waiting_for"]
