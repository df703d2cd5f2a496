"""Request-target normalisation and route matching for the proxy (pure, no I/O).

The gateway decides policy on exactly the path it sends upstream, so ambiguity
is refused rather than guessed (DESIGN.md "Request"). :func:`normalise_path`
returns the RFC 3986 §6.2.2 normal form of the request path:

* percent-escapes of unreserved characters are decoded (``/%61dmin`` is
  ``/admin``), every other escape is kept with upper-case hex digits;
* raw characters that RFC 3986 does not allow in a path (``"<>`{}|^[]``) are
  percent-encoded, the form every upstream decodes them from;
* runs of ``/`` are merged, as nginx does (``merge_slashes on``): otherwise
  ``//admin`` would escape an ``/admin`` route on an upstream that merges them;
* anything an upstream could read two ways is refused with :class:`AmbiguousPath`:
  encoded ``/`` or ``\\``, any ``\\``, ``.``/``..`` segments in any spelling
  (``%2e``, ``..;param`` as Tomcat reads it, full-width dots after NFKC), control
  characters raw or encoded, invalid or double (``%25xx``) escapes, raw
  non-ASCII, escapes that do not decode to UTF-8 (overlong ``%C0%AE``), and a
  path that is empty or does not start with ``/``.

Route matching (:func:`match_route`, :class:`RouteTable`) works on segments with
their ``;params`` stripped, so ``/admin;jsessionid=x`` is still under ``/admin`` for
upstreams (Java servlet containers) that ignore path parameters. Header hygiene is
the engine's (:mod:`idwall.engine.h1`, tables in :mod:`idwall.engine.headers`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from idwall.errors import BadRequest

__all__ = [
    "RESERVED_PREFIXES",
    "AmbiguousPath",
    "RouteLike",
    "RouteTable",
    "host_without_port",
    "is_reserved",
    "match_route",
    "normalise_path",
]


class AmbiguousPath(BadRequest):
    """The request path could be read two ways (or is not a path); it is refused, not guessed."""

    slug, title = "ambiguous-path", "Ambiguous request path"


# --- paths -------------------------------------------------------------------

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# pchar minus pct-encoded (RFC 3986 §3.3), plus the segment separator.
_RAW_OK = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
# Printable ASCII that browsers send raw but RFC 3986 wants encoded; "#" and "\"
# are refused instead (a fragment never belongs in a request target; "\" is a
# separator on some upstreams).
_RAW_ENCODE = frozenset('"<>`{}|^[]')
# A path made only of _RAW_OK characters (no escapes) is already in normal form but for "//" runs
# and dot segments: the common case, checked with one regex instead of a loop per character.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z")
_SLASH_RUN = re.compile("/{2,}")
_DOUBLE = re.compile("%25[0-9A-Fa-f]{2}")


def _refuse(reason: str, raw_path: str) -> AmbiguousPath:
    shown = raw_path if len(raw_path) <= 200 else raw_path[:200] + "..."
    return AmbiguousPath(f"request path refused: {reason}", log_detail=f"path={shown!r}")


def _check_segments(segments: Iterable[str], raw_path: str, how: str = "") -> None:
    for segment in segments:
        # Tomcat and other servlet containers drop ";params" before resolving dots.
        name = segment.split(";", 1)[0]
        if name in (".", ".."):
            raise _refuse(f"dot segment {segment!r}{how} (RFC 3986 §5.2.4)", raw_path)


def normalise_path(raw_path: str) -> str:
    """The normal form of a raw request path (query removed), used both to match and upstream.

    Raises :class:`AmbiguousPath` (400) with the reason when the path is refused;
    the module docstring lists what is normalised and what is refused.

    >>> normalise_path("/wiki//%7Ealice/a%2cb")
    '/wiki/~alice/a%2Cb'
    """
    if not raw_path:
        raise _refuse("empty path; expected one starting with '/'", raw_path)
    if raw_path[0] != "/":
        raise _refuse(f"expected a path starting with '/', got {raw_path[:1]!r}", raw_path)
    if _PLAIN_PATH.match(raw_path):
        path = _SLASH_RUN.sub("/", raw_path) if "//" in raw_path else raw_path
        if "." in path:
            _check_segments(path.split("/"), raw_path)
        return path
    out: list[str] = []
    has_escape = False
    i, n = 0, len(raw_path)
    while i < n:
        char = raw_path[i]
        if char == "%":
            hexdigits = raw_path[i + 1 : i + 3]
            if len(hexdigits) < 2 or not set(hexdigits) <= _HEX:
                raise _refuse(f"invalid percent-escape {raw_path[i : i + 3]!r} (RFC 3986 §2.1)", raw_path)
            byte = int(hexdigits, 16)
            if byte < 0x20 or byte == 0x7F:
                raise _refuse(f"encoded control character %{hexdigits.upper()}", raw_path)
            if byte == 0x2F:
                raise _refuse("encoded slash %2F", raw_path)
            if byte == 0x5C:
                raise _refuse("encoded backslash %5C", raw_path)
            if byte == 0x25 and len(raw_path[i + 3 : i + 5]) == 2 and set(raw_path[i + 3 : i + 5]) <= _HEX:
                raise _refuse(f"double percent-encoding %25{raw_path[i + 3 : i + 5]}", raw_path)
            decoded = chr(byte)
            if decoded in _UNRESERVED:
                out.append(decoded)
            else:
                out.append("%" + hexdigits.upper())
                has_escape = True
            i += 3
            continue
        code = ord(char)
        if code < 0x20 or code == 0x7F:
            raise _refuse(f"control character {char!r}", raw_path)
        if code > 0x7E:
            raise _refuse(f"raw non-ASCII character {char!r}; expected percent-encoded UTF-8", raw_path)
        if char == "\\":
            raise _refuse("backslash", raw_path)
        if char == " ":
            raise _refuse("raw space", raw_path)
        if char == "#":
            raise _refuse("fragment '#' in the request target (RFC 9112 §3.2)", raw_path)
        if char in _RAW_ENCODE:
            out.append(f"%{code:02X}")
        else:
            # Only _RAW_OK characters are left in printable ASCII.
            out.append(char)
        i += 1
    path = _SLASH_RUN.sub("/", "".join(out))
    if "%25" in path and (double := _DOUBLE.search(path)):
        # "%25%41a" holds no "%25xx" itself, but decoding its unreserved escape makes one ("%25Aa")
        raise _refuse(f"double percent-encoding {double.group(0)} once unreserved escapes are decoded", raw_path)
    _check_segments(path.split("/"), raw_path)
    if has_escape:
        _check_decoded(path, raw_path)
    return path


def _check_decoded(path: str, raw_path: str) -> None:
    """Refuse escapes that are not UTF-8, or that a Unicode-normalising upstream reads as separators."""
    raw = bytearray()
    i = 0
    while i < len(path):
        if path[i] == "%":
            raw.append(int(path[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(path[i]))
            i += 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("percent-escapes that are not valid UTF-8 (RFC 3987 §3.2)", raw_path) from None
    folded = unicodedata.normalize("NFKC", text)
    if folded != text:
        if "\\" in folded or folded.count("/") != text.count("/"):
            raise _refuse("characters that fold to a path separator under NFKC", raw_path)
        _check_segments(folded.split("/"), raw_path, " after Unicode NFKC folding")


# --- routes ------------------------------------------------------------------

RESERVED_PREFIXES: tuple[str, ...] = ("/idwall", "/.well-known/idwall")


class RouteLike(Protocol):
    """What :func:`match_route` reads from a route (``idwall.config.Route`` has it)."""

    @property
    def host(self) -> str | None: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=RouteLike)


def _match_view(path: str) -> str:
    """The path with ``;params`` stripped from each segment, as servlet containers route it."""
    if ";" not in path:
        return path
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def _under(view: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or view == prefix or view.startswith(prefix + "/")


def is_reserved(path: str) -> bool:
    """True for the gateway's own namespaces, which are never proxied (any case, any ``;params``)."""
    view = _match_view(path).lower()
    if not view.startswith(RESERVED_PREFIXES):
        return False  # _under() needs the prefix at the start: most paths end here
    return any(_under(view, prefix) for prefix in RESERVED_PREFIXES)


def host_without_port(host: str | None) -> str | None:
    """The host name of a ``Host`` value: port removed, lower case, one trailing dot removed.

    >>> host_without_port("Wiki.Example.:8443"), host_without_port("[::1]:443")
    ('wiki.example', '[::1]')
    """
    if host is None:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host[:-1] if host.endswith(".") else host


class RouteTable(Generic[R]):
    """Routes prepared once for :meth:`match`: longest prefix first, host-specific before host-less, then
    configuration order (the ranking :func:`match_route` documents)."""

    def __init__(self, routes: Sequence[R]) -> None:
        ranked = []
        for index, route in enumerate(routes):
            prefix = route.path.rstrip("/")
            host = route.host.lower() if route.host is not None else None
            ranked.append((-len(prefix), 0 if host is not None else 1, index, prefix, host, route))
        ranked.sort(key=lambda entry: entry[:3])
        self._entries = [(prefix, prefix + "/", host, route) for _, _, _, prefix, host, route in ranked]

    def match(self, hostname: str | None, path: str) -> R | None:
        """The route for a lower-case host name (no port) and a normalised, non-reserved path, or None."""
        view = _match_view(path) if ";" in path else path
        for prefix, under, host, route in self._entries:
            if host is not None and host != hostname:
                continue
            if not prefix or view == prefix or view.startswith(under):
                return route
        return None


def match_route(routes: Sequence[R], host: str | None, path: str) -> R | None:
    """The route for ``host`` and the normalised ``path``, or None.

    Prefixes match on segment boundaries (``/app`` matches ``/app`` and ``/app/x``,
    not ``/apple``; a trailing ``/`` on the prefix is ignored). The longest prefix
    wins; for equal prefixes a host-specific route beats a host-less one, and the
    first in configuration order wins a full tie. Reserved paths never match.
    """
    if is_reserved(path):
        return None
    return RouteTable(routes).match(host_without_port(host), path)
