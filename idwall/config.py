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
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import yaml

from .units import DAY, DURATION_HINT, HOUR, MINUTE, SIZE_HINT, parse_duration, parse_size

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

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line: ``file:line: key: problem; what is valid``.

    ``line`` is 1-based and ``None`` when unknown (a mapping built in code); ``key`` is the
    dotted path (``routes[0].upstream``) or ``""`` for problems with the whole file.
    """

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        # One line, always: the CLI prints it as is and log shippers split on newlines.
        self.message = _CONTROL_RE.sub(" ", message).strip()
        where = file if line is None else f"{file}:{line}"
        parts = [where, key, self.message] if key else [where, self.message]
        super().__init__(_CONTROL_RE.sub(" ", ": ".join(parts)))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Listen:
    """Where the gateway accepts TLS connections; port 0 lets the OS choose."""

    host: str = "127.0.0.1"
    port: int = 8443


@dataclass(frozen=True)
class TLSConfig:
    """The gateway's own server certificate and key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DeviceCAConfig:
    """The CA that issues device client certificates, and their lifetime."""

    cert: Path
    key: Path
    cert_ttl: int = 30 * DAY


@dataclass(frozen=True)
class WebAuthnConfig:
    """Relying party settings; every origin's host is ``rp_id`` or a subdomain of it."""

    rp_id: str
    rp_name: str = "IDWall"
    origins: tuple[str, ...] = ()
    user_verification: str = "required"
    timeout: int = 5 * MINUTE


@dataclass(frozen=True)
class SessionConfig:
    """Session lifetime rules."""

    max_age: int = 12 * HOUR
    idle_timeout: int = 1 * HOUR


@dataclass(frozen=True, kw_only=True)
class AssertionConfig:
    """The signed identity header sent upstream (keyword-only: ``key`` has no default)."""

    header: str = "X-IDWall-Assertion"
    key: Path
    ttl: int = 60
    overlap: int = 7 * DAY


@dataclass(frozen=True)
class LedgerConfig:
    """The key that signs audit ledger entries."""

    key: Path


@dataclass(frozen=True)
class DevicesConfig:
    """Who must approve a newly enrolled device: ``none``, ``manager`` or ``admin``."""

    approval: str = "none"


@dataclass(frozen=True)
class Limits:
    """Size and time limits; sizes in bytes, times in seconds.

    The defaults are nginx's where nginx has one (``keepalive_timeout`` 75 s, ``client_body_timeout`` 60 s,
    ``client_max_body_size`` 1m, ``large_client_header_buffers 4 8k``); ``head_timeout`` is half nginx's
    ``client_header_timeout``, because a connection that never completes a request is the cheapest way
    to hold a socket, and ``max_headers`` is h11's and Go's 100.
    """

    api_body: int = 65536
    drain_timeout: int = 10
    upstream_timeout: int = 30
    #: one request line or header field
    header_size: int = 8192
    #: the whole request head
    head_size: int = 32768
    max_headers: int = 100
    #: the TLS handshake, then the first byte to the end of a request head
    handshake_timeout: int = 10
    head_timeout: int = 30
    #: between two reads of a request body (a stalled upload), as nginx's client_body_timeout
    body_timeout: int = 60
    #: an idle connection between requests
    keepalive_timeout: int = 75
    #: request bodies of proxied routes without a max_body of their own (413 beyond)
    max_body: int = 1024 * 1024
    #: live connections without a client certificate from one source address (enrollment needs none)
    connections_without_certificate: int = 64


@dataclass(frozen=True)
class AdminConfig:
    """Step-up window (seconds) for the SOC console and the kill API."""

    fresh_auth: int = 15 * MINUTE


@dataclass(frozen=True)
class UpstreamTLS:
    """TLS towards an https upstream: CA to trust, and an optional client certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Route:
    """One proxied route. ``host`` is lower case, ``None`` = any host; ``path`` is a prefix.

    ``allow_users``/``allow_groups`` are both ``None`` when the route admits any signed-in
    user; when ``allow`` is configured both are tuples (one may be empty). ``audience``
    ``None`` means the route name; ``timeout`` ``None`` means ``limits.upstream_timeout``.
    """

    name: str
    host: str | None
    path: str
    upstream: str
    allow_users: tuple[str, ...] | None = None
    allow_groups: tuple[str, ...] | None = None
    fresh_auth: int | None = None
    websockets: bool = False
    bind_request: bool = True
    audience: str | None = None
    timeout: int | None = None
    upstream_tls: UpstreamTLS | None = None
    #: request bodies over this many bytes are refused with 413; None means limits.max_body
    max_body: int | None = None
    #: origins (lower case) whose pages may make state-changing requests and WebSocket handshakes here
    cross_site_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    source: Path
    public_url: str
    listen: Listen
    tls: TLSConfig
    device_ca: DeviceCAConfig
    webauthn: WebAuthnConfig
    session: SessionConfig
    assertion: AssertionConfig
    ledger: LedgerConfig
    store: str
    devices: DevicesConfig
    routes: tuple[Route, ...]
    limits: Limits
    admin: AdminConfig

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when ``store`` is SQLite (always absolute), else ``None``."""
        if self.store.startswith("sqlite:///"):
            return Path(self.store[len("sqlite://"):])
        return None


# --------------------------------------------------------------------------- YAML with lines

_KeyPath = tuple[str | int, ...]
_MAX_NODES = 100_000  # aliases can expand a small file exponentially ("billion laughs")
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def _fmt(path: _KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _read_yaml(text: str, file: str) -> tuple[Any, dict[_KeyPath, int]]:
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
        lines: dict[_KeyPath, int] = {(): root.start_mark.line + 1}
        budget = [_MAX_NODES]

        def convert(node: yaml.Node, path: _KeyPath, active: frozenset[int]) -> Any:
            budget[0] -= 1
            line = node.start_mark.line + 1
            if budget[0] < 0:
                raise ConfigError(file, line, _fmt(path), f"the document expands to more than {_MAX_NODES} values; do not nest aliases")
            if id(node) in active:
                raise ConfigError(file, line, _fmt(path), "an alias refers to itself; remove the recursive alias")
            inner = active | {id(node)}
            if isinstance(node, yaml.CollectionNode) and node.tag not in (_MAP_TAG, _SEQ_TAG):
                # The walker builds lists and dicts itself, so an explicit tag would be silently dropped.
                raise ConfigError(file, line, _fmt(path), f"unsupported tag {node.tag!r}; remove the tag and write a plain list or mapping")
            if isinstance(node, yaml.MappingNode):
                out: dict[str, Any] = {}
                for key_node, value_node in node.value:
                    key_line = key_node.start_mark.line + 1
                    if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                        shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a " + key_node.id
                        raise ConfigError(
                            file, key_line, _fmt(path),
                            f"key {shown} is not a plain name (merge keys '<<', numbers and nested keys are not supported); "
                            "write each key out as a name",
                        )
                    key = key_node.value
                    child = path + (key,)
                    if key in out:
                        raise ConfigError(
                            file, key_line, _fmt(child),
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
                raise ConfigError(file, line, _fmt(path), f"cannot read value: {problem}; use a plain string, number, boolean, list or mapping") from None

        return convert(root, (), frozenset()), lines
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- validation helpers

_MISSING: Any = object()


def _kind(value: Any) -> str:
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


class _Ctx:
    """Error reporting for one file: knows the line of every key seen in the YAML."""

    def __init__(self, file: str, lines: Mapping[_KeyPath, int], base_dir: Path) -> None:
        self.name = file
        self.lines = lines
        self.base_dir = base_dir

    def line(self, path: _KeyPath) -> int | None:
        # A missing key has no line of its own: report the mapping that should hold it.
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: _KeyPath, problem: str, valid: str) -> ConfigError:
        return ConfigError(self.name, self.line(path), _fmt(path), f"{problem}; {valid}")

    def mapping(self, value: Any, path: _KeyPath, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
        """Check that ``value`` is a mapping with only ``allowed`` keys and every ``required`` one."""
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {_kind(value)}", "write 'key: value' pairs here: " + ", ".join(allowed))
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(path + (str(key),), "unknown key", f"{hint}valid keys here: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                raise self.error(path + (key,), "missing required key", f"add '{key}:' to {_fmt(path) or 'the top level'}")
        return value

    def string(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: Any = _MISSING, *, hint: str = "write a non-empty string") -> Any:
        if key not in m:
            if default is _MISSING:
                raise self.error(path + (key,), "missing required key", f"add '{key}:' to {_fmt(path) or 'the top level'}")
            return default
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(path + (key,), f"expected a non-empty string, got {_kind(value)}", hint)
        return value

    def integer(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: int, *, low: int, high: int, unit: str = "") -> int:
        value = m.get(key, default)
        valid = f"write a whole number from {low} to {high}{unit}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path + (key,), f"expected an integer, got {_kind(value)}", valid)
        if not low <= value <= high:
            raise self.error(path + (key,), f"{value} is out of range", valid)
        return value

    def boolean(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: bool) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            raise self.error(path + (key,), f"expected true or false, got {_kind(value)}", "write true or false")
        return value

    def duration(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: Any, *, minimum: int = 1) -> Any:
        if key not in m:
            return default
        value = m[key]
        try:
            seconds = parse_duration(value)
        except ValueError:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            raise self.error(path + (key,), f"{shown} is not a duration", DURATION_HINT) from None
        if seconds < minimum:
            raise self.error(path + (key,), f"{value!r} is too short", f"use at least {minimum}s")
        return seconds

    def size(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: Any, *, low: int, high: int) -> Any:
        if key not in m:
            return default
        value = m[key]
        try:
            size = parse_size(value)
        except ValueError:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            raise self.error(path + (key,), f"{shown} is not a size", SIZE_HINT) from None
        if not low <= size <= high:
            raise self.error(path + (key,), f"{value!r} is out of range", f"use from {low} to {high} bytes")
        return size

    def choice(self, m: Mapping[str, Any], path: _KeyPath, key: str, default: str, choices: Sequence[str]) -> str:
        value = m.get(key, default)
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            raise self.error(path + (key,), f"{shown} is not allowed", "use one of: " + " | ".join(choices))
        return value

    def string_list(self, m: Mapping[str, Any], path: _KeyPath, key: str) -> tuple[str, ...]:
        value = m.get(key, [])
        if not isinstance(value, list):
            raise self.error(path + (key,), f"expected a list, got {_kind(value)}", "write a list of names, e.g. [alice, bob]")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(path + (key, index), f"expected a non-empty string, got {_kind(item)}", "write a list of names, e.g. [alice, bob]")
        return tuple(dict.fromkeys(value))

    def optional_file(self, m: Mapping[str, Any], path: _KeyPath, key: str, what: str) -> Path | None:
        return self.file(m, path, key, what) if key in m else None

    def file(self, m: Mapping[str, Any], path: _KeyPath, key: str, what: str) -> Path:
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


_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def _valid_host(host: str) -> bool:
    """A DNS name (letters, digits, dashes) or an IP address; already lower case."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOSTNAME_RE.fullmatch(host) is not None


def _split_url(text: str, schemes: Sequence[str]) -> tuple[SplitResult, str, int | None]:
    """Split a URL and return (parts, lower-case host, port); ValueError names the problem."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in schemes:
        raise ValueError("is not " + " or ".join(f"an {s}://" for s in schemes) + " URL")
    if any(c.isspace() for c in text) or _CONTROL_RE.search(text):
        raise ValueError("contains white space or control characters")
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        raise ValueError("contains user:password@, which is not supported")
    host = (parts.hostname or "").rstrip(".")
    if not host or not _valid_host(host):
        raise ValueError("has no valid host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if port == 0:
        raise ValueError("has port 0")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("has a query or fragment")
    return parts, host, port


def _https_origin(text: str) -> str:
    """Normalise an ``https://host[:port]`` origin the way browsers serialise it."""
    parts, host, port = _split_url(text, ("https",))
    if parts.path not in ("", "/"):
        raise ValueError(f"has a path ({parts.path}); an origin is scheme, host and port only")
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}" + (f":{port}" if port not in (None, 443) else "")


# --------------------------------------------------------------------------- sections

_TOP_KEYS = (
    "public_url", "listen", "tls", "device_ca", "webauthn", "session", "assertion",
    "ledger", "store", "devices", "routes", "limits", "admin",
)
_ROUTE_KEYS = (
    "name", "match", "upstream", "allow", "fresh_auth", "websockets", "bind_request",
    "audience", "timeout", "upstream_tls", "max_body", "cross_site",
)
_RESERVED_PREFIXES = ("/idwall", "/.well-known/idwall")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER_PREFIX = "x-idwall-"
_TOKEN_RE = re.compile(r"[A-Za-z0-9-]+")


def _public_url(ctx: _Ctx, data: Mapping[str, Any]) -> str:
    text = ctx.string(data, (), "public_url", hint="write the https URL clients use, e.g. https://idwall.example.com")
    try:
        return _https_origin(text.strip())
    except ValueError as exc:
        raise ctx.error(
            ("public_url",), f"{text!r} {exc}",
            "the gateway only serves TLS: write https://host[:port] with no path, e.g. https://localhost:8443",
        ) from None


def _listen(ctx: _Ctx, value: Any) -> Listen:
    path: _KeyPath = ("listen",)
    m = ctx.mapping(value, path, ("host", "port"))
    host = ctx.string(m, path, "host", Listen.host, hint="write an address to bind, e.g. 127.0.0.1 or 0.0.0.0")
    port = ctx.integer(m, path, "port", Listen.port, low=0, high=65535, unit=" (0 picks a free port)")
    return Listen(host=host, port=port)


def _webauthn(ctx: _Ctx, value: Any, public_url: str) -> WebAuthnConfig:
    path: _KeyPath = ("webauthn",)
    m = ctx.mapping(value, path, ("rp_id", "rp_name", "origins", "user_verification", "timeout"))
    default_rp = urlsplit(public_url).hostname or ""
    rp_id = ctx.string(m, path, "rp_id", default_rp, hint="write a domain name such as example.com").strip().lower().rstrip(".")
    if not _valid_host(rp_id):
        raise ctx.error(path + ("rp_id",), f"{rp_id!r} is not a host name", "write the domain the passkeys belong to, e.g. example.com (no scheme or port)")
    rp_name = ctx.string(m, path, "rp_name", "IDWall", hint="write the name users see in the passkey prompt")

    raw_origins = m.get("origins", [public_url])
    if not isinstance(raw_origins, list) or not raw_origins:
        raise ctx.error(path + ("origins",), f"expected a non-empty list, got {_kind(raw_origins)}", "write a list of https origins, e.g. [https://idwall.example.com]")
    origins: list[str] = []
    for index, item in enumerate(raw_origins):
        where = path + ("origins", index)
        if not isinstance(item, str):
            raise ctx.error(where, f"expected a string, got {_kind(item)}", "write an origin such as https://idwall.example.com")
        try:
            origin = _https_origin(item.strip())
        except ValueError as exc:
            raise ctx.error(
                where, f"{item!r} {exc}",
                "write https://host[:port]; the gateway only serves TLS, so http origins (even localhost) can never be genuine",
            ) from None
        host = urlsplit(origin).hostname or ""
        if host != rp_id and not host.endswith("." + rp_id):
            raise ctx.error(
                where, f"host {host!r} is neither rp_id {rp_id!r} nor a subdomain of it",
                "WebAuthn only accepts origins on the RP ID or its subdomains: change rp_id or the origin",
            )
        origins.append(origin)

    return WebAuthnConfig(
        rp_id=rp_id,
        rp_name=rp_name,
        origins=tuple(dict.fromkeys(origins)),
        user_verification=ctx.choice(m, path, "user_verification", "required", ("required", "preferred", "discouraged")),
        timeout=ctx.duration(m, path, "timeout", 5 * MINUTE),
    )


def _assertion(ctx: _Ctx, value: Any) -> AssertionConfig:
    path: _KeyPath = ("assertion",)
    m = ctx.mapping(value, path, ("header", "key", "ttl", "overlap"), required=("key",))
    header = ctx.string(m, path, "header", "X-IDWall-Assertion").strip()
    if not header.lower().startswith(_HEADER_PREFIX) or len(header) == len(_HEADER_PREFIX) or not _TOKEN_RE.fullmatch(header):
        raise ctx.error(
            path + ("header",), f"{header!r} is not an X-IDWall-* header name",
            "use a name starting with X-IDWall- (letters, digits, dashes) such as X-IDWall-Assertion: "
            "the proxy strips that namespace from client requests, so no client can forge it",
        )
    key = ctx.file(m, path, "key", "the assertion signing key (idwall init writes certs/assertion-key.pem)")
    ttl = ctx.duration(m, path, "ttl", 60)
    overlap = ctx.duration(m, path, "overlap", 7 * DAY, minimum=0)
    if overlap < ttl:
        raise ctx.error(
            path + ("overlap",), f"{overlap}s is shorter than assertion.ttl ({ttl}s)",
            "keep a rotated key published at least as long as an assertion lives, or verifiers reject valid assertions",
        )
    return AssertionConfig(header=header, key=key, ttl=ttl, overlap=overlap)


def _store(ctx: _Ctx, data: Mapping[str, Any]) -> str:
    text = ctx.string(data, (), "store", hint="write sqlite:idwall.db, sqlite:///abs/path.db or postgresql://user@host/db")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    valid = "write sqlite:relative.db, sqlite:///abs/path.db or postgresql://user@host/db"
    if scheme == "postgresql":
        if not text.startswith("postgresql://") or len(text) == len("postgresql://"):
            raise ctx.error(("store",), "a postgresql store must be a postgresql://... URL", valid)
        return text
    if scheme != "sqlite":
        # Never echo the URL: a database URL may carry a password.
        shown = repr(scheme + ":") if scheme else "a value without a scheme"
        raise ctx.error(("store",), f"store URL scheme {shown} is not supported", valid)
    rest = text[len("sqlite:"):]
    if rest.startswith("//") and not rest.startswith("///"):
        raise ctx.error(("store",), f"{text!r} has a host part", valid)
    if rest.startswith("/"):
        # sqlite:/a, sqlite:///a and SQLAlchemy's sqlite:////a all mean the absolute path /a.
        rest = "/" + rest.lstrip("/")
    if not rest or rest == ":memory:" or rest.endswith("/"):
        raise ctx.error(("store",), f"{text!r} does not name a database file", valid + " (an in-memory database cannot be shared)")
    where = ctx.resolve(rest)
    if not where.parent.is_dir():
        raise ctx.error(("store",), f"directory {where.parent} does not exist", "create it, or point store at an existing directory")
    return f"sqlite://{where}"


def _route(ctx: _Ctx, value: Any, index: int) -> Route:
    path: _KeyPath = ("routes", index)
    m = ctx.mapping(value, path, _ROUTE_KEYS, required=("name", "upstream"))
    name = ctx.string(m, path, "name")
    if not _NAME_RE.fullmatch(name):
        raise ctx.error(path + ("name",), f"{name!r} is not a valid route name", "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")

    match_path = path + ("match",)
    match = ctx.mapping(m.get("match", {}), match_path, ("host", "path"))
    host: str | None = None
    if "host" in match:
        host = ctx.string(match, match_path, "host").strip().lower().rstrip(".")
        if not _valid_host(host):
            raise ctx.error(match_path + ("host",), f"{host!r} is not a host name", "write a host name without scheme or port, e.g. wiki.example.com, or omit host to match any")
    prefix = ctx.string(match, match_path, "path", "/")
    _check_route_path(ctx, match_path + ("path",), prefix)

    upstream = ctx.string(m, path, "upstream").strip()
    try:
        parts, _, _ = _split_url(upstream, ("http", "https"))
    except ValueError as exc:
        raise ctx.error(path + ("upstream",), f"{upstream!r} {exc}", "write http://host:port or https://host:port, optionally with a path") from None

    allow_users: tuple[str, ...] | None = None
    allow_groups: tuple[str, ...] | None = None
    if "allow" in m:
        allow_path = path + ("allow",)
        allow = ctx.mapping(m["allow"], allow_path, ("users", "groups"))
        allow_users = ctx.string_list(allow, allow_path, "users")
        allow_groups = ctx.string_list(allow, allow_path, "groups")
        if not allow_users and not allow_groups:
            raise ctx.error(allow_path, "lists no users and no groups, so it would admit nobody", "list users and/or groups, or remove allow to admit every signed-in user")

    audience = None
    if "audience" in m:
        audience = ctx.string(m, path, "audience", hint="write the audience the upstream expects, or omit it to use the route name")

    tls = None
    if "upstream_tls" in m:
        tls_path = path + ("upstream_tls",)
        tls_map = ctx.mapping(m["upstream_tls"], tls_path, ("ca", "cert", "key"))
        if parts.scheme.lower() != "https":
            raise ctx.error(tls_path, f"is set but upstream {upstream!r} is not https", "use an https:// upstream or remove upstream_tls")
        if ("cert" in tls_map) != ("key" in tls_map):
            raise ctx.error(tls_path, "has only one of cert and key", "give both cert and key for a client certificate, or neither")
        tls = UpstreamTLS(
            ca=ctx.optional_file(tls_map, tls_path, "ca", "the CA certificate (PEM) that signed the upstream's certificate"),
            cert=ctx.optional_file(tls_map, tls_path, "cert", "the client certificate (PEM) presented to the upstream"),
            key=ctx.optional_file(tls_map, tls_path, "key", "the private key (PEM) of that client certificate"),
        )

    return Route(
        name=name,
        host=host,
        path=prefix,
        upstream=upstream,
        allow_users=allow_users,
        allow_groups=allow_groups,
        fresh_auth=ctx.duration(m, path, "fresh_auth", None),
        websockets=ctx.boolean(m, path, "websockets", False),
        bind_request=ctx.boolean(m, path, "bind_request", True),
        audience=audience,
        timeout=ctx.duration(m, path, "timeout", None),
        upstream_tls=tls,
        max_body=ctx.size(m, path, "max_body", None, low=0, high=64 * 1024 ** 3),
        cross_site_origins=_cross_site(ctx, m, path),
    )


def _cross_site(ctx: _Ctx, m: Mapping[str, Any], path: _KeyPath) -> tuple[str, ...]:
    if "cross_site" not in m:
        return ()
    where = path + ("cross_site",)
    section = ctx.mapping(m["cross_site"], where, ("origins",), required=("origins",))
    raw = section["origins"]
    valid = "write a list of origins such as [https://portal.example.com] (scheme, host and port only)"
    if not isinstance(raw, list):
        raise ctx.error(where + ("origins",), f"expected a list, got {_kind(raw)}", valid)
    origins: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ctx.error(where + ("origins", index), f"expected a string, got {_kind(item)}", valid)
        try:
            parts, host, port = _split_url(item.strip(), ("https", "http"))
        except ValueError as exc:
            raise ctx.error(where + ("origins", index), f"{item!r} {exc}", valid) from None
        if parts.path not in ("", "/"):
            raise ctx.error(where + ("origins", index), f"{item!r} has a path", valid)
        scheme = parts.scheme.lower()
        shown = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        origins.append(f"{scheme}://{shown}" + (f":{port}" if port not in (None, default) else ""))
    return tuple(dict.fromkeys(origins))


def _check_route_path(ctx: _Ctx, where: _KeyPath, prefix: str) -> None:
    valid = "write an absolute path prefix such as / or /app, without '.', '..', '//', '%', query or fragment"
    if not prefix.startswith("/"):
        raise ctx.error(where, f"{prefix!r} does not start with '/'", valid)
    segments = prefix.split("/")[1:]
    if (
        any(c.isspace() or c in "?#%\\" for c in prefix)
        or _CONTROL_RE.search(prefix)
        or any(s in (".", "..") for s in segments)
        or "//" in prefix
    ):
        raise ctx.error(where, f"{prefix!r} is not a normalised path", valid)
    lowered = prefix.lower()
    for reserved in _RESERVED_PREFIXES:
        if lowered == reserved or lowered.startswith(reserved + "/"):
            raise ctx.error(where, f"{prefix!r} is reserved", "the gateway owns /idwall/ and /.well-known/idwall/ on every host; choose another path")


def _routes(ctx: _Ctx, value: Any) -> tuple[Route, ...]:
    if not isinstance(value, list):
        raise ctx.error(("routes",), f"expected a list, got {_kind(value)}", "write a list of routes, each starting with '- name: ...'")
    routes: list[Route] = []
    by_name: dict[str, int] = {}
    by_match: dict[tuple[str | None, str], int] = {}
    for index, item in enumerate(value):
        route = _route(ctx, item, index)
        if route.name in by_name:
            raise ctx.error(
                ("routes", index, "name"), f"{route.name!r} is already the name of routes[{by_name[route.name]}]",
                "give every route a unique name (it is the assertion audience and appears in logs)",
            )
        key = (route.host, route.path)
        if key in by_match:
            other = routes[by_match[key]]
            raise ctx.error(
                ("routes", index, "match"),
                f"route {route.name!r} has the same host ({route.host or 'any'}) and path ({route.path}) as routes[{by_match[key]}] {other.name!r}",
                "give each route a distinct host or path; the longest matching path prefix wins, so /app and /app/sub may coexist",
            )
        by_name[route.name] = index
        by_match[key] = index
        routes.append(route)
    return tuple(routes)


_LIMIT_KEYS = ("api_body", "drain_timeout", "upstream_timeout", "header_size", "head_size", "max_headers",
               "handshake_timeout", "head_timeout", "body_timeout", "keepalive_timeout", "max_body",
               "connections_without_certificate")


def _limits(ctx: _Ctx, value: Any) -> Limits:
    path: _KeyPath = ("limits",)
    m = ctx.mapping(value, path, _LIMIT_KEYS)
    d = Limits()
    limits = Limits(
        api_body=ctx.size(m, path, "api_body", d.api_body, low=4096, high=64 * 1024 * 1024),
        drain_timeout=ctx.duration(m, path, "drain_timeout", d.drain_timeout, minimum=0),
        upstream_timeout=ctx.duration(m, path, "upstream_timeout", d.upstream_timeout),
        header_size=ctx.size(m, path, "header_size", d.header_size, low=1024, high=1024 * 1024),
        head_size=ctx.size(m, path, "head_size", d.head_size, low=4096, high=4 * 1024 * 1024),
        max_headers=ctx.integer(m, path, "max_headers", d.max_headers, low=8, high=10_000),
        handshake_timeout=ctx.duration(m, path, "handshake_timeout", d.handshake_timeout),
        head_timeout=ctx.duration(m, path, "head_timeout", d.head_timeout),
        body_timeout=ctx.duration(m, path, "body_timeout", d.body_timeout),
        keepalive_timeout=ctx.duration(m, path, "keepalive_timeout", d.keepalive_timeout),
        max_body=ctx.size(m, path, "max_body", d.max_body, low=0, high=64 * 1024 ** 3),
        connections_without_certificate=ctx.integer(m, path, "connections_without_certificate",
                                                    d.connections_without_certificate, low=1, high=1_000_000),
    )
    if limits.head_size < limits.header_size:
        raise ctx.error(path + ("head_size",), f"{limits.head_size} is smaller than header_size ({limits.header_size})",
                        "the whole head must be allowed to hold at least one full header line")
    return limits


def _build(data: Any, ctx: _Ctx, source: Path) -> Config:
    root = ctx.mapping(data, (), _TOP_KEYS, required=("public_url", "tls", "device_ca", "assertion", "ledger", "store"))
    public_url = _public_url(ctx, root)

    tls_map = ctx.mapping(root["tls"], ("tls",), ("cert", "key"), required=("cert", "key"))
    tls = TLSConfig(
        cert=ctx.file(tls_map, ("tls",), "cert", "the gateway's server certificate (PEM; idwall init writes certs/server.pem)"),
        key=ctx.file(tls_map, ("tls",), "key", "the server certificate's private key (idwall init writes certs/server-key.pem)"),
    )
    ca_map = ctx.mapping(root["device_ca"], ("device_ca",), ("cert", "key", "cert_ttl"), required=("cert", "key"))
    device_ca = DeviceCAConfig(
        cert=ctx.file(ca_map, ("device_ca",), "cert", "the device CA certificate (PEM; idwall init writes certs/device-ca.pem)"),
        key=ctx.file(ca_map, ("device_ca",), "key", "the device CA private key (idwall init writes certs/device-ca-key.pem)"),
        cert_ttl=ctx.duration(ca_map, ("device_ca",), "cert_ttl", 30 * DAY, minimum=60),
    )
    session_map = ctx.mapping(root.get("session", {}), ("session",), ("max_age", "idle_timeout"))
    session = SessionConfig(
        max_age=ctx.duration(session_map, ("session",), "max_age", 12 * HOUR),
        idle_timeout=ctx.duration(session_map, ("session",), "idle_timeout", 1 * HOUR),
    )
    ledger_map = ctx.mapping(root["ledger"], ("ledger",), ("key",), required=("key",))
    ledger = LedgerConfig(key=ctx.file(ledger_map, ("ledger",), "key", "the ledger signing key (idwall init writes certs/ledger-key.pem)"))
    devices_map = ctx.mapping(root.get("devices", {}), ("devices",), ("approval",))
    limits = _limits(ctx, root.get("limits", {}))
    admin_map = ctx.mapping(root.get("admin", {}), ("admin",), ("fresh_auth",))

    return Config(
        source=source,
        public_url=public_url,
        listen=_listen(ctx, root.get("listen", {})),
        tls=tls,
        device_ca=device_ca,
        webauthn=_webauthn(ctx, root.get("webauthn", {}), public_url),
        session=session,
        assertion=_assertion(ctx, root["assertion"]),
        ledger=ledger,
        store=_store(ctx, root),
        devices=DevicesConfig(approval=ctx.choice(devices_map, ("devices",), "approval", "none", ("none", "manager", "admin"))),
        routes=_routes(ctx, root.get("routes", [])),
        limits=limits,
        admin=AdminConfig(fresh_auth=ctx.duration(admin_map, ("admin",), "fresh_auth", 15 * MINUTE)),
    )


# --------------------------------------------------------------------------- entry points


def config_from_mapping(data: dict, *, source: Path, base_dir: Path) -> Config:
    """Validate already-parsed data (no line numbers); relative paths resolve against ``base_dir``."""
    ctx = _Ctx(str(source), {}, Path(os.path.abspath(base_dir)))
    return _build(data, ctx, Path(os.path.abspath(source)))


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
    data, lines = _read_yaml(text, shown)
    return _build(data, _Ctx(shown, lines, source.parent), source)


# --------------------------------------------------------------------------- the annotated default


def _yaml_str(text: str) -> str:
    # JSON strings are valid YAML double-quoted scalars, so any value survives the round trip.
    return json.dumps(text)


def default_config_text(*, public_url: str, port: int, store_path: str, admin: str) -> str:
    """The annotated ``idwall.yaml`` that ``idwall init`` writes.

    ``store_path`` is a SQLite file path (relative to the config directory, or absolute) or a
    full store URL; ``admin`` is the first administrator's user id, named in the comments.
    Raises ``ValueError`` for a ``public_url`` that is not an https origin, a port out of range
    or an ``admin`` with control characters.
    """
    origin = _https_origin(public_url)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
    if not admin or _CONTROL_RE.search(admin):
        raise ValueError(f"admin must be a non-empty user id without control characters, got {admin!r}")
    if store_path.startswith(("sqlite:", "postgresql://")):
        store = store_path
    elif os.path.isabs(store_path):
        store = "sqlite://" + store_path
    else:
        store = "sqlite:" + store_path
    rp_id = urlsplit(origin).hostname or ""
    return _DEFAULT_TEMPLATE.format(
        public_url=_yaml_str(origin),
        port=port,
        rp_id=_yaml_str(rp_id),
        store=_yaml_str(store),
        admin_comment=admin,
    )


_DEFAULT_TEMPLATE = """\
# IDWall gateway configuration.
# Durations: 90s, 15m, 12h, 30d (or a bare number of seconds).
# Relative paths are relative to the directory of this file.
# The first administrator is {admin_comment}: enroll with the bootstrap code that idwall init printed.

# The https URL clients use to reach the gateway. It is the `iss` of every identity assertion
# and, unless webauthn.origins says otherwise, the only origin passkeys are accepted from.
public_url: {public_url}

# Where to accept TLS connections (port 0 lets the OS choose).
listen:
  host: 127.0.0.1
  port: {port}

# The gateway's server certificate and key (PEM).
tls:
  cert: certs/server.pem
  key: certs/server-key.pem

# The CA that issues device client certificates, and how long a device certificate lives.
device_ca:
  cert: certs/device-ca.pem
  key: certs/device-ca-key.pem
  cert_ttl: 30d

# Passkeys. rp_id is the domain passkeys are bound to; every origin must be https and on rp_id
# or a subdomain of it. user_verification: required | preferred | discouraged.
webauthn:
  rp_id: {rp_id}
  rp_name: IDWall
  origins: [{public_url}]
  user_verification: required
  timeout: 5m

# A session lasts at most max_age and ends early after idle_timeout without requests.
session:
  max_age: 12h
  idle_timeout: 1h

# The signed identity header (ES256 JWT) sent to upstreams. The name must start with X-IDWall-:
# the gateway strips that namespace from client requests, so clients cannot forge it.
# ttl: lifetime of one assertion; overlap: how long a rotated key stays in the JWKS.
assertion:
  header: X-IDWall-Assertion
  key: certs/assertion-key.pem
  ttl: 60s
  overlap: 7d

# The key that signs the audit ledger.
ledger:
  key: certs/ledger-key.pem

# sqlite:relative.db, sqlite:///abs/path.db, or postgresql://user@host/db for several nodes.
store: {store}

# Who must approve a newly enrolled device: none | manager | admin.
devices:
  approval: none

# Sizes in bytes (or 8k, 1m, 64m), times as durations; the defaults are nginx's (see config/idwall.example.yaml).
limits:
  api_body: 64k
  drain_timeout: 10s
  upstream_timeout: 30s
  header_size: 8k
  head_size: 32k
  max_headers: 100
  handshake_timeout: 10s
  head_timeout: 30s
  body_timeout: 60s
  keepalive_timeout: 75s
  max_body: 1m
  connections_without_certificate: 64

# Passkey step-up window for the SOC console and the kill API.
admin:
  fresh_auth: 15m

# Proxied routes. The longest matching path prefix wins; host omitted = any host.
# Without `allow`, any signed-in user may use a route; with it, only the users and groups listed.
routes:
  - name: whoami                 # also the assertion audience unless `audience` is set
    match:
      path: /
    upstream: http://127.0.0.1:9001
    websockets: true
    # allow: {{users: [{admin_comment}], groups: [eng]}}
    # fresh_auth: 15m            # demand a passkey assertion at most this old
    # bind_request: true         # false: no htm/htu claims, assertions reused for up to ttl/2
    # timeout: 30s               # default: limits.upstream_timeout
    # max_body: 64m              # default: limits.max_body (413 beyond)
    # cross_site: {{origins: [https://portal.example.com]}}   # sites whose pages may POST or open WebSockets here
"""
