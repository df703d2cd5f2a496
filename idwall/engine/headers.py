"""Which header fields the gateway reads, owns or drops (DESIGN.md "Headers the gateway owns").

Names are compared in lower case. A field whose name holds anything but letters, digits and ``-`` is
dropped from requests, as nginx does by default (``ignore_invalid_headers``): CGI-style servers read
``X_IDWall_User`` and ``X.IDWall.User`` as ``HTTP_X_IDWALL_USER``, the same variable as the header the
gateway owns, so such spellings are how a forged identity would slip past a filter that only knows
the dashed form.
"""

from __future__ import annotations

#: RFC 9110 §7.6.1, plus Keep-Alive and Proxy-Connection (RFC 9112 §9.3, §C.2.2)
HOP_BY_HOP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})

#: who-is-the-client and which-URL-was-asked fields that frameworks trust; the gateway sets its own
FORWARDING: frozenset[bytes] = frozenset({
    b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-forwarded-prefix", b"x-forwarded-server", b"x-forwarded-ssl", b"x-forwarded-scheme",
    b"x-forwarded-uri", b"x-forwarded-client-cert", b"x-real-ip", b"x-client-ip", b"true-client-ip",
    b"x-cluster-client-ip", b"x-original-url", b"x-rewrite-url", b"x-original-uri",
})

#: every name in this namespace is the gateway's (the assertion, plain claim headers, the internal hop)
IDENTITY_PREFIX = b"x-idwall-"

#: characters a header name may hold to be forwarded (a subset of RFC 9110 tchar)
NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"

# What the request parser does with a field, by lower-case name. Fields not listed are forwarded.
DROP, HOST, LENGTH, CODING, CONNECTION, EXPECT, ORIGIN, FETCH_SITE, ACCEPT, WS_KEY, WS_VERSION, \
    PREFLIGHT, USER_AGENT, UPGRADE, WS_ACCEPT = range(15)

REQUEST_ACTIONS: dict[bytes, int] = {
    **{name: DROP for name in HOP_BY_HOP | FORWARDING},
    b"host": HOST,
    b"content-length": LENGTH,
    b"transfer-encoding": CODING,
    b"connection": CONNECTION,
    # a relic of HTTP/1.0 proxies (RFC 9112 §C.2.2) whose list is honoured like Connection's
    b"proxy-connection": CONNECTION,
    b"upgrade": UPGRADE,
    b"expect": EXPECT,
    b"origin": ORIGIN,
    b"sec-fetch-site": FETCH_SITE,
    b"accept": ACCEPT,
    b"sec-websocket-key": WS_KEY,
    b"sec-websocket-version": WS_VERSION,
    b"access-control-request-method": PREFLIGHT,
    b"user-agent": USER_AGENT,
}

#: what the response parser does with a field, by lower-case name (identity spellings are checked apart)
RESPONSE_ACTIONS: dict[bytes, int] = {
    **{name: DROP for name in HOP_BY_HOP},
    b"content-length": LENGTH,
    b"transfer-encoding": CODING,
    b"connection": CONNECTION,
    b"upgrade": UPGRADE,
    b"sec-websocket-accept": WS_ACCEPT,
}

#: how a name in the gateway's namespace can start, in any spelling (a cheap test before the full one)
IDENTITY_STARTS = frozenset({b"x-", b"x_", b"x."})

#: a Connection header may not make the gateway drop the fields that routed and framed the request
NOT_CONNECTION_LISTABLE: frozenset[bytes] = frozenset({b"host", b"content-length", b"transfer-encoding"})


def is_identity(lower_name: bytes) -> bool:
    """Whether a lower-case field name is in the gateway's namespace in any spelling (``_`` or ``.`` for ``-``)."""
    return lower_name.replace(b"_", b"-").replace(b".", b"-").startswith(IDENTITY_PREFIX)
