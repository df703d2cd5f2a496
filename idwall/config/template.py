"""The annotated ``idwall.yaml`` that ``idwall init`` writes: :func:`default_config_text` and its template.

Every section has a comment above it. The caller's values are checked first (an https origin, a port,
an administrator id without control characters), and strings are written as JSON-quoted YAML scalars,
so any value survives the round trip.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

from .model import CONTROL_RE
from .urls import https_origin

__all__ = ["default_config_text"]


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
    origin = https_origin(public_url)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
    if not admin or CONTROL_RE.search(admin):
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
# A TCP service (docs/tcp.md): devices reach it with `idwall connect NAME`, through a tunnel on their mTLS connection.
#  - name: db
#    upstream: tcp://10.0.0.5:5432
#    allow: {{groups: [dba]}}
#    proxy_protocol: v2           # PROXY v2 header with the signed assertion (TLV 0xE0), for `idwall relay`
"""
