"""Typed, frozen configuration: one YAML file, parsed and checked once at start-up.

Every problem is a :class:`ConfigError` whose ``str()`` is one line naming the file, the
line, the dotted key, what is wrong and what would be valid::

    idwall.yaml:12: routes[0].upstream: 'ftp://x' is not an http:// or https:// URL; write http://host:port or https://host:port

Durations are written ``90s``, ``15m``, ``12h``, ``30d`` (or a bare integer of seconds) and
become ``int`` seconds. Paths are resolved against the directory of the config file and
become absolute :class:`~pathlib.Path` objects. Certificate and key files must exist and
be readable when the file is loaded; their content is checked by ``idwall.pki``.

Choices worth knowing:

- ``public_url`` and every ``webauthn.origins`` entry must be ``https://``. The gateway only
  serves TLS, so a browser never reports an ``http://`` origin for its pages, not even
  ``http://localhost``; accepting one would only widen what a phished assertion may match.
  Origins are normalised (lower case, default port 443 dropped, no trailing slash) because
  WebAuthn compares them byte for byte.
- ``listen.port: 0`` is accepted and means "any free port" (tests use it).
- ``assertion.header`` must start with ``X-IDWall-``: the proxy strips that whole namespace
  from inbound requests, so a header outside it could be forged by a client.
- Route paths under ``/idwall`` and ``/.well-known/idwall`` are refused in any letter case:
  the gateway owns them on every host.
- ``allow`` present means "only these": a route's ``allow_users``/``allow_groups`` are
  ``None`` when ``allow`` is absent (any signed-in user) and tuples (possibly one of them
  empty) when it is present. An ``allow`` that lists nobody is an error.

Where each part lives (``idwall.units`` owns durations and sizes; they are re-exported here):

- :mod:`.model`: the frozen records and :class:`ConfigError`;
- :mod:`.yaml_lines`: the YAML reader that remembers the line of every key;
- :mod:`.checks`: :class:`~.checks.Ctx`, typed reading of one key with errors that name its line;
- :mod:`.urls`: host names, URLs and origins;
- :mod:`.sections`: the rules of each section, and the whole :class:`Config` built from them;
- :mod:`.load`: :func:`load_config` and :func:`config_from_mapping`;
- :mod:`.template`: :func:`default_config_text`, the annotated file ``idwall init`` writes.
"""

from __future__ import annotations

from ..units import parse_duration, parse_size
from .load import config_from_mapping, load_config
from .model import (
    AdminConfig,
    AssertionConfig,
    Config,
    ConfigError,
    DeviceCAConfig,
    DevicesConfig,
    LedgerConfig,
    Limits,
    Listen,
    Route,
    SessionConfig,
    TLSConfig,
    UpstreamTLS,
    WebAuthnConfig,
)
from .template import default_config_text

__all__ = [
    "AdminConfig",
    "AssertionConfig",
    "Config",
    "ConfigError",
    "DeviceCAConfig",
    "DevicesConfig",
    "LedgerConfig",
    "Limits",
    "Listen",
    "Route",
    "SessionConfig",
    "TLSConfig",
    "UpstreamTLS",
    "WebAuthnConfig",
    "config_from_mapping",
    "default_config_text",
    "load_config",
    "parse_duration",
    "parse_size",
]
