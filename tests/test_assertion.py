"""idwall.assertion: claims, ES256 signing read by standard JOSE libraries, JWKS, rotation, the cache."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import jwt as pyjwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt as jose_jwt

from idwall.assertion import (
    AssertionCache,
    AssertionDevice,
    AssertionKeyError,
    AssertionSession,
    AssertionUser,
    InvalidRequestURL,
    KeySet,
    build_claims,
    canonical_htu,
    jwk_thumbprint,
    key_id,
    normalize_htu,
    public_jwk,
    retired_dir,
    rotate_keys,
    sign_cached,
)
from idwall.encoding import b64url_decode, b64url_encode

NOW = 1_800_000_000
OVERLAP = 7 * 86400
ISS = "https://localhost:8443"
USER = AssertionUser(id="alice", email="alice@example.com", name="Alice Liddell", groups=("eng", "sre"))
SESSION = AssertionSession(id="sess-1", auth_time=NOW - 100, amr=("hwk", "user"))
DEVICE = AssertionDevice(id="dev-1", name="alice-laptop", credential_id="Y3JlZA", enrolled_at=NOW - 9000,
                         approved_by=None)
CERT_SHA = bytes(range(32))


def claims(**overrides: object) -> dict:
    args: dict = dict(iss=ISS, aud="wiki", user=USER, session=SESSION, device=DEVICE, cert_sha256=CERT_SHA,
                      method="get", url="https://wiki.localhost:8443/page?x=1", now=NOW, ttl=60,
                      bind_request=True)
    args.update(overrides)
    return build_claims(**args)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "certs" / "assertion-key.pem"
    path.parent.mkdir()
    rotate_keys(path, now=NOW - 86400)
    return path


@pytest.fixture
def keys(key_path: Path) -> KeySet:
    return KeySet.load(key_path, now=NOW, overlap=OVERLAP)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- thumbprint and JWKS


def test_thumbprint_matches_rfc9449_figure_vector() -> None:
    # RFC 9449 §6.1 (DPoP): this P-256 JWK has jkt 0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I.
    jwk = {"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
           "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"}
    assert jwk_thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    assert jwk_thumbprint({**jwk, "kid": "x", "use": "sig", "alg": "ES256"}) == jwk_thumbprint(jwk)


def test_jwks_entries_are_complete_and_kid_is_thumbprint(keys: KeySet) -> None:
    (entry,) = keys.jwks()["keys"]
    assert set(entry) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert (entry["kty"], entry["crv"], entry["use"], entry["alg"]) == ("EC", "P-256", "sig", "ES256")
    assert entry["kid"] == keys.current_kid == jwk_thumbprint(entry)
    assert len(b64url_decode(entry["x"])) == len(b64url_decode(entry["y"])) == 32
    keys.jwks()["keys"][0]["kid"] = "mutated"  # callers get copies
    assert keys.jwks()["keys"][0]["kid"] == keys.current_kid


def test_public_jwk_refuses_other_curves() -> None:
    with pytest.raises(AssertionKeyError, match="P-256"):
        public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())


# --------------------------------------------------------------------------- signing, read by others


def test_token_verifies_with_pyjwt_and_python_jose(keys: KeySet) -> None:
    token = keys.sign(claims())
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": keys.current_kid, "typ": "JWT"}
    jwks = keys.jwks()
    pyjwt_key = pyjwt.PyJWKSet.from_dict(jwks)[keys.current_kid].key
    decoded = pyjwt.decode(token, pyjwt_key, algorithms=["ES256"], audience="wiki", issuer=ISS,
                           options={"verify_exp": False, "verify_iat": False})
    assert decoded == claims(jti=decoded["jti"])
    jose_decoded = jose_jwt.decode(token, jwks["keys"][0], algorithms=["ES256"], audience="wiki", issuer=ISS,
                                   options={"verify_exp": False, "verify_iat": False})
    assert jose_decoded == decoded


def test_signature_is_raw_r_s_and_each_signature_is_fresh(keys: KeySet) -> None:
    body = claims(jti="fixed")
    first, second = keys.sign(body), keys.sign(body)
    assert len(b64url_decode(first.split(".")[2])) == 64
    assert first.split(".")[:2] == second.split(".")[:2]
    assert first != second  # ECDSA nonces are random


# The key set is only read, so sharing the fixture between examples is safe.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40), email=st.text(max_size=3), host=st.sampled_from(["wiki", "Wiki:8443", "a.b:1"]))
def test_any_claim_text_and_payload_length_round_trips(keys: KeySet, name: str, email: str, host: str) -> None:
    # Payload lengths of every residue mod 3 (base64 padding), non-ASCII and escaped characters in values.
    user = AssertionUser(id="alice", email=email, name=name, groups=("eng",))
    body = claims(user=user, url=f"https://{host}/p")
    token = keys.sign(body)
    assert "=" not in token and token.isascii()
    pyjwt_key = pyjwt.PyJWKSet.from_dict(keys.jwks())[keys.current_kid].key
    decoded = pyjwt.decode(token, pyjwt_key, algorithms=["ES256"], audience="wiki", issuer=ISS,
                           options={"verify_exp": False, "verify_iat": False})
    assert decoded == body
    assert json.loads(b64url_decode(token.split(".")[1])) == body


def test_pyjwt_refuses_tampered_payload(keys: KeySet) -> None:
    header, _, signature = keys.sign(claims()).split(".")
    forged = b64url_encode(json.dumps(claims(aud="admin")).encode())
    pyjwt_key = pyjwt.PyJWKSet.from_dict(keys.jwks())[keys.current_kid].key
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(f"{header}.{forged}.{signature}", pyjwt_key, algorithms=["ES256"],
                     options={"verify_aud": False, "verify_exp": False})


# --------------------------------------------------------------------------- claims


def test_claims_carry_everything_design_lists() -> None:
    body = claims()
    assert body == {
        "iss": ISS, "aud": "wiki", "sub": "alice", "email": "alice@example.com", "name": "Alice Liddell",
        "groups": ["eng", "sre"], "sid": "sess-1", "auth_time": NOW - 100, "iat": NOW, "exp": NOW + 60,
        "jti": body["jti"], "amr": ["hwk", "user"], "cnf": {"x5t#S256": b64url_encode(CERT_SHA)},
        "device": {"id": "dev-1", "name": "alice-laptop", "credential_id": "Y3JlZA",
                   "enrolled_at": NOW - 9000, "approved_by": None},
        "htm": "GET", "htu": "https://wiki.localhost:8443/page",
    }
    assert len(b64url_decode(body["jti"])) == 16
    assert claims()["jti"] != body["jti"]


def test_claims_accept_mappings_and_unbound_routes_omit_htm_htu() -> None:
    body = claims(user={"id": "bob", "email": None, "name": None, "groups": []},
                  session={"id": "s2", "auth_time": NOW, "amr": ["hwk"]}, bind_request=False,
                  method=None, url=None, now=NOW + 0.9)
    assert "htm" not in body and "htu" not in body
    assert (body["sub"], body["sid"], body["iat"], body["amr"]) == ("bob", "s2", NOW, ["hwk"])


@pytest.mark.parametrize("overrides, message", [
    ({"cert_sha256": b"short"}, "32-byte"),
    ({"ttl": 0}, "ttl"),
    ({"method": None}, "method and url"),
    ({"url": None}, "method and url"),
])
def test_claims_refuse_bad_input(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        claims(**overrides)


@pytest.mark.parametrize("scheme, host, path, expected", [
    ("https", "wiki.example", "/", "https://wiki.example/"),
    ("HTTPS", "Wiki.EXAMPLE:443", "/A/b", "https://wiki.example/A/b"),
    ("http", "wiki.example:80", "/x", "http://wiki.example/x"),
    ("http", "wiki.example:443", "/x", "http://wiki.example:443/x"),
    ("https", "wiki.example:80", "/x", "https://wiki.example:80/x"),
    ("https", "localhost:8443", "/p?q=1#frag", "https://localhost:8443/p"),
    ("https", "localhost:", "/", "https://localhost/"),  # RFC 3986 §6.2.3: empty port = default
    ("https", "127.0.0.1:8443", "", "https://127.0.0.1:8443/"),
    ("https", "[::1]:8443", "/a%2Fb", "https://[::1]:8443/a%2Fb"),  # percent-encoding kept as given
    ("https", "[::1]", "/", "https://[::1]/"),
    ("wss", "localhost:8443", "/ws", "https://localhost:8443/ws"),  # WebSocket handshake is HTTP
    ("ws", "localhost:80", "/ws", "http://localhost/ws"),
])
def test_canonical_htu(scheme: str, host: str, path: str, expected: str) -> None:
    assert canonical_htu(scheme, host, path) == expected
    assert normalize_htu(expected) == expected


@pytest.mark.parametrize("scheme, host, path", [
    ("ftp", "wiki.example", "/"),
    ("https", "", "/"),
    ("https", "wiki.example:0", "/"),
    ("https", "wiki.example:65536", "/"),
    ("https", "wiki.example:8a", "/"),
    ("https", "wiki.example:+443", "/"),
    ("https", "user@wiki.example", "/"),
    ("https", "wiki.example/evil", "/"),
    ("https", "wiki example", "/"),
    ("https", "[::1", "/"),
    ("https", "[::1]x", "/"),
    ("https", "[fe80::1%eth0]", "/"),
    ("https", "wiki.example", "relative"),
])
def test_canonical_htu_refuses_hostile_hosts(scheme: str, host: str, path: str) -> None:
    with pytest.raises(InvalidRequestURL):
        canonical_htu(scheme, host, path)


def test_normalize_htu_refuses_userinfo_and_hostless() -> None:
    for url in ("https://evil@wiki.example/", "/just/a/path", "https:///x"):
        with pytest.raises(InvalidRequestURL):
            normalize_htu(url)


# --------------------------------------------------------------------------- key files and rotation


def test_first_key_file_is_private(key_path: Path) -> None:
    assert mode(key_path) == 0o600
    assert mode(retired_dir(key_path)) == 0o700


def test_rotation_publishes_both_keys_and_signs_with_the_new_one(key_path: Path, keys: KeySet) -> None:
    old_kid = keys.current_kid
    old_token = keys.sign(claims())
    new_kid = rotate_keys(key_path, now=NOW)
    assert new_kid != old_kid
    rotated = KeySet.load(key_path, now=NOW + 1, overlap=OVERLAP)
    assert rotated.current_kid == new_kid
    assert rotated.kids == (new_kid, old_kid)
    assert pyjwt.get_unverified_header(rotated.sign(claims()))["kid"] == new_kid

    directory = retired_dir(key_path)
    assert mode(directory) == 0o700
    assert mode(directory / f"{old_kid}.pem") == 0o600
    assert mode(key_path) == 0o600
    assert json.loads((directory / "retired.json").read_text()) == {old_kid: NOW}
    assert not [p for p in key_path.parent.iterdir() if p.name.endswith(".tmp")]

    # The old token still verifies against the published set during the overlap...
    jwks = rotated.jwks()
    old_key = pyjwt.PyJWKSet.from_dict(jwks)[old_kid].key
    pyjwt.decode(old_token, old_key, algorithms=["ES256"], audience="wiki",
                 options={"verify_exp": False, "verify_iat": False})
    # ...and after the overlap the old key is no longer published.
    later = KeySet.load(key_path, now=NOW + OVERLAP, overlap=OVERLAP)
    assert later.kids == (new_kid,)
    with pytest.raises(KeyError):
        pyjwt.PyJWKSet.from_dict(later.jwks())[old_kid]


def test_three_rotations_keep_every_kid_in_the_index(key_path: Path) -> None:
    kids = [KeySet.load(key_path, now=NOW, overlap=OVERLAP).current_kid]
    for step in range(3):
        kids.append(rotate_keys(key_path, now=NOW + step * 10))
    index = json.loads((retired_dir(key_path) / "retired.json").read_text())
    assert index == {kids[0]: NOW, kids[1]: NOW + 10, kids[2]: NOW + 20}
    loaded = KeySet.load(key_path, now=NOW + 25, overlap=10)  # the first two have aged out
    assert loaded.kids == (kids[3], kids[2])
    assert loaded.next_expiry == NOW + 30


def test_fingerprint_and_needs_reload(key_path: Path, keys: KeySet) -> None:
    assert keys.fingerprint() == keys.loaded_fingerprint
    assert not keys.needs_reload(now=NOW)
    rotate_keys(key_path, now=NOW)
    assert keys.fingerprint() != keys.loaded_fingerprint
    assert keys.needs_reload(now=NOW)
    reloaded = KeySet.load(key_path, now=NOW, overlap=60)
    assert not reloaded.needs_reload(now=NOW + 59)
    assert reloaded.needs_reload(now=NOW + 60)  # the retired key's overlap ended


def test_load_refuses_missing_key(tmp_path: Path) -> None:
    with pytest.raises(AssertionKeyError, match="cannot read"):
        KeySet.load(tmp_path / "nope.pem", now=NOW, overlap=OVERLAP)


def test_load_refuses_non_p256_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(AssertionKeyError, match="P-256"):
        KeySet.load(path, now=NOW, overlap=OVERLAP)


def test_load_refuses_swapped_retired_key(key_path: Path, keys: KeySet) -> None:
    old_kid = keys.current_kid
    rotate_keys(key_path, now=NOW)
    # Someone replaces the archived key with their own under the old kid's name.
    impostor = ec.generate_private_key(ec.SECP256R1())
    (retired_dir(key_path) / f"{old_kid}.pem").write_bytes(impostor.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(AssertionKeyError, match=f"not {old_kid}"):
        KeySet.load(key_path, now=NOW, overlap=OVERLAP)


@pytest.mark.parametrize("index", [
    {"../../../etc/passwd": NOW},
    {"a" * 42 + "/": NOW},
    {"A" * 43: "yesterday"},
    {"A" * 43: True},
    ["not", "an", "object"],
])
def test_load_refuses_hostile_retired_index(key_path: Path, index: object) -> None:
    (retired_dir(key_path) / "retired.json").write_text(json.dumps(index))
    with pytest.raises(AssertionKeyError):
        KeySet.load(key_path, now=NOW, overlap=OVERLAP)


def test_retired_index_naming_missing_file_fails_loudly(key_path: Path) -> None:
    (retired_dir(key_path) / "retired.json").write_text(json.dumps({"A" * 43: NOW}))
    with pytest.raises(AssertionKeyError, match="cannot read"):
        KeySet.load(key_path, now=NOW, overlap=OVERLAP)


def test_rotate_without_a_current_key_creates_one(tmp_path: Path) -> None:
    path = tmp_path / "fresh.pem"
    kid = rotate_keys(path, now=NOW)
    assert key_id(serialization.load_pem_private_key(path.read_bytes(), None)) == kid  # type: ignore[arg-type]
    assert not (retired_dir(path) / "retired.json").exists()
    assert os.stat(path).st_mode & 0o077 == 0


# --------------------------------------------------------------------------- AssertionCache


def test_cache_reuses_until_half_ttl(keys: KeySet) -> None:
    cache = AssertionCache()
    body = claims(bind_request=False)
    token = sign_cached(cache, keys, body, now=NOW)
    assert sign_cached(cache, keys, claims(bind_request=False, now=NOW + 29), now=NOW + 29) == token
    assert sign_cached(cache, keys, claims(bind_request=False, now=NOW + 30), now=NOW + 30) != token
    other_route = sign_cached(cache, keys, claims(bind_request=False, aud="grafana"), now=NOW)
    assert other_route != token and len(cache) == 2
    assert cache.drop_session("sess-1") == 2
    assert cache.get("sess-1", "wiki", kid=keys.current_kid, now=NOW) is None


def test_a_kill_of_ten_thousand_sessions_clears_their_tokens_in_one_pass() -> None:
    """Kill-all of 10,000 sessions, each with tokens for two routes: the cache forgets exactly those sessions'
    tokens, at once (one walk over the cache, not one per session: that would be 10^8 steps)."""
    cache = AssertionCache()
    for i in range(10_000):
        for aud in ("wiki", "grafana"):
            cache.put(f"sess-{i}", aud, "token", kid="k1", iat=NOW, ttl=60)
    cache.put("sess-spared", "wiki", "token", kid="k1", iat=NOW, ttl=60)
    started = time.perf_counter()
    assert cache.drop_sessions(f"sess-{i}" for i in range(10_000)) == 20_000
    assert time.perf_counter() - started < 0.5
    assert len(cache) == 1 and cache.get("sess-spared", "wiki", kid="k1", now=NOW) == "token"
    assert cache.drop_sessions([]) == 0


def test_cache_refuses_bound_claims_and_follows_rotation(key_path: Path, keys: KeySet) -> None:
    cache = AssertionCache()
    with pytest.raises(ValueError, match="never be cached"):
        sign_cached(cache, keys, claims(), now=NOW)
    token = sign_cached(cache, keys, claims(bind_request=False), now=NOW)
    rotate_keys(key_path, now=NOW)
    rotated = KeySet.load(key_path, now=NOW, overlap=OVERLAP)
    fresh = sign_cached(cache, rotated, claims(bind_request=False), now=NOW + 1)
    assert fresh != token
    assert pyjwt.get_unverified_header(fresh)["kid"] == rotated.current_kid


def test_cache_is_bounded() -> None:
    cache = AssertionCache(max_entries=3)
    for index in range(5):
        cache.put(f"s{index}", "wiki", f"t{index}", kid="k", iat=NOW, ttl=60)
    assert len(cache) == 3
    assert cache.get("s0", "wiki", kid="k", now=NOW) is None
    assert cache.get("s4", "wiki", kid="k", now=NOW) == "t4"
