"""TLS for the listener and towards upstreams.

Python's ``ssl`` defaults are not what a gateway wants, so the listener's context is built explicitly:
TLS 1.2 minimum, no renegotiation, forward-secret AEAD ciphers only, HTTP/1.1 by ALPN, client
certificates optional at the handshake (enrollment needs none) but accepted only from the device CA.
Revocation cannot be checked in the handshake (no verify callback in ``ssl``), so it is checked when the
connection is resolved against the store. The server name a client asked for (SNI) is kept on the TLS
object, because a request's ``Host`` must match it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from ..config import Config, UpstreamTLS

# ECDHE only (forward secrecy), AEAD only; TLS 1.3 suites are fixed by OpenSSL and all qualify.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_SNI = "_idwall_sni"


def _remember_server_name(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    setattr(ssl_object, _SNI, server_name.lower().rstrip(".") if server_name else None)


def server_name(ssl_object: Any) -> str | None:
    """The server name the client sent in its TLS handshake (lower case), or None when it sent none."""
    return getattr(ssl_object, _SNI, None)


def server_context(config: Config) -> ssl.SSLContext:
    """The listener's TLS context (see the module docstring for why each setting)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.load_cert_chain(config.tls.cert, config.tls.key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(config.device_ca.cert))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sni_callback = _remember_server_name
    return ctx


def upstream_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context for an https upstream: verify it (against ``ca`` or the system store), optionally mTLS."""
    if key is not None and cert is None:
        raise ValueError("upstream TLS: a client key was given without a client certificate")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


def route_context(tls: UpstreamTLS | None) -> ssl.SSLContext:
    """The context for one route's https upstream (system trust when the route names no CA)."""
    if tls is None:
        return upstream_context(None, None, None)
    return upstream_context(tls.ca, tls.cert, tls.key)
