"""Strict JSON request bodies: bytes in, a plain ``dict`` out, or a precise 4xx.

Pure: no I/O and no aiohttp; :func:`idwall.web.problems.read_json_object`
reads the bytes and calls :func:`parse_json_object`. Every API body is
attacker-controlled, and ``json.loads`` alone raises something other than
``JSONDecodeError`` on some of it, or lets through what fails later, each a
500: ``RecursionError`` on deep nesting, ``ValueError`` from ``int()`` past
4,300 digits, lone surrogates (``"\\ud800"``) that only fail at ``str.encode``;
and it accepts ``NaN``, ``Infinity`` and duplicate keys, which two parsers
read differently.

What is refused, checked in this order, and the default limits (DESIGN.md
"Limits": API bodies are JSON objects within depth and size limits):

==========================  ===================  ===========================================
check                       limit                why this value
==========================  ===================  ===========================================
size                        ``max_bytes``        ``limits.api_body`` (64 KiB by default): 413
encoding                    UTF-8                RFC 8259 §8.1; no BOM
nesting                     32 levels            the deepest body is a credential with an
                                                 extension output, 5 levels; measured on the
                                                 text *before* ``json.loads``, so the parser
                                                 never recurses deeper than that
syntax                      RFC 8259             ``NaN``/``Infinity`` and duplicate keys too
integers                    20 digits            2**64 has 20; every integer we read fits
other numbers               finite               ``1e999`` is infinity in Python
top level                   an object            DESIGN.md "HTTP surface"
values in total             1,000                array items plus object members; the largest
                                                 body (an invite with 64 groups) has ~80
object keys                 128 characters       API keys are short words; error messages
                                                 that name unknown keys stay short
strings                     32,768 characters    twice the largest legitimate value (a CSR PEM
                                                 is at most 16 KiB)
Unicode                     no lone surrogates   they cannot be encoded as UTF-8 (SQLite,
                                                 hashing, logs)
==========================  ===================  ===========================================

Failures raise :class:`~idwall.errors.BadRequest` (400) or, for size,
:class:`~idwall.errors.PayloadTooLarge` (413), saying what was expected and
what arrived, and where (``$.credential.response.clientDataJSON``).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from .encoding import DuplicateKey, unique_members
from .errors import BadRequest, PayloadTooLarge

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_ITEMS",
    "MAX_KEY",
    "MAX_STRING",
    "field",
    "json_type",
    "parse_json_object",
]

MAX_DEPTH = 32
MAX_INT_DIGITS = 20
MAX_ITEMS = 1000
MAX_KEY = 128
MAX_STRING = 32 * 1024

# A JSON string, or an unterminated one running to the end of the text (so a
# substitution never rescans: possessive quantifiers, one pass, linear time).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
               list: "an array"}


def json_type(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words: ``"an array"``, ``"a string"``, ``"null"``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in _KIND_NAMES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _nesting(text: str) -> int:
    """How deep the brackets outside strings nest: the recursion ``json.loads`` would need."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class _Refused(Exception):
    """Raised by the ``json.loads`` hooks; the message continues "<the document> has ..."."""


def _integer(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits, expected at most {MAX_INT_DIGITS}")
    return int(literal)


def _number(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused(f"the number {literal[:40]}, expected a finite number")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name}, which is not JSON; expected a finite number")


def _path(parts: tuple[str | int, ...]) -> str:
    """``$.credential.response``, ``$.groups[3]``; other keys as escaped JSON, so the message stays printable."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if _PLAIN_KEY.fullmatch(p)
                         else f"[{json.dumps(p)}]" for p in parts)


def _check_string(text: str, where: tuple[str | int, ...], *, what: str, limit: int) -> None:
    if len(text) > limit:
        raise BadRequest(f"{what} at {_path(where)[:200]} is {len(text)} characters, expected at most {limit}")
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise BadRequest(f"{what} at {_path(where)[:200]} holds a lone surrogate \\u{ord(surrogate.group()):04x}, "
                         "expected Unicode text (it cannot be encoded as UTF-8)")


def _check_values(top: dict[str, Any], *, max_items: int, max_key: int, max_string: int, what: str) -> None:
    """Count every array item and object member and check every key and string, without recursion."""
    items = 0
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(top, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            _check_string(value, where, what="the string", limit=max_string)
        elif isinstance(value, (dict, list)):
            items += len(value)
            if items > max_items:
                raise BadRequest(f"{what} holds more than {max_items} values (array items and object members "
                                 f"in total), expected at most {max_items}")
            if isinstance(value, dict):
                for key, child in value.items():
                    _check_string(key, where + (key,), what="the key", limit=max_key)
                    stack.append((child, where + (key,)))
            else:
                stack.extend((child, where + (index,)) for index, child in enumerate(value))


def parse_json_object(body: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
                      max_key: int = MAX_KEY, max_string: int = MAX_STRING, what: str = "the body") -> dict[str, Any]:
    """``body`` as a JSON object within the limits of the module docstring.

    Raises :class:`PayloadTooLarge` when ``body`` is over ``max_bytes`` and
    :class:`BadRequest` for anything else that is not such an object; ``what``
    names the document in their messages.

    >>> parse_json_object(b'{"device_name": "laptop"}', max_bytes=1024)
    {'device_name': 'laptop'}
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(body)} bytes, expected at most {max_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8: {exc.reason} 0x{body[exc.start]:02x} at offset {exc.start}") from None
    if not text.strip():
        raise BadRequest(f"{what} is empty, expected a JSON object")
    depth = _nesting(text)
    if depth > max_depth:
        raise BadRequest(f"{what} nests {depth} levels deep, expected at most {max_depth}")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_number, parse_constant=_constant,
                           object_pairs_hook=unique_members)
    except DuplicateKey as exc:
        shown = json.dumps(exc.key)[:80]
        raise BadRequest(f"{what} has the key {shown} twice in one object, expected it once") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except _Refused as exc:
        raise BadRequest(f"{what} has {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {json_type(value)}")
    _check_values(value, max_items=max_items, max_key=max_key, max_string=max_string, what=what)
    return value


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True,
          default: Any = None, where: str = "") -> Any:
    """``body[name]`` if it is of ``kind``; a :class:`BadRequest` naming the field and what arrived otherwise.

    ``null`` counts as absent. A boolean is not accepted where an integer is
    expected (Python's ``bool`` is an ``int``). ``where`` is the path of
    ``body`` in a larger document, for the message (``credential.response``).

    >>> field({"device_name": ["laptop"]}, "device_name", str)
    Traceback (most recent call last):
    idwall.errors.BadRequest: field 'device_name' must be a string, got an array
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    expected = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
    label = f"{where}.{name}" if where else f"field {name!r}"
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{label} is required, expected {expected}")
        return default
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"{label} must be {expected}, got {json_type(value)}")
    return value
