"""Byte and JSON encodings shared by every trust computation.

Everything that is hashed or signed goes through :func:`canonical_json`, so a
value has exactly one byte representation (DESIGN.md "Challenges").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any


class EncodingError(ValueError):
    """A value is not in the encoding it claims to be in."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as WebAuthn's JSON forms use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; refuse anything else.

    Standard-alphabet characters (``+``, ``/``) and stray characters are refused
    rather than silently dropped, so two different strings never decode to the
    same bytes.
    """
    if not isinstance(text, str):
        raise EncodingError(f"expected a base64url string, got {type(text).__name__}")
    stripped = text.rstrip("=")
    if len(text) - len(stripped) > 2:
        raise EncodingError("base64url value has too much padding")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if not set(stripped) <= alphabet:
        raise EncodingError("base64url value has characters outside the URL-safe alphabet")
    if len(stripped) % 4 == 1:
        raise EncodingError("base64url value has an impossible length")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EncodingError(f"invalid base64url: {exc}") from None


def is_b64url(value: Any, size: int | None = None, max_size: int | None = None) -> bool:
    """Whether ``value`` is base64url of at least one byte in the one spelling :func:`b64url_encode` writes.

    :func:`b64url_decode` also takes padding and non-zero trailing bits; where a
    string is hashed, signed or compared, only the unpadded, canonical spelling
    may pass, so two strings never name the same bytes. ``size`` is the exact
    decoded length, ``max_size`` the largest.
    """
    if not isinstance(value, str):
        return False
    try:
        raw = b64url_decode(value)
    except EncodingError:
        return False
    if b64url_encode(raw) != value or not raw:
        return False
    return (size is None or len(raw) == size) and (max_size is None or len(raw) <= max_size)


class DuplicateKey(ValueError):
    """A JSON object names the member ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for ``json.loads`` that raises :class:`DuplicateKey` on a repeated member.

    Two parsers may keep different copies of a repeated member (Python keeps the
    last), so a signature or a check could cover a value the other side never saw.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def sha256(*parts: bytes) -> bytes:
    """SHA-256 over the concatenation of ``parts`` (the ``H(a || b)`` of DESIGN.md)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _check_text(text: str, path: str) -> None:
    # A lone surrogate has no UTF-8 form: the canonical bytes (and so the hash) would not exist.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"{path}: holds a lone surrogate \\u{ord(text[exc.start]):04x}, "
                            "which has no UTF-8 form") from None


def _check_canonical(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_canonical(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{path}: object keys must be strings, got {type(key).__name__}")
            _check_text(key, f"{path} key")
            _check_canonical(item, f"{path}.{key}")
        return
    raise EncodingError(
        f"{path}: canonical JSON holds only strings, integers, booleans, null, lists and objects; "
        f"got {type(value).__name__}"
    )


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no insignificant white space.

    Floats and other types are refused: their text form is not unique across
    implementations, and a verifier in another language must reproduce the bytes.
    """
    _check_canonical(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
