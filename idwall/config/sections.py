"""Validation of each section of the file, and :func:`build_config`, which makes the whole :class:`Config`.

One function per section (``public_url``, ``listen``, ``webauthn``, ``assertion``, ``store``, each route,
``routes``, ``limits``); the small sections are read in :func:`build_config` itself. A rule that spans
keys lives with the section that owns them: ``assertion.overlap`` at least ``ttl``, ``limits.head_size``
at least ``header_size``, route names and matches unique, origins on the RP ID.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..units import DAY, HOUR, MINUTE
from .checks import Ctx, kind
from .cluster import cluster_section
from .incident import incident_section, privileged_section
from .model import (
    CONTROL_RE,
    AdminConfig,
    AssertionConfig,
    Config,
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
from .urls import https_origin, split_url, valid_host
from .yaml_lines import KeyPath

__all__ = ["build_config"]

_TOP_KEYS = (
    "public_url", "listen", "tls", "device_ca", "webauthn", "session", "assertion",
    "ledger", "store", "devices", "routes", "limits", "admin", "privileged", "incident",
    "cluster",
)
_ROUTE_KEYS = (
    "name", "match", "upstream", "allow", "fresh_auth", "websockets", "bind_request",
    "audience", "timeout", "upstream_tls", "max_body", "cross_site", "proxy_protocol",
)
#: keys that mean nothing for a TCP route (it is reached by name through a tunnel, bytes are not HTTP)
_HTTP_ONLY_KEYS = ("match", "websockets", "bind_request", "upstream_tls", "max_body", "cross_site")
_RESERVED_PREFIXES = ("/idwall", "/.well-known/idwall")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER_PREFIX = "x-idwall-"
_TOKEN_RE = re.compile(r"[A-Za-z0-9-]+")
#: base64url without padding of a SHA-256 (audit.root_fingerprint)
_ROOT_FINGERPRINT = re.compile(r"[A-Za-z0-9_-]{43}")


def _public_url(ctx: Ctx, data: Mapping[str, Any]) -> str:
    text = ctx.string(data, (), "public_url", hint="write the https URL clients use, e.g. https://idwall.example.com")
    try:
        return https_origin(text.strip())
    except ValueError as exc:
        raise ctx.error(
            ("public_url",), f"{text!r} {exc}",
            "the gateway only serves TLS: write https://host[:port] with no path, e.g. https://localhost:8443",
        ) from None


def _listen(ctx: Ctx, value: Any) -> Listen:
    path: KeyPath = ("listen",)
    m = ctx.mapping(value, path, ("host", "port", "proxy_protocol"))
    host = ctx.string(m, path, "host", Listen.host, hint="write an address to bind, e.g. 127.0.0.1 or 0.0.0.0")
    port = ctx.integer(m, path, "port", Listen.port, low=0, high=65535, unit=" (0 picks a free port)")
    return Listen(host=host, port=port, proxy_trusted=_proxy_trusted(ctx, m.get("proxy_protocol"), path))


def _proxy_trusted(ctx: Ctx, value: Any, path: KeyPath) -> tuple[str, ...]:
    if value is None:
        return ()
    where = path + ("proxy_protocol",)
    m = ctx.mapping(value, where, ("trusted",), required=("trusted",))
    hint = "list the load balancers' networks, e.g. [10.0.0.10/32]; only they may say who the client is"
    networks = ctx.string_list(m, where, "trusted")
    if not networks:
        raise ctx.error(where + ("trusted",), "an empty list would trust nobody", hint + ", or remove proxy_protocol")
    for index, text in enumerate(networks):
        try:
            ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ctx.error(where + ("trusted", index), f"{text!r} is not a network ({exc})", hint) from None
    return tuple(str(ipaddress.ip_network(text)) for text in networks)


def _webauthn(ctx: Ctx, value: Any, public_url: str) -> WebAuthnConfig:
    path: KeyPath = ("webauthn",)
    m = ctx.mapping(value, path, ("rp_id", "rp_name", "origins", "user_verification", "timeout"))
    default_rp = urlsplit(public_url).hostname or ""
    rp_id = ctx.string(m, path, "rp_id", default_rp, hint="write a domain name such as example.com").strip().lower().rstrip(".")
    if not valid_host(rp_id):
        raise ctx.error(path + ("rp_id",), f"{rp_id!r} is not a host name", "write the domain the passkeys belong to, e.g. example.com (no scheme or port)")
    rp_name = ctx.string(m, path, "rp_name", "IDWall", hint="write the name users see in the passkey prompt")

    raw_origins = m.get("origins", [public_url])
    if not isinstance(raw_origins, list) or not raw_origins:
        raise ctx.error(path + ("origins",), f"expected a non-empty list, got {kind(raw_origins)}", "write a list of https origins, e.g. [https://idwall.example.com]")
    origins: list[str] = []
    for index, item in enumerate(raw_origins):
        where = path + ("origins", index)
        if not isinstance(item, str):
            raise ctx.error(where, f"expected a string, got {kind(item)}", "write an origin such as https://idwall.example.com")
        try:
            origin = https_origin(item.strip())
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


def _assertion(ctx: Ctx, value: Any) -> AssertionConfig:
    path: KeyPath = ("assertion",)
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


def _store(ctx: Ctx, data: Mapping[str, Any]) -> str:
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


def _route(ctx: Ctx, value: Any, index: int) -> Route:
    path: KeyPath = ("routes", index)
    m = ctx.mapping(value, path, _ROUTE_KEYS, required=("name", "upstream"))
    name = ctx.string(m, path, "name")
    if not _NAME_RE.fullmatch(name):
        raise ctx.error(path + ("name",), f"{name!r} is not a valid route name", "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")

    upstream = ctx.string(m, path, "upstream").strip()
    if upstream.lower().startswith("tcp://"):
        return _tcp_route(ctx, m, path, name, upstream)
    if "proxy_protocol" in m:
        raise ctx.error(path + ("proxy_protocol",), f"is set but upstream {upstream!r} is not tcp://",
                        "PROXY protocol is for TCP services: use a tcp://host:port upstream or remove proxy_protocol")

    match_path = path + ("match",)
    match = ctx.mapping(m.get("match", {}), match_path, ("host", "path"))
    host: str | None = None
    if "host" in match:
        host = ctx.string(match, match_path, "host").strip().lower().rstrip(".")
        if not valid_host(host):
            raise ctx.error(match_path + ("host",), f"{host!r} is not a host name", "write a host name without scheme or port, e.g. wiki.example.com, or omit host to match any")
    prefix = ctx.string(match, match_path, "path", "/")
    _check_route_path(ctx, match_path + ("path",), prefix)

    try:
        parts, _, _ = split_url(upstream, ("http", "https"))
    except ValueError as exc:
        raise ctx.error(path + ("upstream",), f"{upstream!r} {exc}", _UPSTREAM_VALID) from None

    allow_users, allow_groups = _allow(ctx, m, path)
    audience = _audience(ctx, m, path)

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


_UPSTREAM_VALID = ("write http://host:port or https://host:port (optionally with a path), or tcp://host:port for a "
                   "TCP service such as a database")


def _allow(ctx: Ctx, m: Mapping[str, Any], path: KeyPath) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    if "allow" not in m:
        return None, None
    allow_path = path + ("allow",)
    allow = ctx.mapping(m["allow"], allow_path, ("users", "groups"))
    allow_users = ctx.string_list(allow, allow_path, "users")
    allow_groups = ctx.string_list(allow, allow_path, "groups")
    if not allow_users and not allow_groups:
        raise ctx.error(allow_path, "lists no users and no groups, so it would admit nobody", "list users and/or groups, or remove allow to admit every signed-in user")
    return allow_users, allow_groups


def _audience(ctx: Ctx, m: Mapping[str, Any], path: KeyPath) -> str | None:
    if "audience" not in m:
        return None
    return ctx.string(m, path, "audience", hint="write the audience the upstream expects, or omit it to use the route name")


def _tcp_route(ctx: Ctx, m: Mapping[str, Any], path: KeyPath, name: str, upstream: str) -> Route:
    """A TCP service: ``tcp://host:port``, reached by a tunnel; only the keys that mean something for it."""
    for key in _HTTP_ONLY_KEYS:
        if key in m:
            raise ctx.error(path + (key,), f"does not apply to a TCP route (upstream {upstream!r})",
                            f"remove {key}: a TCP route is reached by name through /idwall/tunnel/{name} "
                            "(idwall connect), and its bytes are not HTTP")
    valid = "write tcp://host:port with a port and nothing after it, e.g. tcp://10.0.0.5:5432"
    try:
        parts, host, port = split_url(upstream, ("tcp",))
    except ValueError as exc:
        raise ctx.error(path + ("upstream",), f"{upstream!r} {exc}", valid) from None
    if port is None:
        raise ctx.error(path + ("upstream",), f"{upstream!r} has no port", valid)
    if parts.path:
        raise ctx.error(path + ("upstream",), f"{upstream!r} has a path", valid)
    allow_users, allow_groups = _allow(ctx, m, path)
    proxy_protocol = None
    if "proxy_protocol" in m:
        proxy_protocol = ctx.choice(m, path, "proxy_protocol", "v2", ("v2",))
    shown = f"[{host}]" if ":" in host else host
    return Route(
        name=name, host=None, path="/", upstream=f"tcp://{shown}:{port}", allow_users=allow_users,
        allow_groups=allow_groups, fresh_auth=ctx.duration(m, path, "fresh_auth", None),
        audience=_audience(ctx, m, path), timeout=ctx.duration(m, path, "timeout", None),
        proxy_protocol=proxy_protocol,
    )


def _cross_site(ctx: Ctx, m: Mapping[str, Any], path: KeyPath) -> tuple[str, ...]:
    if "cross_site" not in m:
        return ()
    where = path + ("cross_site",)
    section = ctx.mapping(m["cross_site"], where, ("origins",), required=("origins",))
    raw = section["origins"]
    valid = "write a list of origins such as [https://portal.example.com] (scheme, host and port only)"
    if not isinstance(raw, list):
        raise ctx.error(where + ("origins",), f"expected a list, got {kind(raw)}", valid)
    origins: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ctx.error(where + ("origins", index), f"expected a string, got {kind(item)}", valid)
        try:
            parts, host, port = split_url(item.strip(), ("https", "http"))
        except ValueError as exc:
            raise ctx.error(where + ("origins", index), f"{item!r} {exc}", valid) from None
        if parts.path not in ("", "/"):
            raise ctx.error(where + ("origins", index), f"{item!r} has a path", valid)
        scheme = parts.scheme.lower()
        shown = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        origins.append(f"{scheme}://{shown}" + (f":{port}" if port not in (None, default) else ""))
    return tuple(dict.fromkeys(origins))


def _check_route_path(ctx: Ctx, where: KeyPath, prefix: str) -> None:
    valid = "write an absolute path prefix such as / or /app, without '.', '..', '//', '%', query or fragment"
    if not prefix.startswith("/"):
        raise ctx.error(where, f"{prefix!r} does not start with '/'", valid)
    segments = prefix.split("/")[1:]
    if (
        any(c.isspace() or c in "?#%\\" for c in prefix)
        or CONTROL_RE.search(prefix)
        or any(s in (".", "..") for s in segments)
        or "//" in prefix
    ):
        raise ctx.error(where, f"{prefix!r} is not a normalised path", valid)
    lowered = prefix.lower()
    for reserved in _RESERVED_PREFIXES:
        if lowered == reserved or lowered.startswith(reserved + "/"):
            raise ctx.error(where, f"{prefix!r} is reserved", "the gateway owns /idwall/ and /.well-known/idwall/ on every host; choose another path")


def _routes(ctx: Ctx, value: Any) -> tuple[Route, ...]:
    if not isinstance(value, list):
        raise ctx.error(("routes",), f"expected a list, got {kind(value)}", "write a list of routes, each starting with '- name: ...'")
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
        if route.is_tcp:
            pass  # reached by name, not by host and path
        elif key in by_match:
            other = routes[by_match[key]]
            raise ctx.error(
                ("routes", index, "match"),
                f"route {route.name!r} has the same host ({route.host or 'any'}) and path ({route.path}) as routes[{by_match[key]}] {other.name!r}",
                "give each route a distinct host or path; the longest matching path prefix wins, so /app and /app/sub may coexist",
            )
        by_name[route.name] = index
        if not route.is_tcp:
            by_match[key] = index
        routes.append(route)
    return tuple(routes)


_LIMIT_KEYS = ("api_body", "drain_timeout", "upstream_timeout", "header_size", "head_size", "max_headers",
               "handshake_timeout", "head_timeout", "body_timeout", "keepalive_timeout", "max_body",
               "connections_without_certificate")


def _limits(ctx: Ctx, value: Any) -> Limits:
    path: KeyPath = ("limits",)
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


def build_config(data: Any, ctx: Ctx, source: Path) -> Config:
    """The whole :class:`Config` from the parsed top-level mapping; ``ctx`` knows the file's lines, if any."""
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
    ledger_map = ctx.mapping(root["ledger"], ("ledger",), ("key", "root"), required=("key",))
    root_hint = "write the root fingerprint printed when the first administrator enrolled (43 characters of base64url)"
    root_pin = ctx.string(ledger_map, ("ledger",), "root", None, hint=root_hint)
    if root_pin is not None and not _ROOT_FINGERPRINT.fullmatch(root_pin):
        raise ctx.error(("ledger", "root"), f"{root_pin[:50]!r} is not a root fingerprint", root_hint)
    ledger = LedgerConfig(key=ctx.file(ledger_map, ("ledger",), "key", "the ledger signing key (idwall init writes certs/ledger-key.pem)"),
                          root=root_pin)
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
        privileged=privileged_section(ctx, root.get("privileged", {})),
        incident=incident_section(ctx, root.get("incident", {})),
        cluster=cluster_section(ctx, root.get("cluster", {})),
    )
