"""idwall.audit.replay (with its schemas and records): every check of an entry against the ledger before it."""

from __future__ import annotations

import copy
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idwall.audit import (LedgerState, LedgerViolation, format_time, ids_digest, parse_time, root_fingerprint, seal,
                          verify_ledger)
from idwall.encoding import b64url_decode, b64url_encode
from tests.helpers.ledger import LEDGER_KEY, fails, full_ledger, gen


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return full_ledger()


# --- the verifier, entry by entry --------------------------------------------------------------------------


def _tampered(full: list[dict[str, Any]], index: int, change: Any) -> list[dict[str, Any]]:
    """Apply ``change`` to entry ``index`` (0-based) and reseal from there with the ledger key."""
    entries = copy.deepcopy(full)
    change(entries[index])
    return gen.reseal(entries, LEDGER_KEY, index + 1)


def test_every_entry_is_covered_by_its_hash(full: list[dict[str, Any]]) -> None:
    for index, entry in enumerate(full):
        changed = copy.deepcopy(full)
        changed[index]["time"] = format_time(parse_time(entry["time"]) + 0.001)
        fails(changed, index + 1, "hash does not match its contents")


def test_every_entry_needs_the_ledger_signature(full: list[dict[str, Any]]) -> None:
    other = gen.derived_key("ledger/someone-else")
    for index in range(len(full)):
        changed = copy.deepcopy(full)
        prev = b64url_decode(changed[index]["prev"])
        changed[index]["sig"] = seal(changed[index], prev=prev, key=other)["sig"]
        fails(changed, index + 1, "ledger signature does not verify")


def test_every_approval_signature_is_checked(full: list[dict[str, Any]]) -> None:
    signed = [i for i, e in enumerate(full) if "approval" in e]
    assert len(signed) >= 10
    for index in signed:
        def flip(entry: dict[str, Any]) -> None:
            raw = bytearray(b64url_decode(entry["approval"]["signature"]))
            raw[len(raw) // 2] ^= 0x01
            entry["approval"]["signature"] = b64url_encode(bytes(raw))

        fails(_tampered(full, index, flip), index + 1, "approval signature does not verify under credential")


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
    (2, _set("data.public_key", b64url_encode(_P384_AS_ES256_COSE)), 3, "ES256 key has kty 2 and crv 2, expected EC2 (2) on P-256 (1)"),
    (2, _set("data.device_id", "dev-alice-laptop"), 3, "expected the device"),
    (2, _set("data.cert_sha256", None), 3, "an active device must record its certificate"),
    # managers, rejections and renewals
    (25, _set("data.status", "revoked"), 26, "data.status must be 'active'"),
    (28, _set("data.status", "active"), 29, "data.status must be 'revoked'"),
    (28, _set("data.enrollment_id", "enr-erin-laptop"), 29, "came from enrollment enr-erin-phone"),
    (29, _set("data.manager", "nobody"), 30, "approval action manager is \"dave\", but the entry's data.manager"),
    (29, _set("data.manager", 7), 30, "data.manager must be a non-empty string or null"),
    (29, _set("subject", "bob"), 30, "expected the user \"erin\""),
    (30, _set("subject", "dev-erin-phone"), 31, "expected the device \"dev-erin-laptop\""),
    (30, _set("actor", "bob"), 31, "approval action actor \"erin\" does not match entry actor bob"),
    (30, _set("data.not_after", "soon"), 31, "data.not_after must be unix seconds"),
    (30, _set("data.cert_sha256", None), 31, "data.cert_sha256 must be base64url of 32 bytes"),
])
def test_hostile_entries(full: list[dict[str, Any]], index: int, change: Any, seq: int, reason: str) -> None:
    fails(_tampered(full, index, change), seq, reason)


def test_credential_ids_are_unique_across_the_ledger(full: list[dict[str, Any]]) -> None:
    alices = full[0]["data"]["credential_id"]
    fails(_tampered(full, 2, _set("data.credential_id", alices)), 3,
           f"credential {alices} was already registered by seq 1")


def test_time_may_step_back_a_little(full: list[dict[str, Any]]) -> None:
    # seq 2 is at 09:02:00; a node whose clock is 60 s behind stamps seq 3 at 09:01:00.
    assert verify_ledger(_tampered(full, 2, _set("time", "2026-11-22T09:01:00.000Z"))).ok


def test_floats_are_not_canonical_json(full: list[dict[str, Any]]) -> None:
    entries = copy.deepcopy(full)
    entries[1]["data"]["expires_at"] = 1.5  # no reseal possible: the hash is undefined
    fails(entries, 2, "entry is not canonical JSON")


def test_registered_point_must_be_on_the_curve(full: list[dict[str, Any]]) -> None:
    fails(_tampered(full, 2, _set("data.public_key", b64url_encode(_ES256_COSE))), 3, "not a usable COSE key")


def test_seq_must_start_at_one(full: list[dict[str, Any]]) -> None:
    fails(full[1:], 2, "expected seq 1 at the start")
    first_not_bootstrap = gen.reseal([{**full[3], "seq": 1}], LEDGER_KEY)
    fails(first_not_bootstrap, 1, "the first entry must be a bootstrap")


def test_ledger_state_replays_the_trust_state(full: list[dict[str, Any]]) -> None:
    state = LedgerState()
    for entry in full:
        state.apply(entry)
    assert state.users["carol"].admin is False and state.users["alice"].admin is True
    assert state.devices["dev-bob-laptop"].status == "revoked"
    assert state.devices["dev-bob-phone"].status == "revoked"  # by the incident token's stage
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


# --- managers the signed actions themselves name --------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Any:
    return gen.build_world()


@pytest.mark.parametrize(("manager", "reason"), [
    ("nobody", "data.manager names manager nobody, who is not a user at this point"),
    ("erin", "data.manager names erin as their own manager"),
])
def test_an_invite_signed_for_an_impossible_manager_fails(world: Any, manager: str, reason: str) -> None:
    """The admin's passkey really signed it; the gateway would have refused it, and so does the verifier."""
    ledger = world.ledger.fork(23)
    gen.invite(ledger, world.alice, "dev-alice-laptop", world.erin, "impossible/" + manager, manager)
    fails(ledger.entries, 24, reason)


def test_a_manager_may_not_approve_their_own_device_by_managing_themselves(world: Any) -> None:
    """user.set_manager cannot make someone their own manager, so a user never approves their own device."""
    ledger = world.ledger.fork(29)
    gen.set_manager(ledger, world.alice, "dev-alice-laptop", "erin", "erin", label="erin-self")
    fails(ledger.entries, 30, "data.manager names erin as their own manager")


# --- kills that record counts and digests instead of every id --------------------------------------------------


def _counted(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every kill rewritten in the form the store writes since the ids moved out of the ledger, resealed."""
    entries = copy.deepcopy(entries)
    first = None
    for index, entry in enumerate(entries):
        if entry["type"] != "kill":
            continue
        first = index if first is None else first
        data = entry["data"]
        listed, sessions = data.pop("devices"), data.pop("sessions")
        devices = listed if data["revoke_devices"] else []
        data.update(sessions_revoked=len(sessions), sessions_sha256=ids_digest(sessions),
                    devices_revoked=len(devices), devices_sha256=ids_digest(devices))
    assert first is not None
    return gen.reseal(entries, LEDGER_KEY, first + 1)


def test_kills_recorded_as_counts_and_digests_verify(full: list[dict[str, Any]]) -> None:
    counted = _counted(full)
    assert verify_ledger(counted).ok, verify_ledger(counted).reason
    assert all("sessions" not in e["data"] for e in counted if e["type"] == "kill")


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d.update(devices_revoked=d["devices_revoked"] + 1), "but its scope matched 1 at this point"),
    (lambda d: d.update(devices_sha256=ids_digest(["dev-other"])), "but its scope matched 1 at this point"),
    (lambda d: d.update(devices=["dev-bob-laptop"]), "data has unexpected field(s) devices"),
    (lambda d: d.pop("sessions_sha256"), "data is missing sessions_sha256"),
    (lambda d: d.update(revoke_devices=False), "but its scope matched 0 at this point"),
])
def test_a_kill_whose_counts_do_not_match_what_its_scope_revoked_fails(full: list[dict[str, Any]], change: Any,
                                                                        reason: str) -> None:
    """The ids are kept in the store, not the ledger: the ledger alone must still say which devices a kill
    revoked (its scope at that point), and a count or digest that does not say the same is caught."""
    counted = _counted(full)
    index = next(i for i, e in enumerate(counted) if e["type"] == "kill" and e["data"]["revoke_devices"])
    change(counted[index]["data"])
    fails(gen.reseal(counted, LEDGER_KEY, index + 1), index + 1, reason)
