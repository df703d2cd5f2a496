"""Reading one value at a time: :class:`Ctx` checks a key's type, range or file and names its line when it is wrong.

Every failure is a :class:`ConfigError` whose message says what is wrong and what would be valid. A
missing key has no line of its own, so its error names the line of the mapping that should hold it;
an unknown key gets the closest valid key suggested; :func:`kind` says what arrived instead
(``an integer (7)``). Files are resolved against the config directory and must be readable.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..units import DURATION_HINT, SIZE_HINT, parse_duration, parse_size
from .model import ConfigError
from .yaml_lines import KeyPath, dotted_key

__all__ = ["Ctx", "kind"]

_MISSING: Any = object()


def kind(value: Any) -> str:
    """What arrived, as an error message says it: ``an integer (7)``, ``a string ('x')``, ``a list``."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


class Ctx:
    """Error reporting for one file: knows the line of every key seen in the YAML."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int], base_dir: Path) -> None:
        self.name = file
        self.lines = lines
        self.base_dir = base_dir

    def line(self, path: KeyPath) -> int | None:
        # A missing key has no line of its own: report the mapping that should hold it.
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: KeyPath, problem: str, valid: str) -> ConfigError:
        return ConfigError(self.name, self.line(path), dotted_key(path), f"{problem}; {valid}")

    def mapping(self, value: Any, path: KeyPath, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
        """Check that ``value`` is a mapping with only ``allowed`` keys and every ``required`` one."""
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {kind(value)}", "write 'key: value' pairs here: " + ", ".join(allowed))
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(path + (str(key),), "unknown key", f"{hint}valid keys here: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                raise self.error(path + (key,), "missing required key", f"add '{key}:' to {dotted_key(path) or 'the top level'}")
        return value

    def string(self, m: Mapping[str, Any], path: KeyPath, key: str, default: Any = _MISSING, *, hint: str = "write a non-empty string") -> Any:
        if key not in m:
            if default is _MISSING:
                raise self.error(path + (key,), "missing required key", f"add '{key}:' to {dotted_key(path) or 'the top level'}")
            return default
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(path + (key,), f"expected a non-empty string, got {kind(value)}", hint)
        return value

    def integer(self, m: Mapping[str, Any], path: KeyPath, key: str, default: int, *, low: int, high: int, unit: str = "") -> int:
        value = m.get(key, default)
        valid = f"write a whole number from {low} to {high}{unit}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path + (key,), f"expected an integer, got {kind(value)}", valid)
        if not low <= value <= high:
            raise self.error(path + (key,), f"{value} is out of range", valid)
        return value

    def boolean(self, m: Mapping[str, Any], path: KeyPath, key: str, default: bool) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            raise self.error(path + (key,), f"expected true or false, got {kind(value)}", "write true or false")
        return value

    def duration(self, m: Mapping[str, Any], path: KeyPath, key: str, default: Any, *, minimum: int = 1) -> Any:
        if key not in m:
            return default
        value = m[key]
        try:
            seconds = parse_duration(value)
        except ValueError:
            shown = repr(value) if isinstance(value, str) else kind(value)
            raise self.error(path + (key,), f"{shown} is not a duration", DURATION_HINT) from None
        if seconds < minimum:
            raise self.error(path + (key,), f"{value!r} is too short", f"use at least {minimum}s")
        return seconds

    def size(self, m: Mapping[str, Any], path: KeyPath, key: str, default: Any, *, low: int, high: int) -> Any:
        if key not in m:
            return default
        value = m[key]
        try:
            size = parse_size(value)
        except ValueError:
            shown = repr(value) if isinstance(value, str) else kind(value)
            raise self.error(path + (key,), f"{shown} is not a size", SIZE_HINT) from None
        if not low <= size <= high:
            raise self.error(path + (key,), f"{value!r} is out of range", f"use from {low} to {high} bytes")
        return size

    def choice(self, m: Mapping[str, Any], path: KeyPath, key: str, default: str, choices: Sequence[str]) -> str:
        value = m.get(key, default)
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else kind(value)
            raise self.error(path + (key,), f"{shown} is not allowed", "use one of: " + " | ".join(choices))
        return value

    def string_list(self, m: Mapping[str, Any], path: KeyPath, key: str) -> tuple[str, ...]:
        value = m.get(key, [])
        if not isinstance(value, list):
            raise self.error(path + (key,), f"expected a list, got {kind(value)}", "write a list of names, e.g. [alice, bob]")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(path + (key, index), f"expected a non-empty string, got {kind(item)}", "write a list of names, e.g. [alice, bob]")
        return tuple(dict.fromkeys(value))

    def optional_file(self, m: Mapping[str, Any], path: KeyPath, key: str, what: str) -> Path | None:
        return self.file(m, path, key, what) if key in m else None

    def file(self, m: Mapping[str, Any], path: KeyPath, key: str, what: str) -> Path:
        """Resolve a path against the config directory and check the file can be read."""
        text = self.string(m, path, key, hint=f"write the path of {what}")
        where = self.resolve(text)
        valid = f"point it at {what} (relative paths are relative to {self.base_dir})"
        try:
            with open(where, "rb"):
                pass
        except FileNotFoundError:
            raise self.error(path + (key,), f"file not found: {where}", valid) from None
        except IsADirectoryError:
            raise self.error(path + (key,), f"{where} is a directory, not a file", valid) from None
        except PermissionError:
            raise self.error(path + (key,), f"{where} is not readable by this user", valid + " and make it readable by the gateway's user") from None
        except OSError as exc:
            raise self.error(path + (key,), f"cannot read {where}: {exc.strerror}", valid) from None
        return where

    def resolve(self, text: str) -> Path:
        return Path(os.path.normpath(self.base_dir / Path(text).expanduser()))
