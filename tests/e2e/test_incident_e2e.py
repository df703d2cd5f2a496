"""The organisation-wide reset, end to end: a gateway with 200 enrolled users in several groups (admins, an sre
group counted as privileged, a break-glass group excluded), every one holding a live TLS connection. The
dry run reports the counts and changes nothing; ``idwall incident run`` (a subprocess, with a token of scope
incident) then cuts everyone but the break-glass group, the privileged first (by the client's clocks and by
the ledger), with its progress shown; a webhook receiver verifies the Standard Webhooks signature of every
message it gets.

200 users keep this inside CI's time on a loaded 2-core machine; the issue's 1,000 only scales the loops.
Users are registered straight in the store (``GatewayUnderTest.device``), so this ledger's enrollment entries
are test entries and ``idwall audit verify`` is shown on a fully real ledger in
``tests/test_web_api_incidents.py`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from idwall.config import load_config
from idwall.incident import run
from idwall.pki import load_cert, load_private_key
from idwall.testing.fixtures import register_device_directly
from idwall.web.server import start_gateway
from tests.helpers.api import call, call_fresh
from tests.helpers.cli import run_cli
from tests.helpers.kill import RawConn, kill_bed, still_served
from tests.helpers.process import gateway_process
from tests.helpers.store import dump
from tests.helpers.upstream_app import serve_app

USERS = 200
GROUPS = ("eng", "sales", "ops", "data")


class Receiver:
    """A SOAR's webhook endpoint: verifies every message, keeps the verified ones and counts the rest."""

    def __init__(self, secret: bytes) -> None:
        self.hook = Webhook(base64.b64encode(secret).decode())
        self.verified: list[dict[str, Any]] = []
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verified.append(self.hook.verify(body, dict(request.headers)))
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=400)
        return web.Response(status=204)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.verified if m["type"] == kind]


def _group(index: int) -> tuple[tuple[str, ...], bool]:
    if index < 4:
        return ("ops",), True                           # admins
    if index < 12:
        return ("sre",), False                          # privileged by privileged.groups
    if index < 16:
        return ("break-glass",), index == 12            # excluded (one of them an admin)
    return (GROUPS[index % len(GROUPS)],), False


def _time(entry: dict[str, Any]) -> float:
    return datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


async def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


async def test_the_org_wide_reset_cuts_the_privileged_first_and_never_break_glass(tmp_path: Path) -> None:
    secret = os.urandom(32)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("whsec_" + base64.b64encode(secret).decode())
    receiver = Receiver(secret)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner, port = await serve_app(app)
    yaml = f"""
privileged: {{groups: [sre]}}
incident:
  webhooks: [{{url: "http://127.0.0.1:{port}/hook", secret_file: "{secret_file}"}}]
  playbooks:
    org-wide-reset:
      trigger: privileged credentials exposed
      exclude: {{groups: [break-glass]}}
      stages:
        - {{scope: privileged, steps: [kill, revoke_devices, suspect_passkeys]}}
        - {{scope: all, steps: [kill, revoke_devices]}}
"""
    try:
        async with kill_bed(tmp_path, extra_yaml=yaml) as bed:
            gw = bed.gw
            people: dict[str, tuple[Any, tuple[str, ...], bool]] = {}
            for index in range(USERS):
                groups, admin = _group(index)
                user = f"u{index:04d}"
                people[user] = (await gw.device(user, groups=groups, admin=admin), groups, admin)
            conns: dict[str, RawConn] = {}
            for user, (device, _, _) in people.items():
                conns[user] = await RawConn.open(gw, device)
                assert (await conns[user].get("/before"))[0] == 200
            watchers = {u: asyncio.create_task(c.until_closed()) for u, c in conns.items()
                        if "break-glass" not in people[u][1]}
            token_file = tmp_path / "token"
            token_file.write_text(await bed.token(["incident"]))
            flags = ["--gateway", gw.url, "--token-file", str(token_file), "--ca", gw.init["ca_pem"]]
            privileged = {u for u, (_, groups, admin) in people.items() if (admin or "sre" in groups)
                          and "break-glass" not in groups}
            glass = {u for u, (_, groups, _) in people.items() if "break-glass" in groups}
            others = set(people) - privileged - glass

            # the tabletop: the same counts the day itself will have, and nothing changed; last-seen times the
            # requests above batched are written first, so the periodic flush cannot land between the two dumps
            await gw.running.node.flush_last_seen()
            before = await dump(gw.store)
            rehearsal = await asyncio.to_thread(run_cli, "incident", "run", "org-wide-reset", "--reason", "drill",
                                                "--dry-run", "--json", *flags)
            assert rehearsal.returncode == 0, rehearsal.stderr
            assert await dump(gw.store) == before
            dry = json.loads(rehearsal.stdout)
            assert [(s["part"], s["users"]) for s in dry["stages"]] == [("privileged", len(privileged)),
                                                                        ("others", len(others))]
            assert all(not w.done() for w in watchers.values())

            done = await asyncio.to_thread(run_cli, "incident", "run", "org-wide-reset", "--reason",
                                           "admin credentials exposed", "--yes", "--json", *flags, timeout=300)
            assert done.returncode == 0, done.stderr
            assert "2/2" in done.stderr and "connections=" in done.stderr  # the progress bar
            closed = dict(zip(watchers, await asyncio.wait_for(asyncio.gather(*watchers.values()), 30)))
            assert set(closed) == privileged | others
            # the privileged connections all closed before any other (the client's clock)
            assert max(closed[u] for u in privileged) < min(closed[u] for u in others)
            for user in glass:
                assert await still_served(conns[user])

            # the day's counts are the rehearsal's
            real = json.loads(done.stdout)
            assert real["state"] == "complete"
            for rehearsed, happened in zip(dry["stages"], real["stages"]):
                for count in ("sessions_revoked", "devices_revoked", "connections_closed", "passkeys_marked_suspect"):
                    assert rehearsed["result"][count] == happened["result"][count], count
            assert real["stages"][1]["result"]["connections_closed"] == len(others)
            status, shown, _ = await call_fresh(gw, "GET", f"/idwall/api/admin/incidents/{real['incident_id']}",
                                                token=token_file.read_text())
            assert status == 200 and shown["stages_committed"] == 2

            # the ledger: every kill of a privileged user comes before (in order and time) every other kill
            entries = await gw.store.ledger_entries(after=shown["audit_seq"] - 1, limit=10_000)
            kills = [e for e in entries if e["type"] == "kill"]
            assert {k["subject"] for k in kills} == privileged | others
            first_other = min(k["seq"] for k in kills if k["subject"] in others)
            assert all(k["seq"] < first_other for k in kills if k["subject"] in privileged)
            assert max(_time(k) for k in kills if k["subject"] in privileged) <= \
                min(_time(k) for k in kills if k["subject"] in others)
            stages = [e for e in entries if e["type"] == "incident.stage"]
            assert [s["data"]["users"] for s in stages] == [sorted(privileged), sorted(others)]
            assert not glass & {u for s in stages for u in s["data"]["users"]}

            # every webhook the gateway sent verified: the start, both stages, every kill
            await _wait_for(lambda: len(receiver.of_type("kill")) == len(kills)
                            and len(receiver.of_type("incident.stage")) == 2)
            assert receiver.refused == 0
            assert [m["data"]["incident_id"] for m in receiver.of_type("incident.start")] == [real["incident_id"]]
            assert [m["data"]["number"] for m in receiver.of_type("incident.stage")] == [1, 2]
    finally:
        await runner.cleanup()


CRASH_PLAYBOOK = """
incident:
  playbooks:
    org-wide-reset:
      trigger: privileged credentials exposed
      stages:
        - {scope: privileged, steps: [kill]}
        - {scope: all, steps: [kill, revoke_devices]}
"""


async def test_a_run_killed_between_stages_keeps_exactly_its_committed_stages_and_resumes(tmp_path: Path) -> None:
    """SIGKILL the gateway's processes once a stage committed and the run goes on; a new process on the same
    directory says the run is interrupted after exactly the stages the store and the ledger hold, and resuming
    runs the rest (none twice)."""
    # two workers: each kill waits for the other's acknowledgement, so stage 2 takes long enough to be cut into
    with gateway_process(tmp_path, "http://127.0.0.1:9", workers=2,
                         edit=lambda text: text + CRASH_PLAYBOOK) as gateway:
        config = load_config(gateway.info["config"])
        ca_cert, ca_key = load_cert(config.device_ca.cert), load_private_key(config.device_ca.key)

        async def people(store: Any) -> None:
            for index in range(USERS):
                await register_device_directly(store, device_ca_cert=ca_cert, device_ca_key=ca_key,
                                               out_dir=tmp_path / "devices", user_id=f"u{index:04d}",
                                               admin=index == 0)

        await asyncio.to_thread(gateway.store_call, people)
        secret = await asyncio.to_thread(gateway.kill_token, ("incident", "read"))
        db = sqlite3.connect(str(config.sqlite_path), timeout=10)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gateway.ssl())) as client:
            status, begun = await call(client, "POST", f"https://localhost:{gateway.port}/idwall/api/admin/incidents",
                                       {"playbook": "org-wide-reset", "reason": "crash drill", "wait": False},
                                       headers={"Authorization": f"Bearer {secret}"})
        assert status == 202, begun
        for _ in range(2000):
            (committed,) = db.execute("SELECT stages_committed FROM incidents").fetchone()
            if committed:
                break
            await asyncio.sleep(0.005)
        for pid in gateway.pids:  # the whole node is lost at once
            os.kill(pid, signal.SIGKILL)
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait(10)
        (committed, total) = db.execute("SELECT stages_committed, stages_total FROM incidents").fetchone()
        assert 1 <= committed < total
        numbers = list(range(1, committed + 1))
        assert [n for (n,) in db.execute("SELECT number FROM incident_stages ORDER BY number")] == numbers
        stage_entries = [json.loads(e) for (e,) in db.execute("SELECT entry FROM ledger ORDER BY seq")
                         if '"incident.stage"' in e]
        assert [e["data"]["number"] for e in stage_entries] == numbers
        db.close()

        running = await start_gateway(config, port=gateway.port)
        try:
            node = running.node
            shown = await run.status(node, await run.incident_or_404(node, begun["incident_id"]))
            assert shown["state"] == "interrupted"
            assert [s["committed"] for s in shown["stages"]] == [n <= committed for n in range(1, total + 1)]
            resumed, _ = await run.resume(node, begun["incident_id"])
            assert resumed.stages_committed == total
            stages = [e for e in await node.store.ledger_entries(limit=10_000) if e["type"] == "incident.stage"]
            assert [e["data"]["number"] for e in stages] == list(range(1, total + 1))  # none twice, none skipped
            assert len(await node.store.live_sessions(now=node.clock())) == 0
        finally:
            await running.stop(drain=0.5)
