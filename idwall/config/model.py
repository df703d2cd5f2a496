"""The typed, frozen configuration records, and :class:`ConfigError`, the one error that loading raises.

By the time a record is built every duration is ``int`` seconds and every path an absolute
:class:`~pathlib.Path`; the defaults written here are the documented ones. :data:`CONTROL_RE` is what
keeps an error message on one line, and what the checks refuse in URLs, route paths and names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..units import DAY, HOUR, MINUTE

__all__ = [
    "CONTROL_RE",
    "AdminConfig",
    "AssertionConfig",
    "Config",
    "ConfigError",
    "DeviceCAConfig",
    "DevicesConfig",
    "IncidentConfig",
    "IncidentNotice",
    "LedgerConfig",
    "Limits",
    "Listen",
    "Playbook",
    "PlaybookStage",
    "PrivilegedConfig",
    "Route",
    "SessionConfig",
    "TLSConfig",
    "UpstreamTLS",
    "WebAuthnConfig",
    "WebhookTarget",
]

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


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
        self.message = CONTROL_RE.sub(" ", message).strip()
        where = file if line is None else f"{file}:{line}"
        parts = [where, key, self.message] if key else [where, self.message]
        super().__init__(CONTROL_RE.sub(" ", ": ".join(parts)))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Listen:
    """Where the gateway accepts TLS connections; port 0 lets the OS choose.

    ``proxy_trusted``: the networks (load balancers) whose connections must begin with a PROXY protocol v2
    header naming the real client; everybody else's connections are TLS from the first byte.
    """

    host: str = "127.0.0.1"
    port: int = 8443
    proxy_trusted: tuple[str, ...] = ()


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
    """The key that signs audit ledger entries, and the pinned root fingerprint once the operator has written it."""

    key: Path
    #: base64url(SHA-256(COSE key of the genesis admin credential)), printed at bootstrap; the console's ledger
    #: verification pins it (None: not pinned yet)
    root: str | None = None


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

    A TCP route (``upstream`` is ``tcp://host:port``, normalised: lower-case host, IPv6 in brackets, port
    always written) matches no HTTP request: ``host`` is None and ``path`` ``/`` but unused.

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
    #: a ``tcp://`` route only: ``"v2"`` opens each upstream connection with a PROXY v2 header carrying the
    #: client address and the signed assertion (TLV 0xE0); None sends the tunnel's bytes alone
    proxy_protocol: str | None = None

    @property
    def is_tcp(self) -> bool:
        """A TCP service (``upstream: tcp://host:port``), reached by a tunnel at ``/idwall/tunnel/<name>``."""
        return self.upstream.startswith("tcp://")


@dataclass(frozen=True)
class ClusterConfig:
    """Several nodes on one PostgreSQL database: how many connections each process keeps to it, and how long a
    process may go without hearing the store (its trust events) before it serves nothing (``max_staleness``)."""

    pool_size: int = 10
    max_staleness: int = 30


@dataclass(frozen=True)
class PrivilegedConfig:
    """Who counts as privileged beyond administrators: members of these groups (and their tokens)."""

    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaybookStage:
    """One stage of a playbook: the steps to take, over whom.

    ``scope`` is ``privileged``, ``all``, ``groups`` (``groups`` names them), ``users`` (``users`` names
    them) or ``target`` (the users and devices named when the playbook is run). ``fresh_auth`` is the
    step-up window ``raise_fresh_auth`` imposes, in seconds.
    """

    scope: str
    steps: tuple[str, ...]
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    fresh_auth: int | None = None


@dataclass(frozen=True)
class Playbook:
    """A named, rehearsed response to a trigger; excluded users and groups are never touched."""

    name: str
    trigger: str
    stages: tuple[PlaybookStage, ...]
    exclude_groups: tuple[str, ...] = ()
    exclude_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class IncidentNotice:
    """What the login, enrollment and recovery pages say while an incident is active."""

    title: str
    body: str
    contact: str


@dataclass(frozen=True)
class WebhookTarget:
    """Where incident stages and kills are announced; ``secret`` is the Standard Webhooks key (raw bytes)."""

    url: str
    secret: bytes


@dataclass(frozen=True)
class IncidentConfig:
    """Playbooks by name, the notice shown during an incident, and the webhooks told of each stage."""

    playbooks: tuple[Playbook, ...] = ()
    notice: IncidentNotice | None = None
    webhooks: tuple[WebhookTarget, ...] = ()

    def playbook(self, name: str) -> Playbook | None:
        """The playbook called ``name``, if configured."""
        return next((p for p in self.playbooks if p.name == name), None)


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
    privileged: PrivilegedConfig = PrivilegedConfig()
    incident: IncidentConfig = IncidentConfig()
    cluster: ClusterConfig = ClusterConfig()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when ``store`` is SQLite (always absolute), else ``None``."""
        if self.store.startswith("sqlite:///"):
            return Path(self.store[len("sqlite://"):])
        return None
