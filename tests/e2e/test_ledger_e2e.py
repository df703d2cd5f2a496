"""The audit ledger end to end: a real gateway writes it, the real verifier (library and CLI) checks it.

One scripted story runs once per module through the real HTTP API over mTLS
(bootstrap, a signed invite, an enrollment, logins, a signed token.create, a
kill by an admin session and one by a token, a logout). Then every tamper case
works on a COPY of the gateway directory (config, keys, SQLite file), edits the
``ledger`` table with sqlite3, and shows that ``verify_ledger``, ``idwall audit
verify --config`` and ``idwall audit verify --export`` all fail naming the right
seq. The concurrency test logs in hundreds of times in parallel and checks the
chain stays whole and holds exactly one ``session.login`` per answered login.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idwall import audit, cli
from idwall.encoding import b64url_decode, b64url_encode
from idwall.enrollment import invite_id_of
from idwall.pki import load_private_key
from tests.helpers.api import Enrolled, bootstrap, call, enroll, invite, login, sign
from tests.helpers.gateway import start_test_gateway

REPO = Path(__file__).resolve().parents[2]  # tests/e2e/ is two levels below the repository
STORY_TYPES = ["bootstrap", "session.login", "invite.create", "invite.create", "token.create", "device.enroll",
               "session.login", "kill", "kill", "session.logout"]


# -- the story, run once ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Story:
    """What the scripted run left behind: a stopped gateway's directory and what the API answered."""

    dir: Path
    root: str
    entries: list[dict[str, Any]]
    pages: list[dict[str, Any]]
    bob_invite_id: str
    carol_invite_id: str


async def _play(tmp: Path) -> Story:
    gw = await start_test_gateway(tmp, None)
    try:
        admin = await bootstrap(gw)
        root = admin.answer["root_fingerprint"]
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            bob_code = await invite(gw, admin, client, "bob", groups=["eng"])
            # An invite nobody uses: the forged enrollment below tries to claim it.
            carol_code = await invite(gw, admin, client, "carol")
            status, made = await sign(gw, admin, client, {"type": "token.create", "name": "soar",
                                                          "scopes": ["kill", "read"], "ttl": "1h"})
            assert status == 200, made
            token = made["result"]["token"]
        bob = await enroll(gw, bob_code)
        status, bob_login = await login(gw, bob)
        assert status == 200, bob_login
        async with gw.session(admin) as client:
            # a new connection with the same certificate carries the admin's (fresh) session
            status, killed = await call(client, "POST", gw.url + "/idwall/api/admin/kill",
                                        {"scope": "user", "target": "bob", "reason": "e2e", "revoke_devices": False})
            assert status == 200 and killed["sessions_revoked"] == 1, killed
        async with gw.session() as anon:
            status, killed = await call(anon, "POST", gw.url + "/idwall/api/admin/kill",
                                        {"scope": "device", "target": bob.device_id, "reason": "lost laptop",
                                         "revoke_devices": True}, headers={"Authorization": f"Bearer {token}"})
            assert status == 200 and killed["devices_revoked"] == 1, killed
            pages, after = [], 0
            while True:
                status, page = await call(anon, "GET", gw.url + f"/idwall/api/admin/audit?after={after}&limit=2",
                                          headers={"Authorization": f"Bearer {token}"})
                assert status == 200, page
                pages.append(page)
                if not page["entries"]:
                    break
                after = page["next"]
        async with gw.session(admin) as client:
            status, out = await call(client, "POST", gw.url + "/idwall/api/logout", {})
            assert status == 200 and out["ended"] is True, out
        entries = await gw.store.ledger_entries()
    finally:
        await gw.running.stop(drain=1)
    return Story(gw.dir, root, entries, pages, invite_id_of(bob_code), invite_id_of(carol_code))


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """The story, played once on a fresh event loop (the gateway is stopped before the fixture returns)."""
    return asyncio.run(_play(tmp_path_factory.mktemp("story")))


# -- working on copies -----------------------------------------------------------------------------


def _copy(story: Story, tmp_path: Path) -> Path:
    """A copy of the whole gateway directory (config paths are relative); returns its config file."""
    target = tmp_path / "copy"
    shutil.copytree(story.dir, target)
    return target / "idwall.yaml"


def _db(config: Path) -> sqlite3.Connection:
    return sqlite3.connect(config.parent / "idwall.db", isolation_level=None)


def _rows(config: Path) -> list[dict[str, Any]]:
    with _db(config) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT entry FROM ledger ORDER BY seq")]


def _cli(*argv: str) -> tuple[int, str]:
    """The real CLI entry point, in this process (a subprocess costs about a second; the headline test uses one)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def _cli_subprocess(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "idwall", *argv], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def _fails_at(story: Story, config: Path, seq: int, *, head: str | None = None) -> None:
    """The library, ``audit verify --config`` and ``audit verify --export`` all fail, naming ``seq``."""
    entries = _rows(config)
    expected_last, expected_hash = (None, None)
    if head is not None:
        last, _, digest = head.partition(":")
        expected_last, expected_hash = int(last), digest
    result = audit.verify_ledger(entries, root=story.root, expected_last=expected_last,
                                 expected_last_hash=expected_hash)
    assert not result.ok and result.seq == seq, result
    assert result.reason.startswith(f"seq {seq}: "), result.reason
    pin = [f"--head={head}"] if head else []
    code, out = _cli("audit", "verify", "--config", str(config), f"--root={story.root}", *pin)
    assert code == 1 and f"ledger FAILED at seq {seq}:" in out, out
    export = config.parent / "export.jsonl"
    export.write_text("".join(audit.entry_to_jsonl(e) + "\n" for e in entries))
    code, out = _cli("audit", "verify", "--export", str(export), f"--root={story.root}", *pin)
    assert code == 1 and f"ledger FAILED at seq {seq}:" in out, out


def _head(story: Story) -> str:
    result = audit.verify_ledger(story.entries, root=story.root)
    assert result.ok and result.head
    return f"{result.seq}:{result.head}"


# -- the untouched ledger --------------------------------------------------------------------------


def test_story_ledger_verifies_with_the_cli_pinned_to_the_bootstrap_root(story: Story) -> None:
    assert [e["type"] for e in story.entries] == STORY_TYPES
    assert [e["seq"] for e in story.entries] == list(range(1, len(STORY_TYPES) + 1))
    run = _cli_subprocess("audit", "verify", "--config", str(story.dir / "idwall.yaml"), f"--root={story.root}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ledger OK: {len(STORY_TYPES)} entries, root {story.root}, head {_head(story)}" in run.stdout
    # ...and the same CLI refuses it when pinned to a different genesis credential
    other = b64url_encode(bytes(32))
    run = _cli_subprocess("audit", "verify", "--config", str(story.dir / "idwall.yaml"), f"--root={other}")
    assert run.returncode == 1 and "ledger FAILED at seq 1:" in run.stdout, run.stdout + run.stderr


def test_story_entries_say_what_happened(story: Story) -> None:
    by_seq = {e["seq"]: e for e in story.entries}
    assert by_seq[3]["data"]["user"] == "bob" and by_seq[3]["data"]["invite_id"] == story.bob_invite_id
    assert by_seq[3]["approval"]["action"]["type"] == "invite.create"
    assert by_seq[6]["data"]["invite_id"] == story.bob_invite_id and by_seq[6]["actor"] == "bob"
    assert by_seq[7]["actor"] == "bob" and "nonce" in by_seq[7]["approval"]
    # a kill records how many it cut and a digest of their ids (the ids stay in the store, checkable against it)
    assert by_seq[8]["actor"] == "admin" and by_seq[8]["data"]["sessions_revoked"] == 1
    assert by_seq[8]["data"]["sessions_sha256"] == audit.ids_digest([by_seq[7]["subject"]])
    assert by_seq[9]["actor"] == "token:" + by_seq[5]["subject"]
    assert by_seq[9]["data"]["devices_revoked"] == 1
    assert by_seq[9]["data"]["devices_sha256"] == audit.ids_digest([by_seq[6]["subject"]])


def test_exported_ledger_verifies_offline(story: Story, tmp_path: Path) -> None:
    code, out = _cli("audit", "export", "--config", str(story.dir / "idwall.yaml"))
    assert code == 0
    assert audit.entries_from_jsonl(out) == story.entries
    export = tmp_path / "ledger.jsonl"
    export.write_text(out)
    code, out = _cli("audit", "verify", "--export", str(export), f"--root={story.root}", f"--head={_head(story)}")
    assert code == 0 and "ledger OK" in out, out


# -- tampering, one entry at a time ----------------------------------------------------------------


def _mutated(value: Any) -> Any:
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    return "x"


@pytest.mark.parametrize("seq", range(1, len(STORY_TYPES) + 1))
def test_editing_any_entrys_data_fails_at_that_seq(story: Story, tmp_path: Path, seq: int) -> None:
    config = _copy(story, tmp_path)
    with _db(config) as conn:
        entry = json.loads(conn.execute("SELECT entry FROM ledger WHERE seq = ?", (seq,)).fetchone()[0])
        name = "user" if "user" in entry["data"] else sorted(entry["data"])[0]
        entry["data"][name] = _mutated(entry["data"][name])
        conn.execute("UPDATE ledger SET entry = ? WHERE seq = ?", (json.dumps(entry, sort_keys=True), seq))
    _fails_at(story, config, seq)
    assert "hash does not match its contents" in audit.verify_ledger(_rows(config)).reason


def _reseal_from(config: Path, entries: list[dict[str, Any]], seq: int) -> None:
    """Rewrite entries ``seq``.. with the real ledger key, chaining each onto the new hash before it."""
    key = load_private_key(config.parent / "certs" / "ledger-key.pem")
    prev = b64url_decode(entries[seq - 2]["hash"]) if seq > 1 else audit.GENESIS_PREV
    with _db(config) as conn:
        for entry in entries[seq - 1:]:
            sealed = audit.seal(entry, prev=prev, key=key)
            conn.execute("UPDATE ledger SET hash = ?, entry = ? WHERE seq = ?",
                         (b64url_decode(sealed["hash"]), json.dumps(sealed, sort_keys=True), entry["seq"]))
            prev = b64url_decode(sealed["hash"])


# Edits a ledger-key holder might make to entries a passkey vouched for (or the root pin covers); the chain is
# resealed, so only the verifier's logic can catch them, and it must name the edited entry.
RESEALED_EDITS = {
    1: ("bootstrap: another admin passkey", lambda d: d.update(public_key=d["public_key"][:-4] + "AAAA"),
        "root"),
    2: ("admin login from another certificate", lambda d: d.update(cert_sha256=b64url_encode(bytes(32))),
        "cert_sha256"),
    3: ("invite bob as an admin", lambda d: d.update(admin=True), "admin"),
    5: ("token with fewer scopes than signed", lambda d: d.update(scopes=["read"]), "scopes"),
    6: ("bob enrolls into more groups than invited", lambda d: d.update(groups=["eng", "admins"]), "groups"),
    7: ("bob's login claims another nonce", lambda d: d.update(nonce=b64url_encode(bytes(32))), "nonce"),
}


@pytest.mark.parametrize("seq", sorted(RESEALED_EDITS), ids=[v[0] for _, v in sorted(RESEALED_EDITS.items())])
def test_resealed_edit_of_an_approved_entry_fails_at_that_seq(story: Story, tmp_path: Path, seq: int) -> None:
    config = _copy(story, tmp_path)
    entries = copy.deepcopy(story.entries)
    _, edit, why = RESEALED_EDITS[seq]
    edit(entries[seq - 1]["data"])
    _reseal_from(config, entries, seq)
    _fails_at(story, config, seq)
    reason = audit.verify_ledger(_rows(config), root=story.root).reason
    assert "hash does not match" not in reason and why in reason, reason


@pytest.mark.parametrize("seq", range(1, len(STORY_TYPES) + 1))
def test_deleting_any_entry_fails_at_its_successor_or_against_the_head_pin(story: Story, tmp_path: Path,
                                                                          seq: int) -> None:
    config = _copy(story, tmp_path)
    with _db(config) as conn:
        assert conn.execute("DELETE FROM ledger WHERE seq = ?", (seq,)).rowcount == 1
    last = len(STORY_TYPES)
    if seq < last:
        # The successor now sits where the deleted entry was: its seq (and prev) no longer fit.
        _fails_at(story, config, seq + 1)
        _fails_at(story, config, seq + 1, head=_head(story))
        assert "entries were deleted" in audit.verify_ledger(_rows(config)).reason
        return
    # Cutting the last entry leaves a shorter ledger that is valid on its own (nothing after it points back);
    # only a head pin kept off the gateway shows it. The verifier then names the missing seq.
    entries = _rows(config)
    assert audit.verify_ledger(entries, root=story.root).ok
    code, out = _cli("audit", "verify", "--config", str(config), f"--root={story.root}")
    assert code == 0, out
    _fails_at(story, config, last, head=_head(story))


# -- a forged enrollment, sealed with the real ledger key --------------------------------------------


def _forged_enrollment(story: Story, config: Path, *, invite_id: str, user: str, name: str,
                       email: str, groups: list[str]) -> int:
    """Append a ``device.enroll`` for ``user`` claiming ``invite_id``, sealed like the gateway would seal it.

    Every field is well formed (a fresh P-256 COSE key, new device, enrollment
    and credential ids) and the hash and signature are right, so only the
    verifier's invite logic can object.
    """
    key = load_private_key(config.parent / "certs" / "ledger-key.pem")
    template = next(e for e in story.entries if e["type"] == "device.enroll")
    last = story.entries[-1]
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: public.x.to_bytes(32, "big"), -3: public.y.to_bytes(32, "big")})
    data = copy.deepcopy(template["data"])
    data.update(user=user, name=name, email=email, groups=groups, admin=False, invite_id=invite_id,
                device_id="dev-forged0000000000000000", enrollment_id="enr-forged00000000000000",
                credential_id=b64url_encode(os.urandom(32)), public_key=b64url_encode(cose),
                cert_sha256=b64url_encode(os.urandom(32)), device_name="forged")
    seq = last["seq"] + 1
    entry = audit.new_entry(seq=seq, time=audit.parse_time(last["time"]), type="device.enroll", actor=user,
                            subject=data["device_id"], data=data)
    sealed = audit.seal(entry, prev=b64url_decode(last["hash"]), key=key)
    with _db(config) as conn:
        conn.execute("INSERT INTO ledger (seq, hash, entry) VALUES (?, ?, ?)",
                     (seq, b64url_decode(sealed["hash"]), json.dumps(sealed, sort_keys=True)))
    return seq


@pytest.mark.parametrize("whose", ["bob (already used)", "carol (unused)"])
def test_hand_inserted_enrollment_claiming_an_existing_invite_fails_at_that_seq(story: Story, tmp_path: Path,
                                                                              whose: str) -> None:
    config = _copy(story, tmp_path)
    invite_id = story.bob_invite_id if whose.startswith("bob") else story.carol_invite_id
    seq = _forged_enrollment(story, config, invite_id=invite_id, user="mallory", name="Mallory",
                             email="mallory@example.com", groups=["admins"])
    _fails_at(story, config, seq)
    reason = audit.verify_ledger(_rows(config), root=story.root).reason
    assert f"invite {invite_id}" in reason, reason


def test_forged_enrollment_control_only_the_invite_logic_objects(story: Story, tmp_path: Path) -> None:
    """The same forgery copying carol's unused invite exactly passes: the failures above come from the logic.

    This is the documented limit (idwall/audit/__init__.py): a device.enroll carries no
    passkey signature, so whoever holds the ledger key can spend an unused
    invite. What stops them is the invite code (only its hash is stored) and the
    head pin / exported copies, not the chain.
    """
    config = _copy(story, tmp_path)
    carol = next(e for e in story.entries if e["type"] == "invite.create" and e["data"]["user"] == "carol")["data"]
    _forged_enrollment(story, config, invite_id=story.carol_invite_id, user="carol", name=carol["name"],
                       email=carol["email"], groups=carol["groups"])
    assert audit.verify_ledger(_rows(config), root=story.root).ok


# -- the audit API ---------------------------------------------------------------------------------


def test_audit_api_pages_from_seq_1_with_a_next_cursor(story: Story) -> None:
    pages = story.pages
    assert [e["seq"] for e in pages[0]["entries"]] == [1, 2] and pages[0]["next"] == 2
    assert [e["seq"] for e in pages[1]["entries"]] == [3, 4] and pages[1]["next"] == 4
    assert pages[-1] == {"entries": [], "next": pages[-2]["next"]}
    assert all(len(p["entries"]) == 2 for p in pages[:-2])
    paged = [e for p in pages for e in p["entries"]]
    # Paged while the story was still running (before the logout): exactly the stored entries, as stored.
    assert paged == story.entries[:len(paged)] and len(paged) == len(STORY_TYPES) - 1
    assert audit.verify_ledger(paged, root=story.root).ok


# -- concurrency -----------------------------------------------------------------------------------


async def _one_login(gateway: Any, device: Enrolled, lock: asyncio.Lock | None) -> tuple[str, int, dict[str, Any]]:
    """A login on its own mTLS connection; with ``lock``, sign-and-finish is serialised for this passkey."""
    async with gateway.session(device) as client:
        status, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        assert status == 200, begun
        if lock is None:
            credential = device.auth.get(begun["options"])
            status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                        {"credential": credential})
        else:
            async with lock:
                credential = device.auth.get(begun["options"])
                status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                            {"credential": credential})
    return device.device_id, status, answer


async def test_hundreds_of_parallel_logins_leave_one_valid_chain(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        codes = [await invite(gateway, admin, client, f"user{i}") for i in range(10)]
    devices = await asyncio.gather(*(enroll(gateway, code) for code in codes))
    assert len({d.device_id for d in devices}) == 10

    # 200 logins, all begun at once over 200 connections. A passkey's counter moves at every signature and the
    # gateway compare-and-sets it, so each passkey signs and finishes in turn; the ten passkeys race each other.
    locks = {d.device_id: asyncio.Lock() for d in devices}
    ordered = await asyncio.gather(*(_one_login(gateway, d, locks[d.device_id]) for d in devices for _ in range(20)))
    assert [status for _, status, _ in ordered] == [200] * 200, [a for _, s, a in ordered if s != 200][:3]
    # Then the same passkeys with nothing serialised: some logins lose the counter race and are refused.
    racing = await asyncio.gather(*(_one_login(gateway, d, None) for d in devices[:2] for _ in range(15)))
    assert all(status in (200, 400, 401, 409) for _, status, _ in racing), racing
    # the first commit on each passkey always wins its compare-and-set
    assert sum(1 for _, status, _ in racing if status == 200) >= 2
    answers = [*ordered, *racing]

    entries = await gateway.store.ledger_entries(limit=100_000)
    result = audit.verify_ledger(entries, root=admin.answer["root_fingerprint"])
    assert result.ok, result.reason
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    logins = [e for e in entries if e["type"] == "session.login"]
    answered = {a["session_id"]: device_id for device_id, status, a in answers if status == 200}
    assert len(answered) == sum(1 for _, status, _ in answers if status == 200)
    counted = collections.Counter(e["subject"] for e in logins)
    assert all(n == 1 for n in counted.values())
    # one entry per 200 answer, for the device that got it, plus the admin's own login; nothing for refusals
    assert {e["subject"]: e["data"]["device_id"] for e in logins if e["actor"] != "admin"} == answered
    assert len(logins) == len(answered) + 1
    # every refusal in the race either lost the compare-and-set (nothing written) or was a counter regression
    anomalies = [e for e in entries if e["type"] == "signcount.anomaly"]
    assert len(anomalies) <= sum(1 for _, status, _ in racing if status != 200)
