"""An incident's recovery dashboard: what it cut, who is back by group over time, who is not back yet.

    GET /idwall/api/admin/incidents/{id}/recovery[?limit=N]   admin session, or a token with scope incident or read

The picture is :func:`idwall.incident.recovery.recovery` over the ledger entries it needs after the incident's
``incident.start`` (one indexed read per page of entries, by type) and who is in which group now; ``limit``
(1-500, default 100) bounds the users listed as not back (``not_back_total`` counts them all). The console's
Incidents page polls it.
"""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web

from ..incident import recovery as pictures
from ..incident import run as incidents
from ..incident.plan import plan_from_json
from ..node import Node
from ..model import Incident
from .api_directory import check_known, limit_param
from .api_incidents import reader
from .context import NODE

routes = web.RouteTableDef()

#: entries read per store call; an incident's kills and logins of 1,000 users take a few pages
PAGE = 5000
#: incidents per store whose entries this process keeps between polls
KEPT = 8
#: per store, per incident: the entries read so far. The ledger only grows, so a poll reads just the entries
#: after the last one seen (the dashboard polls every few seconds; 1,000 users' kills and logins are ~2,000)
_SEEN: weakref.WeakKeyDictionary[Any, dict[str, list[dict[str, Any]]]] = weakref.WeakKeyDictionary()


async def _entries(node: Node, incident: Incident) -> list[dict[str, Any]]:
    """Every entry the picture needs after ``incident.start``, oldest first."""
    seen = _SEEN.setdefault(node.store, {})
    entries = seen.pop(incident.id, [])
    while True:
        after = entries[-1]["seq"] if entries else incident.audit_seq
        page = await node.store.ledger_of_types(pictures.ENTRY_TYPES, after=after, limit=PAGE)
        entries += page
        if len(page) < PAGE:
            break
    seen[incident.id] = entries  # the newest last: the oldest incident's entries are dropped first
    while len(seen) > KEPT:
        del seen[next(iter(seen))]
    return entries


async def picture_of(node: Node, incident: Incident) -> pictures.Recovery:
    """The recovery picture of ``incident`` as the store holds it now."""
    entries = await _entries(node, incident)
    snapshot = await node.store.incident_snapshot(now=node.clock())
    owners = dict(snapshot.device_owners)
    # a device a stage named (a lost one) is revoked by now, so no longer among the snapshot's: ask for it
    for device_id in {d for stage in plan_from_json(incident.plan).stages for d in stage.devices} - set(owners):
        device = await node.store.get_device(device_id)
        if device is not None:
            owners[device_id] = device.user_id
    groups = {user.id: user.groups for user in snapshot.users}
    return pictures.recovery(incident, entries, groups, device_owners=owners)


@routes.get("/idwall/api/admin/incidents/{incident_id}/recovery")
async def incident_recovery(request: web.Request) -> web.Response:
    """Sessions and devices cut per stage and group, users back by group over time, the users not back yet."""
    node = request.app[NODE]
    await reader(request)
    check_known(request, ("limit",))
    limit = limit_param(request.query.get("limit"))
    incident = await incidents.incident_or_404(node, request.match_info["incident_id"])
    answer = pictures.recovery_json(await picture_of(node, incident), not_back_limit=limit)
    answer.update(playbook=incident.playbook, reason=incident.reason, started_at=incident.started_at,
                  ended_at=incident.ended_at)
    return web.json_response(answer)
