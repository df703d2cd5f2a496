"""A YAML reader that remembers lines: one document in, plain data and the 1-based line of every key path out.

A key path is a tuple such as ``("routes", 0, "upstream")``; :func:`dotted_key` writes it the way
errors name it, ``routes[0].upstream``. What comes out is plain: lists, mappings whose keys are plain
names, and the scalars of PyYAML's safe loader. Syntax errors, explicit tags on lists and mappings,
merge keys, keys that are not plain names, duplicate keys, recursive aliases and documents that
expand to more than 100,000 values are each a :class:`ConfigError` at their line.
"""

from __future__ import annotations

from typing import Any

import yaml

from .model import ConfigError

__all__ = ["KeyPath", "dotted_key", "read_yaml"]

KeyPath = tuple[str | int, ...]
_MAX_NODES = 100_000  # aliases can expand a small file exponentially ("billion laughs")
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def dotted_key(path: KeyPath) -> str:
    """``("routes", 0, "upstream")`` as errors name it: ``routes[0].upstream``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def read_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse one YAML document into plain data plus the 1-based line of every key and item."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            what = ", ".join(p for p in (exc.context, exc.problem) if p)
            raise ConfigError(
                file, line, "", f"invalid YAML: {what}; fix the syntax near this line (indentation, quoting, ':' after keys)"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(file, None, "", f"invalid YAML: {exc}; the file must be one YAML document") from None
        if root is None:
            raise ConfigError(file, None, "", "the file is empty; expected a mapping with public_url, tls, device_ca, assertion, ledger, store")
        lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
        budget = [_MAX_NODES]

        def convert(node: yaml.Node, path: KeyPath, active: frozenset[int]) -> Any:
            budget[0] -= 1
            line = node.start_mark.line + 1
            if budget[0] < 0:
                raise ConfigError(file, line, dotted_key(path), f"the document expands to more than {_MAX_NODES} values; do not nest aliases")
            if id(node) in active:
                raise ConfigError(file, line, dotted_key(path), "an alias refers to itself; remove the recursive alias")
            inner = active | {id(node)}
            if isinstance(node, yaml.CollectionNode) and node.tag not in (_MAP_TAG, _SEQ_TAG):
                # The walker builds lists and dicts itself, so an explicit tag would be silently dropped.
                raise ConfigError(file, line, dotted_key(path), f"unsupported tag {node.tag!r}; remove the tag and write a plain list or mapping")
            if isinstance(node, yaml.MappingNode):
                out: dict[str, Any] = {}
                for key_node, value_node in node.value:
                    key_line = key_node.start_mark.line + 1
                    if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                        shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a " + key_node.id
                        raise ConfigError(
                            file, key_line, dotted_key(path),
                            f"key {shown} is not a plain name (merge keys '<<', numbers and nested keys are not supported); "
                            "write each key out as a name",
                        )
                    key = key_node.value
                    child = path + (key,)
                    if key in out:
                        raise ConfigError(
                            file, key_line, dotted_key(child),
                            f"duplicate key (first on line {lines[child]}); each key may appear once in a mapping",
                        )
                    lines[child] = key_line
                    out[key] = convert(value_node, child, inner)
                return out
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    lines[path + (index,)] = item.start_mark.line + 1
                    items.append(convert(item, path + (index,), inner))
                return items
            try:
                return loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                raise ConfigError(file, line, dotted_key(path), f"cannot read value: {problem}; use a plain string, number, boolean, list or mapping") from None

        return convert(root, (), frozenset()), lines
    finally:
        loader.dispose()
