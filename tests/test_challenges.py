"""idwall.challenges: the bytes a passkey signs, and what they commit to.

The vectors are computed here with hashlib straight from DESIGN.md and also
pinned as hex, so any change in the derivation (prefix, order, inner hash,
canonical form) breaks these tests and must be a deliberate new version.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idwall import challenges
from idwall.challenges import action_challenge, enroll_challenge, login_challenge

NONCE = bytes(range(32))
SPKI = b"\x30\x59" + bytes(range(0x59))
CERT = b"\x30\x82\x01\x00" + b"\xab" * 256
ACTION = {
    "type": "invite.create",
    "user": "bob",
    "name": "Bj\u00f6rn",
    "email": "bob@example.com",
    "groups": ["eng", "ops"],
    "admin": False,
    "actor": "alice",
    "nonce": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    "not_after": 1772366700,
}
# Written by hand: UTF-8, keys sorted, no white space.
ACTION_CANONICAL = (
    b'{"actor":"alice","admin":false,"email":"bob@example.com","groups":["eng","ops"],'
    b'"name":"Bj\xc3\xb6rn","nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",'
    b'"not_after":1772366700,"type":"invite.create","user":"bob"}'
)


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_prefixes_are_the_documented_ones() -> None:
    assert challenges.ENROLL == b"idwall/enroll/v1"
    assert challenges.LOGIN == b"idwall/login/v1"
    assert challenges.ACTION == b"idwall/action/v1"


def test_enroll_vector() -> None:
    expected = H(b"idwall/enroll/v1" + NONCE + H(SPKI))
    assert enroll_challenge(NONCE, SPKI) == expected
    assert expected.hex() == "996208e6149f982a01bdb2131beaebca0fac51d1bd0c062e1e1c25429d986fda"


def test_login_vector() -> None:
    expected = H(b"idwall/login/v1" + NONCE + H(CERT))
    assert login_challenge(NONCE, CERT) == expected
    assert expected.hex() == "16269f77947abdc50cb26058be362bc7ad7181e1eb1dc948c6b0b42bb6663023"


def test_action_vector() -> None:
    expected = H(b"idwall/action/v1" + ACTION_CANONICAL)
    assert action_challenge(ACTION) == expected
    assert expected.hex() == "b98f0189eaddcd8f2985c548818f7bc7a175da2be55164145e3849506ef5be79"


def test_action_challenge_ignores_key_order() -> None:
    assert action_challenge(dict(reversed(list(ACTION.items())))) == action_challenge(ACTION)


def _flip(data: bytes, index: int = -1) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_every_input_changes_the_challenge() -> None:
    base_enroll, base_login = enroll_challenge(NONCE, SPKI), login_challenge(NONCE, CERT)
    assert enroll_challenge(_flip(NONCE), SPKI) != base_enroll
    assert enroll_challenge(NONCE, _flip(SPKI)) != base_enroll
    assert login_challenge(_flip(NONCE), CERT) != base_login
    assert login_challenge(NONCE, _flip(CERT)) != base_login


@pytest.mark.parametrize(
    "change",
    [
        {"user": "mallory"},
        {"admin": True},
        {"groups": ["eng", "ops", "admins"]},
        {"groups": ["ops", "eng"]},  # list order is meaningful
        {"not_after": 1772366701},
        {"nonce": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4"},
        {"type": "admin.grant"},
        {"actor": "bob"},
        {"extra": None},
    ],
)
def test_every_action_field_changes_the_challenge(change: dict) -> None:
    assert action_challenge({**ACTION, **change}) != action_challenge(ACTION)


def test_kinds_are_domain_separated() -> None:
    """The same bytes used as an SPKI and as a certificate give unrelated challenges."""
    assert enroll_challenge(NONCE, SPKI) != login_challenge(NONCE, SPKI)


@pytest.mark.parametrize("nonce", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64, "x" * 32, bytearray(32), None])
@pytest.mark.parametrize("derive", [enroll_challenge, login_challenge])
def test_nonce_must_be_exactly_32_bytes(derive, nonce) -> None:
    with pytest.raises(ValueError, match="nonce"):
        derive(nonce, SPKI)


@pytest.mark.parametrize("der", [b"", "30 59", None])
@pytest.mark.parametrize("derive", [enroll_challenge, login_challenge])
def test_key_or_cert_must_be_der_bytes(derive, der) -> None:
    with pytest.raises(ValueError):
        derive(NONCE, der)


@pytest.mark.parametrize(
    "action",
    [
        {"type": "token.create", "ttl": 1.5},  # floats have no unique text form
        {"type": "x", "when": float("nan")},
        {1: "x"},
        {"type": "x", "data": b"bytes"},
        {"type": "x", "set": {"a"}},
        ["type", "x"],
        "invite.create",
        None,
    ],
)
def test_action_must_be_canonical_json_object(action) -> None:
    with pytest.raises(ValueError):
        action_challenge(action)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(min_size=32, max_size=32), b=st.binary(min_size=32, max_size=32), spki=st.binary(min_size=1))
def test_distinct_nonces_give_distinct_challenges(a: bytes, b: bytes, spki: bytes) -> None:
    first, second = enroll_challenge(a, spki), enroll_challenge(b, spki)
    assert len(first) == 32
    assert (first == second) == (a == b)
