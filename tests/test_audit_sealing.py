"""idwall.audit.sealing: canonical entry hashing, sealing, the time format, the ledger key and the root pin."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit import (
    GENESIS_PREV,
    entry_hash,
    format_time,
    ledger_public_jwk,
    new_entry,
    parse_time,
    public_key_from_jwk,
    root_fingerprint,
    seal,
)
from idwall.encoding import b64url_decode, b64url_encode


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
