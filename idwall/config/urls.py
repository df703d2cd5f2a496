"""Host names, URLs and origins as the config accepts them, and the normal form of an origin.

A host is a DNS name or an IP address, already lower case. A URL carries no ``user:password@``, white
space, control characters, port 0, query or fragment. An ``https://`` origin is normalised the way
browsers serialise it (lower case, default port 443 dropped, no trailing slash), because WebAuthn
compares origins byte for byte. Problems are ``ValueError`` phrased to follow the value they are about
(``'ftp://x' is not an https:// URL``), so the caller adds the key and the line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from .model import CONTROL_RE

__all__ = ["https_origin", "split_url", "valid_host"]

_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def valid_host(host: str) -> bool:
    """A DNS name (letters, digits, dashes) or an IP address; already lower case."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOSTNAME_RE.fullmatch(host) is not None


def split_url(text: str, schemes: Sequence[str]) -> tuple[SplitResult, str, int | None]:
    """Split a URL and return (parts, lower-case host, port); ValueError names the problem."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in schemes:
        raise ValueError("is not " + " or ".join(f"an {s}://" for s in schemes) + " URL")
    if any(c.isspace() for c in text) or CONTROL_RE.search(text):
        raise ValueError("contains white space or control characters")
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        raise ValueError("contains user:password@, which is not supported")
    host = (parts.hostname or "").rstrip(".")
    if not host or not valid_host(host):
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


def https_origin(text: str) -> str:
    """Normalise an ``https://host[:port]`` origin the way browsers serialise it."""
    parts, host, port = split_url(text, ("https",))
    if parts.path not in ("", "/"):
        raise ValueError(f"has a path ({parts.path}); an origin is scheme, host and port only")
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}" + (f":{port}" if port not in (None, 443) else "")
