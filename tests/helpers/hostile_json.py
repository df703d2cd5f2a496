"""Hostile JSON bodies: the table every JSON endpoint is tested with, and a strategy for arbitrary JSON values.

``test_jsonbody`` checks the parser refuses each body precisely; ``test_web_app`` posts each of them to every
JSON endpoint of a running gateway.
"""

from __future__ import annotations

from hypothesis import strategies as st

from idwall.errors import BadRequest, PayloadTooLarge
from idwall.jsonbody import MAX_DEPTH, MAX_ITEMS, MAX_KEY, MAX_STRING

LIMIT = 64 * 1024


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


#: (name, body, error class, fragment of the detail); RFC 8259 sections where the rule comes from it
HOSTILE_BODIES: list[tuple[str, bytes, type[BadRequest], str]] = [
    ("over the size limit", b'{"a": "' + b"x" * LIMIT + b'"}', PayloadTooLarge,
     f"the body is {LIMIT + 9} bytes, expected at most {LIMIT}"),
    ("empty", b"", BadRequest, "the body is empty, expected a JSON object"),
    ("white space only", b" \r\n\t", BadRequest, "the body is empty"),
    ("invalid start byte (§8.1)", b'{"a": "\xff"}', BadRequest, "not UTF-8: invalid start byte 0xff at offset 7"),
    ("truncated UTF-8 sequence", b'{"a": "\xe2\x82"}', BadRequest, "not UTF-8: invalid continuation byte"),
    ("UTF-8 encoded surrogate", b'{"a": "\xed\xa0\x80"}', BadRequest, "not UTF-8"),
    ("UTF-16", '{"a": 1}'.encode("utf-16"), BadRequest, "not UTF-8"),
    ("byte order mark (§8.1)", b'\xef\xbb\xbf{"a": 1}', BadRequest, "not valid JSON: Unexpected UTF-8 BOM"),
    ("syntax error", b'{"a": ', BadRequest, "not valid JSON: Expecting value (line 1, column 7)"),
    ("trailing comma", b'{"a": 1,}', BadRequest, "not valid JSON"),
    ("single quotes", b"{'a': 1}", BadRequest, "not valid JSON"),
    ("two documents", b'{"a": 1}{"b": 2}', BadRequest, "not valid JSON: Extra data"),
    ("unterminated string", b'{"a": "abc', BadRequest, "not valid JSON: Unterminated string"),
    ("raw control character in a string (§7)", b'{"a": "x\x01y"}', BadRequest, "not valid JSON: Invalid control"),
    ("NaN (§6)", b'{"a": NaN}', BadRequest, "the body has NaN, which is not JSON"),
    ("Infinity (§6)", b'{"a": Infinity}', BadRequest, "the body has Infinity"),
    ("-Infinity (§6)", b'{"a": -Infinity}', BadRequest, "the body has -Infinity"),
    ("number overflowing to infinity", b'{"a": 1e999}', BadRequest, "the number 1e999, expected a finite number"),
    ("integer of 4,301 digits (int() refuses it)", b'{"a": ' + b"9" * 4301 + b"}", BadRequest,
     "an integer of 4301 digits, expected at most 20"),
    ("integer of 21 digits", b'{"a": -' + b"1" * 21 + b"}", BadRequest, "an integer of 21 digits"),
    ("duplicate key (§4)", b'{"code": "a", "code": "b"}', BadRequest, 'the key "code" twice in one object'),
    ("duplicate key, nested", b'{"a": {"b": 1, "b": 1}}', BadRequest, 'the key "b" twice'),
    ("array at the top", b"[]", BadRequest, "must be a JSON object, got an array"),
    ("string at the top", b'"{}"', BadRequest, "must be a JSON object, got a string"),
    ("number at the top", b"42", BadRequest, "must be a JSON object, got an integer"),
    ("null at the top", b"null", BadRequest, "must be a JSON object, got null"),
    ("true at the top", b"true", BadRequest, "must be a JSON object, got a boolean"),
    ("nested 5,000 deep in arrays", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", BadRequest,
     f"nests 5001 levels deep, expected at most {MAX_DEPTH}"),
    ("nested 5,000 deep in objects", nested(5000), BadRequest, "nests 5000 levels deep"),
    ("nested 60,000 deep, never closed", b"[" * 60000, BadRequest, "nests 60000 levels deep"),
    ("one level too deep", nested(MAX_DEPTH + 1), BadRequest, f"nests {MAX_DEPTH + 1} levels deep"),
    ("lone high surrogate", b'{"code": "\\ud800"}', BadRequest,
     "the string at $.code holds a lone surrogate \\ud800, expected Unicode text"),
    ("lone low surrogate, nested", b'{"a": [{"b": "x\\udfffy"}]}', BadRequest, "at $.a[0].b holds a lone surrogate"),
    ("surrogates in the wrong order", b'{"a": "\\ude00\\ud83d"}', BadRequest, "lone surrogate \\ude00"),
    ("lone surrogate in a key", b'{"\\udc00": 1}', BadRequest, 'the key at $["\\udc00"] holds a lone surrogate'),
    ("too many values", b'{"a": [' + b",".join([b"0"] * MAX_ITEMS) + b"]}", BadRequest,
     f"more than {MAX_ITEMS} values (array items and object members in total)"),
    ("too many members", b"{" + b",".join(b'"k%d": 0' % i for i in range(MAX_ITEMS + 1)) + b"}", BadRequest,
     f"more than {MAX_ITEMS} values"),
    ("string too long", b'{"a": "' + b"x" * (MAX_STRING + 1) + b'"}', BadRequest,
     f"the string at $.a is {MAX_STRING + 1} characters, expected at most {MAX_STRING}"),
    ("key too long", b'{"' + b"k" * (MAX_KEY + 1) + b'": 1}', BadRequest,
     f"is {MAX_KEY + 1} characters, expected at most {MAX_KEY}"),
]


_any_text = st.text(st.characters(exclude_categories=[]) | st.sampled_from(["\ud800", "\udfff", "[", "{"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_any_text, inner, max_size=6),
    max_leaves=25,
)
