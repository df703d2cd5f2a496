"""``idwall incident run|status|resume|end``, ``users --privileged`` and ``report readiness``, run as a user runs
them (a subprocess) against a real gateway over real TLS, with a real token and a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.helpers.api import counts
from tests.helpers.cli import run_cli
from tests.helpers.kill import KillBed, kill_bed

PLAYBOOKS = """
privileged: {groups: [sre]}
incident:
  playbooks:
    org-wide-reset:
      trigger: privileged credentials exposed
      exclude: {groups: [break-glass]}
      stages:
        - {scope: privileged, steps: [kill, revoke_devices, suspect_passkeys]}
        - {scope: all, steps: [kill]}
"""


async def _cli(*args: str) -> Any:
    return await asyncio.to_thread(run_cli, *args)


async def _bed_with_people(bed: KillBed, tmp_path: Path) -> list[str]:
    gw = bed.gw
    await gw.device("root", admin=True)
    await gw.device("sam", groups=("sre",))
    await gw.device("glass", groups=("break-glass",))
    for index in range(4):
        await gw.device(f"user{index}", groups=("eng",))
    token_file = tmp_path / "token"
    token_file.write_text(await bed.token(["incident", "read"]) + "\n")
    return ["--gateway", gw.url, "--token-file", str(token_file), "--ca", gw.init["ca_pem"]]


async def test_a_dry_run_prints_each_stage_and_changes_nothing(tmp_path: Path) -> None:
    async with kill_bed(tmp_path, extra_yaml=PLAYBOOKS) as bed:
        flags = await _bed_with_people(bed, tmp_path)
        before = await counts(bed.gw)
        done = await _cli("incident", "run", "org-wide-reset", "--reason", "tabletop", "--dry-run", *flags)
        assert done.returncode == 0, done.stderr
        assert "dry run: nothing was changed" in done.stdout
        assert "stage 1 [privileged] kill, revoke_devices, suspect_passkeys: 2 user(s)" in done.stdout
        # the privileged were cut in stage 1 already: the second playbook stage reaches the others only
        assert "stage 2 [others] kill: 4 user(s)\n  by group: eng 4\n  would cut: 4 session(s)" in done.stdout
        assert "excluded (never touched): glass" in done.stdout
        assert await counts(bed.gw) == before
        as_json = await _cli("incident", "run", "org-wide-reset", "--reason", "tabletop", "--dry-run", "--json", *flags)
        assert json.loads(as_json.stdout)["dry_run"] is True


async def test_a_run_asks_first_then_shows_progress_and_the_report(tmp_path: Path) -> None:
    async with kill_bed(tmp_path, extra_yaml=PLAYBOOKS) as bed:
        flags = await _bed_with_people(bed, tmp_path)
        before = await counts(bed.gw)
        refused = await _cli("incident", "run", "org-wide-reset", "--reason", "breach", *flags)
        assert refused.returncode == 2 and "pass --yes" in refused.stderr
        assert await counts(bed.gw) == before
        done = await _cli("incident", "run", "org-wide-reset", "--reason", "breach", "--yes", *flags)
        assert done.returncode == 0, done.stderr
        assert "2/2" in done.stderr and "stage" in done.stderr  # the tqdm bar, with the counts
        assert "connections=" in done.stderr
        assert ": complete, 2 of 2 stage(s) committed" in done.stdout
        # the rehearsal's report first, then the run's
        assert done.stdout.index("dry run: nothing was changed") < done.stdout.index(": complete,")
        (head,) = [line for line in done.stdout.splitlines() if line.startswith("incident ")]
        incident_id = head.split()[1].rstrip(":")
        listed = await _cli("incident", "status", *flags)
        assert incident_id in listed.stdout and "org-wide-reset  complete  2/2" in listed.stdout
        shown = await _cli("incident", "status", incident_id, "--json", *flags)
        assert json.loads(shown.stdout)["stages_committed"] == 2
        again = await _cli("incident", "resume", incident_id, *flags)
        assert again.returncode == 0, again.stderr
        ended = await _cli("incident", "end", incident_id, *flags)
        assert ended.returncode == 0 and "ended" in ended.stdout
        twice = await _cli("incident", "end", incident_id, *flags)
        assert twice.returncode == 1 and "already ended" in twice.stderr


async def test_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    async with kill_bed(tmp_path, extra_yaml=PLAYBOOKS) as bed:
        flags = await _bed_with_people(bed, tmp_path)
        before = await counts(bed.gw)
        unknown = await _cli("incident", "run", "nope", "--reason", "x", "--yes", *flags)
        assert unknown.returncode == 1 and "no playbook 'nope'" in unknown.stderr
        assert len(unknown.stderr.strip().splitlines()) == 1
        empty = await _cli("incident", "run", "org-wide-reset", "--reason", "  ", "--yes", *flags)
        assert empty.returncode == 2 and "--reason is empty" in empty.stderr
        bad_token = tmp_path / "bad"
        bad_token.write_text("idw_" + "A" * 43)
        flags[3] = str(bad_token)
        refused = await _cli("incident", "status", *flags)
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
        assert await counts(bed.gw) == before


async def test_users_privileged_and_readiness_read_the_store(tmp_path: Path) -> None:
    async with kill_bed(tmp_path, extra_yaml=PLAYBOOKS) as bed:
        await _bed_with_people(bed, tmp_path)
        config = bed.gw.init["config"]
        listed = await _cli("users", "--privileged", "--json", "--config", config)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)["privileged"]
        assert [(r["kind"], r["id"]) for r in rows][:2] == [("user", "root"), ("user", "sam")]
        assert rows[1]["why"] == ["group sre"] and rows[0]["devices"] == 1 and rows[0]["last_login"] is not None
        assert rows[2]["kind"] == "token" and rows[2]["created_by"] == "admin"
        text = await _cli("users", "--privileged", "--config", config)
        assert "user  root  (admin)" in text.stdout
        assert (await _cli("users", "--config", config)).returncode == 2
        ready = await _cli("report", "readiness", "--json", "--config", config)
        report = json.loads(ready.stdout)
        assert report["users"] == 7 and report["ready"] is False
        kinds = {(f["kind"], f["subject"]) for f in report["findings"]}
        assert ("cannot_self_recover", "user0") in kinds and ("admin_single_passkey", "root") in kinds
        text = await _cli("report", "readiness", "--config", config)
        assert text.stdout.startswith("7 user(s) checked:")
