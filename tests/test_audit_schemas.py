"""idwall.audit.schemas: the fields of each entry type's ``data``, of approvals and of signed actions, each with
its rule. ``check_fields`` takes an object with exactly those fields, each passing its rule, and refuses anything
else with a Reject naming the field, the rule and what arrived; ``check_cose_key`` refuses a registered key that
is not a usable key of its stated algorithm.

Tested by calling the checks directly: every schema accepts the real objects of the committed ledger vector
(``valid/full.jsonl``), and every field of every schema is given hostile values its rule must refuse.
"""

from __future__ import annotations

import re
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit.schemas import (ACTION_APPROVAL, ACTION_SCHEMAS, APPROVAL_OPTIONAL, APPROVAL_REQUIRED, DATA_SCHEMAS,
                                  ENVELOPE_KEYS, LOGIN_APPROVAL, OPTIONAL_ACTION, OPTIONAL_DATA, SYSTEM_TYPES, Reject,
                                  check_cose_key, check_fields,
                                  instant, is_int, show)
from idwall.audit.sealing import ENTRY_TYPES, parse_time
from idwall.encoding import b64url_decode, b64url_encode
from idwall.passkeys import MAX_CREDENTIAL_ID_BYTES
from tests.helpers.ledger import full_ledger

FULL = full_ledger()
B32 = b64url_encode(bytes(range(32)))
NOT_CANONICAL_32 = B32[:-1] + chr(ord(B32[-1]) + 1)  # same bytes, non-zero trailing bits: a second spelling

#: hostile values for each rule, by the words the rule is described with; a rule missing here fails the tests
HOSTILE: dict[str, list[Any]] = {
    "a non-empty string": ["", 0, None, ["alice"], True],
    "a string": [0, None, ["x"], False],
    "a boolean": [0, 1, "true", None],
    "an integer": [True, 1.0, "1", None],
    "an integer from 0 to 2^32-1": [-1, 2**32, True, 1.0, "7"],
    "a list of strings": ["eng", [1], [None], {"eng": 1}, None],
    "a non-empty list of strings": [[], [""], "https://idwall.example", [1], None],
    "non-empty base64url without padding": ["", "AAA=", "AB+/", "A", "AA A", 1, None],
    "base64url of 32 bytes": [b64url_encode(bytes(31)), b64url_encode(bytes(33)), B32 + "=", NOT_CANONICAL_32,
                              "", None, 32],
    "base64url of 32 bytes, or null": [b64url_encode(bytes(31)), B32 + "=", NOT_CANONICAL_32, "", False],
    f"base64url of 1 to {MAX_CREDENTIAL_ID_BYTES} bytes": [
        "", b64url_encode(bytes(MAX_CREDENTIAL_ID_BYTES + 1)), "AAA=", "AB/A", None],
    "an object": [[], "{}", None, 1],
    "unix seconds (integer) or an RFC 3339 UTC time": [-1, True, 1.5, "2026-11-22", "2026-11-22T09:00:00+01:00",
                                                       "tomorrow", None],
    "a duration such as 1h": [True, None, 1.5, ["1h"]],
    "a string or null": [0, ["a"], True],
    "a non-empty string or null": ["", 0, ["bob"], False],
    "a non-empty list of distinct scopes from kill, read, incident": [[], ["kill", "kill"], ["admin"], "kill", [1],
                                                                      None],
    "a positive integer (seconds) or null": [0, -5, True, "300", 1.5],
    "a list of positive integers (ledger seqs)": [[0], [True], ["3"], 3, None],
    "an integer from 1": [0, -1, True, "1", None],
    "an object {users: [...], devices: [...]} of strings": [{}, {"users": []}, {"users": [1], "devices": []},
                                                             {"users": [], "devices": [], "groups": []}, [], None],
}
#: the rules that admit one or a few exact values (``_one_of``): none of these is ever one of them
NOT_ONE_OF = ["nope", 1, 0, None, ""]


def _samples() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """schema name -> ``(where, schema, a real object)``, the first object of each kind in the vector that has
    every field (the vector's first invite is one from before managers, without the optional ``manager``)."""
    found: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for entry in FULL:
        kind = entry["type"]
        if set(DATA_SCHEMAS[kind]) <= set(entry["data"]):
            found.setdefault(f"data:{kind}", ("data", DATA_SCHEMAS[kind], entry["data"]))
        approval = entry.get("approval")
        if approval is None:
            continue
        if kind == "session.login":
            found.setdefault("approval:login", ("approval", LOGIN_APPROVAL, approval))
        else:
            found.setdefault("approval:action", ("approval", ACTION_APPROVAL, approval))
            if set(ACTION_SCHEMAS[kind]) <= set(approval["action"]):
                found.setdefault(f"action:{kind}", ("approval.action", ACTION_SCHEMAS[kind], approval["action"]))
    return dict(sorted(found.items()))


NAMED_SAMPLES = _samples()
SAMPLES = list(NAMED_SAMPLES.values())
FIELD_CASES = [(where, schema, sample, name) for where, schema, sample in SAMPLES for name in schema]
FIELD_IDS = [f"{kind}.{name}" for kind, (_, schema, _) in NAMED_SAMPLES.items() for name in schema]


def _hostile(description: str) -> list[Any]:
    if description in HOSTILE:
        return HOSTILE[description]
    assert re.fullmatch(r"(True|False|'[a-z_]+')( or '[a-z_]+')*", description), f"no hostile values for {description!r}"
    return NOT_ONE_OF


def test_the_vector_gives_a_real_object_for_every_schema() -> None:
    assert len(SAMPLES) == len(DATA_SCHEMAS) + len(ACTION_SCHEMAS) + 2
    assert set(DATA_SCHEMAS) == set(ENTRY_TYPES)


@pytest.mark.parametrize(("where", "schema", "sample"), SAMPLES, ids=list(NAMED_SAMPLES))
def test_real_objects_pass(where: str, schema: dict[str, Any], sample: dict[str, Any]) -> None:
    assert check_fields(sample, schema, where) is sample


@pytest.mark.parametrize(("where", "schema", "sample", "name"), FIELD_CASES, ids=FIELD_IDS)
def test_every_field_rule_refuses_hostile_values(where: str, schema: dict[str, Any], sample: dict[str, Any],
                                                 name: str) -> None:
    description, _ = schema[name]
    for value in _hostile(description):
        bad = {**sample, name: value}
        with pytest.raises(Reject) as info:
            check_fields(bad, schema, where)
        assert str(info.value) == f"{where}.{name} must be {description}, got {show(value)}", value


@pytest.mark.parametrize(("where", "schema", "sample", "name"), FIELD_CASES, ids=FIELD_IDS)
def test_every_field_is_required(where: str, schema: dict[str, Any], sample: dict[str, Any], name: str) -> None:
    bad = {k: v for k, v in sample.items() if k != name}
    with pytest.raises(Reject, match=re.escape(f"{where} is missing {name}")):
        check_fields(bad, schema, where)


def test_an_optional_field_may_be_absent_but_is_checked_when_present() -> None:
    """Invites written before managers have no ``manager``; the verifier must still accept them."""
    legacy = next(e for e in FULL if e["type"] == "invite.create" and "manager" not in e["data"])
    schema, optional = DATA_SCHEMAS["invite.create"], OPTIONAL_DATA["invite.create"]
    assert check_fields(legacy["data"], schema, "data", optional) is legacy["data"]
    assert check_fields(legacy["approval"]["action"], ACTION_SCHEMAS["invite.create"], "approval.action",
                        OPTIONAL_ACTION["invite.create"])
    with pytest.raises(Reject, match=re.escape("data is missing manager")):
        check_fields(legacy["data"], schema, "data")
    with pytest.raises(Reject, match=re.escape('data.manager must be a non-empty string or null, got ""')):
        check_fields({**legacy["data"], "manager": ""}, schema, "data", optional)


def test_extra_fields_are_refused_naming_all_of_them() -> None:
    _, schema, sample = SAMPLES[0]
    with pytest.raises(Reject) as info:
        check_fields({**sample, "zz": 1, "aa": 2}, schema, "data")
    assert str(info.value) == f"data has unexpected field(s) aa, zz; expected exactly {', '.join(schema)}"


@pytest.mark.parametrize(("value", "kind"), [([], "list"), ("{}", "str"), (None, "NoneType"), (1, "int")])
def test_a_non_object_is_refused(value: Any, kind: str) -> None:
    with pytest.raises(Reject, match=f"^approval must be an object, got {kind}$"):
        check_fields(value, LOGIN_APPROVAL, "approval")


def test_missing_fields_are_all_named_in_schema_order() -> None:
    with pytest.raises(Reject, match=r"^data is missing kind, kid, previous_kid$"):
        check_fields({}, DATA_SCHEMAS["key.rotate"], "data")


def test_exact_values_are_exact_in_type_too() -> None:
    """``admin: 1`` is not ``admin: true``: Python's 1 == True must not let the wrong JSON type through."""
    schema = DATA_SCHEMAS["admin.grant"]
    assert check_fields({"user": "carol", "admin": True}, schema, "data")
    for value in (1, 1.0, "true", False):
        with pytest.raises(Reject, match=r"data\.admin must be True"):
            check_fields({"user": "carol", "admin": value}, schema, "data")


def test_which_types_need_an_approval() -> None:
    # every signed action and every login carries a passkey assertion; a token may also be revoked by a token,
    # and an incident started by an automation token (scope incident)
    assert APPROVAL_REQUIRED == set(ACTION_SCHEMAS) - {"token.revoke", "incident.start"} | {"session.login"}
    assert APPROVAL_OPTIONAL == {"token.revoke", "incident.start"}
    assert SYSTEM_TYPES == {"signcount.anomaly", "key.rotate"}
    unsigned = set(ENTRY_TYPES) - APPROVAL_REQUIRED - APPROVAL_OPTIONAL
    assert unsigned == {"bootstrap", "device.enroll", "session.logout", "kill", "signcount.anomaly", "key.rotate",
                        "incident.stage", "incident.end"}
    assert ENVELOPE_KEYS == {"seq", "time", "type", "actor", "subject", "data", "prev", "hash", "sig"}


@pytest.mark.parametrize(("value", "expected"), [(0, True), (-5, True), (2**70, True), (True, False),
                                                 (False, False), (1.0, False), ("1", False), (None, False)])
def test_is_int_excludes_booleans(value: Any, expected: bool) -> None:
    assert is_int(value) is expected


def test_instant_reads_both_forms() -> None:
    assert instant(1_800_000_000) == 1_800_000_000.0
    assert instant("2026-11-22T09:00:00.000Z") == parse_time("2026-11-22T09:00:00.000Z")


@pytest.mark.parametrize(("value", "text"), [
    ("x" * 100, '"' + "x" * 76 + "..."),
    ({"a": [1, None]}, '{"a": [1, null]}'),
    ("caf\u00e9\n", '"caf\\u00e9\\n"'),  # ASCII only: a reason text stays one plain line
    (b"raw", "bytes"),
    (float("nan"), "NaN"),
])
def test_show_is_short_ascii_json(value: Any, text: str) -> None:
    shown = show(value)
    assert shown == text and len(shown) <= 80 and shown.isascii() and "\n" not in shown


# --------------------------------------------------------------------------- registered COSE keys


def _registered(alg: int) -> bytes:
    entry = next(e for e in FULL if e["type"] in ("bootstrap", "device.enroll") and e["data"]["alg"] == alg)
    return b64url_decode(entry["data"]["public_key"])


@pytest.mark.parametrize("alg", [-7, -8, -257])
def test_registered_keys_of_each_algorithm_pass(alg: int) -> None:
    check_cose_key(_registered(alg), alg)


_P384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()


@pytest.mark.parametrize(("key", "alg", "problem"), [
    (lambda: _registered(-7), -35, "alg -35 is not one of ES256 (-7), EdDSA (-8), RS256 (-257)"),
    (lambda: _registered(-7), -8, "public_key is a COSE key for alg -7, but alg says -8"),
    (lambda: _registered(-8), -257, "public_key is a COSE key for alg -8, but alg says -257"),
    (lambda: b"", -7, "public_key is not a usable COSE key"),
    (lambda: b"\xa1\x01\x02", -7, "public_key is not a usable COSE key"),
    (lambda: cbor2.dumps([1, 2, 3]), -7, "public_key is not a usable COSE key"),
    (lambda: cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}), -7,
     "public_key is not a usable COSE key"),  # a point off the curve
    (lambda: cbor2.dumps({1: 2, 3: -7, -1: 2, -2: _P384.x.to_bytes(48, "big"), -3: _P384.y.to_bytes(48, "big")}),
     -7, "expected EC2 (2) on P-256 (1)"),  # ES256 means P-256, not P-384
])
def test_unusable_registered_keys_are_refused(key: Any, alg: int, problem: str) -> None:
    with pytest.raises(Reject, match=re.escape(problem)):
        check_cose_key(key(), alg)
