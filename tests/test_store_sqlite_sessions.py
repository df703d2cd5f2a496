"""idwall.store.sqlite.sessions: what is live. A connection's certificate resolves to its device, user, passkeys
and newest live session (never the certificate's PEM); a ceremony is answered once, and a device keeps only its
newest few; a login commits only with its compare-and-set sign count on an active device; ending a session
happens once; ``last_seen`` never goes back; a kill revokes exactly the live sessions (and, when asked, devices)
of its scope, durably, with a ledger entry and an event naming what it cut; the trust events and the ledger
read back in order.

Tested on a real SQLite file in ``tmp_path`` (helpers/store.py); single use is raced between two stores on the
same file, as two worker processes would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from idwall.audit import ids_digest
from idwall.encoding import b64url_encode

from idwall.store import StoreError
from idwall.model import Ceremony, LedgerDraft, Session
from idwall.store.base import AlreadyUsed, Expired
from idwall.store.sqlite import KILL_SCOPES, SQLiteStore
from tests.helpers.records import NOW
from tests.helpers.clock import Clock
from tests.helpers.store import BACKENDS, draft, dump, enroll, login, opened, place


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


def ceremony(id: str = "ch-1", *, kind: str = "login", device_id: str | None = "dev-1",
             expires_at: float = NOW + 300) -> Ceremony:
    return Ceremony(id, kind, bytes(32), bytes(range(32)), "alice", device_id, None, expires_at)


# --------------------------------------------------------------------------- certificates


async def test_an_unknown_certificate_resolves_to_nothing(store: SQLiteStore) -> None:
    assert await store.resolve_certificate(b"x" * 32, now=NOW) is None


async def test_a_certificate_resolves_to_its_device_user_passkeys_and_newest_live_session(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice", groups=("eng",))
    await enroll(store, "alice")  # another device of hers: not part of this connection
    await login(store, alice, session_id="ses-old", auth_time=NOW - 100)
    newest = await login(store, alice, session_id="ses-new", sign_count=1, auth_time=NOW - 10)
    resolved = await store.resolve_certificate(alice.device.cert_sha256, now=NOW)  # type: ignore[arg-type]
    assert resolved is not None
    assert resolved.device == dataclasses.replace(alice.device, cert_pem=None)  # the PEM stays in the store
    assert (await store.get_device(alice.device.id)).cert_pem == "PEM"  # type: ignore[union-attr]
    assert resolved.user == alice.user
    assert resolved.credentials == (dataclasses.replace(alice.credential, sign_count=2),)
    assert resolved.session == newest


async def test_only_a_live_session_of_this_certificate_is_resolved(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    cert = alice.device.cert_sha256
    assert cert is not None
    expired = await login(store, alice, expires_at=NOW)
    assert (await store.resolve_certificate(cert, now=NOW)).session is None  # type: ignore[union-attr]
    ended = await login(store, alice, sign_count=1)
    await store.end_session(ended.id, now=NOW, reason="logout", draft=None)
    assert (await store.resolve_certificate(cert, now=NOW)).session is None  # type: ignore[union-attr]
    assert await store.had_session(alice.device.id, cert) and not await store.had_session(alice.device.id, b"y" * 32)
    assert expired.id != ended.id


# --------------------------------------------------------------------------- ceremonies


async def test_a_ceremony_is_answered_once(store: SQLiteStore) -> None:
    await store.create_ceremony(ceremony())
    assert await store.consume_ceremony("ch-1", kind="login", now=NOW) == ceremony()
    with pytest.raises(AlreadyUsed, match="unknown or was already used"):
        await store.consume_ceremony("ch-1", kind="login", now=NOW)
    with pytest.raises(AlreadyUsed):
        await store.consume_ceremony("ch-never", kind="login", now=NOW)


async def test_a_ceremony_of_one_kind_cannot_answer_another(store: SQLiteStore) -> None:
    await store.create_ceremony(ceremony(kind="action"))
    with pytest.raises(AlreadyUsed):
        await store.consume_ceremony("ch-1", kind="login", now=NOW)
    assert (await store.consume_ceremony("ch-1", kind="action", now=NOW)).kind == "action"  # still there


async def test_an_expired_ceremony_is_refused(store: SQLiteStore) -> None:
    await store.create_ceremony(ceremony(expires_at=NOW + 5))
    with pytest.raises(Expired, match="has expired"):
        await store.consume_ceremony("ch-1", kind="login", now=NOW + 5)


async def test_making_a_ceremony_clears_the_expired_and_keeps_a_devices_newest(tmp_path: Path) -> None:
    clock = Clock()
    async with opened(tmp_path / "idwall.db", clock=clock) as store:
        await store.create_ceremony(ceremony("ch-stale", device_id=None, expires_at=NOW + 10))
        for n in range(5):
            await store.create_ceremony(ceremony(f"ch-{n}"), max_per_device=3)
        await store.create_ceremony(ceremony("ch-other", device_id="dev-2"), max_per_device=3)
        clock.now = NOW + 10
        await store.create_ceremony(ceremony("ch-late", device_id="dev-2"), max_per_device=3)
        ids = await store.read(lambda c: sorted(r[0] for r in c.execute("SELECT id FROM ceremonies")))
    assert ids == ["ch-2", "ch-3", "ch-4", "ch-late", "ch-other"]


@pytest.mark.parametrize("bad", [ceremony(kind="enroll"), dataclasses.replace(ceremony(), nonce=None)])
async def test_a_ceremony_the_schema_refuses_is_not_stored(store: SQLiteStore, bad: Ceremony) -> None:
    before = await dump(store)
    with pytest.raises(StoreError):
        await store.create_ceremony(bad)
    assert await dump(store) == before


async def test_two_processes_answering_one_challenge_get_it_once(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as one, opened(tmp_path / "idwall.db") as other:
        await one.create_ceremony(ceremony())
        results = await asyncio.gather(*(store.consume_ceremony("ch-1", kind="login", now=NOW)
                                         for store in [one, other] * 5), return_exceptions=True)
    assert sum(isinstance(r, Ceremony) for r in results) == 1
    assert all(isinstance(r, AlreadyUsed) for r in results if not isinstance(r, Ceremony))


# --------------------------------------------------------------------------- logins and sessions


async def test_a_login_commits_session_sign_count_entry_and_event(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    session = await login(store, alice, sign_count=0)
    assert await store.get_session(session.id) == session
    assert (await store.get_credential(alice.credential.id)).sign_count == 1  # type: ignore[union-attr]
    assert [e["type"] for e in await store.ledger_entries()] == ["device.enroll", "session.login"]
    assert [(e.kind, e.payload) for e in await store.events_after(0)] == [
        ("session.login", {"session": session.id, "device": alice.device.id, "user": "alice"})]


async def test_a_login_with_a_stale_sign_count_commits_nothing(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    await login(store, alice, sign_count=0)
    before = await dump(store)
    with pytest.raises(AlreadyUsed, match="signature counter changed"):
        await login(store, alice, sign_count=0)  # a replayed or cloned authenticator's counter
    assert await dump(store) == before


@pytest.mark.parametrize("status", ["pending_approval", "revoked"])
async def test_a_device_that_is_not_active_cannot_log_in(store: SQLiteStore, status: str) -> None:
    bob = await enroll(store, "bob", status="pending_approval")
    if status == "revoked":
        await store.kill(scope="device", target=bob.device.id, revoke_devices=True, now=NOW, draft=draft("kill", "x"))
    before = await dump(store)
    with pytest.raises(AlreadyUsed, match="this device is not active"):
        await login(store, bob)
    assert await dump(store) == before


async def test_two_logins_racing_on_one_counter_make_one_session(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as one, opened(tmp_path / "idwall.db") as other:
        alice = await enroll(one, "alice")
        results = await asyncio.gather(*(login(store, alice, session_id=f"ses-{n}", sign_count=0)
                                         for n, store in enumerate([one, other] * 4)), return_exceptions=True)
        assert sum(isinstance(r, Session) for r in results) == 1
        assert len(await one.live_sessions(now=NOW)) == 1


async def test_a_session_ends_once(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    session = await login(store, alice)
    logout = LedgerDraft("session.logout", "alice", session.id, {"user": "alice", "device_id": alice.device.id})
    await store.end_session(session.id, now=NOW + 5, reason="logout", draft=logout)
    ended = await store.get_session(session.id)
    assert (ended.revoked_at, ended.revoke_reason) == (NOW + 5, "logout")  # type: ignore[union-attr]
    before = await dump(store)
    await store.end_session(session.id, now=NOW + 9, reason="idle", draft=logout)  # no second entry or event
    await store.end_session("ses-never", now=NOW, reason="logout", draft=logout)
    assert await dump(store) == before
    assert [e.kind for e in await store.events_after(0)] == ["session.login", "session.end"]
    assert (await store.events_after(0))[-1].payload == {"session": session.id, "device": alice.device.id,
                                                         "user": "alice", "reason": "logout"}


async def test_last_seen_only_moves_forward(store: SQLiteStore) -> None:
    alice = await enroll(store, "alice")
    session = await login(store, alice, auth_time=NOW)
    await store.touch_sessions({session.id: NOW + 50, "ses-unknown": NOW + 50})
    await store.touch_sessions({session.id: NOW + 20})  # a batch that arrives late
    await store.touch_sessions({})
    assert (await store.get_session(session.id)).last_seen == NOW + 50  # type: ignore[union-attr]


async def test_live_sessions_are_unrevoked_and_unexpired_oldest_first(store: SQLiteStore) -> None:
    alice, bob = await enroll(store, "alice"), await enroll(store, "bob")
    later = await login(store, alice, auth_time=NOW - 10)
    earlier = await login(store, bob, auth_time=NOW - 20)
    await login(store, alice, sign_count=1, expires_at=NOW)
    ended = await login(store, bob, sign_count=1)
    await store.end_session(ended.id, now=NOW, reason="logout", draft=None)
    assert [s.id for s in await store.live_sessions(now=NOW)] == [earlier.id, later.id]


# --------------------------------------------------------------------------- the kill switch


async def _people(store: SQLiteStore) -> dict[str, Any]:
    """alice (eng) with two devices, bob (eng, ops) and carol (ops), each device with a live session; one expired."""
    alice1 = await enroll(store, "alice", groups=("eng",))
    alice2 = await enroll(store, "alice", groups=("eng",))
    bob = await enroll(store, "bob", groups=("eng", "ops"))
    carol = await enroll(store, "carol", groups=("ops",))
    sessions = {name: await login(store, new) for name, new in
                [("alice1", alice1), ("alice2", alice2), ("bob", bob), ("carol", carol)]}
    await login(store, carol, session_id="ses-expired", sign_count=1, expires_at=NOW)
    return {"alice1": alice1, "alice2": alice2, "bob": bob, "carol": carol, "sessions": sessions}


@pytest.mark.parametrize(("scope", "target", "cut"), [
    ("session", "alice1", ["alice1"]),
    ("device", "alice2", ["alice2"]),
    ("user", "alice", ["alice1", "alice2"]),
    ("group", "ops", ["bob", "carol"]),
    ("group", "nobody", []),
    ("all", None, ["alice1", "alice2", "bob", "carol"]),
])
async def test_a_kill_revokes_exactly_the_live_sessions_of_its_scope(store: SQLiteStore, scope: str,
                                                                   target: str | None, cut: list[str]) -> None:
    people = await _people(store)
    sessions = people["sessions"]
    key = {"session": lambda t: sessions[t].id, "device": lambda t: people[t].device.id}.get(scope, lambda t: t)
    result = await store.kill(scope=scope, target=key(target) if target else None, revoke_devices=False, now=NOW,
                              draft=LedgerDraft("kill", "alice", "x", {"reason": "test"}))
    assert result.sessions == tuple(sorted(sessions[n].id for n in cut))
    assert result.users == tuple(sorted({sessions[n].user_id for n in cut})) and result.devices == ()
    assert {s.id for s in await store.live_sessions(now=NOW)} == {
        s.id for n, s in sessions.items() if n not in cut}
    assert (await store.get_session("ses-expired")).revoked_at is None  # type: ignore[union-attr]
    for n in cut:
        assert (await store.get_session(sessions[n].id)).revoke_reason == "kill"  # type: ignore[union-attr]
    entry = (await store.ledger_entries())[-1]
    # the entry records how many and a digest; the ids themselves are kept beside it, queryable
    assert (entry["seq"], entry["type"], entry["data"]) == (
        result.audit_seq, "kill", {"reason": "test", "sessions_revoked": len(cut),
                                   "sessions_sha256": ids_digest(result.sessions), "devices_revoked": 0,
                                   "devices_sha256": ids_digest([]), "passkeys_revoked": 0,
                                   "passkeys_sha256": ids_digest([])})
    assert await store.kill_revocations(result.audit_seq) == (result.sessions, ())
    event = (await store.events_after(0))[-1]
    # every node finds a device's, a user's or everyone's connections in its own registry: those events carry no
    # ids (a kill of 10,000 sessions ships none); a group's and a session's carry them
    ids = {} if scope in ("device", "user", "all") else {"sessions": list(result.sessions), "devices": []}
    assert (event.kind, event.payload) == ("kill", {"scope": scope, "target": key(target) if target else None,
                                                    "revoke_devices": False, "audit_seq": result.audit_seq,
                                                    "sessions_revoked": len(cut), "devices_revoked": 0, **ids})


@pytest.mark.parametrize(("scope", "target", "revoked"), [
    ("session", "alice1", ["alice1"]),
    ("user", "alice", ["alice1", "alice2"]),
    ("group", "eng", ["alice1", "alice2", "bob"]),
    ("all", None, ["alice1", "alice2", "bob", "carol"]),
])
async def test_a_kill_that_revokes_devices_revokes_those_of_its_scope(store: SQLiteStore, scope: str,
                                                                    target: str | None, revoked: list[str]) -> None:
    people = await _people(store)
    if scope == "session":
        target = people["sessions"][target].id  # type: ignore[index]
    result = await store.kill(scope=scope, target=target, revoke_devices=True, now=NOW + 1, draft=draft("kill", "x"))
    assert result.devices == tuple(sorted(people[n].device.id for n in revoked))
    for name in ("alice1", "alice2", "bob", "carol"):
        device = await store.get_device(people[name].device.id)
        assert (device.status, device.revoked_at) == (  # type: ignore[union-attr]
            ("revoked", NOW + 1) if name in revoked else ("active", None))
    assert await store.kill_revocations(result.audit_seq) == (result.sessions, result.devices)
    entry = (await store.ledger_entries())[-1]["data"]
    assert (entry["devices_revoked"], entry["devices_sha256"]) == (len(revoked), ids_digest(result.devices))
    # a second kill finds nothing left to cut, and says so
    again = await store.kill(scope=scope, target=target, revoke_devices=True, now=NOW + 2, draft=draft("kill", "x"))
    assert (again.sessions, again.devices) == ((), ())
    assert await store.kill_revocations(again.audit_seq) == ((), ())


@pytest.mark.parametrize(("scope", "target"), [("session", "alice1"), ("user", "alice"), ("group", "eng"),
                                               ("all", None)])
async def test_a_reset_revokes_certificates_but_not_passkeys(store: SQLiteStore, scope: str,
                                                             target: str | None) -> None:
    people = await _people(store)
    if scope == "session":
        target = people["sessions"][target].id  # type: ignore[index]
    result = await store.kill(scope=scope, target=target, revoke_devices=True, now=NOW + 1, draft=draft("kill", "x"))
    assert result.devices and result.passkeys == ()
    assert all(c.revoked_at is None for c in await store.user_passkeys("alice"))
    assert (await store.ledger_entries())[-1]["data"]["passkeys_revoked"] == 0


async def test_a_lost_device_loses_its_passkeys_even_after_its_certificate_was_revoked(store: SQLiteStore) -> None:
    people = await _people(store)
    lost, kept = people["alice1"], people["alice2"]
    await store.kill(scope="user", target="alice", revoke_devices=True, now=NOW + 1, draft=draft("kill", "x"))
    # the device is declared lost afterwards: nothing is left to cut but its passkeys
    result = await store.kill(scope="device", target=lost.device.id, revoke_devices=True, now=NOW + 2,
                              draft=draft("kill", lost.device.id))
    cid = b64url_encode(lost.credential.id)
    assert (result.sessions, result.devices, result.passkeys) == ((), (), (cid,))
    assert {c.id: c.revoked_at for c in await store.user_passkeys("alice")} == {
        lost.credential.id: NOW + 2, kept.credential.id: None}
    data = (await store.ledger_entries())[-1]["data"]
    assert (data["passkeys_revoked"], data["passkeys_sha256"]) == (1, ids_digest([cid]))
    # a kill of a device without revoke_devices ends its sessions only
    quiet = await store.kill(scope="device", target=kept.device.id, revoke_devices=False, now=NOW + 3,
                             draft=draft("kill", kept.device.id))
    assert quiet.passkeys == () and (await store.get_credential(kept.credential.id)).revoked_at is None  # type: ignore[union-attr]


async def test_an_unknown_kill_scope_is_refused_before_anything_is_written(store: SQLiteStore) -> None:
    await _people(store)
    before = await dump(store)
    with pytest.raises(ValueError, match="unknown kill scope 'everyone'"):
        await store.kill(scope="everyone", target=None, revoke_devices=True, now=NOW, draft=draft("kill", "x"))
    assert await dump(store) == before
    assert KILL_SCOPES == ("session", "device", "user", "group", "all")


async def test_a_kill_that_cannot_be_recorded_cuts_nothing(tmp_path: Path) -> None:
    async with opened(tmp_path / "idwall.db") as writer:
        await _people(writer)
    async with opened(tmp_path / "idwall.db", ledger_key=None) as store:  # no ledger key: fail closed
        before = await dump(store)
        with pytest.raises(StoreError, match="without the ledger key"):
            await store.kill(scope="all", target=None, revoke_devices=True, now=NOW, draft=draft("kill", "x"))
        assert await dump(store) == before


# --------------------------------------------------------------------------- events and the ledger read back


async def test_events_are_read_after_an_id_in_order(store: SQLiteStore) -> None:
    assert await store.last_event_id() == 0 and await store.events_after(0) == []
    alice = await enroll(store, "alice")
    for n in range(3):
        await login(store, alice, sign_count=n)
    events = await store.events_after(0)
    assert [e.id for e in events] == [1, 2, 3] and await store.last_event_id() == 3
    assert [e.id for e in await store.events_after(1)] == [2, 3]
    assert all(e.time == NOW and e.kind == "session.login" for e in events)


async def test_ledger_entries_are_paged_by_seq(store: SQLiteStore) -> None:
    for _ in range(7):
        await store.append_ledger(draft())
    assert await store.record_anomaly(draft("signcount.anomaly", "cred")) == 8
    assert [e["seq"] for e in await store.ledger_entries(after=2, limit=3)] == [3, 4, 5]
    assert [e["seq"] for e in await store.ledger_entries(after=5)] == [6, 7, 8]
    assert await store.ledger_entries(after=8) == []


@pytest.fixture(params=BACKENDS)
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return await place(request, tmp_path)


async def test_a_kill_revokes_from_its_commit_and_its_sessions_are_written_out_when_its_store_closes(
        where: Path | str) -> None:
    """The kill's transaction records its sessions in one pending row (idwall.store.settle): every read holds them
    revoked at once, and closing the store writes them out."""
    async with opened(where) as store:
        alice = await enroll(store, "alice")
        session = await login(store, alice)
        killed = await store.kill(scope="user", target="alice", revoke_devices=False, now=NOW + 5,
                                  draft=draft("kill", "alice"))
        pending = (await dump(store))["kill_pending"]
        assert len(pending) == 1 and pending[0][0] == killed.audit_seq
        got = await store.get_session(session.id)
        assert got is not None and (got.revoked_at, got.revoke_reason) == (NOW + 5, "kill")
        assert await store.kill_revocations(killed.audit_seq) == ((session.id,), ())
        seen = await store.resolve_certificate(alice.device.cert_sha256 or b"", now=NOW + 6)
        assert seen is not None and seen.session is None
        assert await store.live_sessions(now=NOW + 6) == []
    async with opened(where, ledger_key=None) as reader:  # a reader writes nothing out when it opens
        rows = await dump(reader)
        assert rows["kill_pending"] == [] and (await reader.get_session(session.id)) == got
        assert await reader.kill_revocations(killed.audit_seq) == ((session.id,), ())


_KILL_AND_DIE = """
import asyncio, json, os, sys
from pathlib import Path
from tests.helpers.records import NOW
from tests.helpers.store import draft, enroll, login, opened

async def main(where):
    async with opened(where) as store:
        alice = await enroll(store, "alice")
        session = await login(store, alice)
        await store.kill(scope="user", target="alice", revoke_devices=False, now=NOW + 5, draft=draft("kill", "x"))
        print(json.dumps({"session": session.id, "cert": alice.device.cert_sha256.hex()}), flush=True)
        os._exit(0)  # dies before it writes anything out, closes nothing

arg = sys.argv[1]
asyncio.run(main(arg if arg.startswith("postgresql") else Path(arg)))
"""


async def test_the_sessions_a_process_that_died_left_pending_are_revoked_and_written_out_by_the_next_store(
        where: Path | str) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _KILL_AND_DIE, str(where), cwd=root,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    left = json.loads(out)
    async with opened(where, ledger_key=None) as reader:
        assert len((await dump(reader))["kill_pending"]) == 1
        seen = await reader.resolve_certificate(bytes.fromhex(left["cert"]), now=NOW + 6)
        assert seen is not None and seen.session is None  # revoked though its row does not say so yet
    async with opened(where) as writer:
        assert (await dump(writer))["kill_pending"] == []
        got = await writer.get_session(left["session"])
        assert got is not None and (got.revoked_at, got.revoke_reason) == (NOW + 5, "kill")
