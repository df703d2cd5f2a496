"""idwall.audit.verify: the whole-ledger verifier against every vector, its pins (root, ledger key, head), and
``idwall audit verify`` on a real gateway's ledger with managers and a renewal, passing and then failing."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit import entries_from_jsonl, ledger_public_jwk, verify_ledger
from idwall.encoding import b64url_decode
from tests.helpers.api import bootstrap, enroll, invite, login, make_csr, sign
from tests.helpers.cli import run_cli
from tests.helpers.ledger import LEDGER_KEY, LEDGER_VECTORS, fails, full_ledger, gen, ledger_vectors


def _pins(expected: dict[str, Any]) -> dict[str, Any]:
    return {key: expected[key] for key in ("root", "expected_last") if key in expected}


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return full_ledger()


# --- the vectors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "entries", "expected"), ledger_vectors("valid"), ids=lambda v: v if isinstance(v, str) else "")
def test_valid_vector_verifies(name: str, entries: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    result = verify_ledger(entries, root=expected["root"])
    assert result.ok, result.reason
    assert (result.entries, result.seq, result.root, result.head) == (
        expected["entries"], expected["entries"], expected["root"], expected["head"])
    # The same with every pin at once: ledger key, head seq and head hash.
    pinned = verify_ledger(entries, root=expected["root"], ledger_public_key=entries[0]["data"]["ledger_key"],
                           expected_last=expected["entries"], expected_last_hash=expected["head"])
    assert pinned.ok, pinned.reason


@pytest.mark.parametrize(("name", "entries", "expected"), ledger_vectors("invalid"),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_vector_fails_at_its_seq(name: str, entries: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    result = verify_ledger(entries, **_pins(expected))
    assert not result.ok
    assert result.seq == expected["seq"], result.reason
    assert result.reason.startswith(f"seq {expected['seq']}: ")
    assert expected["reason"] in result.reason


def test_invalid_set_covers_the_required_attacks() -> None:
    names = {name.removesuffix(".jsonl") for name, _, _ in ledger_vectors("invalid")}
    assert {
        "data_changed", "entry_deleted", "entries_swapped", "truncated_middle", "approval_moved",
        "public_key_swapped", "invite_by_non_admin", "challenge_other_action", "other_init", "enroll_inserted",
        "invite_used_twice", "unknown_credential", "truncated_end",
    } <= names


def test_foreign_ledger_verifies_without_the_root_pin() -> None:
    # The point of --root: a wholly replaced ledger is internally consistent.
    [(_, entries, expected)] = [v for v in ledger_vectors("invalid") if v[0] == "other_init.jsonl"]
    assert verify_ledger(entries).ok
    assert not verify_ledger(entries, root=expected["root"]).ok


def test_truncation_at_the_end_is_invisible_without_a_head_pin(full: list[dict[str, Any]]) -> None:
    head = verify_ledger(full).head
    assert verify_ledger(full[:20]).ok
    result = verify_ledger(full[:20], expected_last=len(full), expected_last_hash=head)
    assert (result.ok, result.seq) == (False, 21)
    # A pinned head hash catches a rewritten tail of the right length: seq 23 is a kill, which carries no
    # passkey signature, so a ledger-key holder can reword it and reseal everything after it.
    rewritten = gen.reseal([*full[:22], {**full[22], "data": {**full[22]["data"], "reason": "nothing to see"}},
                            *full[23:]], LEDGER_KEY, 23)
    assert verify_ledger(rewritten).ok
    result = verify_ledger(rewritten, expected_last=len(full), expected_last_hash=head)
    assert (result.ok, result.seq) == (False, len(full))
    assert "pinned head hash" in result.reason


def test_the_generator_reproduces_a_consistent_vector_set(tmp_path: Path) -> None:
    gen.generate(tmp_path)  # raises SystemExit when any vector does not verify as its manifest says
    assert sorted(p.name for p in (tmp_path / "invalid").glob("*.jsonl")) == sorted(
        p.name for p in (LEDGER_VECTORS / "invalid").glob("*.jsonl"))
    fresh = entries_from_jsonl((tmp_path / "valid" / "full.jsonl").read_text(encoding="utf-8"))
    committed = entries_from_jsonl((LEDGER_VECTORS / "valid" / "full.jsonl").read_text(encoding="utf-8"))
    # Deterministic parts stay put across runs: ledger key, types, times, actors (passkeys are random).
    assert [(e["type"], e["time"], e["actor"]) for e in fresh] == [
        (e["type"], e["time"], e["actor"]) for e in committed]
    assert fresh[0]["data"]["ledger_key"] == committed[0]["data"]["ledger_key"]


# --- pins and degenerate ledgers ------------------------------------------------------------------------


def test_pinned_ledger_key_must_be_the_bootstraps(full: list[dict[str, Any]]) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    fails(full, 1, "not the ledger public key given to the verifier", ledger_public_key=stranger)
    fails(full, 1, "not the ledger public key given", ledger_public_key=ledger_public_jwk(stranger))
    with pytest.raises(ValueError):
        verify_ledger(full, ledger_public_key=ec.generate_private_key(ec.SECP384R1()).public_key())


def test_a_ledger_key_holder_without_the_pin_can_rebuild_everything_but_the_root(full: list[dict[str, Any]]) -> None:
    thief = gen.derived_key("ledger/thief")
    entries = copy.deepcopy(full)
    entries[0]["data"]["ledger_key"] = ledger_public_jwk(thief)
    resealed = gen.reseal(entries, thief)
    assert verify_ledger(resealed).ok  # self-consistent...
    fails(resealed, 1, "not the ledger public key", ledger_public_key=LEDGER_KEY.public_key())  # ...but not ours


@pytest.mark.parametrize(("entries", "seq", "reason"), [
    ([], 1, "the ledger is empty"),
    (["not an object"], 1, "an entry must be a JSON object"),
    ([{"seq": 1}], 1, "entry is missing"),
])
def test_degenerate_ledgers(entries: list[Any], seq: int, reason: str) -> None:
    fails(entries, seq, reason)


def test_head_hash_pin_needs_its_seq(full: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError):
        verify_ledger(full, expected_last_hash="x")


def test_a_lone_surrogate_in_an_entry_fails_at_its_seq_instead_of_crashing() -> None:
    # A string with no UTF-8 form has no canonical bytes, so no hash: the verifier must say so, not raise.
    entries = full_ledger()
    entries[1]["data"]["name"] = "Bob\ud800"
    fails(entries, 2, "$.data.name: holds a lone surrogate \\ud800")


# --- idwall audit verify on a real gateway's ledger: managers, a rejection, a renewal ---------------------------


async def test_idwall_audit_verify_passes_on_a_real_ledger_and_names_a_resealed_manager_entry(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        await enroll(gateway, await invite(gateway, admin, client, "bob"))
        await enroll(gateway, await invite(gateway, admin, client, "carol", manager="bob"))
        assert (await sign(gateway, admin, client, {"type": "user.set_manager", "user": "bob",
                                                    "manager": "admin"}))[0] == 200
        csr = make_csr()[1]
        assert (await sign(gateway, admin, client, {"type": "device.renew", "device_id": admin.device_id,
                                                    "csr_pem": csr}))[0] == 200
    config = str(gateway.config.source)
    result = await asyncio.to_thread(run_cli, "audit", "verify", "--config", config)
    assert result.returncode == 0, result
    entries = await gateway.store.ledger_entries()
    types = [e["type"] for e in entries]
    assert {"invite.create", "user.set_manager", "device.renew"} <= set(types)
    # someone with the gateway's database and its ledger key (but no admin's passkey) makes admin carol's manager
    seq = next(e["seq"] for e in entries if e["type"] == "invite.create" and e["data"].get("manager") == "bob")
    tampered = copy.deepcopy(entries)
    tampered[seq - 1]["data"]["manager"] = "admin"
    resealed = gen.reseal(tampered, gateway.running.node.ledger_key, seq)

    def rewrite(conn: Any) -> None:
        for entry in resealed[seq - 1:]:
            conn.execute("UPDATE ledger SET hash = ?, entry = ? WHERE seq = ?",
                         (b64url_decode(entry["hash"]), json.dumps(entry, sort_keys=True), entry["seq"]))

    await gateway.store.write(rewrite)
    result = await asyncio.to_thread(run_cli, "audit", "verify", "--config", config)
    assert result.returncode == 1, result
    assert f"seq {seq}: approval action manager is \"bob\", but the entry's data.manager is \"admin\"" in \
        result.stdout + result.stderr, result
