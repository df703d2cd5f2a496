"""idwall.access: one decision per request, on hand-built records, with time as a parameter.

The connection is the real :class:`idwall.connections.Conn` (made by a :class:`Registry`, without a
transport: the decisions never touch it), so rebinding and invalidation are the registry's own. The
configuration is validated from a mapping the way ``idwall.yaml`` is. The cross-site and host vector files
run here through the parser and the decision, the pure counterpart of tests/e2e/test_http_vectors_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from idwall import access
from idwall.access import (
    ALLOWED,
    AccessConfig,
    CrossSiteRefused,
    Misdirected,
    RequestFacts,
    RequestView,
    Verdict,
    addressed_origin,
    admin_verdict,
    authority_verdict,
    device_verdict,
    is_cross_site,
    own_pages_verdict,
    route_verdict,
    session_verdict,
)
from idwall.config import Config, Route
from idwall.connections import Conn, Registry
from idwall.errors import Forbidden, NoClientCertificate, Unauthenticated
from idwall.httpnorm import host_without_port
from idwall.model import Resolved
from tests.helpers.engine import vector_head
from tests.helpers.http_wire import vector_params
from tests.helpers.records import CERT, NOW, device, gateway_config, resolved, session, user

UPSTREAM = "http://127.0.0.1:9001"
ROUTES = [
    {"name": "app", "match": {"path": "/"}, "upstream": UPSTREAM},
    {"name": "ws", "match": {"path": "/ws"}, "upstream": UPSTREAM, "websockets": True},
    {"name": "portal", "match": {"path": "/portal"}, "upstream": UPSTREAM, "websockets": True,
     "cross_site": {"origins": ["https://portal.example"]}},
    {"name": "other", "match": {"host": "other.localhost", "path": "/"}, "upstream": UPSTREAM},
    {"name": "ops", "match": {"path": "/ops"}, "upstream": UPSTREAM, "allow": {"groups": ["ops"]}},
    {"name": "mine", "match": {"path": "/mine"}, "upstream": UPSTREAM, "allow": {"users": ["alice"]}},
    {"name": "fresh", "match": {"path": "/fresh"}, "upstream": UPSTREAM, "fresh_auth": "5m"},
]
IDLE, FRESH, ADMIN_FRESH = 1200, 300, 600
HOST = b"localhost:8443"
OWN = b"https://localhost:8443"
HTML = b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return gateway_config(tmp_path_factory.mktemp("access"), routes=ROUTES,
                          session={"max_age": "12h", "idle_timeout": "20m"}, admin={"fresh_auth": "10m"})


@pytest.fixture(scope="module")
def cfg(config: Config) -> AccessConfig:
    return AccessConfig.from_config(config)


@pytest.fixture(scope="module")
def routes(config: Config) -> dict[str, Route]:
    return {r.name: r for r in config.routes}


def connect(found: Resolved | None = None, *, cert: bytes | None = CERT, registry: Registry | None = None,
            with_session: bool = True) -> Conn:
    """A registered connection bound to ``found`` (alice's device with a live session unless told otherwise)."""
    registry = registry or Registry()
    conn = registry.add(None, cert_sha256=cert, remote="127.0.0.1", sni="localhost", now=NOW - 100)
    if cert is not None:
        registry.bind(conn, found if found is not None else resolved(with_session=with_session))
    return conn


def facts(method: bytes = b"GET", target: bytes = b"/x", *, host: bytes | None = HOST, origin: bytes | None = None,
          fetch_site: bytes | None = None, accept: bytes | None = None, preflight: bool = False,
          upgrade: bytes | None = None) -> RequestFacts:
    """A request to the gateway's own host (unless ``host`` says otherwise)."""
    return RequestFacts(method, target, host, origin, fetch_site, accept, preflight, upgrade)


def decide(conn: Conn, route: Route, request: RequestView, cfg: AccessConfig, *, now: float = NOW,
           seen: dict[str, float] | None = None) -> Verdict:
    return route_verdict(conn, route, request, now=now, cfg=cfg, seen=seen or {})


def problem(verdict: Verdict) -> dict[str, Any]:
    """The problem+json body of a refusing verdict."""
    assert verdict.error is not None
    return verdict.error.problem()


def test_access_config_from_config(cfg: AccessConfig) -> None:
    assert cfg.public_url == "https://localhost:8443" and cfg.own_origins == {OWN}
    assert cfg.own_hosts == {"localhost"} and cfg.served_hosts == {"localhost", "other.localhost"} and cfg.any_host
    assert (cfg.idle_timeout, cfg.admin_fresh_auth) == (IDLE, ADMIN_FRESH)
    assert cfg.enroll_url == "https://localhost:8443/idwall/enroll"
    assert cfg.cross_site["portal"] == {b"https://portal.example"} and cfg.cross_site["app"] == frozenset()
    assert cfg.login_url("/x?y=1") == "https://localhost:8443/idwall/login?next=/x%3Fy%3D1"


def test_the_registry_connection_is_what_the_decision_reads() -> None:
    conn = connect()
    assert isinstance(conn, Conn) and conn.cert_sha256 == CERT and conn.resolved is not None and conn.grants == {}


# --------------------------------------------------------------------------- every verdict kind


def test_allow(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    verdict = decide(connect(), routes["app"], facts(), cfg)
    assert verdict is ALLOWED and verdict.status == 200 and verdict.error is None


@pytest.mark.parametrize(("method", "accept", "location"), [
    (b"GET", None, None),
    (b"GET", b"*/*", None),                       # curl: an API client (policy.wants_html)
    (b"GET", HTML, "/idwall/login?next=/x"),      # a person in a browser: the login page explains
    (b"HEAD", HTML, "/idwall/login?next=/x"),
    (b"POST", HTML, None),                        # a form post is not redirected: it would lose its body
])
def test_no_certificate(cfg: AccessConfig, routes: dict[str, Route], method: bytes, accept: bytes | None,
                        location: str | None) -> None:
    """DESIGN "HTTP surface": without a client certificate at all, 403 with a pointer to enrollment."""
    verdict = decide(connect(cert=None), routes["app"], facts(method, accept=accept), cfg)
    assert verdict.kind == access.NO_CERTIFICATE and verdict.status == 403 and verdict.location == location
    assert isinstance(verdict.error, NoClientCertificate)
    assert problem(verdict)["enroll_url"] == "https://localhost:8443/idwall/enroll"


def test_not_enrolled(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """A certificate the store maps to no device (removed, or replaced by a renewal)."""
    registry = Registry()
    conn = registry.add(None, cert_sha256=CERT, remote="127.0.0.1", now=NOW)
    registry.bind(conn, None)
    verdict = decide(conn, routes["app"], facts(accept=HTML), cfg)
    assert verdict.kind == access.NOT_ENROLLED and verdict.status == 403 and verdict.location is None
    assert isinstance(verdict.error, Forbidden) and "enroll_url" in problem(verdict)


@pytest.mark.parametrize(("status", "says"), [("revoked", "was revoked"), ("pending_approval", "pending approval")])
def test_inactive(cfg: AccessConfig, routes: dict[str, Route], status: str, says: str) -> None:
    verdict = decide(connect(resolved(device_=device(status=status))), routes["app"], facts(), cfg)
    assert verdict.kind == access.INACTIVE and verdict.status == 403 and says in problem(verdict)["detail"]


@pytest.mark.parametrize(("not_after", "expired"), [(NOW - 1, True), (NOW, True), (NOW + 1, False), (None, False)])
def test_certificate_expired(cfg: AccessConfig, routes: dict[str, Route], not_after: float | None,
                             expired: bool) -> None:
    """TLS checks validity only at a full handshake: a keep-alive connection outlives its certificate."""
    conn = connect(resolved(device_=device(not_after=not_after)))
    verdict = decide(conn, routes["app"], facts(), cfg)
    assert (verdict.kind == access.CERTIFICATE_EXPIRED and verdict.status == 403) is expired
    assert (verdict is ALLOWED) is not expired
    assert conn.resolved is not None and access.certificate_expired(conn.resolved, now=NOW) is expired


@pytest.mark.parametrize(("method", "accept", "location"), [
    (b"GET", None, None),
    (b"GET", HTML, "/idwall/login?next=/x%3Fq%3D1"),
    (b"POST", HTML, None),
])
def test_login(cfg: AccessConfig, routes: dict[str, Route], method: bytes, accept: bytes | None,
               location: str | None) -> None:
    """No live session: browsers go to the login page, other clients get 401 with a login_url."""
    verdict = decide(connect(with_session=False), routes["app"], facts(method, b"/x?q=1", accept=accept), cfg)
    assert verdict.kind == access.LOGIN and verdict.status == 401 and verdict.location == location
    assert isinstance(verdict.error, Unauthenticated)
    assert problem(verdict)["login_url"] == "https://localhost:8443/idwall/login?next=/x%3Fq%3D1"
    assert problem(verdict)["step_up"] is False


@pytest.mark.parametrize(("age", "kind"), [(FRESH, access.STEP_UP), (FRESH + 100, access.STEP_UP),
                                           (FRESH - 1, access.ALLOW)])
def test_step_up(cfg: AccessConfig, routes: dict[str, Route], age: int, kind: str) -> None:
    """A route's fresh_auth: an assertion exactly fresh_auth old is no longer fresh (sessions.py: half-open)."""
    conn = connect(resolved(session_=session(auth_time=NOW - age)))
    verdict = decide(conn, routes["fresh"], facts(b"GET", b"/fresh/x", accept=HTML), cfg)
    assert verdict.kind == kind
    if kind == access.STEP_UP:
        assert verdict.status == 401 and verdict.location == "/idwall/login?next=/fresh/x"
        assert problem(verdict)["step_up"] is True


@pytest.mark.parametrize(("route", "incident", "age", "kind"), [
    ("app", 120, 119, access.ALLOW),        # a route without fresh_auth gets the incident's
    ("app", 120, 120, access.STEP_UP),
    ("fresh", 120, 200, access.STEP_UP),    # the incident's window is tighter than the route's 5m
    ("fresh", 900, FRESH, access.STEP_UP),  # a looser incident window never loosens the route's
    ("fresh", 900, FRESH - 1, access.ALLOW),
])
def test_an_incident_raises_fresh_auth_on_every_route(cfg: AccessConfig, routes: dict[str, Route], route: str,
                                                      incident: int, age: int, kind: str) -> None:
    found = replace(resolved(session_=session(auth_time=NOW - age)), fresh_auth=incident)
    verdict = decide(connect(found), routes[route], facts(b"GET", b"/x"), cfg)
    assert verdict.kind == kind
    if kind == access.STEP_UP:
        assert problem(verdict)["step_up"] is True


@pytest.mark.parametrize(("route", "who", "groups", "admin", "kind"), [
    ("ops", "alice", (), False, access.DENY),
    ("ops", "alice", ("eng",), False, access.DENY),
    ("ops", "alice", ("eng", "ops"), False, access.ALLOW),
    ("ops", "root", (), True, access.DENY),       # policy.py: admin status grants nothing on proxied routes
    ("mine", "alice", (), False, access.ALLOW),
    ("mine", "bob", ("ops",), False, access.DENY),
    ("app", "bob", (), False, access.ALLOW),      # no allow list: any user with a session
])
def test_allow_lists(cfg: AccessConfig, routes: dict[str, Route], route: str, who: str, groups: tuple[str, ...],
                     admin: bool, kind: str) -> None:
    conn = connect(resolved(user_=user(who, groups=groups, admin=admin), session_=session(user_id=who)))
    verdict = decide(conn, routes[route], facts(b"GET", b"/" + route.encode()), cfg)
    assert verdict.kind == kind and verdict.status == (403 if kind == access.DENY else 200)


def test_deny_comes_before_step_up(cfg: AccessConfig, config: Config) -> None:
    """policy.decide: nobody is asked for a passkey only to be refused afterwards."""
    strict = replace(next(r for r in config.routes if r.name == "ops"), fresh_auth=FRESH)
    conn = connect(resolved(session_=session(auth_time=NOW - 10 * FRESH)))
    assert decide(conn, strict, facts(b"GET", b"/ops"), cfg).kind == access.DENY


# --------------------------------------------------------------------------- time: idle, expiry


@pytest.mark.parametrize(("last_seen", "kind"), [(NOW - IDLE, access.LOGIN), (NOW - IDLE - 1, access.LOGIN),
                                                 (NOW - IDLE + 1, access.ALLOW)])
def test_idle_timeout(cfg: AccessConfig, routes: dict[str, Route], last_seen: float, kind: str) -> None:
    conn = connect(resolved(session_=session(last_seen=last_seen)))
    assert decide(conn, routes["app"], facts(), cfg).kind == kind


def test_the_nodes_last_seen_counts_as_much_as_the_stores(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """The node keeps request times in memory (``seen``); the store's value may be older."""
    conn = connect(resolved(session_=session(last_seen=NOW - 2 * IDLE)))
    assert decide(conn, routes["app"], facts(), cfg, seen={"ses-1": NOW - 5}) is ALLOWED
    assert decide(connect(resolved(session_=session(last_seen=NOW - 2 * IDLE))), routes["app"], facts(), cfg,
                  seen={"another-session": NOW}).kind == access.LOGIN


@pytest.mark.parametrize(("changes", "kind"), [
    ({"expires_at": NOW}, access.LOGIN),            # session.max_age: expires_at == now is expired
    ({"expires_at": NOW - 1}, access.LOGIN),
    ({"expires_at": NOW + 1}, access.ALLOW),
    ({"revoked_at": NOW - 1}, access.LOGIN),        # a kill (or logout) ended it
])
def test_session_expiry_and_revocation(cfg: AccessConfig, routes: dict[str, Route], changes: dict[str, float],
                                       kind: str) -> None:
    conn = connect(resolved(session_=replace(session(), **changes)))
    assert decide(conn, routes["app"], facts(), cfg).kind == kind


# --------------------------------------------------------------------------- the remembered grant


@pytest.mark.parametrize(("route", "found", "until", "then"), [
    pytest.param("app", resolved(session_=session(expires_at=NOW + 50)), NOW + 50, access.LOGIN,
                 id="session-expiry-first"),
    pytest.param("app", resolved(device_=device(not_after=NOW + 40)), NOW + 40, access.CERTIFICATE_EXPIRED,
                 id="certificate-expiry-first"),
    pytest.param("fresh", resolved(session_=session(auth_time=NOW - FRESH + 30)), NOW + 30, access.STEP_UP,
                 id="fresh-auth-window-first"),
    pytest.param("app", resolved(device_=device(not_after=None), session_=session(expires_at=NOW + 70)), NOW + 70,
                 access.LOGIN, id="no-certificate-expiry"),
])
def test_a_grant_lasts_exactly_until_the_earliest_limit(cfg: AccessConfig, routes: dict[str, Route], route: str,
                                                        found: Resolved, until: float, then: str) -> None:
    """The connection remembers an allowed route until the first moment the answer could change."""
    conn = connect(found)
    target = b"/fresh" if route == "fresh" else b"/x"
    seen = {"ses-1": NOW}
    assert decide(conn, routes[route], facts(b"GET", target), cfg, seen=seen) is ALLOWED
    assert conn.grants == {route: until}
    assert decide(conn, routes[route], facts(b"GET", target), cfg, now=until - 0.001, seen=seen) is ALLOWED
    assert decide(conn, routes[route], facts(b"GET", target), cfg, now=until, seen=seen).kind == then


def test_a_grant_is_used_without_deciding_again_until_the_connection_is_rebound(
        cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """The grant is why the decision is cheap; rebinding (anything that changes who is on the connection)
    is what makes it safe: it clears every grant."""
    registry = Registry()
    conn = connect(registry=registry)
    assert decide(conn, routes["app"], facts(), cfg) is ALLOWED and "app" in conn.grants
    revoked = resolved(device_=device(status="revoked"))
    conn.resolved = revoked  # changed behind the registry's back: the grant still stands
    assert decide(conn, routes["app"], facts(), cfg, now=NOW + 1) is ALLOWED
    registry.bind(conn, revoked)
    assert conn.grants == {} and decide(conn, routes["app"], facts(), cfg, now=NOW + 1).kind == access.INACTIVE


def test_invalidation_clears_the_grants(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """Registry.invalidate (login, logout, revocation elsewhere): resolve again, decide again."""
    registry = Registry()
    conn = connect(registry=registry)
    decide(conn, routes["app"], facts(), cfg)
    decide(conn, routes["fresh"], facts(b"GET", b"/fresh"), cfg)
    assert set(conn.grants) == {"app", "fresh"}
    epoch = conn.epoch
    registry.invalidate([conn])
    assert conn.grants == {} and conn.stale and conn.epoch == epoch + 1


def test_a_grant_does_not_outlast_the_idle_timeout(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """The idle timeout is checked at every request, grant or not."""
    conn = connect(resolved(session_=session(last_seen=NOW - 10)))
    assert decide(conn, routes["app"], facts(), cfg) is ALLOWED and conn.grants["app"] > NOW + IDLE
    assert decide(conn, routes["app"], facts(), cfg, now=NOW - 10 + IDLE - 1) is ALLOWED
    assert decide(conn, routes["app"], facts(), cfg, now=NOW - 10 + IDLE).kind == access.LOGIN
    assert decide(conn, routes["app"], facts(), cfg, now=NOW - 10 + IDLE, seen={"ses-1": NOW + 60}) is ALLOWED


def test_a_grant_is_per_route(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    conn = connect()
    assert decide(conn, routes["app"], facts(), cfg) is ALLOWED
    assert decide(conn, routes["ops"], facts(b"GET", b"/ops"), cfg).kind == access.DENY and "ops" not in conn.grants


# --------------------------------------------------------------------------- the other callers


def test_session_verdict(cfg: AccessConfig) -> None:
    """Logout and signed actions: the device checks, then a live session."""
    assert session_verdict(connect(), now=NOW, cfg=cfg, seen={}) is ALLOWED
    verdict = session_verdict(connect(with_session=False), now=NOW, cfg=cfg, seen={})
    assert verdict.kind == access.LOGIN and problem(verdict)["login_url"].endswith("?next=/")
    assert session_verdict(connect(cert=None), now=NOW, cfg=cfg, seen={}).kind == access.NO_CERTIFICATE
    assert session_verdict(connect(resolved(device_=device(not_after=NOW))), now=NOW, cfg=cfg,
                           seen={}).kind == access.CERTIFICATE_EXPIRED


def test_device_verdict_needs_no_session(cfg: AccessConfig) -> None:
    """Login itself: an active enrolled device is enough."""
    assert device_verdict(connect(with_session=False), now=NOW, cfg=cfg) is ALLOWED


def admin(*, auth_age: float = 60, is_admin: bool = True) -> Conn:
    return connect(resolved(user_=user("root", admin=is_admin), session_=session(user_id="root",
                                                                                 auth_time=NOW - auth_age)))


@pytest.mark.parametrize(("host", "allowed"), [
    (HOST, True), (b"LOCALHOST:8443", True), (b"localhost", True),
    (b"other.localhost:8443", False),  # /idwall/ answers on proxied hosts too: sessions count only on its own
    (b"evil.example", False), (None, False),
])
def test_admin_verdict_only_on_the_gateways_own_host(cfg: AccessConfig, host: bytes | None, allowed: bool) -> None:
    verdict = admin_verdict(admin(), facts(b"GET", b"/idwall/api/admin/sessions", host=host), now=NOW, cfg=cfg,
                            seen={})
    assert (verdict is ALLOWED) is allowed
    if not allowed:
        assert verdict.kind == access.DENY and verdict.status == 403


def test_admin_verdict_on_an_ip_literal_gateway(tmp_path: Path) -> None:
    """A bracketed IPv6 Host without a port is the host itself, not ``[:`` (RFC 3986 §3.2.2)."""
    cfg = AccessConfig.from_config(gateway_config(tmp_path, public_url="https://[::1]"))
    for host in (b"[::1]", b"[::1]:443"):
        assert admin_verdict(admin(), facts(host=host), now=NOW, cfg=cfg, seen={}) is ALLOWED, host


@pytest.mark.parametrize(("conn", "accept", "kind", "location"), [
    pytest.param(lambda: connect(cert=None), None, access.NO_CERTIFICATE, None, id="no-certificate"),
    pytest.param(lambda: connect(with_session=False), None, access.LOGIN, None, id="login-api"),
    pytest.param(lambda: connect(with_session=False), HTML, access.LOGIN, "/idwall/login?next=/idwall/admin",
                 id="login-browser"),
    pytest.param(lambda: admin(is_admin=False), HTML, access.DENY, None, id="not-an-administrator"),
    pytest.param(lambda: admin(auth_age=ADMIN_FRESH), HTML, access.STEP_UP, "/idwall/login?next=/idwall/admin",
                 id="stale-assertion"),
    pytest.param(lambda: admin(auth_age=ADMIN_FRESH), None, access.STEP_UP, None, id="stale-assertion-api"),
    pytest.param(lambda: admin(auth_age=ADMIN_FRESH - 1), HTML, access.ALLOW, None, id="fresh"),
])
def test_admin_verdict(cfg: AccessConfig, conn: Callable[[], Conn], accept: bytes | None, kind: str,
                       location: str | None) -> None:
    """admin.fresh_auth: the console needs a fresh passkey assertion; admin status, not a route's allow list."""
    verdict = admin_verdict(conn(), facts(b"GET", b"/idwall/admin", accept=accept), now=NOW, cfg=cfg, seen={})
    assert (verdict.kind, verdict.location) == (kind, location)
    if kind == access.STEP_UP:
        assert verdict.status == 401 and problem(verdict)["step_up"] is True


@pytest.mark.parametrize(("origin", "fetch_site", "kind"), [
    (OWN, None, access.ALLOW), (OWN, b"same-origin", access.ALLOW), (None, None, access.ALLOW),
    (b"https://evil.example", None, access.CROSS_SITE), (b"null", None, access.CROSS_SITE),
    (None, b"cross-site", access.CROSS_SITE),
])
def test_admin_writes_come_from_the_gateways_own_pages(cfg: AccessConfig, origin: bytes | None,
                                                       fetch_site: bytes | None, kind: str) -> None:
    verdict = admin_verdict(admin(), facts(b"POST", b"/idwall/api/admin/kill", origin=origin, fetch_site=fetch_site),
                            now=NOW, cfg=cfg, seen={})
    assert verdict.kind == kind


@pytest.mark.parametrize(("request_", "refused"), [
    (facts(b"POST", b"/idwall/api/logout", origin=OWN), False),
    (facts(b"POST", b"/idwall/api/logout", origin=b"https://evil.example"), True),
    (facts(b"POST", b"/idwall/api/logout", origin=b"null"), True),
    (facts(b"POST", b"/idwall/api/logout", fetch_site=b"cross-site"), True),
    (facts(b"POST", b"/idwall/api/logout"), False),                          # not a browser
    (facts(b"GET", b"/idwall/login", origin=b"https://evil.example"), False),  # reads change nothing
    (facts(b"OPTIONS", b"/idwall/api/logout", origin=b"https://evil.example", preflight=True), True),
    (facts(b"GET", b"/idwall/api/x", origin=b"https://evil.example", upgrade=b"websocket"), True),
    # stricter than proxied routes: the addressed origin of a proxied host is not one of the gateway's own
    (facts(b"POST", b"/idwall/api/logout", host=b"other.localhost:8443", origin=b"https://other.localhost:8443"),
     True),
    # a proxied app's page is same-origin with /idwall/ on its own host, and a sibling is same-site: the
    # Origin decides, not Fetch Metadata
    (facts(b"POST", b"/idwall/api/logout", host=b"other.localhost:8443", origin=b"https://other.localhost:8443",
           fetch_site=b"same-origin"), True),
    (facts(b"POST", b"/idwall/api/logout", origin=b"https://sibling.localhost", fetch_site=b"same-site"), True),
    (facts(b"POST", b"/idwall/api/logout", origin=OWN, fetch_site=b"same-origin"), False),
])
def test_own_pages_verdict(cfg: AccessConfig, request_: RequestFacts, refused: bool) -> None:
    verdict = own_pages_verdict(request_, cfg=cfg)
    assert (verdict.kind == access.CROSS_SITE) is refused and (verdict is ALLOWED) is not refused
    if refused:
        assert isinstance(verdict.error, CrossSiteRefused) and problem(verdict)["type"].endswith(
            "/cross-site-refused")


# --------------------------------------------------------------------------- the authority


@pytest.fixture(scope="module")
def named_only(tmp_path_factory: pytest.TempPathFactory) -> AccessConfig:
    """A gateway whose every route names its host: it serves no other."""
    return AccessConfig.from_config(gateway_config(tmp_path_factory.mktemp("named"), routes=[
        {"name": "wiki", "match": {"host": "wiki.localhost", "path": "/"}, "upstream": UPSTREAM}]))


@pytest.mark.parametrize(("hostname", "sni", "any_route", "allowed"), [
    ("localhost", "localhost", True, True),
    ("other.localhost", "localhost", True, False),   # RFC 9110 §15.5.20: not the connection's server name
    ("localhost", "other.localhost", True, False),
    ("localhost", None, True, False),                # a name not sent in the handshake (RFC 6066 §3)
    ("127.0.0.1", None, True, True),                 # an IP literal: no SNI to send
    ("[::1]", None, True, True),
    ("127.0.0.1", "localhost", True, False),
    (None, "localhost", True, True),                 # HTTP/1.0 without Host: the server name stands for it
    (None, None, True, True),
    ("evil.example", "evil.example", True, True),    # a route without host serves any host
    ("evil.example", "evil.example", False, False),  # else: no host this gateway serves
    ("wiki.localhost", "wiki.localhost", False, True),
    ("localhost", "localhost", False, True),         # its own host always
    ("10.0.0.1", None, False, True),
])
def test_authority_verdict(cfg: AccessConfig, named_only: AccessConfig, hostname: str | None, sni: str | None,
                           any_route: bool, allowed: bool) -> None:
    verdict = authority_verdict(hostname, sni=sni, cfg=cfg if any_route else named_only)
    assert (verdict is ALLOWED) is allowed
    if not allowed:
        assert verdict.kind == access.MISDIRECTED and verdict.status == 421 and isinstance(verdict.error, Misdirected)


@pytest.mark.parametrize("row", vector_params("host.jsonl"))
def test_host_vector(cfg: AccessConfig, row: dict[str, object]) -> None:
    """host.jsonl through the parser, then the authority decision the engine makes with its hostname."""
    head = vector_head(row)
    hostname = host_without_port(head.host.decode("latin-1")) if head.host is not None else None
    verdict = authority_verdict(hostname, sni=str(row.get("sni", "localhost")), cfg=cfg)
    status = row["status"]
    if status == 200:
        assert verdict is ALLOWED, row["id"]
    else:
        assert verdict.status in (status if isinstance(status, list) else [status]), (row["id"], verdict)


# --------------------------------------------------------------------------- cross-site

#: each row names its route as the wire runner (tests/e2e/test_http_vectors_e2e.py) configures it, and so does ROUTES
CROSS_SITE_ROWS = vector_params("cross_site.jsonl")


def _cross_site_case(row: dict[str, object], routes: dict[str, Route]) -> tuple[Route, RequestView]:
    head = vector_head(row)
    route = routes[str(row["route"])]
    assert head.target.startswith(route.path.encode()), (row["id"], head.target, route.path)
    return route, head


@pytest.mark.parametrize("remembered", [False, True], ids=["decided", "remembered"])
@pytest.mark.parametrize("row", CROSS_SITE_ROWS)
def test_cross_site_vector(cfg: AccessConfig, routes: dict[str, Route], row: dict[str, object],
                           remembered: bool) -> None:
    """Every row of cross_site.jsonl, on a fresh connection and on one that already holds a grant for the
    route (the decision's fast path has its own cross-site check)."""
    route, head = _cross_site_case(row, routes)
    conn = connect()
    if remembered:
        assert decide(conn, route, facts(b"GET", route.path.encode()), cfg) is ALLOWED and route.name in conn.grants
    verdict = decide(conn, route, head, cfg)
    if row["expect"] == "refused":
        assert verdict.kind == access.CROSS_SITE and verdict.status == 403, row["id"]
        assert problem(verdict)["type"].endswith("/cross-site-refused")
    else:
        assert verdict is ALLOWED, (row["id"], verdict)


@pytest.mark.parametrize("row", CROSS_SITE_ROWS)
def test_is_cross_site_vector(cfg: AccessConfig, routes: dict[str, Route], row: dict[str, object]) -> None:
    """The rule alone, on the origin the row's request addressed and its route's list."""
    route, head = _cross_site_case(row, routes)
    foreign = is_cross_site(head, addressed=addressed_origin(head.host, cfg), own=cfg.own_origins,
                            listed=cfg.cross_site[route.name])
    assert foreign is (row["expect"] == "refused"), row["id"]


def test_a_cross_site_request_is_refused_before_the_device_is_looked_at(
        cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """The refusal does not depend on who is on the connection: no certificate, no session, same answer."""
    post = facts(b"POST", b"/x", origin=b"https://evil.example")
    for conn in (connect(cert=None), connect(with_session=False), connect()):
        assert decide(conn, routes["app"], post, cfg).kind == access.CROSS_SITE


@pytest.mark.parametrize(("route", "origin", "fetch_site", "refused"), [
    ("portal", b"https://portal.example", None, False),   # a listed origin: the upstream answers CORS itself
    ("portal", b"https://portal.example", b"cross-site", False),
    ("portal", b"https://evil.example", None, True),
    ("app", b"https://portal.example", None, True),       # listed on another route only
    ("app", OWN, None, False),                            # same-origin preflight (a custom header, say)
    ("app", None, b"cross-site", True),                   # Fetch Metadata without an Origin to match a list
    ("portal", None, b"cross-site", True),
    ("app", None, None, False),                           # neither header: not a browser
    ("app", None, b"same-site", False),
])
def test_cors_preflights(cfg: AccessConfig, routes: dict[str, Route], route: str, origin: bytes | None,
                         fetch_site: bytes | None, refused: bool) -> None:
    """DESIGN "Cross-site requests": CORS preflights reach the upstream only for listed origins (Fetch §4.8)."""
    preflight = facts(b"OPTIONS", routes[route].path.encode() + b"/x", origin=origin, fetch_site=fetch_site,
                      preflight=True)
    assert (decide(connect(), routes[route], preflight, cfg).kind == access.CROSS_SITE) is refused


def test_an_options_request_that_is_no_preflight_is_safe(cfg: AccessConfig, routes: dict[str, Route]) -> None:
    """Without Access-Control-Request-Method an OPTIONS is a plain safe request (RFC 9110 §9.3.7)."""
    options = facts(b"OPTIONS", b"/x", origin=b"https://evil.example", fetch_site=b"cross-site")
    assert decide(connect(), routes["app"], options, cfg) is ALLOWED


@pytest.mark.parametrize(("host", "addressed"), [
    (b"localhost:8443", b"https://localhost:8443"), (b"LocalHost:8443", b"https://localhost:8443"),
    (b"app.example:443", b"https://app.example"),   # RFC 6454 §6.2: the default port is not serialised
    (b"app.example", b"https://app.example"), (None, b"https://localhost:8443"),
])
def test_addressed_origin(cfg: AccessConfig, host: bytes | None, addressed: bytes) -> None:
    assert addressed_origin(host, cfg) == addressed


# --------------------------------------------------------------------------- where browsers are sent


@pytest.mark.parametrize(("target", "location"), [
    (b"/app/page?q=1", "/idwall/login?next=/app/page%3Fq%3D1"),
    (b"//evil.example/", "/idwall/login?next=/"),                  # policy.safe_next: no other host
    (b"/%2F%2Fevil.example", "/idwall/login?next=/"),
    (b"/%0D%0ASet-Cookie:%20x=1", "/idwall/login?next=/"),         # no header through the Location
    (b"/" + b"a" * 3000, "/idwall/login?next=/"),
])
def test_the_login_location_is_always_a_safe_same_origin_path(cfg: AccessConfig, routes: dict[str, Route],
                                                              target: bytes, location: str) -> None:
    verdict = decide(connect(with_session=False), routes["app"], facts(b"GET", target, accept=HTML), cfg)
    assert verdict.location == location and "\r" not in verdict.location and "\n" not in verdict.location


# --- certificate expiry on the wire (security review) ---------------------------------------------


async def test_device_certificate_that_expired_since_the_handshake_is_not_served(gateway) -> None:
    """TLS checks validity only at the handshake (and not at all on resumption): the gateway must too."""
    device = await gateway.device("alice", cert_ttl=60)
    gw = gateway.running.node
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 200
        # the session (1 h) outlives the certificate (60 s); the same keep-alive connection asks again
        gw.clock = lambda: time.time() + 120
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 403, await resp.text()
            body = await resp.json()
    assert "expired" in body["detail"]
    assert "/idwall/enroll" in body["enroll_url"]


async def test_login_begin_refuses_a_device_whose_certificate_has_expired(gateway) -> None:
    device = await gateway.device("olga", with_session=False, cert_ttl=60)
    gw = gateway.running.node
    async with gateway.session(device) as client:
        gw.clock = lambda: time.time() + 120
        try:
            async with client.post(gateway.url + "/idwall/api/login/begin", json={}) as resp:
                assert resp.status == 403
                body = await resp.json()
        finally:
            gw.clock = time.time
    assert "expired" in body["detail"] and body["enroll_url"].endswith("/idwall/enroll")
