"""The incident API: run a playbook (or rehearse it), follow it, resume it, end it.

    POST /idwall/api/admin/incidents              a token with scope incident; an admin session for a dry run
                                                  (a real run by a person is the signed action incident.start)
    GET  /idwall/api/admin/incidents[/{id}]       admin session, or a token with scope incident or read
    POST /idwall/api/admin/incidents/{id}/resume  a token with scope incident, or an admin session
    POST /idwall/api/admin/incidents/{id}/end     a token with scope incident, or an admin session

A token may start a real run because every step a playbook can have only takes access away or raises the bar
to get it back (``idwall.config.incident.STEPS``): DESIGN.md principle 3. A person starting one signs
``incident.start`` with their passkey instead (``/idwall/api/actions/begin|finish``), so the ledger holds
their assertion over the exact playbook, reason and targets. ``wait: false`` answers ``202`` as soon as the
run is recorded, and the stages continue in the background (``GET`` shows them commit: the CLI's progress).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..actions import incident_reason, incident_targets
from ..errors import BadRequest, Forbidden
from ..incident import run as incidents
from ..incident.plan import Targets
from ..tokens import InsufficientScope
from .api_admin import require_admin
from .context import NODE, conn_for
from .problems import read_json_object

routes = web.RouteTableDef()

RUN_FIELDS = frozenset({"playbook", "reason", "dry_run", "targets", "wait"})
#: background runs of this process, kept referenced until they finish
_BACKGROUND: set[asyncio.Task[Any]] = set()


async def reader(request: web.Request) -> str:
    """An admin session, or a token with scope incident or read."""
    try:
        return await require_admin(request, scope="incident")
    except InsufficientScope:
        return await require_admin(request, scope="read")


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


@routes.post("/idwall/api/admin/incidents")
async def run_playbook(request: web.Request) -> web.Response:
    """A dry run's report, or a real run: its status once every stage committed (``202`` with ``wait: false``)."""
    node = request.app[NODE]
    actor = await require_admin(request, scope="incident")
    body = await read_json_object(request, limit=node.config.limits.api_body)
    unknown = sorted(set(body) - RUN_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; a run takes {sorted(RUN_FIELDS)}")
    playbook = incidents.find_playbook(node, body.get("playbook"))
    reason = incident_reason(body.get("reason"), "reason")
    dry_run, wait = _flag(body, "dry_run", False), _flag(body, "wait", True)
    raw = incident_targets(body.get("targets"), "targets")
    targets = Targets(tuple(raw["users"]), tuple(raw["devices"]))
    prepared = await incidents.prepare(node, playbook, targets)
    if dry_run:
        return web.json_response(incidents.dry_run(node, prepared))
    if not actor.startswith("token:"):
        raise Forbidden("an administrator starts a real run by signing incident.start with a passkey "
                        "(POST /idwall/api/actions/begin with {action: {type: incident.start, playbook, reason, "
                        "targets}}); a dry run needs no signature")
    incident = await incidents.start(node, prepared, reason=reason, targets=targets, actor=actor)
    if not wait:
        task = asyncio.create_task(incidents.run_stages(node, incident))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        return web.json_response(await incidents.status(node, incident), status=202)
    await incidents.run_stages(node, incident)
    return web.json_response(await incidents.status(node, await incidents.incident_or_404(node, incident.id)))


@routes.get("/idwall/api/admin/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    """The newest incidents first, each with its state and how far it got."""
    node = request.app[NODE]
    await reader(request)
    running = set(incidents.RUNNING)  # before the rows are read (see state_of)
    rows = [{"incident_id": i.id, "playbook": i.playbook, "reason": i.reason, "actor": i.actor,
             "state": incidents.state_of(i, running=i.id in running), "started_at": i.started_at, "ended_at": i.ended_at,
             "stages_total": i.stages_total, "stages_committed": i.stages_committed}
            for i in await node.store.list_incidents()]
    return web.json_response({"incidents": rows})


@routes.get("/idwall/api/admin/incidents/{incident_id}")
async def show_incident(request: web.Request) -> web.Response:
    """One incident: state, the report of its committed stages, the stages left."""
    node = request.app[NODE]
    await reader(request)
    incident = await incidents.incident_or_404(node, request.match_info["incident_id"])
    return web.json_response(await incidents.status(node, incident))


@routes.post("/idwall/api/admin/incidents/{incident_id}/resume")
async def resume_incident(request: web.Request) -> web.Response:
    """Continue an interrupted run from its first uncommitted stage."""
    node = request.app[NODE]
    await require_admin(request, scope="incident")
    incident, spared = await incidents.resume(node, request.match_info["incident_id"], spare=conn_for(request))
    if spared:
        conn_for(request).close_after_answer = True
    return web.json_response(await incidents.status(node, incident))


@routes.post("/idwall/api/admin/incidents/{incident_id}/end")
async def end_incident(request: web.Request) -> web.Response:
    """End the incident: its restrictions (fresh_auth, blocked enrollment) lift; revocations stay."""
    node = request.app[NODE]
    actor = await require_admin(request, scope="incident")
    incident = await incidents.end(node, request.match_info["incident_id"], actor=actor)
    return web.json_response(await incidents.status(node, incident))
