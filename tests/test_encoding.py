"""idwall.encoding: the byte and JSON encodings every hash and signature goes through. base64url is written one
way (no padding) and read strictly (no standard-alphabet or stray characters, no impossible lengths, so two
strings never decode to the same bytes, and ``is_b64url`` admits only the one spelling); a JSON object naming a
member twice is refused; ``canonical_json`` gives a value exactly one byte form and refuses what has none.

Tested with hostile inputs for every refusal (wrong types, padding, non-canonical spellings, duplicate and
escaped-duplicate keys, floats, non-string keys) and with Hypothesis for the round trips.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idwall.encoding import (DuplicateKey, EncodingError, b64url_decode, b64url_encode, canonical_json, is_b64url,
                             sha256, unique_members)

# 0xfb 0xff 0xbf is "+/+/" in the standard alphabet: the bytes where the two alphabets differ
URL_UNSAFE = bytes([0xFB, 0xFF, 0xBF])
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# --------------------------------------------------------------------------- base64url


def test_encode_is_url_safe_and_unpadded() -> None:
    assert b64url_encode(URL_UNSAFE) == "-_-_"
    assert base64.b64encode(URL_UNSAFE) == b"+/+/"
    assert [b64url_encode(b"a" * n) for n in range(4)] == ["", "YQ", "YWE", "YWFh"]


@given(st.binary(max_size=200))
def test_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data
    assert "=" not in text and re.fullmatch(r"[A-Za-z0-9_-]*", text)
    assert is_b64url(text) is bool(data)  # the empty string names no bytes


def test_decode_takes_padding_or_none() -> None:
    assert b64url_decode("YQ") == b64url_decode("YQ==") == b"a"
    assert b64url_decode("YWE") == b64url_decode("YWE=") == b"aa"
    assert b64url_decode("") == b""


@pytest.mark.parametrize(("value", "problem"), [
    (b"YQ", "expected a base64url string, got bytes"),
    (None, "expected a base64url string, got NoneType"),
    (42, "expected a base64url string, got int"),
    (["YQ"], "expected a base64url string, got list"),
    ("YQ===", "too much padding"),
    ("====", "too much padding"),
    ("+/+/", "outside the URL-safe alphabet"),  # the standard alphabet is not silently accepted
    ("YQ+", "outside the URL-safe alphabet"),
    ("Y Q", "outside the URL-safe alphabet"),
    ("YQ\n", "outside the URL-safe alphabet"),
    ("YQ.", "outside the URL-safe alphabet"),
    ("Y=Q", "outside the URL-safe alphabet"),  # padding is only allowed at the end
    ("YQ\x00", "outside the URL-safe alphabet"),
    ("ＹＱ", "outside the URL-safe alphabet"),  # full-width letters: not ASCII
    ("Y", "impossible length"),
    ("YWFhY", "impossible length"),
    ("Y===", "too much padding"),
])
def test_decode_refuses(value: Any, problem: str) -> None:
    with pytest.raises(EncodingError, match=re.escape(problem)):
        b64url_decode(value)


def test_encoding_error_is_a_value_error() -> None:
    """Callers that turn bad input into 400s catch ValueError; a decoding failure must be one."""
    assert issubclass(EncodingError, ValueError)


@pytest.mark.parametrize("value", [
    "",  # no bytes
    "YQ==", "YQ=",  # padded: a second spelling of "YQ"
    "YR",  # the same byte as "YQ" with non-zero trailing bits: a third spelling
    "YWF",  # likewise for "YWE"
    "+/+/", "Y", "Y Q",  # not base64url at all
    b"YQ", None, 1, ["YQ"],  # not a string
])
def test_is_b64url_admits_only_the_one_spelling(value: Any) -> None:
    assert b64url_decode("YR") == b"a"  # what makes "YR" dangerous: the lenient decoder reads it
    assert not is_b64url(value)


def test_is_b64url_sizes() -> None:
    thirty_two = b64url_encode(bytes(32))
    assert is_b64url(thirty_two) and is_b64url(thirty_two, 32) and is_b64url(thirty_two, max_size=32)
    assert not is_b64url(thirty_two, 31) and not is_b64url(thirty_two, 33)
    assert not is_b64url(thirty_two, max_size=31)
    assert not is_b64url(b64url_encode(bytes(33)), max_size=32)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 5))
def test_no_two_accepted_strings_name_the_same_bytes(data: bytes, bump: int) -> None:
    """Any other string the lenient decoder reads as ``data`` is refused by ``is_b64url``."""
    canonical = b64url_encode(data)
    variants = {canonical + "=" * (-len(canonical) % 4)}
    variants.add(canonical[:-1] + ALPHABET[(ALPHABET.index(canonical[-1]) + bump) % 64])  # other trailing bits
    for variant in variants - {canonical}:
        try:
            same = b64url_decode(variant) == data
        except EncodingError:
            continue
        if same:
            assert not is_b64url(variant), variant


# --------------------------------------------------------------------------- duplicate JSON members


@pytest.mark.parametrize(("text", "key"), [
    ('{"code": "a", "code": "b"}', "code"),
    ('{"a": {"b": 1, "b": 1}}', "b"),  # the same value twice is still two members
    ('[{"x": 1}, {"y": 1, "y": 2}]', "y"),
    ('{"a": 1, "\\u0061": 2}', "a"),  # an escaped spelling of the same key
    ('{"": 1, "": 2}', ""),
])
def test_unique_members_refuses_a_key_named_twice(text: str, key: str) -> None:
    assert json.loads(text)  # what a plain parser does: last one wins, silently
    with pytest.raises(DuplicateKey) as info:
        json.loads(text, object_pairs_hook=unique_members)
    assert info.value.key == key
    assert str(info.value) == f"duplicate key {key!r}"
    assert isinstance(info.value, ValueError)


def test_unique_members_keeps_distinct_keys_in_order() -> None:
    parsed = json.loads('{"b": 1, "a": {"B": 2, "b": 3}, "\\u00e9": 4, "e\\u0301": 5}',
                        object_pairs_hook=unique_members)
    # keys are compared as written: é and e + combining accent are different keys
    assert parsed == {"b": 1, "a": {"B": 2, "b": 3}, "\u00e9": 4, "e\u0301": 5}
    assert list(parsed) == ["b", "a", "\u00e9", "e\u0301"]


# --------------------------------------------------------------------------- sha256


def test_sha256_is_over_the_concatenation() -> None:
    assert sha256(b"ab", b"c") == sha256(b"a", b"bc") == hashlib.sha256(b"abc").digest()
    assert sha256() == hashlib.sha256(b"").digest()
    assert sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_has_one_form() -> None:
    value = {"b": [1, True, None, "x"], "a": {"d": -1, "c": ""}, "é": "ü"}
    assert canonical_json(value) == '{"a":{"c":"","d":-1},"b":[1,true,null,"x"],"é":"ü"}'.encode("utf-8")
    # the same value built in another order has the same bytes
    assert canonical_json({"é": "ü", "a": {"c": "", "d": -1}, "b": [1, True, None, "x"]}) == canonical_json(value)


def test_canonical_json_sorts_by_code_point_and_keeps_text_as_utf8() -> None:
    assert canonical_json({"b": 1, "B": 2, "á": 3, "a": 4}) == '{"B":2,"a":4,"b":1,"á":3}'.encode("utf-8")
    assert canonical_json("\u2028 \" \\ \n") == b'"\xe2\x80\xa8 \\" \\\\ \\n"'


def test_canonical_json_takes_any_size_of_integer() -> None:
    assert canonical_json([2**64, -(2**64)]) == b"[18446744073709551616,-18446744073709551616]"


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(st.characters(exclude_categories=["Cs"])),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_canonical_json_round_trips_and_is_stable(value: Any) -> None:
    once = canonical_json(value)
    assert json.loads(once) == value
    assert canonical_json(json.loads(once)) == once


@pytest.mark.parametrize(("value", "where"), [
    (1.0, "$: canonical JSON holds only strings"),
    (float("nan"), "$: canonical JSON holds only"),
    (float("inf"), "$: canonical JSON holds only"),
    ({"a": [1, 2.5]}, "$.a[1]: canonical JSON holds only"),
    ({"a": {"b": b"raw"}}, "$.a.b: canonical JSON holds only strings, integers, booleans, null, lists and objects; "
                           "got bytes"),
    ((1, 2), "got tuple"),  # a tuple would serialise like a list: refused so the caller's types stay honest
    ({1, 2}, "got set"),
    ({1: "int key"}, "$: object keys must be strings, got int"),
    ({"a": {None: 1}}, "$.a: object keys must be strings, got NoneType"),
    ({"a": {True: 1}}, "object keys must be strings, got bool"),
    ({"a": object()}, "got object"),
    ({"name": "Bob\ud800"}, "$.name: holds a lone surrogate \\ud800, which has no UTF-8 form"),
    ({"a": ["\udfff"]}, "$.a[0]: holds a lone surrogate \\udfff"),
    ({"\udc00": 1}, "$ key: holds a lone surrogate \\udc00"),
])
def test_canonical_json_refuses_what_has_no_single_form(value: Any, where: str) -> None:
    with pytest.raises(EncodingError, match=re.escape(where)):
        canonical_json(value)
