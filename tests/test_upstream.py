"""idwall.upstream: the verifier backend services run, attacked; JWKS fetching over real sockets."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import importlib.util
import json
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt as pyjwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from jose import jwt as jose_jwt
from playwright.async_api import async_playwright

from tests.helpers.browser import launch
from tests.helpers.clock import Clock
from tests.helpers.upstream_app import serve_app
from idwall.assertion import AssertionDevice, AssertionSession, AssertionUser, KeySet, build_claims, rotate_keys
from idwall.encoding import b64url_encode
from idwall.upstream import (
    REQUIRED_CLAIMS,
    AssertionVerifier,
    BadSignature,
    AssertionExpired,
    InvalidAssertion,
    JWKSCache,
    JWKSUnavailable,
    MalformedAssertion,
    MissingClaim,
    NotYetValid,
    RequestMismatch,
    UnknownKey,
    UnsupportedAlgorithm,
    WrongAudience,
    WrongIssuer,
)

NOW = 1_800_000_000
ISS = "https://localhost:8443"
HTU = "https://wiki.localhost:8443/page"
USER = AssertionUser(id="alice", email="alice@example.com", name="Alice", groups=("eng",))
SESSION = AssertionSession(id="sess-1", auth_time=NOW - 100, amr=("hwk", "user"))
DEVICE = AssertionDevice(id="dev-1", name="laptop", credential_id="Y3JlZA", enrolled_at=NOW - 9000,
                         approved_by="bob")


def make_claims(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(iss=ISS, aud="wiki", user=USER, session=SESSION, device=DEVICE,
                                cert_sha256=b"\x01" * 32, method="GET", url=HTU, now=NOW, ttl=60,
                                bind_request=True)
    args.update(overrides)
    return build_claims(**args)


def b64json(value: Any) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def es256(key: ec.EllipticCurvePrivateKey, signing_input: str) -> str:
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def forge(header: dict[str, Any], payload: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{es256(key, signing_input)}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def private_key_of(key_path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "assertion-key.pem"
    rotate_keys(path, now=NOW - 86400)
    return path


@pytest.fixture
def keys(key_path: Path) -> KeySet:
    return KeySet.load(key_path, now=NOW, overlap=86400)


@pytest.fixture
def verifier(keys: KeySet) -> AssertionVerifier:
    return AssertionVerifier(keys=JWKSCache.from_jwks(keys.jwks()), issuer=ISS, audience="wiki")


async def verify(verifier: AssertionVerifier, token: str, *, method: str | None = "GET",
                 url: str | None = HTU, now: float = NOW) -> Any:
    return await verifier.verify(token, method=method, url=url, now=now)


# --------------------------------------------------------------------------- the good path


async def test_valid_assertion_yields_identity(keys: KeySet, verifier: AssertionVerifier) -> None:
    claims = make_claims()
    identity = await verify(verifier, keys.sign(claims), url=HTU + "?q=1#f")
    assert (identity.sub, identity.email, identity.name, identity.groups, identity.sid) == (
        "alice", "alice@example.com", "Alice", ("eng",), "sess-1")
    assert identity.amr == ("hwk", "user") and identity.auth_time == NOW - 100
    assert identity.device == {"id": "dev-1", "name": "laptop", "credential_id": "Y3JlZA",
                               "enrolled_at": NOW - 9000, "approved_by": "bob"}
    assert identity.cnf_x5t == b64url_encode(b"\x01" * 32)
    assert identity.claims == claims


async def test_url_is_normalised_like_canonical_htu(keys: KeySet, verifier: AssertionVerifier) -> None:
    token = keys.sign(make_claims(url="https://localhost/page"))
    await verify(verifier, token, method="get", url="HTTPS://LocalHost:443/page?x")


async def test_unbound_token_is_accepted_with_or_without_request(keys: KeySet, verifier: AssertionVerifier) -> None:
    token = keys.sign(make_claims(bind_request=False))
    await verify(verifier, token)
    await verify(verifier, token, method=None, url=None)


async def test_audience_list_and_leeway(keys: KeySet, verifier: AssertionVerifier) -> None:
    await verify(verifier, keys.sign(make_claims(aud="x") | {"aud": ["grafana", "wiki"]}))
    token = keys.sign(make_claims())
    await verify(verifier, token, now=NOW + 60 + 4.9)  # exp + leeway not yet reached
    await verify(verifier, token, now=NOW - 4.9)  # iat within the leeway of clock skew


# --------------------------------------------------------------------------- attacks


async def test_alg_none_is_refused(keys: KeySet, verifier: AssertionVerifier) -> None:
    token = f"{b64json({'alg': 'none', 'kid': keys.current_kid})}.{b64json(make_claims())}."
    with pytest.raises(UnsupportedAlgorithm, match="'none'"):
        await verify(verifier, token)


@pytest.mark.parametrize("form", ["pem", "jwk-json"])
async def test_hs256_keyed_with_the_public_key_is_refused(keys: KeySet, key_path: Path,
                                                          verifier: AssertionVerifier, form: str) -> None:
    # CVE-2024-33663 / the classic RS-HS confusion: HMAC keyed with the published key.
    if form == "pem":
        secret = private_key_of(key_path).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        secret = json.dumps(keys.jwks()["keys"][0]).encode()
    token = hs256({"alg": "HS256", "kid": keys.current_kid, "typ": "JWT"}, make_claims(), secret)
    with pytest.raises(UnsupportedAlgorithm):
        await verify(verifier, token)
    # Standard libraries used as DESIGN.md says (algorithms=["ES256"]) refuse it too.
    jwk = pyjwt.PyJWKSet.from_dict(keys.jwks())[keys.current_kid].key
    with pytest.raises(pyjwt.InvalidAlgorithmError):
        pyjwt.decode(token, jwk, algorithms=["ES256"], options={"verify_aud": False, "verify_exp": False})
    with pytest.raises(Exception, match="(?i)alg"):
        jose_jwt.decode(token, keys.jwks()["keys"][0], algorithms=["ES256"],
                        options={"verify_aud": False, "verify_exp": False})


@pytest.mark.parametrize("alg", ["RS256", "ES384", "EdDSA", "es256", "", None, 256, ["ES256"]])
async def test_other_algorithms_are_refused(keys: KeySet, key_path: Path, verifier: AssertionVerifier,
                                            alg: Any) -> None:
    token = forge({"alg": alg, "kid": keys.current_kid}, make_claims(), private_key_of(key_path))
    with pytest.raises(UnsupportedAlgorithm):
        await verify(verifier, token)


async def test_unknown_kid_is_refused(key_path: Path, verifier: AssertionVerifier) -> None:
    token = forge({"alg": "ES256", "kid": "A" * 43}, make_claims(), private_key_of(key_path))
    with pytest.raises(UnknownKey):
        await verify(verifier, token)


async def test_other_key_with_the_same_kid_is_refused(keys: KeySet, verifier: AssertionVerifier) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    token = forge({"alg": "ES256", "kid": keys.current_kid}, make_claims(), attacker)
    with pytest.raises(BadSignature):
        await verify(verifier, token)


async def test_tampered_payload_is_refused(keys: KeySet, verifier: AssertionVerifier) -> None:
    header, _, signature = keys.sign(make_claims()).split(".")
    forged = b64json(make_claims() | {"sub": "root", "groups": ["admin"]})
    with pytest.raises(BadSignature):
        await verify(verifier, f"{header}.{forged}.{signature}")


async def test_header_swap_is_refused(keys: KeySet, verifier: AssertionVerifier) -> None:
    _, payload, signature = keys.sign(make_claims()).split(".")
    header = b64json({"alg": "ES256", "kid": keys.current_kid})  # same meaning, other bytes
    with pytest.raises(BadSignature):
        await verify(verifier, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("claims, error", [
    ({"aud": "grafana"}, WrongAudience),
    ({"aud": ["grafana", "admin"]}, WrongAudience),
    ({"aud": {"wiki": True}}, WrongAudience),
    ({"iss": "https://localhost:8443/"}, WrongIssuer),
    ({"iss": "https://evil.example"}, WrongIssuer),
    ({"exp": NOW - 6}, AssertionExpired),
    ({"iat": NOW + 6, "exp": NOW + 66}, NotYetValid),
    ({"nbf": NOW + 60}, NotYetValid),
    ({"nbf": "soon"}, NotYetValid),
    ({"htm": "POST"}, RequestMismatch),
    ({"htu": "https://wiki.localhost:8443/other"}, RequestMismatch),
    ({"htu": "https://admin.localhost:8443/page"}, RequestMismatch),
    ({"htu": "https://wiki.localhost:9443/page"}, RequestMismatch),
    ({"htu": "http://wiki.localhost:8443/page"}, RequestMismatch),
    ({"htu": "https://wiki.localhost:8443/Page"}, RequestMismatch),
    ({"exp": "never"}, MissingClaim),
    ({"exp": True}, MissingClaim),
    ({"sub": 7}, MissingClaim),
    ({"cnf": {"jkt": "x"}}, MissingClaim),
    ({"cnf": "x"}, MissingClaim),
    ({"groups": "admin"}, MissingClaim),
    ({"groups": [1]}, MissingClaim),
    ({"amr": "hwk"}, MissingClaim),
    ({"device": ["dev-1"]}, MissingClaim),
    ({"email": 5}, MissingClaim),
    ({"auth_time": "yesterday"}, MissingClaim),
])
async def test_claim_checks(keys: KeySet, verifier: AssertionVerifier, claims: dict[str, Any],
                            error: type[InvalidAssertion]) -> None:
    with pytest.raises(error):
        await verify(verifier, keys.sign(make_claims() | claims))


@pytest.mark.parametrize("name", REQUIRED_CLAIMS)
async def test_each_required_claim_is_required(keys: KeySet, verifier: AssertionVerifier, name: str) -> None:
    claims = make_claims()
    del claims[name]
    with pytest.raises(MissingClaim, match=name):
        await verify(verifier, keys.sign(claims))


@pytest.mark.parametrize("method, url", [
    ("POST", HTU),                                   # other method
    ("GET", "https://wiki.localhost:8443/admin"),    # other path
    ("GET", "https://grafana.localhost:8443/page"),  # other host
    ("GET", "https://wiki.localhost/page"),          # other port
    ("GET", "https://evil@wiki.localhost:8443/page"),
    (None, HTU),
    ("GET", None),
])
async def test_assertion_lifted_onto_another_request_is_refused(
        keys: KeySet, verifier: AssertionVerifier, method: str | None, url: str | None) -> None:
    with pytest.raises(RequestMismatch):
        await verify(verifier, keys.sign(make_claims()), method=method, url=url)


@pytest.mark.parametrize("drop", ["htm", "htu"])
async def test_half_bound_token_is_refused(keys: KeySet, verifier: AssertionVerifier, drop: str) -> None:
    claims = make_claims()
    del claims[drop]
    with pytest.raises(MissingClaim, match="htm and htu"):
        await verify(verifier, keys.sign(claims))


def _raw(header: str, payload: str, signature: str = "AAAA") -> str:
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("token", [
    "",
    "a.b",
    "a.b.c.d",
    "a.b.c.d.e",  # JWE compact form
    _raw("!!!", b64json({})),
    _raw(b64url_encode(b"not json"), b64json({})),
    _raw(b64json(["ES256"]), b64json({})),
    _raw(b64url_encode(b'{"alg":"ES256","alg":"none","kid":"k"}'), b64json({})),
    _raw(b64json({"alg": "ES256"}), b64json({})),                 # no kid
    _raw(b64json({"alg": "ES256", "kid": ""}), b64json({})),
    _raw(b64json({"alg": "ES256", "kid": 5}), b64json({})),
    _raw(b64json({"alg": "ES256", "kid": "k", "crit": ["exp"]}), b64json({})),
    "x" * 20000,
])
async def test_malformed_tokens(verifier: AssertionVerifier, token: str) -> None:
    with pytest.raises(MalformedAssertion):
        await verify(verifier, token)


async def test_payload_with_duplicate_members_is_malformed(keys: KeySet, key_path: Path,
                                                           verifier: AssertionVerifier) -> None:
    header = b64json({"alg": "ES256", "kid": keys.current_kid})
    body = json.dumps(make_claims())[:-1] + ', "sub": "root"}'
    signing_input = f"{header}.{b64url_encode(body.encode())}"
    with pytest.raises(MalformedAssertion, match="repeats"):
        await verify(verifier, f"{signing_input}.{es256(private_key_of(key_path), signing_input)}")


@pytest.mark.parametrize("signature", ["", "AAAA", b64url_encode(b"\0" * 63), b64url_encode(b"\0" * 64),
                                       b64url_encode(b"\xff" * 64), "+/+/", "A" * 86 + "=="])
async def test_bad_signature_bytes(keys: KeySet, verifier: AssertionVerifier, signature: str) -> None:
    header, payload, _ = keys.sign(make_claims()).split(".")
    with pytest.raises(BadSignature):
        await verify(verifier, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("entry", [
    {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    {"kty": "EC", "crv": "P-384"},
    {"kty": "oct", "k": "c2VjcmV0"},
    {"kty": "EC", "crv": "P-256", "use": "enc"},
    {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES"},
    {"kty": "EC", "crv": "P-256", "x": b64url_encode(b"\1" * 32), "y": b64url_encode(b"\2" * 32)},  # off curve
    {"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"},
])
async def test_unusable_jwks_entries_are_refused(key_path: Path, entry: dict[str, Any]) -> None:
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks({"keys": [entry | {"kid": "k1"}]}),
                                 issuer=ISS, audience="wiki")
    token = forge({"alg": "ES256", "kid": "k1"}, make_claims(), private_key_of(key_path))
    with pytest.raises(UnsupportedAlgorithm):
        await verify(verifier, token)


# --------------------------------------------------------------------------- rotation as a service sees it


async def test_rotation_overlap_as_seen_by_a_service(key_path: Path, keys: KeySet) -> None:
    old_token = keys.sign(make_claims())
    rotate_keys(key_path, now=NOW)
    during = KeySet.load(key_path, now=NOW + 10, overlap=3600)
    assert len(during.jwks()["keys"]) == 2
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks(during.jwks()), issuer=ISS, audience="wiki")
    await verify(verifier, old_token, now=NOW + 10)
    await verify(verifier, during.sign(make_claims(now=NOW + 10)), now=NOW + 10)

    after = KeySet.load(key_path, now=NOW + 3600, overlap=3600)
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks(after.jwks()), issuer=ISS, audience="wiki")
    with pytest.raises(UnknownKey):
        await verify(verifier, old_token, now=NOW + 3600)  # exp would be checked anyway; the key is gone first


# --------------------------------------------------------------------------- JWKS over real sockets


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1:0 that counts its hits."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.hits = 0
        self.status = 200
        self.delay = 0.0
        self.url = ""

    async def handler(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response(self.jwks)


@pytest.fixture
async def jwks_server(keys: KeySet) -> AsyncIterator[JWKSServer]:
    server = JWKSServer(keys.jwks())
    app = web.Application()
    app.router.add_get("/.well-known/idwall/jwks.json", server.handler)
    runner, port = await serve_app(app)
    server.url = f"http://127.0.0.1:{port}/.well-known/idwall/jwks.json"
    yield server
    await runner.cleanup()


async def test_jwks_refreshes_on_unknown_kid_after_rotation(jwks_server: JWKSServer, key_path: Path) -> None:
    clock = Clock(1000.0)
    cache = JWKSCache(jwks_server.url, min_refresh_interval=30, clock=clock)
    verifier = AssertionVerifier(keys=cache, issuer=ISS, audience="wiki")
    first = KeySet.load(key_path, now=NOW, overlap=3600)
    await verify(verifier, first.sign(make_claims()))
    assert jwks_server.hits == 1
    await verify(verifier, first.sign(make_claims()))
    assert jwks_server.hits == 1  # cached

    rotate_keys(key_path, now=NOW)
    rotated = KeySet.load(key_path, now=NOW, overlap=3600)
    jwks_server.jwks = rotated.jwks()
    clock.now += 31
    await verify(verifier, rotated.sign(make_claims()))
    assert jwks_server.hits == 2
    assert set(cache.kids) == {rotated.current_kid, first.current_kid}


async def test_jwks_refresh_on_unknown_kid_is_rate_limited(jwks_server: JWKSServer, key_path: Path) -> None:
    clock = Clock(1000.0)
    cache = JWKSCache(jwks_server.url, min_refresh_interval=30, clock=clock)
    verifier = AssertionVerifier(keys=cache, issuer=ISS, audience="wiki")
    attacker_key = private_key_of(key_path)
    for index in range(50):  # a flood of made-up kids
        with pytest.raises(UnknownKey):
            await verify(verifier, forge({"alg": "ES256", "kid": f"kid-{index}"}, make_claims(), attacker_key))
    assert jwks_server.hits == 1
    clock.now += 29.9
    with pytest.raises(UnknownKey):
        await verify(verifier, forge({"alg": "ES256", "kid": "again"}, make_claims(), attacker_key))
    assert jwks_server.hits == 1
    clock.now += 0.2
    with pytest.raises(UnknownKey):
        await verify(verifier, forge({"alg": "ES256", "kid": "later"}, make_claims(), attacker_key))
    assert jwks_server.hits == 2


async def test_concurrent_misses_share_one_fetch(jwks_server: JWKSServer, keys: KeySet) -> None:
    jwks_server.delay = 0.05
    verifier = AssertionVerifier(keys=JWKSCache(jwks_server.url), issuer=ISS, audience="wiki")
    tokens = [keys.sign(make_claims()) for _ in range(20)]
    results = await asyncio.gather(*(verify(verifier, token) for token in tokens))
    assert {identity.sub for identity in results} == {"alice"}
    assert jwks_server.hits == 1


async def test_stale_jwks_is_refetched_and_fails_closed(jwks_server: JWKSServer, keys: KeySet) -> None:
    clock = Clock(1000.0)
    verifier = AssertionVerifier(keys=JWKSCache(jwks_server.url, max_age=3600, clock=clock),
                                 issuer=ISS, audience="wiki")
    token = keys.sign(make_claims())
    await verify(verifier, token)
    clock.now += 3601
    await verify(verifier, token)
    assert jwks_server.hits == 2
    clock.now += 3601
    jwks_server.status = 500
    with pytest.raises(JWKSUnavailable, match="500"):
        await verify(verifier, token)
    with pytest.raises(JWKSUnavailable, match="last refresh failed"):  # no hammering while it is down
        await verify(verifier, token)
    assert jwks_server.hits == 3
    jwks_server.status = 200
    clock.now += 31
    await verify(verifier, token)


@pytest.mark.parametrize("body", [b"not json", b'{"keys": "nope"}', b"[]", b"x" * 300_000])
async def test_invalid_jwks_documents_fail_closed(body: bytes, keys: KeySet) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", handler)
    runner, port = await serve_app(app)
    try:
        url = f"http://127.0.0.1:{port}/jwks"
        verifier = AssertionVerifier(keys=JWKSCache(url), issuer=ISS, audience="wiki")
        with pytest.raises(JWKSUnavailable):
            await verify(verifier, keys.sign(make_claims()))
    finally:
        await runner.cleanup()


async def test_jwks_endpoint_down_fails_closed(keys: KeySet) -> None:
    verifier = AssertionVerifier(keys=JWKSCache("http://127.0.0.1:9/jwks.json", timeout=2),
                                 issuer=ISS, audience="wiki")
    with pytest.raises(JWKSUnavailable, match="cannot fetch"):
        await verify(verifier, keys.sign(make_claims()))


def _tls_files(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.pem", tmp_path / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_jwks_over_tls_trusts_only_the_given_ca(tmp_path: Path, keys: KeySet) -> None:
    cert_path, tls_key_path = _tls_files(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, tls_key_path)
    server = JWKSServer(keys.jwks())
    app = web.Application()
    app.router.add_get("/jwks.json", server.handler)
    runner, port = await serve_app(app, server_ctx)
    try:
        url = f"https://localhost:{port}/jwks.json"
        trusted = AssertionVerifier(keys=JWKSCache(url, ssl_context=ssl.create_default_context(cafile=cert_path)),
                                    issuer=ISS, audience="wiki")
        await verify(trusted, keys.sign(make_claims()))
        untrusted = AssertionVerifier(keys=JWKSCache(url), issuer=ISS, audience="wiki")  # system store only
        with pytest.raises(JWKSUnavailable):
            await verify(untrusted, keys.sign(make_claims()))
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- the whoami example service


def _load_whoami() -> Any:
    path = Path(__file__).resolve().parent.parent / "examples" / "whoami_upstream.py"
    spec = importlib.util.spec_from_file_location("whoami_upstream", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("whoami_upstream", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def whoami(verifier: AssertionVerifier) -> AsyncIterator[tuple[str, Callable[..., str]]]:
    """The example service on 127.0.0.1:0, and a helper that signs for a path as the gateway would."""
    module = _load_whoami()
    runner, port = await serve_app(module.make_app(verifier))
    base = f"http://127.0.0.1:{port}"
    yield base, lambda keys, method, path: keys.sign(make_claims(
        method=method, url=f"https://wiki.localhost:8443{path}", now=_wall_now()))
    await runner.cleanup()


def _wall_now() -> int:
    return int(time.time())


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "wiki.localhost:8443"}


async def test_whoami_answers_json_and_html(whoami: tuple[str, Callable[..., str]], keys: KeySet) -> None:
    base, sign = whoami
    async with aiohttp.ClientSession() as client:
        headers = FORWARDED | {"X-IDWall-Assertion": sign(keys, "GET", "/page")}
        async with client.get(base + "/page?x=1", headers=headers) as response:
            assert response.status == 200
            body = await response.json()
            assert (body["sub"], body["device"]["id"], body["claims"]["htu"]) == (
                "alice", "dev-1", "https://wiki.localhost:8443/page")
        async with client.get(base + "/page", headers=headers | {"Accept": "text/html"}) as response:
            assert response.status == 200 and response.content_type == "text/html"
            assert "alice" in await response.text()


async def test_whoami_html_fits_a_400px_screen(whoami: tuple[str, Callable[..., str]], keys: KeySet) -> None:
    # Claims hold long unbroken tokens (cnf thumbprint, credential id, session id): they must wrap, not push the
    # page wider than a phone. Measured in the real browser, as the page is rendered.
    base, sign = whoami
    async with aiohttp.ClientSession() as client:
        headers = FORWARDED | {"X-IDWall-Assertion": sign(keys, "GET", "/page"), "Accept": "text/html"}
        async with client.get(base + "/page", headers=headers) as response:
            assert response.status == 200
            page_html = await response.text()
    assert 'name=viewport' in page_html
    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page(viewport={"width": 400, "height": 760})
            await page.set_content(page_html)
            assert await page.text_content("h1") == "Hello, Alice"
            assert await page.evaluate("document.scrollingElement.scrollWidth") <= 400
        finally:
            await browser.close()


@pytest.mark.parametrize("case", ["other-path", "other-method", "other-host", "no-header", "two-headers",
                                  "no-forwarded", "appended-forwarded-host"])
async def test_whoami_refuses_lifted_or_missing_assertions(whoami: tuple[str, Callable[..., str]], keys: KeySet,
                                                           case: str) -> None:
    base, sign = whoami
    token = sign(keys, "GET", "/page")
    method, path = "GET", "/page"
    headers: Any = FORWARDED | {"X-IDWall-Assertion": token}
    if case == "other-path":
        path = "/admin"
    elif case == "other-method":
        method = "POST"
    elif case == "other-host":
        headers["X-Forwarded-Host"] = "grafana.localhost:8443"
    elif case == "no-header":
        del headers["X-IDWall-Assertion"]
    elif case == "two-headers":
        headers = list(headers.items()) + [("X-IDWall-Assertion", token)]
    elif case == "no-forwarded":
        headers = {"X-IDWall-Assertion": token}
    elif case == "appended-forwarded-host":
        headers = list(headers.items()) + [("X-Forwarded-Host", "wiki.localhost:8443")]
    async with aiohttp.ClientSession() as client:
        async with client.request(method, base + path, headers=headers) as response:
            assert response.status == 401
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["type"].endswith("/invalid-assertion")
            assert token not in json.dumps(problem)


async def test_whoami_websocket_greets_the_verified_user(whoami: tuple[str, Callable[..., str]],
                                                         keys: KeySet) -> None:
    base, sign = whoami
    headers = FORWARDED | {"X-IDWall-Assertion": sign(keys, "GET", "/ws")}
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(base + "/ws", headers=headers) as ws:
            assert await ws.receive_json(timeout=5) == {"hello": "alice", "sid": "sess-1"}
            await ws.send_str("ping")
            assert await ws.receive_str(timeout=5) == "ping"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(base + "/ws", headers=FORWARDED | {"X-IDWall-Assertion": sign(keys, "GET", "/x")})
        assert refused.value.status == 401
