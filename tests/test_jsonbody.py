"""idwall.jsonbody: every hostile body is a precise 400 or 413, and nothing else ever escapes.

The hostile bodies are in ``tests/helpers/hostile_json.py``; test_web_app posts each of them to every
JSON endpoint of a running gateway.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idwall.errors import BadRequest, PayloadTooLarge
from idwall.jsonbody import MAX_DEPTH, MAX_ITEMS, MAX_STRING, field, json_type, parse_json_object
from tests.helpers.hostile_json import HOSTILE_BODIES, LIMIT, json_values, nested


@pytest.mark.parametrize(("body", "error", "message"), [case[1:] for case in HOSTILE_BODIES],
                         ids=[case[0] for case in HOSTILE_BODIES])
def test_hostile_body_is_refused_precisely(body: bytes, error: type[BadRequest], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json_object(body, max_bytes=LIMIT)
    assert type(info.value) is error
    assert message in info.value.detail
    assert info.value.status == (413 if error is PayloadTooLarge else 400)


ACCEPTED: list[tuple[str, bytes, dict[str, Any]]] = [
    ("empty object", b"{}", {}),
    ("white space around", b' \n{ "a" : 1 }\r\n', {"a": 1}),
    ("a surrogate pair is one character", b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001F600"}),
    ("raw UTF-8", '{"name": "Zoë 😀"}'.encode(), {"name": "Zoë 😀"}),
    ("NUL escaped", b'{"a": "\\u0000"}', {"a": "\x00"}),
    ("brackets inside strings are not nesting", b'{"a": "' + b"[{" * 500 + b'"}', {"a": "[{" * 500}),
    ("escaped quote then brackets", b'{"a": "\\"[[[[\\\\", "b": "]]"}', {"a": '"[[[[\\', "b": "]]"}),
    ("20-digit integers", b'{"a": 18446744073709551616, "b": -99999999999999999999}',
     {"a": 2**64, "b": -99999999999999999999}),
    ("finite numbers", b'{"a": 1.5e300, "b": -0.0, "c": 1E-400}', {"a": 1.5e300, "b": -0.0, "c": 0.0}),
    ("exactly at the depth limit", nested(MAX_DEPTH), json.loads(nested(MAX_DEPTH))),
    ("exactly at the item limit", b'{"a": [' + b",".join([b"0"] * (MAX_ITEMS - 1)) + b"]}",
     {"a": [0] * (MAX_ITEMS - 1)}),
    ("exactly the longest string", b'{"a": "' + b"x" * MAX_STRING + b'"}', {"a": "x" * MAX_STRING}),
    ("every JSON type", b'{"s": "x", "i": 1, "f": 0.5, "t": true, "n": null, "l": [], "o": {}}',
     {"s": "x", "i": 1, "f": 0.5, "t": True, "n": None, "l": [], "o": {}}),
]


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_valid_body_is_parsed(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_json_object(body, max_bytes=LIMIT) == expected


def test_limits_are_parameters() -> None:
    with pytest.raises(PayloadTooLarge, match="is 8 bytes, expected at most 7"):
        parse_json_object(b'{"a":12}', max_bytes=7)
    with pytest.raises(BadRequest, match="nests 2 levels deep, expected at most 1"):
        parse_json_object(b'{"a":{}}', max_bytes=LIMIT, max_depth=1)
    with pytest.raises(BadRequest, match="more than 2 values"):
        parse_json_object(b'{"a":[1,2]}', max_bytes=LIMIT, max_items=2)
    with pytest.raises(BadRequest, match="the string at \\$.a is 3 characters, expected at most 2"):
        parse_json_object(b'{"a":"abc"}', max_bytes=LIMIT, max_string=2)
    with pytest.raises(BadRequest, match="the key at \\$.abc is 3 characters, expected at most 2"):
        parse_json_object(b'{"abc":1}', max_bytes=LIMIT, max_key=2)


# -- typed fields ----------------------------------------------------------------------------------

BODY = {"name": "laptop", "count": 3, "flag": True, "items": [1], "nested": {}, "ratio": 0.5, "none": None}


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("items", str, "field 'items' must be a string, got an array"),
    ("nested", str, "field 'nested' must be a string, got an object"),
    ("count", str, "field 'count' must be a string, got an integer"),
    ("ratio", str, "field 'ratio' must be a string, got a number"),
    ("flag", str, "field 'flag' must be a string, got a boolean"),
    ("flag", int, "field 'flag' must be an integer, got a boolean"),
    ("name", dict, "field 'name' must be an object, got a string"),
    ("name", (int, list), "field 'name' must be an integer or an array, got a string"),
    ("count", bool, "field 'count' must be true or false, got an integer"),
    ("missing", str, "field 'missing' is required, expected a string"),
    ("none", dict, "field 'none' is required, expected an object"),
])
def test_field_names_the_field_and_what_arrived(name: str, kind: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        field(BODY, name, kind)
    assert info.value.detail == message


def test_field_returns_values_of_the_right_kind() -> None:
    assert field(BODY, "name", str) == "laptop"
    assert field(BODY, "count", int) == 3
    assert field(BODY, "flag", bool) is True
    assert field(BODY, "flag", (int, bool)) is True
    assert field(BODY, "none", str, required=False, default="x") == "x"
    assert field(BODY, "missing", str, required=False) is None


def test_json_type_names() -> None:
    assert [json_type(v) for v in ({}, [], "", 0, 0.0, False, None)] == [
        "an object", "an array", "a string", "an integer", "a number", "a boolean", "null"]


# -- properties ------------------------------------------------------------------------------------


def outcome(body: bytes, **limits: int) -> dict[str, Any] | BadRequest:
    """The parsed object or the BadRequest/PayloadTooLarge; any other exception fails the test."""
    try:
        value = parse_json_object(body, max_bytes=limits.pop("max_bytes", LIMIT), **limits)
    except BadRequest as exc:
        assert 400 <= exc.status < 500 and exc.detail
        return exc
    assert isinstance(value, dict)
    # whatever is accepted can be stored, hashed and logged: it encodes as UTF-8 and round-trips
    assert json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8")) == value
    return value


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=400))
def test_arbitrary_bytes_are_an_object_or_a_4xx(body: bytes) -> None:
    outcome(body)


_tokens = st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ", b"0", b"-", b"1e999", b"9" * 25,
                           b"NaN", b"true", b"null", b'"a"', b'"\\ud800"', b'"\\udc00\\ud800"', b"\xff",
                           b"\xed\xa0\x80"])


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_tokens, max_size=60))
def test_json_like_token_soup_is_an_object_or_a_4xx(parts: list[bytes]) -> None:
    outcome(b"".join(parts))


@settings(max_examples=200, deadline=None)
@given(value=json_values, depth=st.integers(1, 6), items=st.integers(1, 30))
def test_arbitrary_json_values_are_an_object_or_a_4xx(value: Any, depth: int, items: int) -> None:
    """Python values (lone surrogates, NaN, big integers included) written as JSON, under small limits."""
    text = json.dumps(value)  # ensure_ascii: lone surrogates become \\udXXX escapes; NaN is written bare
    result = outcome(text.encode("utf-8"), max_depth=depth, max_items=items, max_string=50)
    if isinstance(result, dict):
        assert result == json.loads(text)


_plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20) + 1, 10**20 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | _plain_text,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_plain_text, inner, max_size=6),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


@settings(max_examples=100, deadline=None)
@given(value=st.dictionaries(_plain_text, plain_values, max_size=6))
def test_every_well_formed_object_within_the_limits_is_accepted(value: dict[str, Any]) -> None:
    text = json.dumps(value, ensure_ascii=False)
    if _depth(value) <= MAX_DEPTH:
        assert parse_json_object(text.encode("utf-8"), max_bytes=len(text) * 4) == value
