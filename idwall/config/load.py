"""The entry points: :func:`load_config` reads a YAML file, :func:`config_from_mapping` takes data built in code.

Both validate through :func:`~idwall.config.sections.build_config` and raise :class:`ConfigError` only;
a file's errors carry line numbers, a mapping's do not.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checks import Ctx
from .model import Config, ConfigError
from .sections import build_config
from .yaml_lines import read_yaml

__all__ = ["config_from_mapping", "load_config"]


def config_from_mapping(data: dict, *, source: Path, base_dir: Path) -> Config:
    """Validate already-parsed data (no line numbers); relative paths resolve against ``base_dir``."""
    ctx = Ctx(str(source), {}, Path(os.path.abspath(base_dir)))
    return build_config(data, ctx, Path(os.path.abspath(source)))


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a YAML config file; raises :class:`ConfigError` only."""
    shown = str(path)
    source = Path(os.path.abspath(Path(path).expanduser()))
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, None, "", f"cannot read the config file: {exc.strerror or exc}; pass --config with a readable YAML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(shown, line, "", "the file is not UTF-8; save it as UTF-8 text") from None
    data, lines = read_yaml(text, shown)
    return build_config(data, Ctx(shown, lines, source.parent), source)
