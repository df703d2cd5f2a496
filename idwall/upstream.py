"""Verify IDWall identity assertions in a backend service.

A service behind the gateway reads ``X-IDWall-Assertion`` and checks every claim
(DESIGN.md "The identity assertion")::

    keys = JWKSCache("https://idwall.example/.well-known/idwall/jwks.json", ssl_context=ctx)
    verifier = AssertionVerifier(keys=keys, issuer="https://idwall.example", audience="wiki")
    identity = await identity_from_request(verifier, request)   # aiohttp
    identity = await verifier.verify(token, method="GET", url="https://wiki.example/page")

Every refusal is an :class:`InvalidAssertion` (401), one subclass per reason, and a
JWKS that cannot be fetched when it must be is :class:`JWKSUnavailable` (503, fail
closed); the tree is drawn with all the others in :mod:`idwall.errors`.

Request binding: when the token carries ``htm``/``htu`` they must match the
request. A token without them comes from a ``bind_request: false`` route (one
token reused per session and route for up to ttl/2) and is accepted even when
the caller passes ``method`` and ``url``: the route's operator chose that trade.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idwall.assertion import ALGORITHM, InvalidRequestURL, canonical_htu, normalize_htu
from idwall.encoding import DuplicateKey, EncodingError, b64url_decode, unique_members
from idwall.errors import Unauthenticated, Unavailable

if TYPE_CHECKING:
    from aiohttp import web

MAX_TOKEN_LENGTH = 16 * 1024
MAX_JWKS_BYTES = 256 * 1024
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "exp", "iat", "jti", "cnf")


class InvalidAssertion(Unauthenticated):
    """Root of every reason an assertion is refused."""

    slug, title = "invalid-assertion", "Invalid identity assertion"


class MissingAssertion(InvalidAssertion):
    """The request carries no assertion header."""


class MalformedAssertion(InvalidAssertion):
    """The token is not a well-formed JWS compact serialization of JSON objects."""


class UnsupportedAlgorithm(InvalidAssertion):
    """The header names an algorithm other than ES256, or the key is not P-256."""


class UnknownKey(InvalidAssertion):
    """No published key has the token's kid."""


class BadSignature(InvalidAssertion):
    """The signature does not verify."""


class WrongIssuer(InvalidAssertion):
    """``iss`` is not the expected gateway."""


class WrongAudience(InvalidAssertion):
    """``aud`` does not name this service."""


class AssertionExpired(InvalidAssertion):
    """``exp`` has passed."""


class NotYetValid(InvalidAssertion):
    """``iat`` (or ``nbf``) lies in the future."""


class RequestMismatch(InvalidAssertion):
    """``htm``/``htu`` were issued for another request."""


class MissingClaim(InvalidAssertion):
    """A required claim is missing or mistyped."""


class JWKSUnavailable(Unavailable):
    """The JWKS could not be fetched when the cache needed it."""

    slug, title = "jwks-unavailable", "Identity keys unavailable"


# --------------------------------------------------------------------------- JWKS


@dataclass(frozen=True)
class _Refused:
    """A JWKS entry we will not verify with, and why (reported when a token names it)."""

    reason: str


def _parse_jwk(entry: Mapping[str, Any]) -> ec.EllipticCurvePublicKey | _Refused:
    if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
        return _Refused(f"key is kty {entry.get('kty')!r} crv {entry.get('crv')!r}, expected EC P-256")
    if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
        return _Refused(f"key is use {entry.get('use')!r} alg {entry.get('alg')!r}, expected sig ES256")
    try:
        x, y = b64url_decode(entry["x"]), b64url_decode(entry["y"])
    except (KeyError, EncodingError) as exc:
        return _Refused(f"key coordinates are not base64url: {exc}")
    if len(x) != 32 or len(y) != 32:
        return _Refused(f"key coordinates are {len(x)} and {len(y)} bytes, expected 32 each")
    try:
        numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
        return numbers.public_key()
    except ValueError:
        return _Refused("key point is not on P-256")


def _parse_jwks(document: Any) -> dict[str, ec.EllipticCurvePublicKey | _Refused]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('JWKS must be an object with a "keys" list')
    keys: dict[str, ec.EllipticCurvePublicKey | _Refused] = {}
    for entry in document["keys"]:
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            keys[entry["kid"]] = _parse_jwk(entry)
    return keys


class JWKSCache:
    """The gateway's published keys, fetched over HTTPS and cached.

    An unknown kid triggers a refresh (a rotation just happened), at most once
    per ``min_refresh_interval`` seconds so a flood of made-up kids cannot turn
    the service into a JWKS fetcher. The set is refreshed when older than
    ``max_age``; if that refresh fails the cache fails closed
    (:class:`JWKSUnavailable`) rather than trusting keys that may have been
    withdrawn. Concurrent misses share one fetch. ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        jwks_url: str | None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        min_refresh_interval: float = 30,
        max_age: float = 3600,
        timeout: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        self._ssl = ssl_context
        self._min_refresh = min_refresh_interval
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, ec.EllipticCurvePublicKey | _Refused] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> JWKSCache:
        """A cache over a fixed JWKS document that never fetches (offline use, tests)."""
        cache = cls(None)
        cache._keys = _parse_jwks(dict(jwks))
        return cache

    @property
    def kids(self) -> tuple[str, ...]:
        """The kids currently cached."""
        return tuple(self._keys)

    async def get_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The P-256 public key for ``kid``; raises UnknownKey, UnsupportedAlgorithm or JWKSUnavailable."""
        if self.jwks_url is not None:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at > self._max_age:
                await self._refresh(stale_ok=False)
            elif kid not in self._keys:
                await self._refresh(stale_ok=True, wanted=kid)
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"no published key has kid {kid[:64]!r}")
        if isinstance(key, _Refused):
            raise UnsupportedAlgorithm(f"kid {kid[:64]!r}: {key.reason}")
        return key

    async def _refresh(self, *, stale_ok: bool, wanted: str | None = None) -> None:
        async with self._lock:
            now = self._clock()
            if wanted is not None and wanted in self._keys:
                return  # another task fetched it while we waited
            if not stale_ok and self._loaded_at is not None and now - self._loaded_at <= self._max_age:
                return
            if self._last_attempt is not None and now - self._last_attempt < self._min_refresh:
                if stale_ok:
                    return  # rate limited: the caller reports the kid as unknown
                raise JWKSUnavailable(f"the JWKS at {self.jwks_url} is older than {self._max_age}s and "
                                      f"the last refresh failed; retrying after {self._min_refresh}s")
            self._last_attempt = now
            try:
                document = await self._fetch()
                keys = _parse_jwks(document)
            except JWKSUnavailable:
                raise
            except ValueError as exc:
                raise JWKSUnavailable(f"the JWKS at {self.jwks_url} is invalid: {exc}") from None
            self._keys = keys
            self._loaded_at = self._clock()

    async def _fetch(self) -> Any:
        import aiohttp  # client I/O only here, so the pure parts import without aiohttp

        assert self.jwks_url is not None
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(self.jwks_url, ssl=self._ssl if self._ssl is not None else True,
                                       allow_redirects=False) as response:
                    if response.status != 200:
                        raise JWKSUnavailable(f"GET {self.jwks_url} answered {response.status}, expected 200")
                    body = await response.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise JWKSUnavailable(f"cannot fetch {self.jwks_url}: {type(exc).__name__}: {exc}") from None
        if len(body) > MAX_JWKS_BYTES:
            raise JWKSUnavailable(f"the JWKS at {self.jwks_url} is over {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise JWKSUnavailable(f"the JWKS at {self.jwks_url} is not JSON: {exc}") from None


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifiedIdentity:
    """The identity an assertion vouches for, after every check passed."""

    sub: str
    email: str | None
    name: str | None
    groups: tuple[str, ...]
    sid: str
    device: dict[str, Any]
    amr: tuple[str, ...]
    auth_time: int | None
    cnf_x5t: str
    claims: dict[str, Any]


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part), object_pairs_hook=unique_members)
    except DuplicateKey as exc:
        raise MalformedAssertion(f"JSON object repeats member {exc.key[:64]!r}") from None
    except (EncodingError, ValueError, RecursionError) as exc:
        raise MalformedAssertion(f"{what} is not base64url JSON: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise MalformedAssertion(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_list(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MissingClaim(f"claim {name!r} must be a list of strings")
    return tuple(value)


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise MissingClaim(f"claim {name!r} must be a string or null, got {type(value).__name__}")
    return value


class AssertionVerifier:
    """Checks an assertion the way DESIGN.md promises: ES256 only, every claim, the request binding."""

    def __init__(self, *, keys: JWKSCache, issuer: str, audience: str, leeway: float = 5) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    async def verify(
        self, token: str, *, method: str | None, url: str | None, now: float | None = None
    ) -> VerifiedIdentity:
        """Verify ``token`` for the request ``method url`` at ``now`` (default: the wall clock).

        ``url`` is the URL the client addressed; query and fragment are ignored,
        scheme and host are normalised like :func:`idwall.assertion.canonical_htu`.
        """
        if now is None:
            now = time.time()
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedAssertion(f"assertion must be a string of at most {MAX_TOKEN_LENGTH} characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise MalformedAssertion(f"assertion has {len(parts)} dot-separated parts, expected 3 (JWS compact)")
        header = _json_part(parts[0], "header")
        # The algorithm decides everything after it: check it before touching a key.
        if header.get("alg") != ALGORITHM:
            raise UnsupportedAlgorithm(f"header alg is {str(header.get('alg'))[:32]!r}, expected {ALGORITHM!r}")
        if "crit" in header:
            raise MalformedAssertion("header has crit extensions; none are understood (RFC 7515 §4.1.11)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise MalformedAssertion("header has no kid")
        key = await self.keys.get_key(kid)
        try:
            raw_signature = b64url_decode(parts[2])
        except EncodingError:
            raise BadSignature("signature is not base64url") from None
        if len(raw_signature) != 64:
            raise BadSignature(f"ES256 signature is {len(raw_signature)} bytes, expected 64 (r || s)")
        der = encode_dss_signature(int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big"))
        try:
            key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, UnicodeEncodeError):
            raise BadSignature(f"signature does not verify under key {kid}") from None
        claims = _json_part(parts[1], "payload")
        return self._check_claims(claims, method=method, url=url, now=now)

    def _check_claims(
        self, claims: dict[str, Any], *, method: str | None, url: str | None, now: float
    ) -> VerifiedIdentity:
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise MissingClaim(f"assertion lacks required claims: {', '.join(missing)}")
        for name in ("iss", "sub", "sid", "jti"):
            if not isinstance(claims[name], str):
                raise MissingClaim(f"claim {name!r} must be a string, got {type(claims[name]).__name__}")
        for name in ("exp", "iat"):
            if not _is_number(claims[name]):
                raise MissingClaim(f"claim {name!r} must be a number, got {type(claims[name]).__name__}")
        cnf = claims["cnf"]
        if not isinstance(cnf, dict) or not isinstance(cnf.get("x5t#S256"), str):
            raise MissingClaim('claim "cnf" must be an object with an "x5t#S256" string')

        if claims["iss"] != self.issuer:
            raise WrongIssuer(f"expected issuer {self.issuer!r}, assertion has {claims['iss'][:200]!r}")
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise WrongAudience(f"expected audience {self.audience!r}, assertion is for {str(aud)[:200]!r}")

        if now >= claims["exp"] + self.leeway:
            raise AssertionExpired(f"assertion expired at {claims['exp']}, now is {int(now)} (leeway {self.leeway}s)")
        if claims["iat"] > now + self.leeway:
            raise NotYetValid(f"assertion issued at {claims['iat']}, in the future of {int(now)} "
                              f"(leeway {self.leeway}s)")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or nbf > now + self.leeway):
            raise NotYetValid(f"assertion not valid before {nbf!r}, now is {int(now)}")

        self._check_binding(claims, method=method, url=url)

        device = claims.get("device", {})
        if not isinstance(device, dict):
            raise MissingClaim('claim "device" must be an object')
        auth_time = claims.get("auth_time")
        if auth_time is not None and not isinstance(auth_time, int):
            raise MissingClaim('claim "auth_time" must be an integer')
        return VerifiedIdentity(
            sub=claims["sub"],
            email=_optional_str(claims, "email"),
            name=_optional_str(claims, "name"),
            groups=_str_list(claims, "groups"),
            sid=claims["sid"],
            device=device,
            amr=_str_list(claims, "amr"),
            auth_time=auth_time,
            cnf_x5t=cnf["x5t#S256"],
            claims=claims,
        )

    @staticmethod
    def _check_binding(claims: Mapping[str, Any], *, method: str | None, url: str | None) -> None:
        has_htm, has_htu = "htm" in claims, "htu" in claims
        if not has_htm and not has_htu:
            return  # bind_request: false route (see the module docstring)
        if not (has_htm and has_htu):
            raise MissingClaim("assertion has only one of htm and htu; a bound assertion has both")
        if method is None or url is None:
            raise RequestMismatch("assertion is bound to a request; verify() needs that request's method and url")
        if claims["htm"] != method.upper():
            raise RequestMismatch(f"assertion is for method {str(claims['htm'])[:16]!r}, request is {method.upper()!r}")
        try:
            request_htu = normalize_htu(url)
        except InvalidRequestURL as exc:
            raise RequestMismatch(f"request URL cannot be compared: {exc.detail}") from None
        if claims["htu"] != request_htu:
            raise RequestMismatch(f"assertion is for {str(claims['htu'])[:200]!r}, request is {request_htu[:200]!r}")


# --------------------------------------------------------------------------- aiohttp helper


def request_url(request: web.Request, *, public_url_base: str | None = None) -> str | None:
    """The URL the client addressed, rebuilt on the upstream side; None if it cannot be.

    With ``public_url_base`` (``https://wiki.example``) its scheme and host are
    used; otherwise ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, which the
    gateway always overwrites. The path is the raw request target without its
    query, exactly as the gateway forwarded it and signed it.
    """
    path = request.raw_path.split("?", 1)[0].split("#", 1)[0]
    if public_url_base is not None:
        base = public_url_base.rstrip("/")
        return base + path
    proto = request.headers.getall("X-Forwarded-Proto", [])
    host = request.headers.getall("X-Forwarded-Host", [])
    if len(proto) != 1 or len(host) != 1:
        return None  # absent, or appended to by something other than the gateway
    try:
        return canonical_htu(proto[0].strip(), host[0], path)
    except InvalidRequestURL:
        return None


async def identity_from_request(
    verifier: AssertionVerifier,
    request: web.Request,
    header: str = "X-IDWall-Assertion",
    public_url_base: str | None = None,
    *,
    now: float | None = None,
) -> VerifiedIdentity:
    """Verify the assertion on an aiohttp request, bound to that request's method and URL."""
    values = request.headers.getall(header, [])
    if not values:
        raise MissingAssertion(f"request has no {header} header")
    if len(values) > 1:
        raise MalformedAssertion(f"request has {len(values)} {header} headers, expected 1")
    return await verifier.verify(
        values[0].strip(),
        method=request.method,
        url=request_url(request, public_url_base=public_url_base),
        now=now,
    )


__all__ = [
    "AssertionVerifier",
    "BadSignature",
    "AssertionExpired",
    "InvalidAssertion",
    "JWKSCache",
    "JWKSUnavailable",
    "MalformedAssertion",
    "MissingAssertion",
    "MissingClaim",
    "NotYetValid",
    "RequestMismatch",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "VerifiedIdentity",
    "WrongAudience",
    "WrongIssuer",
    "identity_from_request",
    "request_url",
]
