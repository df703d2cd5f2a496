"""The audit ledger: canonical hashing, sealing, and the verifier against every tamper vector."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit import (
    GENESIS_PREV,
    LedgerState,
    LedgerViolation,
    entries_from_jsonl,
    entry_hash,
    entry_to_jsonl,
    format_time,
    ledger_public_jwk,
    new_entry,
    parse_time,
    public_key_from_jwk,
    root_fingerprint,
    seal,
    verify_ledger,
)
from idwall.encoding import b64url_decode, b64url_encode
from idwall.errors import BadRequest

VECTORS = Path(__file__).parent / "vectors" / "ledger"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("ledger_make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
LEDGER_KEY = gen.derived_key("ledger/main")  # the committed vectors are sealed with this (public) test key


def load_vectors(kind: str) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """The one loader: every ``<kind>/*.jsonl`` with its manifest entry."""
    manifest = json.loads((VECTORS / kind / "manifest.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in (VECTORS / kind).glob("*.jsonl"))
    assert files == sorted(manifest), f"{kind}: files and manifest.json disagree"
    return [
        (name, entries_from_jsonl((VECTORS / kind / name).read_text(encoding="utf-8")), manifest[name])
        for name in files
    ]


def _pins(expected: dict[str, Any]) -> dict[str, Any]:
    return {key: expected[key] for key in ("root", "expected_last") if key in expected}


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return entries_from_jsonl((VECTORS / "valid" / "full.jsonl").read_text(encoding="utf-8"))


# --- the vectors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "entries", "expected"), load_vectors("valid"), ids=lambda v: v if isinstance(v, str) else "")
def test_valid_vector_verifies(name: str, entries: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    result = verify_ledger(entries, root=expected["root"])
    assert result.ok, result.reason
    assert (result.entries, result.seq, result.root, result.head) == (
        expected["entries"], expected["entries"], expected["root"], expected["head"])
    # The same with every pin at once: ledger key, head seq and head hash.
    pinned = verify_ledger(entries, root=expected["root"], ledger_public_key=entries[0]["data"]["ledger_key"],
                           expected_last=expected["entries"], expected_last_hash=expected["head"])
    assert pinned.ok, pinned.reason


@pytest.mark.parametrize(("name", "entries", "expected"), load_vectors("invalid"),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_vector_fails_at_its_seq(name: str, entries: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    result = verify_ledger(entries, **_pins(expected))
    assert not result.ok
    assert result.seq == expected["seq"], result.reason
    assert result.reason.startswith(f"seq {expected['seq']}: ")
    assert expected["reason"] in result.reason


def test_invalid_set_covers_the_required_attacks() -> None:
    names = {name.removesuffix(".jsonl") for name, _, _ in load_vectors("invalid")}
    assert {
        "data_changed", "entry_deleted", "entries_swapped", "truncated_middle", "approval_moved",
        "public_key_swapped", "invite_by_non_admin", "challenge_other_action", "other_init", "enroll_inserted",
        "invite_used_twice", "unknown_credential", "truncated_end",
    } <= names


def test_foreign_ledger_verifies_without_the_root_pin() -> None:
    # The point of --root: a wholly replaced ledger is internally consistent.
    [(_, entries, expected)] = [v for v in load_vectors("invalid") if v[0] == "other_init.jsonl"]
    assert verify_ledger(entries).ok
    assert not verify_ledger(entries, root=expected["root"]).ok


def test_truncation_at_the_end_is_invisible_without_a_head_pin(full: list[dict[str, Any]]) -> None:
    head = verify_ledger(full).head
    assert verify_ledger(full[:20]).ok
    result = verify_ledger(full[:20], expected_last=23, expected_last_hash=head)
    assert (result.ok, result.seq) == (False, 21)
    # A pinned head hash catches a rewritten tail of the right length.
    rewritten = gen.reseal([*full[:22], {**full[22], "data": {**full[22]["data"], "reason": "nothing to see"}}],
                           LEDGER_KEY, 23)
    assert verify_ledger(rewritten).ok
    result = verify_ledger(rewritten, expected_last=23, expected_last_hash=head)
    assert (result.ok, result.seq) == (False, 23)
    assert "pinned head hash" in result.reason


def test_the_generator_reproduces_a_consistent_vector_set(tmp_path: Path) -> None:
    gen.generate(tmp_path)  # raises SystemExit when any vector does not verify as its manifest says
    assert sorted(p.name for p in (tmp_path / "invalid").glob("*.jsonl")) == sorted(
        p.name for p in (VECTORS / "invalid").glob("*.jsonl"))
    fresh = entries_from_jsonl((tmp_path / "valid" / "full.jsonl").read_text(encoding="utf-8"))
    committed = entries_from_jsonl((VECTORS / "valid" / "full.jsonl").read_text(encoding="utf-8"))
    # Deterministic parts stay put across runs: ledger key, types, times, actors (passkeys are random).
    assert [(e["type"], e["time"], e["actor"]) for e in fresh] == [
        (e["type"], e["time"], e["actor"]) for e in committed]
    assert fresh[0]["data"]["ledger_key"] == committed[0]["data"]["ledger_key"]


# --- canonical hashing and sealing -----------------------------------------------------------------------

FIXED_PREV = bytes(range(32))
FIXED_ENTRY = {
    "type": "admin.grant",
    "seq": 2,
    "time": "2026-11-22T00:33:59.123Z",
    "subject": "bob",
    "actor": "alice",
    "data": {"z": None, "name": "Zoë", "n": -7, "groups": ["eng", "sre"], "a": True},
    "prev": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    "hash": "ignored",
    "sig": "ignored",
}
# Written by hand: keys sorted at every level by code point ("n" before "name"), no white space, UTF-8 (not \\u escapes), hash and sig left out.
FIXED_CANONICAL = (
    '{"actor":"alice","data":{"a":true,"groups":["eng","sre"],"n":-7,"name":"Zoë","z":null},'
    '"prev":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","seq":2,"subject":"bob",'
    '"time":"2026-11-22T00:33:59.123Z","type":"admin.grant"}'
)
FIXED_HEX = "69f0e098d01836a981b74bcb3b1c0bfa1c342ec284d19aacc5627e8e376cc413"


def test_entry_hash_fixed_vector() -> None:
    independent = hashlib.sha256(FIXED_PREV + FIXED_CANONICAL.encode("utf-8")).hexdigest()
    assert independent == FIXED_HEX
    assert entry_hash(FIXED_PREV, FIXED_ENTRY).hex() == FIXED_HEX


def test_entry_hash_covers_prev_and_approval_but_not_hash_or_sig() -> None:
    base = entry_hash(FIXED_PREV, FIXED_ENTRY)
    assert entry_hash(FIXED_PREV, {**FIXED_ENTRY, "hash": "x", "sig": "y"}) == base
    assert entry_hash(GENESIS_PREV, FIXED_ENTRY) != base
    assert entry_hash(FIXED_PREV, {**FIXED_ENTRY, "approval": {}}) != base
    assert entry_hash(FIXED_PREV, {**FIXED_ENTRY, "prev": b64url_encode(GENESIS_PREV)}) != base


@pytest.mark.parametrize("value", [1.5, float("nan"), b"bytes", {1: "int key"}, (1, 2)])
def test_entry_hash_refuses_non_canonical_values(value: Any) -> None:
    with pytest.raises(ValueError):
        entry_hash(FIXED_PREV, {**FIXED_ENTRY, "data": {"x": value}})


def test_seal_signs_the_hash_as_es256_raw_r_s() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entry = new_entry(seq=1, time=1_700_000_000.5, type="key.rotate", actor="system", subject="k2",
                      data={"kind": "assertion", "kid": "k2", "previous_kid": "k1"})
    sealed = seal(entry, prev=GENESIS_PREV, key=key)
    assert "prev" not in entry and entry["time"] == "2023-11-14T22:13:20.500Z"  # the input is untouched
    digest = b64url_decode(sealed["hash"])
    assert digest == entry_hash(GENESIS_PREV, sealed)
    signature = b64url_decode(sealed["sig"])
    assert len(signature) == 64
    # An independent JOSE implementation accepts it as an ES256 signature over the 32 hash bytes.
    es256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    assert es256.verify(digest, key.public_key(), signature)
    assert not es256.verify(digest[:-1] + b"\x00", key.public_key(), signature)
    # RFC 6979: resealing is reproducible, and old prev/hash/sig are replaced.
    assert seal(sealed, prev=GENESIS_PREV, key=key) == sealed
    assert seal({**sealed, "hash": "junk"}, prev=bytes(31) + b"\x01", key=key)["prev"] == b64url_encode(
        bytes(31) + b"\x01")


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP384R1()),
    ec.generate_private_key(ec.SECP256R1()).public_key(),
    "not a key",
])
def test_seal_refuses_keys_that_are_not_a_p256_private_key(key: Any) -> None:
    with pytest.raises(ValueError):
        seal(FIXED_ENTRY, prev=GENESIS_PREV, key=key)


def test_new_entry_shape() -> None:
    when = datetime(2026, 11, 22, 0, 33, 59, 123000, tzinfo=timezone.utc)
    entry = new_entry(seq=3, time=when, type="session.logout", actor="bob", subject="s1",
                      data={"user": "bob", "device_id": "d1"})
    assert entry == {"seq": 3, "time": "2026-11-22T00:33:59.123Z", "type": "session.logout", "actor": "bob",
                     "subject": "s1", "data": {"user": "bob", "device_id": "d1"}}
    assert new_entry(seq=3, time=when.astimezone(timezone(timedelta(hours=5))), type="session.logout",
                     actor="bob", subject="s1", data={}, approval={"x": "y"})["approval"] == {"x": "y"}


@pytest.mark.parametrize("kwargs", [
    {"time": datetime(2026, 1, 1)},          # naive: no defined instant
    {"type": "user.delete"},
    {"seq": 0},
    {"seq": True},
    {"time": float("inf")},
    {"time": -1},
])
def test_new_entry_refuses(kwargs: dict[str, Any]) -> None:
    args = {"seq": 1, "time": 0, "type": "kill", "actor": "a", "subject": "s", "data": {}, **kwargs}
    with pytest.raises(ValueError):
        new_entry(**args)


# --- time -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "text"), [
    (0, "1970-01-01T00:00:00.000Z"),
    (1_795_307_639.123, "2026-11-22T00:33:59.123Z"),
    (1_795_307_639.9996, "2026-11-22T00:34:00.000Z"),
    (951_782_400, "2000-02-29T00:00:00.000Z"),
])
def test_format_and_parse_time(now: float, text: str) -> None:
    assert format_time(now) == text
    assert format_time(parse_time(text)) == text
    assert abs(parse_time(text) - now) < 0.001


@pytest.mark.parametrize("text", [
    "2026-11-22T00:33:59Z",            # no milliseconds
    "2026-11-22T00:33:59.123",         # no zone
    "2026-11-22T00:33:59.123+00:00",   # an offset instead of Z
    "2026-11-22t00:33:59.123z",
    "2026-11-22T00:33:59.1234Z",
    "2026-11-22 00:33:59.123Z",
    "2026-02-30T00:00:00.000Z",        # no such day
    "2026-12-31T23:59:60.000Z",        # leap seconds are not representable
    "２026-11-22T00:33:59.123Z",        # non-ASCII digit
    " 2026-11-22T00:33:59.123Z",
    1795336439,
    None,
])
def test_parse_time_refuses(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


# --- keys and fingerprints --------------------------------------------------------------------------------


def test_root_fingerprint_is_b64url_sha256_of_the_cose_key() -> None:
    assert root_fingerprint(b"cose") == "JcRaiLU2RdPOG-8H7lVKYWwKtCXvvHyVqDh5FBVpEqY"


def test_ledger_jwk_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ledger_public_jwk(key)
    assert set(jwk) == {"kty", "crv", "x", "y"} and jwk == ledger_public_jwk(key.public_key())
    assert public_key_from_jwk(jwk).public_numbers() == key.public_key().public_numbers()
    # PyJWT reads the same JWK.
    assert jwt.PyJWK(jwk, algorithm="ES256").key.public_numbers() == key.public_key().public_numbers()


_GOOD_JWK = ledger_public_jwk(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize(("jwk", "problem"), [
    ({**_GOOD_JWK, "d": "AAAA"}, "private key"),
    ({**_GOOD_JWK, "crv": "P-384"}, "P-256"),
    ({**_GOOD_JWK, "kty": "OKP"}, "kty EC"),
    ({**_GOOD_JWK, "kid": "k1"}, "exactly kty, crv, x, y"),
    ({k: v for k, v in _GOOD_JWK.items() if k != "y"}, "exactly kty, crv, x, y"),
    ({**_GOOD_JWK, "x": _GOOD_JWK["x"][:-3]}, "32 bytes"),
    ({**_GOOD_JWK, "x": _GOOD_JWK["x"] + "="}, "unpadded base64url"),
    ({**_GOOD_JWK, "x": "!" * 43}, "coordinates"),
    ({**_GOOD_JWK, "y": b64url_encode(bytes(31) + b"\x01")}, "not a point on P-256"),
    (["EC"], "JWK object"),
])
def test_hostile_ledger_jwk(jwk: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        public_key_from_jwk(jwk)


# --- JSON lines -----------------------------------------------------------------------------------------


def test_jsonl_round_trip(full: list[dict[str, Any]]) -> None:
    text = "\n".join(entry_to_jsonl(e) for e in full) + "\n\n"
    assert entries_from_jsonl(text) == full


@pytest.mark.parametrize(("text", "problem"), [
    ('{"seq": 1, "seq": 2}', "duplicate key 'seq'"),
    ('{"seq": NaN}', "NaN is not JSON"),
    ('{"seq": Infinity}', "Infinity is not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"seq": 1', "not a JSON object"),
])
def test_jsonl_refuses(text: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem) as caught:
        entries_from_jsonl('{"ok": true}\n' + text)
    assert caught.value.detail.startswith("line 2: ")


# --- the verifier, entry by entry --------------------------------------------------------------------------


def _tampered(full: list[dict[str, Any]], index: int, change: Any) -> list[dict[str, Any]]:
    """Apply ``change`` to entry ``index`` (0-based) and reseal from there with the ledger key."""
    entries = copy.deepcopy(full)
    change(entries[index])
    return gen.reseal(entries, LEDGER_KEY, index + 1)


def _fails(entries: list[dict[str, Any]], seq: int, reason: str, **pins: Any) -> None:
    result = verify_ledger(entries, **pins)
    assert not result.ok, "expected a failure"
    assert result.seq == seq, result.reason
    assert reason in result.reason, result.reason


def test_every_entry_is_covered_by_its_hash(full: list[dict[str, Any]]) -> None:
    for index, entry in enumerate(full):
        changed = copy.deepcopy(full)
        changed[index]["time"] = format_time(parse_time(entry["time"]) + 0.001)
        _fails(changed, index + 1, "hash does not match its contents")


def test_every_entry_needs_the_ledger_signature(full: list[dict[str, Any]]) -> None:
    other = gen.derived_key("ledger/someone-else")
    for index in range(len(full)):
        changed = copy.deepcopy(full)
        prev = b64url_decode(changed[index]["prev"])
        changed[index]["sig"] = seal(changed[index], prev=prev, key=other)["sig"]
        _fails(changed, index + 1, "ledger signature does not verify")


def test_every_approval_signature_is_checked(full: list[dict[str, Any]]) -> None:
    signed = [i for i, e in enumerate(full) if "approval" in e]
    assert len(signed) >= 10
    for index in signed:
        def flip(entry: dict[str, Any]) -> None:
            raw = bytearray(b64url_decode(entry["approval"]["signature"]))
            raw[len(raw) // 2] ^= 0x01
            entry["approval"]["signature"] = b64url_encode(bytes(raw))

        _fails(_tampered(full, index, flip), index + 1, "approval signature does not verify under credential")


def test_pinned_ledger_key_must_be_the_bootstraps(full: list[dict[str, Any]]) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    _fails(full, 1, "not the ledger public key given to the verifier", ledger_public_key=stranger)
    _fails(full, 1, "not the ledger public key given", ledger_public_key=ledger_public_jwk(stranger))
    with pytest.raises(ValueError):
        verify_ledger(full, ledger_public_key=ec.generate_private_key(ec.SECP384R1()).public_key())


def test_a_ledger_key_holder_without_the_pin_can_rebuild_everything_but_the_root(full: list[dict[str, Any]]) -> None:
    thief = gen.derived_key("ledger/thief")
    entries = copy.deepcopy(full)
    entries[0]["data"]["ledger_key"] = ledger_public_jwk(thief)
    resealed = gen.reseal(entries, thief)
    assert verify_ledger(resealed).ok  # self-consistent...
    _fails(resealed, 1, "not the ledger public key", ledger_public_key=LEDGER_KEY.public_key())  # ...but not ours


@pytest.mark.parametrize(("entries", "seq", "reason"), [
    ([], 1, "the ledger is empty"),
    (["not an object"], 1, "an entry must be a JSON object"),
    ([{"seq": 1}], 1, "entry is missing"),
])
def test_degenerate_ledgers(entries: list[Any], seq: int, reason: str) -> None:
    _fails(entries, seq, reason)


def test_head_hash_pin_needs_its_seq(full: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError):
        verify_ledger(full, expected_last_hash="x")


def _set(path: str, value: Any) -> Any:
    def change(entry: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = entry
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return change


_DELETE = object()
_ES256_COSE = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32})  # not on the curve
_P384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
_P384_AS_ES256_COSE = cbor2.dumps({1: 2, 3: -7, -1: 2, -2: _P384.x.to_bytes(48, "big"), -3: _P384.y.to_bytes(48, "big")})


@pytest.mark.parametrize(("index", "change", "seq", "reason"), [
    # the envelope (entry 2 is bob's invite, 3 his enrollment, 4 his login, 9 admin.grant, 16 a kill)
    (1, _set("extra", 1), 2, "unexpected field(s) extra"),
    (1, _set("subject", _DELETE), 2, "entry is missing subject"),
    (1, _set("seq", "2"), 2, "seq must be an integer"),
    (1, _set("time", "2026-11-22T09:02:00Z"), 2, "expected a time like"),
    (1, _set("actor", ""), 2, "actor must be a non-empty string"),
    (2, _set("time", "2026-11-22T09:00:59.999Z"), 3, "is more than 60 s before the latest earlier entry"),
    (1, _set("approval", [1]), 2, "approval must be an object"),
    (1, _set("data.extra", "x"), 2, "data has unexpected field(s) extra"),
    (1, _set("data.groups", "eng"), 2, "data.groups must be a list of strings"),
    (1, _set("data.admin", 0), 2, "data.admin must be a boolean"),
    (1, _set("data.invite_id", "AAAA"), 2, "data.invite_id must be base64url of 32 bytes"),
    (1, _set("approval.action.extra", 1), 2, "approval.action has unexpected field(s) extra"),
    (1, _set("approval.action.not_after", "soon"), 2, "approval.action.not_after must be an integer"),
    (1, _set("approval", _DELETE), 2, "invite.create needs an approval"),
    (1, _set("subject", "mallory"), 2, "expected the invited user"),
    (1, _set("actor", "bob"), 2, "approval action actor \"alice\" does not match entry actor bob"),
    (3, lambda e: e["approval"].update(credential_id=e["approval"]["credential_id"] + "="), 4,
     "approval.credential_id must be base64url"),
    (3, _set("data.sign_count", 7), 4, "data.sign_count 7 is not the signed counter 1"),
    (3, _set("data.nonce", b64url_encode(bytes(32))), 4, "approval nonce is not data.nonce"),
    (3, _set("data.device_id", "dev-alice-laptop"), 4, "is bound to device dev-bob-laptop"),
    (3, _set("actor", "alice"), 4, "expected the user \"bob\""),
    (15, _set("actor", "token:nope"), 16, "is not a live token with the kill scope"),
    (15, _set("actor", "bob"), 16, "actor bob is not an admin at this point"),
    (15, _set("data.devices", ["dev-ghost"]), 16, "kill revokes device dev-ghost, which was never enrolled"),
    (16, _set("actor", "alice"), 17, "actor of key.rotate must be 'system'"),
    (14, _set("data.received", 3), 15, "is not an anomaly"),
    (13, _set("subject", "ses-never"), 14, "session ses-never was never started"),
    (0, _set("data.admin", False), 1, "the bootstrap user must be an admin"),
    (0, _set("data.user_verification", "sometimes"), 1, "data.user_verification must be"),
    (0, _set("approval", {"x": 1}), 1, "bootstrap must not carry an approval"),
    # registered keys must be usable COSE keys of the stated algorithm
    (2, _set("data.alg", -8), 3, "COSE key for alg -7, but alg says -8"),
    (2, _set("data.alg", -35), 3, "alg -35 is not one of"),
    (2, _set("data.public_key", b64url_encode(b"\xa1\x01\x02")), 3, "not a usable COSE key"),
    (2, _set("data.public_key", b64url_encode(_P384_AS_ES256_COSE)), 3, "public_key does not fit alg -7"),
    (2, _set("data.device_id", "dev-alice-laptop"), 3, "expected the device"),
    (2, _set("data.cert_sha256", None), 3, "an active device must record its certificate"),
])
def test_hostile_entries(full: list[dict[str, Any]], index: int, change: Any, seq: int, reason: str) -> None:
    _fails(_tampered(full, index, change), seq, reason)


def test_credential_ids_are_unique_across_the_ledger(full: list[dict[str, Any]]) -> None:
    alices = full[0]["data"]["credential_id"]
    _fails(_tampered(full, 2, _set("data.credential_id", alices)), 3,
           f"credential {alices} was already registered by seq 1")


def test_time_may_step_back_a_little(full: list[dict[str, Any]]) -> None:
    # seq 2 is at 09:02:00; a node whose clock is 60 s behind stamps seq 3 at 09:01:00.
    assert verify_ledger(_tampered(full, 2, _set("time", "2026-11-22T09:01:00.000Z"))).ok


def test_floats_are_not_canonical_json(full: list[dict[str, Any]]) -> None:
    entries = copy.deepcopy(full)
    entries[1]["data"]["expires_at"] = 1.5  # no reseal possible: the hash is undefined
    _fails(entries, 2, "entry is not canonical JSON")


def test_registered_point_must_be_on_the_curve(full: list[dict[str, Any]]) -> None:
    _fails(_tampered(full, 2, _set("data.public_key", b64url_encode(_ES256_COSE))), 3, "not a usable COSE key")


def test_seq_must_start_at_one(full: list[dict[str, Any]]) -> None:
    _fails(full[1:], 2, "expected seq 1 at the start")
    first_not_bootstrap = gen.reseal([{**full[3], "seq": 1}], LEDGER_KEY)
    _fails(first_not_bootstrap, 1, "the first entry must be a bootstrap")


def test_ledger_state_replays_the_trust_state(full: list[dict[str, Any]]) -> None:
    state = LedgerState()
    for entry in full:
        state.apply(entry)
    assert state.users["carol"].admin is False and state.users["alice"].admin is True
    assert state.devices["dev-bob-laptop"].status == "revoked"
    assert state.devices["dev-bob-phone"].status == "active"
    assert state.devices["dev-carol-laptop"].cert_sha256 == full[7]["data"]["cert_sha256"]  # pinned at first login
    assert all(invite.used_by is not None for invite in state.invites.values())
    assert state.tokens["tok-soar"].revoked_by == 22
    assert {c.alg for c in state.credentials.values()} == {-7, -8, -257}
    assert state.root == root_fingerprint(b64url_decode(full[0]["data"]["public_key"]))
    with pytest.raises(LedgerViolation) as caught:
        state.apply(full[3])
    assert caught.value.seq == 4 and caught.value.problem()["seq"] == 4


_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=50),
                         st.sampled_from(["2026-11-22T09:00:00.000Z", "AAAA", "webauthn.get", "alice", "active"]))
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _paths(child, prefix + (key,))
    return found


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 22), pick=st.integers(0, 10**6), value=_JSON, reseal=st.booleans())
def test_any_rewrite_is_judged_never_crashes(full: list[dict[str, Any]], index: int, pick: int, value: Any,
                                            reseal: bool) -> None:
    """Whatever a ledger-key holder writes into one entry, the verifier answers with a result, never an exception."""
    entries = copy.deepcopy(full)
    paths = _paths(entries[index])
    path = paths[pick % len(paths)]
    parent = entries[index]
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    if reseal and path[0] not in ("prev", "hash", "sig"):
        entries = gen.reseal(entries, LEDGER_KEY, index + 1)
    result = verify_ledger(entries)
    assert result.ok or (result.seq is not None and result.reason.startswith(f"seq {result.seq}: "))
    if not result.ok and path != ("seq",) and not verify_ledger(entries[: index + 1]).ok:
        # the rewritten entry is itself wrong, so it (or one before it) is named; a rewrite the entry survives
        # (new bootstrap origins, say) is named where a later entry stops agreeing with it
        assert result.seq <= index + 1
