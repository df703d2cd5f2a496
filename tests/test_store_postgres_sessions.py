"""idwall.store.postgres.sessions: what is live, when the racing writes come from two nodes on one database. A
challenge is answered once, two logins on one signature counter make one session, a kill on one node and a
login on the other never leave a session alive that the kill's scope covered when it committed, and a
certificate resolves on either node to what the database holds right now. A kill revokes on every node from its
commit, though the sessions' own rows are written out after its answer.

(The rules themselves run against this backend in tests/test_store_sqlite_sessions.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

import asyncio


from idwall.model import Ceremony, Session
from idwall.store.base import AlreadyUsed
from tests.helpers.records import NOW
from tests.helpers.store import draft, enroll, login, opened


async def test_two_nodes_answering_one_challenge_get_it_once(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        await one.create_ceremony(Ceremony("ch-1", "login", bytes(32), bytes(32), "alice", "dev-1", None, NOW + 300))
        results = await asyncio.gather(*(store.consume_ceremony("ch-1", kind="login", now=NOW)
                                         for store in [one, other] * 5), return_exceptions=True)
    assert sum(isinstance(r, Ceremony) for r in results) == 1
    assert all(isinstance(r, AlreadyUsed) for r in results if not isinstance(r, Ceremony))


async def test_two_logins_racing_on_one_counter_on_two_nodes_make_one_session(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        alice = await enroll(one, "alice")
        results = await asyncio.gather(*(login(store, alice, session_id=f"ses-{n}", sign_count=0)
                                         for n, store in enumerate([one, other] * 4)), return_exceptions=True)
        assert sum(isinstance(r, Session) for r in results) == 1
        assert all(isinstance(r, AlreadyUsed) for r in results if not isinstance(r, Session))
        assert len(await other.live_sessions(now=NOW)) == 1


async def test_a_kill_racing_logins_on_the_other_node_leaves_no_session_it_covered(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        devices = [await enroll(one, "alice") for _ in range(6)]

        async def kill() -> tuple[str, ...]:
            await asyncio.sleep(0.01)
            return (await other.kill(scope="user", target="alice", revoke_devices=True, now=NOW,
                                     draft=draft("kill", "alice"))).sessions

        logins = [login(one, device) for device in devices]
        *outcomes, cut = await asyncio.gather(*logins, kill(), return_exceptions=True)
        made = [o.id for o in outcomes if isinstance(o, Session)]
        # a login either committed before the kill (which then cut it) or came after and was refused
        assert sorted(cut) == sorted(made)  # type: ignore[arg-type]
        assert all(isinstance(o, AlreadyUsed) for o in outcomes if not isinstance(o, Session))
        assert await one.live_sessions(now=NOW) == []


async def test_a_certificate_resolves_on_either_node_to_what_the_database_holds_now(pg_url: str) -> None:
    async with opened(pg_url) as one, opened(pg_url) as other:
        alice = await enroll(one, "alice")
        session = await login(one, alice)
        seen = await other.resolve_certificate(alice.device.cert_sha256 or b"", now=NOW)
        assert seen is not None and seen.session == session and seen.device.cert_pem is None
        await one.kill(scope="device", target=alice.device.id, revoke_devices=True, now=NOW,
                       draft=draft("kill", alice.device.id))
        after = await other.resolve_certificate(alice.device.cert_sha256 or b"", now=NOW)
        assert after is not None and after.session is None and after.device.status == "revoked"


async def _rows(store: object) -> dict[str, tuple[float | None, str | None]]:
    rows = await store.read(lambda c: c.fetch("SELECT id, revoked_at, revoke_reason FROM sessions"))  # type: ignore[attr-defined]
    return {r["id"]: (r["revoked_at"], r["revoke_reason"]) for r in rows}


async def test_a_kill_revokes_on_every_node_from_its_commit_while_the_session_rows_are_written_after(pg_url: str) -> None:
    """The kill's transaction writes its revocations, not 10,000 rewritten session rows; every read that decides
    whether a session lives holds it revoked from the commit on, on any node, before those rows say so."""
    async with opened(pg_url) as other:
        async with opened(pg_url) as one:
            devices = [await enroll(one, "alice") for _ in range(3)]
            sessions = [await login(one, device) for device in devices]
            killed = await one.kill(scope="all", target=None, revoke_devices=False, now=NOW + 5,
                                    draft=draft("kill", "*"))
            assert sorted(killed.sessions) == sorted(s.id for s in sessions)
            assert all(revoked is None for revoked, _ in (await _rows(other)).values())  # not yet rewritten
            for device in devices:
                seen = await other.resolve_certificate(device.device.cert_sha256 or b"", now=NOW + 6)
                assert seen is not None and seen.session is None
            assert await other.live_sessions(now=NOW + 6) == []
            assert (await other.incident_snapshot(now=NOW + 6)).sessions == {}
            before = await other.last_event_id()
            await other.end_session(sessions[0].id, now=NOW + 6, reason="logout", draft=draft("logout", "alice"))
            assert await other.last_event_id() == before  # already ended: no second ending
            again = await other.kill(scope="all", target=None, revoke_devices=False, now=NOW + 7,
                                     draft=draft("kill", "*"))
            assert again.sessions == ()  # nothing left for a second kill to count
        # the node that killed wrote the rows before it closed
        assert await _rows(other) == {s.id: (NOW + 5, "kill") for s in sessions}

