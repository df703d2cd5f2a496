"""idwall.cose: the one check of a passkey's COSE public key, shared by registration and ledger replay.

Real keys made with ``cryptography`` are accepted with their algorithm; every hostile or weak key is refused
with a CoseKeyError that names what is wrong.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from idwall.cose import EDDSA, ES256, RS256, CoseKeyError, check_public_key


def es256_map() -> dict[int, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}


def eddsa_map() -> dict[int, Any]:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {1: 1, 3: EDDSA, -1: 6, -2: raw}


def rs256_map(bits: int = 2048) -> dict[int, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_numbers()
    return {1: 3, 3: RS256, -1: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
            -2: numbers.e.to_bytes(3, "big")}


@pytest.mark.parametrize(("make", "alg"), [(es256_map, ES256), (eddsa_map, EDDSA), (rs256_map, RS256)])
def test_real_keys_are_accepted_with_their_algorithm(make: Any, alg: int) -> None:
    assert check_public_key(cbor2.dumps(make())) == alg


def _with(key: dict[int, Any], **changes: Any) -> bytes:
    labels = {"kty": 1, "alg": 3, "crv": -1, "x": -2, "y": -3}
    for name, value in changes.items():
        key[labels[name]] = value
    return cbor2.dumps(key)


def _off_curve() -> bytes:
    key = es256_map()
    key[-3] = ((int.from_bytes(key[-3], "big") + 1) % 2**256).to_bytes(32, "big")
    return cbor2.dumps(key)


HOSTILE: dict[str, tuple[Any, str]] = {
    "not CBOR": (lambda: b"\xff\xfe", "is not CBOR"),
    "a CBOR list": (lambda: cbor2.dumps([1, 2]), "a CBOR list, expected a map"),
    "bytes after the map": (lambda: cbor2.dumps(es256_map()) + b"\x00", "1 bytes after its CBOR map"),
    "a key twice": (lambda: b"\xa2\x01\x02\x01\x02", "is not CBOR"),
    "unknown algorithm": (lambda: _with(es256_map(), alg=-35), "alg -35 is not one of [-7, -8, -257]"),
    "ES256 on P-384": (lambda: _with(es256_map(), crv=2), "expected EC2 (2) on P-256 (1)"),
    "ES256 as an OKP key": (lambda: _with(es256_map(), kty=1), "expected EC2 (2) on P-256 (1)"),
    "ES256 point off the curve": (_off_curve, "does not load"),
    "ES256 x a string": (lambda: _with(es256_map(), x="00" * 32), "x (label -2) is str, expected 32 bytes"),
    "ES256 y short": (lambda: _with(es256_map(), y=b"\x01" * 31), "y (label -3) is 31 bytes, expected 32 bytes"),
    "EdDSA on X25519": (lambda: _with(eddsa_map(), crv=4), "expected OKP (1) on Ed25519 (6)"),
    "EdDSA key missing": (lambda: cbor2.dumps({1: 1, 3: EDDSA, -1: 6}), "x (label -2) is NoneType"),
    "RS256 of 1024 bits": (lambda: cbor2.dumps(rs256_map(1024)), "RS256 modulus is 1024 bits, expected at least 2048"),
    "RS256 as EC2": (lambda: _with(rs256_map(), kty=2), "RS256 key has kty 2, expected RSA (3)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_or_weak_key_is_refused_by_name(name: str) -> None:
    make, message = HOSTILE[name]
    with pytest.raises(CoseKeyError) as info:
        check_public_key(make())
    assert message in str(info.value)
