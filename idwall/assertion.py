"""The signed identity assertion: claims, ES256 signing, the key set, JWKS and rotation.

The gateway adds one JWT per proxied request (DESIGN.md "The identity assertion").
Everything here is pure except the key files, which :class:`KeySet` reads and
:func:`rotate_keys` writes:

    certs/assertion-key.pem                  current key (PEM PKCS8, 0600); it signs
    certs/assertion-key.retired/             0700, one directory next to the key
        <kid>.pem                            previous keys (0600), published until their overlap ends
        retired.json                         {kid: retired_at}

The JWT is built by hand (header and payload in base64url, raw ``r || s``
signature, RFC 7515 §A.3 and RFC 7518 §3.4) because that saves about a third of
the CPU per request compared with python-jose; the tests check that PyJWT and
python-jose verify the result.
"""

from __future__ import annotations

import binascii
import contextlib
import fcntl
import functools
import itertools
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from idwall.encoding import b64url_encode, canonical_json, sha256
from idwall.errors import BadRequest, IDWallError
from idwall.pki import atomic_write, generate_p256_key, load_private_key, private_key_pem

ALGORITHM = "ES256"
RETIRED_INDEX = "retired.json"
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # b64url of a SHA-256 digest: also keeps kids out of path tricks
_DEFAULT_PORTS = {"https": 443, "http": 80}
# A WebSocket handshake is an HTTP request over the same scheme, so ws/wss bind like http/https.
_SCHEME_ALIASES = {"http": "http", "https": "https", "ws": "http", "wss": "https", "tcp": "tcp"}
_REG_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9_])?$")
_IPV6_RE = re.compile(r"^\[[0-9a-f:.]+\]$")
# Stateless, so one of each serves every signature instead of being rebuilt per request.
_ES256 = ec.ECDSA(hashes.SHA256())
_CLAIMS_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_B64URL = bytes.maketrans(b"+/", b"-_")


class AssertionKeyError(IDWallError):
    """An assertion key file or the retired-key index is missing, unreadable or inconsistent."""

    slug, title = "assertion-key", "Assertion key unavailable"


class InvalidRequestURL(BadRequest):
    """The scheme, Host header or URL cannot be turned into an ``htu``."""

    slug, title = "invalid-request-url", "Invalid request URL"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AssertionUser:
    """Who the assertion is about."""

    id: str
    email: str | None
    name: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class AssertionSession:
    """The session the request runs in; ``amr`` as RFC 8176 values (``hwk``, ``user``, ``mfa``)."""

    id: str
    auth_time: int
    amr: tuple[str, ...]


@dataclass(frozen=True)
class AssertionDevice:
    """The enrolled device whose certificate is on the connection."""

    id: str
    name: str
    credential_id: str  # base64url
    enrolled_at: int
    approved_by: str | None


def _field(obj: Any, name: str) -> Any:
    """Read ``name`` from a mapping or from an attribute, so store records fit too."""
    # A plain dict is the common case; the Mapping ABC check costs several times the lookup.
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)


def _b64url(data: bytes) -> bytes:
    """base64url without padding, as bytes (what :func:`b64url_encode` gives, without a str round trip)."""
    return binascii.b2a_base64(data, newline=False).translate(_B64URL).rstrip(b"=")


# --------------------------------------------------------------------------- htu


# Every request splits its Host header twice (canonical_htu, then normalize_htu in build_claims)
# and a gateway sees few distinct hosts; refused values raise and are not cached.
@functools.lru_cache(maxsize=256)
def _split_host(host_header: str) -> tuple[str, int | None]:
    """Split a Host header into a lowercase host and an optional port (RFC 9110 §7.2)."""
    text = host_header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidRequestURL(f"Host {host_header!r} opens an IPv6 literal it does not close")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidRequestURL(f"Host {host_header!r} has characters after the IPv6 literal")
        port_text = rest[1:] if rest else None
        if not _IPV6_RE.match(host):
            raise InvalidRequestURL(f"Host {host_header!r} is not a valid IPv6 literal")
    else:
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
        if not _REG_NAME_RE.match(host):
            raise InvalidRequestURL(
                f"Host {host_header!r} is not a host name or IPv4 address (letters, digits, '.', '-', '_')"
            )
    if port_text is None or port_text == "":
        return host, None  # RFC 3986 §6.2.3: an empty port is the default port
    if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) <= 65535:
        raise InvalidRequestURL(f"Host {host_header!r} has port {port_text!r}, expected 1-65535")
    return host, int(port_text)


def canonical_htu(scheme: str, host_header: str, path: str) -> str:
    """The ``htu`` for a request: ``scheme://host[:port]path`` as in DPoP (RFC 9449 §4.2).

    Scheme and host are lowercased, the default port (443 for https, 80 for http)
    is dropped, ``ws``/``wss`` count as ``http``/``https`` (the WebSocket handshake
    is an HTTP request), and ``tcp`` is ``tcp://host:port`` alone (a TCP route's upstream). ``path`` is kept exactly as given, percent-encoding
    included: it must be the raw path as forwarded to the upstream, which the
    upstream sees as its raw request target. Any query or fragment is cut off.

    >>> canonical_htu("HTTPS", "Wiki.Example:443", "/a%20b?x=1")
    'https://wiki.example/a%20b'
    """
    canon_scheme = _SCHEME_ALIASES.get(scheme.lower())
    if canon_scheme is None:
        raise InvalidRequestURL(f"scheme {scheme!r} is not one of http, https, ws, wss, tcp")
    host, port = _split_host(host_header)
    if canon_scheme == "tcp":  # a tunnel's upstream (DESIGN.md "TCP services"): host and port, no path
        if port is None:
            raise InvalidRequestURL("a tcp:// htu needs a port")
        return f"tcp://{host}:{port}"
    path = path.split("#", 1)[0].split("?", 1)[0]
    if not path:
        path = "/"
    if not path.startswith("/"):
        raise InvalidRequestURL(f"path {path[:64]!r} does not start with '/'")
    if port is None or port == _DEFAULT_PORTS[canon_scheme]:
        return f"{canon_scheme}://{host}{path}"
    return f"{canon_scheme}://{host}:{port}{path}"


def normalize_htu(url: str) -> str:
    """Normalise a full URL the way :func:`canonical_htu` builds one (idempotent)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidRequestURL("URL carries user information; an htu never does")
    if not parts.netloc:
        raise InvalidRequestURL(f"URL {url[:64]!r} has no host")
    return canonical_htu(parts.scheme, parts.netloc, parts.path)


# --------------------------------------------------------------------------- claims


def build_claims(
    *,
    iss: str,
    aud: str,
    user: AssertionUser | Mapping[str, Any],
    session: AssertionSession | Mapping[str, Any],
    device: AssertionDevice | Mapping[str, Any],
    cert_sha256: bytes,
    method: str | None,
    url: str | None,
    now: float,
    ttl: int,
    bind_request: bool,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of one assertion (DESIGN.md "The identity assertion").

    ``user``, ``session`` and ``device`` may be the dataclasses above, mappings, or
    any record with those attribute names. ``amr`` comes from the session. With
    ``bind_request`` the claims carry ``htm`` (upper-case ``method``) and ``htu``
    (``url`` normalised by :func:`normalize_htu`, so a full URL or an
    already-canonical one both work); without it, ``method`` and ``url`` are
    ignored and the token may be reused (see :class:`AssertionCache`).
    """
    if len(cert_sha256) != 32:
        raise ValueError(f"cert_sha256 must be a 32-byte SHA-256 digest, got {len(cert_sha256)} bytes")
    if ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl}")
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": _field(user, "id"),
        "email": _field(user, "email"),
        "name": _field(user, "name"),
        "groups": list(_field(user, "groups")),
        "sid": _field(session, "id"),
        "auth_time": int(_field(session, "auth_time")),
        "iat": iat,
        "exp": iat + int(ttl),
        "jti": jti if jti is not None else b64url_encode(os.urandom(16)),
        "amr": list(_field(session, "amr")),
        "cnf": {"x5t#S256": b64url_encode(cert_sha256)},
        "device": {
            "id": _field(device, "id"),
            "name": _field(device, "name"),
            "credential_id": _field(device, "credential_id"),
            "enrolled_at": int(_field(device, "enrolled_at")),
            "approved_by": _field(device, "approved_by"),
        },
    }
    if bind_request:
        if not method or not url:
            raise ValueError("bind_request needs the request's method and url")
        claims["htm"] = method.upper()
        claims["htu"] = normalize_htu(url)
    return claims


# --------------------------------------------------------------------------- JWK


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWKS entry for a P-256 key: kty, crv, x, y, kid (RFC 7638 thumbprint), use, alg."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise AssertionKeyError(f"assertion keys are P-256, got {public_key.curve.name}")
    numbers = public_key.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }
    jwk["kid"] = jwk_thumbprint(jwk)
    jwk["use"] = "sig"
    jwk["alg"] = ALGORITHM
    return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an EC JWK: b64url SHA-256 of the canonical {crv, kty, x, y}."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    return b64url_encode(sha256(canonical_json(required)))


def key_id(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The ``kid`` of a key (its RFC 7638 thumbprint)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public_jwk(public)["kid"]


# --------------------------------------------------------------------------- key files


def retired_dir(key_path: Path) -> Path:
    """Where the retired keys of ``key_path`` live: ``<stem>.retired`` next to it."""
    key_path = Path(key_path)
    return key_path.with_name(key_path.stem + ".retired")


def _load_p256(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = load_private_key(path)
    except OSError as exc:
        raise AssertionKeyError(f"cannot read assertion key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AssertionKeyError(str(exc)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AssertionKeyError(f"{path} holds a {type(key).__name__}, expected an EC P-256 key")
    return key


def _read_index(directory: Path) -> dict[str, float]:
    path = directory / RETIRED_INDEX
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AssertionKeyError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise AssertionKeyError(f"{path} must hold an object {{kid: retired_at}}, got {type(raw).__name__}")
    index: dict[str, float] = {}
    for kid, retired_at in raw.items():
        if not _KID_RE.match(kid):
            raise AssertionKeyError(f"{path}: {kid[:64]!r} is not a key thumbprint (43 base64url characters)")
        if isinstance(retired_at, bool) or not isinstance(retired_at, (int, float)):
            raise AssertionKeyError(f"{path}: retired_at of {kid} must be a number, got {retired_at!r}")
        index[kid] = float(retired_at)
    return index


@contextlib.contextmanager
def _rotation_lock(directory: Path) -> Iterator[None]:
    """Serialise concurrent ``idwall keys rotate`` runs on one key."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rotate_keys(key_path: Path, *, now: float) -> str:
    """Make a new P-256 key the current one and archive the old one; return the new kid.

    The old key is copied to ``<stem>.retired/<kid>.pem`` and recorded in
    ``retired.json`` before the new key replaces the current file, so a gateway
    reloading at any moment sees either the old current key or the new one with
    the old one retired, never a key set without the key that signed live tokens.
    Without a current key the new one is simply written (first start).
    """
    key_path = Path(key_path)
    directory = retired_dir(key_path)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    with _rotation_lock(directory):
        if key_path.exists():
            old = _load_p256(key_path)
            old_kid = key_id(old)
            atomic_write(directory / f"{old_kid}.pem", private_key_pem(old), 0o600)
            index = _read_index(directory)
            index.setdefault(old_kid, float(now))
            atomic_write(directory / RETIRED_INDEX, json.dumps(index, indent=2, sort_keys=True).encode(), 0o600)
        new = generate_p256_key()
        atomic_write(key_path, private_key_pem(new), 0o600)
    return key_id(new)


def _stat_tuple(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def key_files_fingerprint(key_path: Path) -> tuple[Any, ...]:
    """(mtime, inode, size) of the key file and of retired.json; changes whenever a rotation happens."""
    key_path = Path(key_path)
    return (_stat_tuple(key_path), _stat_tuple(retired_dir(key_path) / RETIRED_INDEX))


# --------------------------------------------------------------------------- key set


class KeySet:
    """The newest key signs; previous keys are published until their overlap ends.

    Load it once and poll :meth:`needs_reload` (a couple of ``stat`` calls) to pick
    up ``idwall keys rotate`` and the end of an overlap without a restart.
    """

    def __init__(
        self,
        *,
        key_path: Path,
        current: ec.EllipticCurvePrivateKey,
        retired: Mapping[str, tuple[ec.EllipticCurvePublicKey, float]],
        overlap: int,
        loaded_fingerprint: tuple[Any, ...],
    ) -> None:
        self._key_path = Path(key_path)
        self._key = current
        current_jwk = public_jwk(current.public_key())
        self.current_kid: str = current_jwk["kid"]
        self.loaded_fingerprint = loaded_fingerprint
        header = {"alg": ALGORITHM, "kid": self.current_kid, "typ": "JWT"}
        self._header_bytes = (b64url_encode(json.dumps(header, separators=(",", ":")).encode()) + ".").encode("ascii")
        entries = [current_jwk]
        ends: list[float] = []
        for kid, (public, retired_at) in sorted(retired.items(), key=lambda item: -item[1][1]):
            if kid != self.current_kid:
                entries.append(public_jwk(public))
                ends.append(retired_at + overlap)
        self._jwks = entries
        self.next_expiry: float | None = min(ends) if ends else None

    @classmethod
    def load(cls, key_path: Path, *, now: float, overlap: int) -> KeySet:
        """Read the current key and the retired keys whose ``retired_at + overlap > now``."""
        key_path = Path(key_path)
        fingerprint = key_files_fingerprint(key_path)
        current = _load_p256(key_path)
        directory = retired_dir(key_path)
        retired: dict[str, tuple[ec.EllipticCurvePublicKey, float]] = {}
        for kid, retired_at in _read_index(directory).items():
            if retired_at + overlap <= now:
                continue
            public = _load_p256(directory / f"{kid}.pem").public_key()
            if key_id(public) != kid:
                raise AssertionKeyError(f"{directory / (kid + '.pem')} holds key {key_id(public)}, not {kid}")
            retired[kid] = (public, retired_at)
        return cls(key_path=key_path, current=current, retired=retired, overlap=overlap,
                   loaded_fingerprint=fingerprint)

    def fingerprint(self) -> tuple[Any, ...]:
        """The key files' fingerprint on disk now; compare with :attr:`loaded_fingerprint`."""
        return key_files_fingerprint(self._key_path)

    def needs_reload(self, *, now: float) -> bool:
        """True after a rotation on disk or once a published retired key's overlap has ended."""
        if self.next_expiry is not None and now >= self.next_expiry:
            return True
        return self.fingerprint() != self.loaded_fingerprint

    @property
    def kids(self) -> tuple[str, ...]:
        """Published key ids, current first."""
        return tuple(entry["kid"] for entry in self._jwks)

    def jwks(self) -> dict[str, Any]:
        """The JWK Set served at ``/.well-known/idwall/jwks.json`` (a fresh copy)."""
        return {"keys": [dict(entry) for entry in self._jwks]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An ES256 JWS compact serialization of ``claims`` with the current key."""
        return self.sign_payload(_CLAIMS_JSON.encode(claims).encode("utf-8")).decode("ascii")

    def sign_payload(self, payload: bytes) -> bytes:
        """An ES256 JWS compact serialization of ``payload`` (the claims' JSON) with the current key, as bytes."""
        signing_input = self._header_bytes + _b64url(payload)
        r, s = decode_dss_signature(self._key.sign(signing_input, _ES256))
        return signing_input + b"." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


# --------------------------------------------------------------------------- per connection

# jti: a random prefix per process and a counter, unique without a system call per request
_JTI_PREFIX = _b64url(os.urandom(12))
_JTI_COUNTER = itertools.count()


class PreparedClaims:
    """The claims of one connection on one route, serialised once (DESIGN.md "The identity assertion").

    Everything about the user, device, session and audience is fixed while the connection stays bound to
    them; per request only ``htm``, ``htu``, ``iat``, ``exp`` and ``jti`` are added, so a request costs one
    small string build and the signature. The connection is rebound (and this object dropped) whenever
    anything about the claims changes.
    """

    __slots__ = ("_prefix", "_ttl", "bind_request", "session_id", "aud")

    def __init__(self, *, iss: str, aud: str, user: AssertionUser | Mapping[str, Any],
                 session: AssertionSession | Mapping[str, Any], device: AssertionDevice | Mapping[str, Any],
                 cert_sha256: bytes, ttl: int, bind_request: bool) -> None:
        static = build_claims(iss=iss, aud=aud, user=user, session=session, device=device, cert_sha256=cert_sha256,
                              method=None, url=None, now=0, ttl=ttl, bind_request=False, jti="")
        for per_request in ("iat", "exp", "jti"):
            del static[per_request]
        self._prefix = _CLAIMS_JSON.encode(static).encode("utf-8")[:-1]
        self._ttl = int(ttl)
        self.bind_request = bind_request
        self.session_id = str(static["sid"])
        self.aud = aud

    def payload(self, *, method: bytes, htu: bytes, now: float) -> bytes:
        """The claims' JSON for one request; ``htu`` from :func:`canonical_htu` (JSON-safe by construction)."""
        iat = int(now)
        jti = b"%s%x" % (_JTI_PREFIX, next(_JTI_COUNTER))
        if self.bind_request:
            return self._prefix + b',"iat":%d,"exp":%d,"jti":"%s","htm":"%s","htu":"%s"}' % (
                iat, iat + self._ttl, jti, method, htu)
        return self._prefix + b',"iat":%d,"exp":%d,"jti":"%s"}' % (iat, iat + self._ttl, jti)

    def token(self, keys: KeySet, cache: AssertionCache, *, method: bytes, htu: bytes, now: float) -> bytes:
        """The assertion for one request, ready for a header: freshly signed, or on an unbound route the
        session's cached one."""
        if self.bind_request:
            return keys.sign_payload(self.payload(method=method, htu=htu, now=now))
        kid = keys.current_kid
        cached: Any = cache.get(self.session_id, self.aud, kid=kid, now=now)
        if cached is None:
            cached = keys.sign_payload(self.payload(method=method, htu=htu, now=now))
            cache.put(self.session_id, self.aud, cached, kid=kid, iat=int(now), ttl=self._ttl)
        return cached


# --------------------------------------------------------------------------- cache


class AssertionCache:
    """One token per (session, audience) for ``bind_request: false`` routes.

    A token is reused until ``iat + ttl/2``, so the upstream always gets at least
    half the lifetime. Entries are also keyed by the signing ``kid`` so a rotation
    takes effect at once. The oldest entries go first when ``max_entries`` is hit.
    Call :meth:`drop_session` when a session's identity changes or it is killed.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[Any, float]] = OrderedDict()

    def get(self, session_id: str, aud: str, *, kid: str, now: float) -> Any:
        """The cached token, or None when there is none or it is past half its life."""
        key = (session_id, aud, kid)
        entry = self._entries.get(key)
        if entry is None:
            return None
        token, reuse_until = entry
        if now >= reuse_until:
            del self._entries[key]
            return None
        return token

    def put(self, session_id: str, aud: str, token: str | bytes, *, kid: str, iat: float, ttl: int) -> None:
        """Remember ``token`` (signed with ``kid`` at ``iat``) for reuse until ``iat + ttl/2``."""
        key = (session_id, aud, kid)
        self._entries.pop(key, None)
        self._entries[key] = (token, iat + ttl / 2)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop_session(self, session_id: str) -> int:
        """Forget every token of ``session_id``; returns how many were dropped."""
        return self.drop_sessions((session_id,))

    def drop_sessions(self, session_ids: Iterable[str]) -> int:
        """Forget every token of any of ``session_ids`` in one pass over the cache (a kill of thousands of
        sessions must not walk it once per session); returns how many were dropped."""
        wanted = set(session_ids)
        if not wanted or not self._entries:
            return 0
        doomed = [key for key in self._entries if key[0] in wanted]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)


def sign_cached(
    cache: AssertionCache, keys: KeySet, claims: Mapping[str, Any], *, now: float
) -> str:
    """Sign ``claims`` (built with ``bind_request=False``) or reuse the cached token for its sid and aud."""
    if "htm" in claims or "htu" in claims:
        raise ValueError("request-bound claims must never be cached")
    session_id, aud = str(claims["sid"]), str(claims["aud"])
    token = cache.get(session_id, aud, kid=keys.current_kid, now=now)
    if token is None:
        token = keys.sign(claims)
        cache.put(session_id, aud, token, kid=keys.current_kid, iat=claims["iat"], ttl=claims["exp"] - claims["iat"])
    return token


__all__: Sequence[str] = (
    "ALGORITHM",
    "AssertionCache",
    "AssertionDevice",
    "AssertionKeyError",
    "AssertionSession",
    "AssertionUser",
    "InvalidRequestURL",
    "KeySet",
    "PreparedClaims",
    "build_claims",
    "canonical_htu",
    "jwk_thumbprint",
    "key_files_fingerprint",
    "key_id",
    "normalize_htu",
    "public_jwk",
    "retired_dir",
    "rotate_keys",
    "sign_cached",
)
