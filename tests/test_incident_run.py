"""The incident executor on a real gateway (real SQLite file, real kill switch): a dry run writes nothing, a real
run commits its stages in order with privileged users first, an interrupted run resumes from its first
uncommitted stage, and ending lifts restrictions but not revocations."""

from __future__ import annotations

from pathlib import Path

import pytest

from idwall.errors import BadRequest, Conflict, NotFound
from idwall.incident import run
from idwall.incident.plan import Targets, plan_from_json
from idwall.model import Incident
from tests.helpers.gateway import running_gateway
from tests.helpers.store import dump

PLAYBOOKS = """
privileged: {groups: [sre]}
incident:
  playbooks:
    org-wide-reset:
      trigger: privileged credentials exposed
      exclude: {groups: [break-glass]}
      stages:
        - {scope: privileged, steps: [kill, revoke_devices, suspect_passkeys]}
        - {scope: all, steps: [kill, require_reapproval]}
    lock-down:
      trigger: credentials seen for sale
      stages:
        - {scope: all, steps: [raise_fresh_auth, block_code_enrollment], fresh_auth: 5m}
    one-user:
      trigger: one user compromised
      stages:
        - {scope: target, steps: [kill, revoke_devices]}
"""


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


async def _people(gw) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "root": await gw.device("root", admin=True),
        "sam": await gw.device("sam", groups=("sre",)),
        "bg": await gw.device("bg", groups=("break-glass",), admin=True),
        "ann": await gw.device("ann", groups=("eng",)),
        "bob": await gw.device("bob", groups=("eng",)),
    }


async def test_a_dry_run_reports_each_stage_and_writes_nothing(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        node = gw.running.node
        await _people(gw)
        before, files = await dump(gw.store), _files(gw.store.path)
        prepared = await run.prepare(node, run.find_playbook(node, "org-wide-reset"), Targets())
        report = run.dry_run(node, prepared)
        assert await dump(gw.store) == before and _files(gw.store.path) == files
        assert report["dry_run"] is True and report["trigger"] == "privileged credentials exposed"
        # each playbook stage takes the privileged first, as a stage of their own
        assert [(s["part"], s["users"]) for s in report["stages"]] == [("privileged", 2), ("privileged", 2),
                                                                       ("others", 2)]
        assert report["excluded"] == ["bg"] and report["privileged"] == ["bg", "root", "sam"]
        first, second, third = (s["result"] for s in report["stages"])
        assert (first["sessions_revoked"], first["devices_revoked"], first["passkeys_marked_suspect"]) == (2, 2, 2)
        assert (second["sessions_revoked"], second["devices_to_reapprove"]) == (0, 0)  # cut and revoked already
        assert (third["sessions_revoked"], third["devices_to_reapprove"]) == (2, 2)


async def test_a_real_run_commits_stages_in_order_privileged_first(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        node = gw.running.node
        people = await _people(gw)
        prepared = await run.prepare(node, run.find_playbook(node, "org-wide-reset"), Targets())
        incident = await run.start(node, prepared, reason="laptop stolen", targets=Targets(), actor="root")
        await run.run_stages(node, incident)
        status = await run.status(node, await run.incident_or_404(node, incident.id))
        assert status["state"] == "complete" and status["stages_committed"] == 3
        entries = await gw.store.ledger_entries(after=incident.audit_seq - 1)
        kinds = [(e["type"], e["subject"]) for e in entries]
        assert kinds == [("incident.start", incident.id), ("kill", "root"), ("kill", "sam"),
                         ("incident.stage", incident.id), ("kill", "root"), ("kill", "sam"),
                         ("incident.stage", incident.id), ("kill", "ann"), ("kill", "bob"),
                         ("incident.stage", incident.id)]
        first, _, second = (e["data"] for e in entries if e["type"] == "incident.stage")
        assert first["users"] == ["root", "sam"] and len(first["credentials_suspect"]) == 2
        assert first["kills"] == [entries[1]["seq"], entries[2]["seq"]]
        assert second["devices_reapproval"] == sorted([people["ann"].device_id, people["bob"].device_id])
        assert (await gw.store.get_device(people["root"].device_id)).status == "revoked"
        assert (await gw.store.get_device(people["ann"].device_id)).status == "pending_approval"
        assert (await gw.store.get_device(people["bg"].device_id)).status == "active"  # break-glass untouched
        assert (await gw.store.get_session(people["bg"].session_id)).revoked_at is None


async def test_an_interrupted_run_says_which_stages_committed_and_resumes_from_the_next(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        node = gw.running.node
        people = await _people(gw)
        prepared = await run.prepare(node, run.find_playbook(node, "org-wide-reset"), Targets())
        incident = await run.start(node, prepared, reason="drill", targets=Targets(), actor="root")
        # the process running it dies after stage 1 committed (the rest of this run never happens)
        await run.run_stage(node, incident, plan_from_json(incident.plan).stages[0])
        status = await run.status(node, await run.incident_or_404(node, incident.id))
        assert status["state"] == "interrupted"
        assert [s["committed"] for s in status["stages"]] == [True, False, False]
        assert (await gw.store.get_session(people["ann"].session_id)).revoked_at is None
        resumed, _ = await run.resume(node, incident.id)
        assert resumed.stages_committed == 3
        assert (await gw.store.get_session(people["ann"].session_id)).revoked_at is not None
        stages = [e for e in await gw.store.ledger_entries() if e["type"] == "incident.stage"]
        assert [e["data"]["number"] for e in stages] == [1, 2, 3]  # nothing ran twice
        with pytest.raises(Conflict):
            await run.run_stage(node, resumed, plan_from_json(incident.plan).stages[0])


async def test_ending_lifts_restrictions_and_keeps_revocations(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        node = gw.running.node
        people = await _people(gw)
        prepared = await run.prepare(node, run.find_playbook(node, "lock-down"), Targets())
        incident = await run.start(node, prepared, reason="for sale", targets=Targets(), actor="token:t1")
        await run.run_stages(node, incident)
        resolved = await gw.store.resolve_certificate(people["ann"].cert_sha256, now=node.clock())
        assert resolved.fresh_auth == 300 and await gw.store.enrollment_blocked("ann") == incident.id
        ended = await run.end(node, incident.id, actor="root")
        assert ended.ended_at is not None and ended.ended_by == "root"
        assert await gw.store.enrollment_blocked("ann") is None
        with pytest.raises(Conflict):
            await run.end(node, incident.id, actor="root")
        with pytest.raises(Conflict, match="has ended"):
            await run.resume(node, incident.id)


async def test_unknown_playbooks_incidents_and_bad_targets_are_refused(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, extra_yaml=PLAYBOOKS) as gw:
        node = gw.running.node
        await _people(gw)
        with pytest.raises(NotFound, match="org-wide-reset, lock-down, one-user"):
            run.find_playbook(node, "nope")
        with pytest.raises(NotFound):
            await run.incident_or_404(node, "inc-nope")
        with pytest.raises(BadRequest, match="name at least one"):
            await run.prepare(node, run.find_playbook(node, "one-user"), Targets())
        with pytest.raises(BadRequest, match="does not exist"):
            await run.prepare(node, run.find_playbook(node, "one-user"), Targets(users=("mallory",)))


@pytest.mark.parametrize(("committed", "ended", "running", "state"), [
    (1, False, True, "running"), (1, False, False, "interrupted"), (2, False, False, "complete"),
    (2, True, False, "ended"), (1, True, True, "ended"),
])
def test_the_state_of_a_run(committed: int, ended: bool, running: bool, state: str) -> None:
    incident = Incident("inc-1", "p", "r", "alice", 0.0, {"stages": []}, 2, committed, 1,
                        ended_at=5.0 if ended else None)
    assert run.state_of(incident, running=running) == state
