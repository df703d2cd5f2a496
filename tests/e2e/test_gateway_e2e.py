"""The gateway end to end over real TLS, through many modules at once: JWKS and an assertion that PyJWT
verifies, the answers without a certificate or a session (problem+json for APIs, the login page for
browsers), header hygiene against spoofing, ambiguous paths, an upstream down, the reserved paths, key
rotation, WebSockets and a streamed body."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from idwall.encoding import b64url_encode
from idwall.testing.fixtures import raw_https

pytestmark = pytest.mark.asyncio


async def test_jwks_is_served_and_pyjwt_verifies_the_assertion(gateway) -> None:
    device = await gateway.device("alice", groups=("eng",), email="alice@example.com")
    async with gateway.session() as anon:
        async with anon.get(gateway.url + "/.well-known/idwall/jwks.json") as resp:
            assert resp.status == 200
            jwks = await resp.json()
    assert jwks["keys"][0]["alg"] == "ES256"
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/some/page?q=1") as resp:
            assert resp.status == 200, await resp.text()
            seen = await resp.json()
    assertions = [v for k, v in seen["headers"] if k.lower() == "x-idwall-assertion"]
    assert len(assertions) == 1
    token = assertions[0]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid].key
    claims = jwt.decode(token, key, algorithms=["ES256"], audience="whoami", issuer=gateway.url)
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["eng"]
    assert claims["email"] == "alice@example.com"
    assert claims["device"]["id"] == device.device_id
    assert claims["cnf"]["x5t#S256"] == b64url_encode(device.cert_sha256)
    assert claims["htm"] == "GET"
    assert claims["htu"] == f"https://localhost:{gateway.port}/some/page"
    assert set(claims) >= {"iss", "aud", "sub", "sid", "auth_time", "iat", "exp", "jti", "amr", "cnf", "device"}


async def test_no_client_certificate_gets_403_problem_pointing_at_enrollment(gateway) -> None:
    async with gateway.session() as anon:
        async with anon.get(gateway.url + "/app") as resp:
            assert resp.status == 403
            assert resp.content_type == "application/problem+json"
            body = await resp.json()
    assert body["status"] == 403
    assert body["type"].endswith("/no-client-certificate")
    assert "/idwall/enroll" in body["enroll_url"]


async def test_browser_without_certificate_is_sent_to_the_page_that_explains_it(gateway) -> None:
    async with gateway.session() as anon:
        async with anon.get(gateway.url + "/app?x=1", headers={"Accept": "text/html"},
                            allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/idwall/login?next=/app%3Fx%3D1"  # the whole target, query included, as one value
        async with anon.get(gateway.url + resp.headers["Location"], headers={"Accept": "text/html"}) as page:
            assert page.status == 403
            assert "/idwall/enroll" in await page.text()


async def test_spoofed_identity_headers_never_reach_the_upstream(gateway) -> None:
    device = await gateway.device("bob")
    request = (
        "GET /spoof HTTP/1.1\r\n"
        f"Host: localhost:{gateway.port}\r\n"
        "X-IDWall-Assertion: forged\r\n"
        "x-idwall-user: root\r\n"
        "X_IDWall_Assertion: forged-underscore\r\n"
        "X-IDWALL-GROUPS: admins\r\n"
        "X-Forwarded-For: 6.6.6.6\r\n"
        "X-Forwarded-Host: evil.example\r\n"
        "Connection: close, X-Keep-Me-Out\r\n"
        "X-Keep-Me-Out: 1\r\n"
        "\r\n"
    ).encode()
    raw = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device), request)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = json.loads(body)
    names = [k.lower().replace("_", "-") for k, _ in seen["headers"]]
    values = dict((k.lower(), v) for k, v in seen["headers"])
    assert names.count("x-idwall-assertion") == 1
    assert values["x-idwall-assertion"] not in ("forged", "forged-underscore")
    assert "x-idwall-user" not in names and "x-idwall-groups" not in names
    assert "x-keep-me-out" not in names
    assert values["x-forwarded-for"] == "127.0.0.1"
    assert values["x-forwarded-host"] == f"localhost:{gateway.port}"
    assert values["x-forwarded-proto"] == "https"


async def test_device_without_session_gets_401_or_login_redirect(gateway) -> None:
    device = await gateway.device("carol", with_session=False)
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/docs", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["login_url"].endswith("/idwall/login?next=/docs")
        async with client.get(gateway.url + "/docs?a=1", headers={"Accept": "text/html"},
                              allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"].startswith("/idwall/login?next=/docs")


async def test_browser_whose_session_ended_is_told_so_on_the_login_page(gateway) -> None:
    device = await gateway.device("kate")
    await gateway.store.end_session(device.session_id, now=time.time(), reason="logout", draft=None)
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/docs", headers={"Accept": "text/html"},
                              allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/idwall/login?next=/docs&reason=expired"


async def test_ambiguous_paths_are_refused_not_guessed(gateway) -> None:
    device = await gateway.device("dave")
    for path in ("/a/%2e%2e/idwall/api", "/a%2fb", "/a/../b", "/a\\b"):
        raw = await raw_https("127.0.0.1", gateway.port, gateway.ssl(device),
                              f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 400"), (path, raw[:200])


async def test_upstream_down_is_502_problem(tmp_path: Path) -> None:
    from tests.helpers.gateway import start_test_gateway
    from idwall.testing.fixtures import free_port

    gut = await start_test_gateway(tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        device = await gut.device("erin")
        async with gut.session(device) as client:
            async with client.get(gut.url + "/x") as resp:
                assert resp.status == 502
                assert resp.content_type == "application/problem+json"
                assert "Traceback" not in await resp.text()
    finally:
        await gut.running.stop(drain=1)


async def test_healthz_and_reserved_paths_are_never_proxied(gateway) -> None:
    device = await gateway.device("frank")
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/idwall/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with client.get(gateway.url + "/idwall/not-a-thing") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"
        async with client.get(gateway.url + "/.well-known/idwall/other") as resp:
            assert resp.status == 404


async def test_key_rotation_is_published_and_used_at_once(gateway) -> None:
    import time

    from idwall.assertion import rotate_keys

    device = await gateway.device("gina")
    async with gateway.session(device) as client:
        async with client.get(gateway.url + "/.well-known/idwall/jwks.json") as resp:
            before = [k["kid"] for k in (await resp.json())["keys"]]
        new_kid = await asyncio.to_thread(rotate_keys, gateway.config.assertion.key, now=time.time())
        async with client.get(gateway.url + "/.well-known/idwall/jwks.json") as resp:
            after = [k["kid"] for k in (await resp.json())["keys"]]
        async with client.get(gateway.url + "/after-rotation") as resp:
            seen = await resp.json()
    token = dict((k.lower(), v) for k, v in seen["headers"])["x-idwall-assertion"]
    assert len(before) == 1
    assert after[0] == new_kid and before[0] in after
    assert jwt.get_unverified_header(token)["kid"] == new_kid


async def test_websocket_through_the_gateway_carries_the_assertion(gateway) -> None:
    device = await gateway.device("hana")
    async with gateway.session(device) as client:
        async with client.ws_connect(gateway.url + "/ws") as ws:
            greeting = json.loads((await ws.receive(timeout=5)).data)
            assert greeting == {"hello": True}
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "echo:ping"


async def test_websocket_refused_on_a_route_without_websockets(tmp_path: Path, upstream) -> None:
    from tests.helpers.gateway import start_test_gateway

    gut = await start_test_gateway(tmp_path, upstream.url,
                                   edit=lambda text: text.replace("websockets: true", "websockets: false"))
    try:
        device = await gut.device("ivan")
        async with gut.session(device) as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await client.ws_connect(gut.url + "/ws")
            assert caught.value.status == 403
    finally:
        await gut.running.stop(drain=1)


async def test_streamed_body_reaches_the_upstream_whole(gateway) -> None:
    device = await gateway.device("judy")

    async def body():
        for _ in range(16):  # exactly limits.max_body (1m), sent chunked
            yield b"x" * 65536

    async with gateway.session(device) as client:
        async with client.post(gateway.url + "/upload", data=body()) as resp:
            assert resp.status == 200
            assert (await resp.json())["body_len"] == 16 * 65536

