"""One access decision per request: who is on this connection, and may they do this here, now?

Every caller asks here, and none decides on its own: the proxy (:func:`route_verdict`), login
(:func:`device_verdict`), logout and signed actions (:func:`session_verdict`), the admin API and console
(:func:`admin_verdict`), and, for every request, the authority it addressed (:func:`authority_verdict`).
A verdict carries both answers: ``error`` (problem+json for API clients) and, where a person in a
browser should go somewhere instead, ``location`` (the login page).

    verdict             status  when
    allow                       the request may pass
    misdirected         421     Host is not this connection's TLS server name, or no host the gateway serves
    no_certificate      403     the connection presented no device certificate
    not_enrolled        403     its certificate maps to no device (removed, or replaced by a renewal)
    inactive            403     the device is revoked or waits for approval
    certificate_expired 403     the device certificate is past notAfter (TLS checks it only at a full handshake)
    login               401     no live session on this certificate
    step_up             401     the session's passkey assertion is older than the route's fresh_auth
    deny                403     the user is not on the route's allow list, or is no administrator
    cross_site          403     a state-changing request or WebSocket handshake from another site

Cross-site requests (DESIGN.md "Cross-site requests"): a device certificate is ambient authority, so a
browser attaches it to requests that other sites' pages make. Those that change state (any method but
GET, HEAD, OPTIONS), WebSocket handshakes and CORS preflights are refused when their origin is foreign:
``Sec-Fetch-Site: cross-site`` or, without Fetch Metadata, an ``Origin`` that is neither the origin the
request addressed nor one of the gateway's own (``Origin: null`` included), unless the route lists that
origin. Requests with neither header (non-browser clients) and top-level cross-site navigations pass.

The proxy asks on every request, so a connection remembers each route it was allowed on until the
earliest moment that answer could change (session expiry, certificate expiry, the end of the route's
fresh_auth window); the idle timeout is checked every time against the session's last request. Anything
that changes who is on the connection rebinds it and clears what it remembered.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

from . import policy, sessions
from .config import Config, Route
from .errors import Forbidden, IDWallError, NoClientCertificate, Unauthenticated
from .httpnorm import host_without_port
from .model import Resolved, Session

ALLOW, MISDIRECTED, NO_CERTIFICATE, NOT_ENROLLED, INACTIVE, CERTIFICATE_EXPIRED, LOGIN, STEP_UP, DENY, \
    CROSS_SITE = ("allow", "misdirected", "no_certificate", "not_enrolled", "inactive", "certificate_expired",
                  "login", "step_up", "deny", "cross_site")

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
NEVER = float("inf")


class CrossSiteRefused(Forbidden):
    """A state-changing request from another site's page, which the device certificate must not authorise."""

    slug, title = "cross-site-refused", "Cross-site request refused"


class Misdirected(IDWallError):
    """The request names a host this connection was not made for (RFC 9110 §15.5.20)."""

    status, slug, title = 421, "misdirected-request", "Misdirected request"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision: ``kind`` (module docstring), the API answer, and where a browser goes instead."""

    kind: str
    error: IDWallError | None = None
    location: str | None = None

    @property
    def status(self) -> int:
        return 200 if self.error is None else self.error.status


ALLOWED = Verdict(ALLOW)


class ConnectionView(Protocol):
    """What the decision reads of a connection (``idwall.connections.Conn`` is one)."""

    cert_sha256: bytes | None
    resolved: Resolved | None
    #: route name -> until when this connection was allowed on it; cleared whenever it is rebound
    grants: dict[str, float]


class RequestView(Protocol):
    """What the decision reads of a request (``idwall.engine.h1.RequestHead`` is one; see :class:`RequestFacts`)."""

    method: bytes
    target: bytes
    host: bytes | None
    origin: bytes | None
    fetch_site: bytes | None
    accept: bytes | None
    preflight: bool
    upgrade: bytes | None


@dataclass(slots=True)
class RequestFacts:
    """A :class:`RequestView` built from any request object (the web layer's)."""

    method: bytes
    target: bytes
    host: bytes | None = None
    origin: bytes | None = None
    fetch_site: bytes | None = None
    accept: bytes | None = None
    preflight: bool = False
    upgrade: bytes | None = None


def _origin(url: str) -> bytes:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower().encode()


@dataclass(frozen=True)
class AccessConfig:
    """What the decisions need from the configuration, prepared once."""

    public_url: str
    own_origins: frozenset[bytes]
    own_hosts: frozenset[str]
    served_hosts: frozenset[str]
    any_host: bool
    idle_timeout: int
    admin_fresh_auth: int
    enroll_url: str
    cross_site: dict[str, frozenset[bytes]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> AccessConfig:
        own = (config.public_url, *config.webauthn.origins)
        own_hosts = frozenset(urlsplit(url).hostname or "" for url in own) - {""}
        http_routes = [r for r in config.routes if not r.is_tcp]  # a TCP route is reached on the gateway's host
        route_hosts = {r.host for r in http_routes if r.host is not None}
        return cls(
            public_url=config.public_url.rstrip("/"),
            own_origins=frozenset(_origin(url) for url in own),
            own_hosts=own_hosts,
            served_hosts=own_hosts | route_hosts,
            any_host=any(r.host is None for r in http_routes),
            idle_timeout=config.session.idle_timeout,
            admin_fresh_auth=config.admin.fresh_auth,
            enroll_url=config.public_url.rstrip("/") + "/idwall/enroll",
            cross_site={r.name: frozenset(o.lower().encode() for o in r.cross_site_origins) for r in config.routes},
        )

    def login_url(self, next_target: str) -> str:
        return self.public_url + policy.login_redirect(next_target)


# -- the authority ------------------------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def authority_verdict(hostname: str | None, *, sni: str | None, cfg: AccessConfig) -> Verdict:
    """Whether the host a request names (lower case, no port) belongs on this connection (else 421).

    It must be the TLS server name the client sent, or, for a client that sent none (a connection to an IP
    address, RFC 6066 §3), an IP address; and it must be a host the gateway serves.
    """
    if hostname is None:
        return ALLOWED  # HTTP/1.0 without Host: the connection's own server name stands for it
    if sni is not None:
        if hostname != sni:
            return Verdict(MISDIRECTED, Misdirected(
                f"this connection was made for {sni!r}; open a new connection to reach {hostname[:100]!r}"))
    elif not _is_ip(hostname):
        return Verdict(MISDIRECTED, Misdirected(
            f"host {hostname[:100]!r} was not named in the TLS handshake (SNI); connect to it by name"))
    if not cfg.any_host and hostname not in cfg.served_hosts and not _is_ip(hostname):
        return Verdict(MISDIRECTED, Misdirected(f"this gateway serves no host {hostname[:100]!r}"))
    return ALLOWED


# -- cross-site ---------------------------------------------------------------------------------------


def addressed_origin(host: bytes | None, cfg: AccessConfig) -> bytes:
    """The origin a request addressed: ``https://`` and its Host, without the default port."""
    if host is None:
        return cfg.public_url.lower().encode()
    host = host.lower()
    if host.endswith(b":443"):
        host = host[:-4]
    return b"https://" + host


def is_cross_site(request: RequestView, *, addressed: bytes, own: frozenset[bytes],
                  listed: frozenset[bytes]) -> bool:
    """Whether ``request`` changes state (or opens a WebSocket, or is a CORS preflight) from a foreign origin."""
    if request.method in SAFE_METHODS and not request.upgrade and not (request.method == b"OPTIONS"
                                                                       and request.preflight):
        return False
    origin = request.origin.lower() if request.origin is not None else None
    if request.fetch_site is not None:
        foreign = request.fetch_site == b"cross-site"
    elif origin is not None:
        foreign = origin != addressed and origin not in own
    else:
        return False  # neither header: not a browser
    return foreign and origin not in listed


def _cross_site(request: RequestView) -> Verdict:
    shown = (request.origin or request.fetch_site or b"").decode("latin-1")[:100]
    return Verdict(CROSS_SITE, CrossSiteRefused(
        f"a request from another site ({shown!r}) may not change anything here: the device certificate is "
        "sent with every request a browser makes, so only this site's own pages may write"))


# -- the connection -----------------------------------------------------------------------------------


def certificate_expired(resolved: Resolved, *, now: float) -> bool:
    """True once the device certificate is past its ``notAfter``.

    TLS checks validity only during a full handshake: a keep-alive connection outlives the certificate, and a
    resumed TLS session (tickets, session cache) skips certificate verification altogether.
    """
    return resolved.device.not_after is not None and resolved.device.not_after <= now


def device_verdict(conn: ConnectionView, *, now: float, cfg: AccessConfig) -> Verdict:
    """Whether the connection presents the certificate of an active enrolled device (what login needs)."""
    if conn.cert_sha256 is None:
        return Verdict(NO_CERTIFICATE, NoClientCertificate(
            "connect with your IDWall device certificate, or enroll this device first", enroll_url=cfg.enroll_url))
    resolved = conn.resolved
    if resolved is None:
        return Verdict(NOT_ENROLLED, Forbidden(
            "this device certificate is not enrolled (or was replaced); enroll the device again",
            enroll_url=cfg.enroll_url))
    status = resolved.device.status
    if status == "revoked":
        return Verdict(INACTIVE, Forbidden(f"device {resolved.device.id} was revoked; enroll it again",
                                           enroll_url=cfg.enroll_url))
    if status != "active":
        return Verdict(INACTIVE, Forbidden(f"device {resolved.device.id} is {status.replace('_', ' ')}; "
                                           "wait for its approval", enroll_url=cfg.enroll_url))
    if certificate_expired(resolved, now=now):
        return Verdict(CERTIFICATE_EXPIRED, Forbidden(
            f"the certificate of device {resolved.device.id} has expired; enroll the device again",
            enroll_url=cfg.enroll_url))
    return ALLOWED


def last_seen(session: Session, seen: Mapping[str, float]) -> float:
    """The latest request time of ``session``: the node's in-memory one (``seen``) or the store's."""
    return max(seen.get(session.id, 0.0), session.last_seen)


def live_session(resolved: Resolved | None, *, now: float, seen: Mapping[str, float], idle_timeout: int) -> Session | None:
    """The resolved session if it is still within ``max_age`` and ``idle_timeout``."""
    if resolved is None or resolved.session is None or resolved.device.status != "active":
        return None
    if certificate_expired(resolved, now=now):
        return None
    session = resolved.session
    state = sessions.SessionState(session.id, session.auth_time, session.created_at, last_seen(session, seen),
                                  session.expires_at, session.revoked_at is not None)
    status = sessions.session_status(state, now=now, idle_timeout=idle_timeout)
    return session if status == sessions.ACTIVE else None


def session_verdict(conn: ConnectionView, *, now: float, cfg: AccessConfig, seen: Mapping[str, float]) -> Verdict:
    """Whether the connection carries a live session (logout, signed actions)."""
    verdict = device_verdict(conn, now=now, cfg=cfg)
    if verdict is not ALLOWED:
        return verdict
    if live_session(conn.resolved, now=now, seen=seen, idle_timeout=cfg.idle_timeout) is None:
        return Verdict(LOGIN, Unauthenticated("log in with your passkey first", login_url=cfg.login_url("/")))
    return ALLOWED


def _browser(request: RequestView) -> bool:
    return request.method in (b"GET", b"HEAD") and policy.wants_html(
        request.accept.decode("latin-1") if request.accept is not None else None)


def route_verdict(conn: ConnectionView, route: Route, request: RequestView, *, now: float, cfg: AccessConfig,
                  seen: Mapping[str, float]) -> Verdict:
    """May this request on this connection reach ``route``'s upstream?"""
    until = conn.grants.get(route.name)
    if until is not None and now < until and now - last_seen(conn.resolved.session, seen) < cfg.idle_timeout:  # type: ignore[union-attr]
        if request.method in SAFE_METHODS and not request.upgrade and not request.preflight:
            return ALLOWED
        if not is_cross_site(request, addressed=addressed_origin(request.host, cfg), own=cfg.own_origins,
                             listed=cfg.cross_site.get(route.name, frozenset())):
            return ALLOWED
        return _cross_site(request)
    if is_cross_site(request, addressed=addressed_origin(request.host, cfg), own=cfg.own_origins,
                     listed=cfg.cross_site.get(route.name, frozenset())):
        return _cross_site(request)
    target = request.target.decode("latin-1")
    verdict = device_verdict(conn, now=now, cfg=cfg)
    if verdict.kind == NO_CERTIFICATE and _browser(request):
        # a person in a browser: the login page explains the missing certificate (403) and links to enrollment
        return Verdict(NO_CERTIFICATE, verdict.error, policy.login_redirect(target))
    if verdict is not ALLOWED:
        return verdict
    resolved = conn.resolved
    assert resolved is not None
    session = live_session(resolved, now=now, seen=seen, idle_timeout=cfg.idle_timeout)
    identity = None
    if session is not None:
        identity = policy.Identity(resolved.user.id, resolved.user.groups, resolved.user.admin, session.auth_time)
    fresh_auth = incident_fresh_auth(route.fresh_auth, resolved.fresh_auth)
    decision = policy.decide(identity=identity, allow_users=route.allow_users, allow_groups=route.allow_groups,
                             fresh_auth=fresh_auth, now=now)
    if decision.outcome in (policy.LOGIN, policy.STEP_UP):
        login = decision.outcome == policy.LOGIN
        error = Unauthenticated("log in with your passkey" if login
                                else "this route needs a fresh passkey login (step-up)",
                                login_url=cfg.login_url(target), step_up=not login)
        return Verdict(LOGIN if login else STEP_UP, error,
                       policy.login_redirect(target) if _browser(request) else None)
    if decision.outcome == policy.DENY:
        return Verdict(DENY, Forbidden(f"user {resolved.user.id} is not allowed to use {route.name}"))
    assert session is not None
    limit = min(session.expires_at, resolved.device.not_after or NEVER)
    if fresh_auth is not None:
        limit = min(limit, session.auth_time + fresh_auth)
    conn.grants[route.name] = limit
    return ALLOWED


def incident_fresh_auth(route_fresh_auth: int | None, incident: int | None) -> int | None:
    """The step-up window a request meets: the route's, tightened by an active incident's ``raise_fresh_auth``."""
    windows = [w for w in (route_fresh_auth, incident) if w is not None]
    return min(windows) if windows else None


def admin_verdict(conn: ConnectionView, request: RequestView, *, now: float, cfg: AccessConfig,
                  seen: Mapping[str, float]) -> Verdict:
    """Whether the connection carries a fresh administrator's session, on the gateway's own address.

    ``/idwall/`` is served on every proxied host too: a page of a proxied app must not read the admin API
    same-origin with the administrator's ambient client certificate, so sessions count only on the gateway's
    own host names.
    """
    # the host as the authority check reads it: "[::1]" has no port to cut, and ".rsplit(':')" made it "[:"
    hostname = host_without_port(request.host.decode("latin-1")) if request.host else None
    if hostname is None or hostname.strip("[]") not in {h.strip("[]") for h in cfg.own_hosts}:
        return Verdict(DENY, Forbidden(f"the admin API answers administrators' sessions only at {cfg.public_url}"))
    verdict = device_verdict(conn, now=now, cfg=cfg)
    if verdict is not ALLOWED:
        return verdict
    resolved = conn.resolved
    assert resolved is not None
    session = live_session(resolved, now=now, seen=seen, idle_timeout=cfg.idle_timeout)
    login_url = cfg.login_url("/idwall/admin")
    if session is None:
        return Verdict(LOGIN, Unauthenticated("log in with your passkey", login_url=login_url, step_up=False),
                       policy.login_redirect("/idwall/admin") if _browser(request) else None)
    if not resolved.user.admin:
        return Verdict(DENY, Forbidden(f"user {resolved.user.id} is not an administrator"))
    if now - session.auth_time >= cfg.admin_fresh_auth:
        return Verdict(STEP_UP, Unauthenticated("the admin console needs a fresh passkey login (step-up)",
                                                login_url=login_url, step_up=True),
                       policy.login_redirect("/idwall/admin") if _browser(request) else None)
    return own_pages_verdict(request, cfg=cfg)


def own_pages_verdict(request: RequestView, *, cfg: AccessConfig) -> Verdict:
    """Whether a session-authorised write comes from the gateway's own pages (logout, login, signed actions).

    Stricter than for proxied routes: ``/idwall/`` answers on every proxied host too, so a page of a proxied
    app is ``same-origin`` with it there. Any ``Origin`` sent must be one of the gateway's own (public URL
    and WebAuthn origins), whatever Fetch Metadata says; ``Sec-Fetch-Site: cross-site`` is refused as well.
    """
    if request.method in SAFE_METHODS and not request.upgrade and not request.preflight:
        return ALLOWED
    origin = request.origin.lower() if request.origin is not None else None
    if request.fetch_site == b"cross-site" or (origin is not None and origin not in cfg.own_origins):
        return _cross_site(request)
    return ALLOWED
