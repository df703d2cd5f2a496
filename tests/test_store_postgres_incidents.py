"""idwall.store.postgres.incidents: what only several nodes on one database can get wrong. A run resumed on two
nodes at once (a node lost mid-run, an operator resuming on another) commits each stage exactly once, and one
node's restrictions are in force for a connection another node resolves.

(The incident rules themselves run against this backend in tests/test_store_sqlite_incidents.py, parametrised.)
Tested on the PostgreSQL server at 127.0.0.1:5432, a fresh schema per test, one store per node.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from idwall import pki
from idwall.errors import Conflict
from idwall.model import Incident, LedgerDraft, StageCommit, StageWork
from tests.helpers.records import NOW
from tests.helpers.store import enroll, login, opened

NODES = 4


def _draft(kind: str, number: int | None = None) -> LedgerDraft:
    data = {"incident_id": "inc-1"} | ({} if number is None else {"number": number})
    return LedgerDraft(kind, "alice", "inc-1", data)


async def test_a_stage_resumed_on_every_node_at_once_commits_once(pg_url: str) -> None:
    key = pki.generate_p256_key()  # the nodes of one gateway share its ledger key
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(opened(pg_url, ledger_key=key)) for _ in range(NODES)]
        await enroll(nodes[0], "bob")
        await nodes[0].start_incident(Incident("inc-1", "org-wide-reset", "test", "alice", NOW, {"stages": []}, 2,
                                               0, 0), _draft("incident.start"))
        results = await asyncio.gather(*(node.commit_incident_stage(
            "inc-1", 1, StageWork(users=("bob",), suspect=True), result={}, now=NOW, draft=_draft("incident.stage", 1))
            for node in nodes), return_exceptions=True)
        assert sum(isinstance(r, StageCommit) for r in results) == 1
        assert all(isinstance(r, Conflict) and "stage 1 is not the next one" in str(r)
                   for r in results if not isinstance(r, StageCommit))
        entries = await nodes[-1].ledger_entries()
        assert [e["type"] for e in entries].count("incident.stage") == 1
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # one chain, no gap
        assert (await nodes[1].get_incident("inc-1")).stages_committed == 1  # type: ignore[union-attr]


async def test_a_restriction_committed_on_one_node_holds_on_another(pg_url: str) -> None:
    key = pki.generate_p256_key()
    async with opened(pg_url, ledger_key=key) as a, opened(pg_url, ledger_key=key) as b:
        bob = await enroll(a, "bob")
        await login(a, bob)
        await a.start_incident(Incident("inc-1", "p", "test", "alice", NOW, {"stages": []}, 1, 0, 0),
                               _draft("incident.start"))
        await a.commit_incident_stage("inc-1", 1, StageWork(users=("bob",), fresh_auth=60, block_code_enrollment=True),
                                      result={}, now=NOW, draft=_draft("incident.stage", 1))
        resolved = await b.resolve_certificate(bob.device.cert_sha256, now=NOW)
        assert resolved is not None and resolved.fresh_auth == 60
        assert await b.enrollment_blocked("bob") == "inc-1"
