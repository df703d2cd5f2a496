"""Login, logout and /me over real mTLS: sessions bound to the connection's certificate, and attacks on them.

The attacks of the adversarial review (ceremonies per device, cross-site logout) are at the end; each one's
docstring says what got through before its fix.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idwall import pki
from idwall.challenges import login_challenge
from idwall.encoding import b64url_decode, b64url_encode
from idwall.model import LedgerDraft
from idwall.web.api_login import MAX_OPEN_CEREMONIES
from tests.helpers.api import Enrolled, bootstrap, call, counts, enroll, invite, ledger_ok, login

pytestmark = pytest.mark.asyncio


async def _admin_and_bob(gateway) -> tuple[Enrolled, Enrolled]:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        assert (await login(gateway, admin, client))[0] == 200
        code = await invite(gateway, admin, client, "bob", groups=["eng"])
    return admin, await enroll(gateway, code)


async def test_login_starts_a_session_bound_to_this_certificate(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert status == 200 and me["session"] is None
        assert me["user"]["id"] == "admin" and me["user"]["admin"] is True
        assert me["device"] == {"id": admin.device_id, "name": "laptop", "status": "active"}
        async with client.get(gateway.url + "/app", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 401
        status, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        assert status == 200
        options = begun["options"]
        assert [b64url_decode(c["id"]) for c in options["allowCredentials"]] == list(admin.auth.credentials)
        assert options["userVerification"] == "required"
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                    {"credential": admin.auth.get(options)})
        assert status == 200, answer
        assert answer["user"] == "admin" and answer["session_id"].startswith("ses-")
        assert answer["expires_at"] - answer["auth_time"] == gateway.config.session.max_age
        # the very next proxied request on the same connection has the session
        async with client.get(gateway.url + "/app") as resp:
            assert resp.status == 200
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert me["session"]["id"] == answer["session_id"]
    session = await gateway.store.get_session(answer["session_id"])
    assert session.cert_sha256 == admin.cert_sha256 and session.amr == ("hwk", "user", "mfa")
    # the challenge was bound to this connection's certificate
    entries = await ledger_ok(gateway)
    entry = entries[-1]
    assert entry["type"] == "session.login" and entry["subject"] == answer["session_id"]
    assert b64url_decode(options["challenge"]) == login_challenge(
        b64url_decode(entry["data"]["nonce"]), _der(admin))
    assert entry["approval"]["nonce"] == entry["data"]["nonce"] and entry["data"]["sign_count"] == 1


def _der(device: Enrolled) -> bytes:
    return x509.load_pem_x509_certificate(device.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)


async def test_login_invalidates_every_connection_with_that_certificate(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as first:
        async with first.get(gateway.url + "/x", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 401  # resolved (without a session) and cached on this connection
        assert (await login(gateway, admin))[0] == 200  # on another connection
        async with first.get(gateway.url + "/x") as resp:
            assert resp.status == 200


async def test_no_client_certificate_is_403_pointing_at_enrollment(gateway) -> None:
    async with gateway.session() as anon:
        for method, path, body in (("POST", "/idwall/api/login/begin", {}), ("GET", "/idwall/api/me", None),
                                   ("POST", "/idwall/api/logout", {}),
                                   ("POST", "/idwall/api/login/finish", {"credential": {}})):
            status, problem = await call(anon, method, gateway.url + path, body)
            assert status == 403, (path, problem)
            assert problem["type"].endswith("/no-client-certificate") and "/idwall/enroll" in problem["enroll_url"]


async def test_certificate_not_enrolled_is_403(gateway) -> None:
    gw = gateway.running.node
    key = pki.generate_p256_key()
    cert = pki.issue_device_cert(ca_cert=gw.device_ca_cert, ca_key=gw.device_ca_key,
                                 csr=pki.check_csr(pki.make_csr(key, "x")), device_id="dev-ghost",
                                 now=datetime.now(timezone.utc), ttl=3600)
    ghost = Enrolled("dev-ghost", "ghost", gateway.dir / "ghost.pem", gateway.dir / "ghost-key.pem", None,  # type: ignore[arg-type]
                     b"")
    pki.write_cert(ghost.cert_path, cert)
    pki.write_private_key(ghost.key_path, key)
    async with gateway.session(ghost) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        assert status == 403 and "not enrolled" in problem["detail"]
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert status == 200 and me == {"user": None, "device": None, "session": None}


async def test_replayed_login_assertion_is_refused(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        _, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        credential = admin.auth.get(begun["options"])
        status, _ = await call(client, "POST", gateway.url + "/idwall/api/login/finish", {"credential": credential})
        assert status == 200
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                     {"credential": credential})
        assert status == 409 and "already used" in problem["detail"]
        assert await counts(gateway) == before


async def test_expired_login_challenge_is_410(gateway) -> None:
    admin = await bootstrap(gateway)
    gw = gateway.running.node
    async with gateway.session(admin) as client:
        _, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        gw.clock = lambda: time.time() + gateway.config.webauthn.timeout + 1  # type: ignore[method-assign]
        try:
            before = await counts(gateway)
            status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                         {"credential": admin.auth.get(begun["options"])})
        finally:
            gw.clock = time.time  # type: ignore[method-assign]
    assert status == 410, problem
    after = await counts(gateway)
    assert after["sessions"] == before["sessions"] and after["ledger"] == before["ledger"]


HOSTILE_ASSERTIONS = {
    "wrong origin": {"origin": "https://evil.example"},
    "wrong RP ID": {"rp_id": "evil.example"},
    "missing UV": {"uv": False},
    "missing UP": {"up": False},
    "create instead of get": {"client_data": {"type": "webauthn.create"}},
}


@pytest.mark.parametrize("name", list(HOSTILE_ASSERTIONS))
async def test_hostile_login_assertion_is_refused_and_stores_nothing(gateway, name: str) -> None:
    admin = await bootstrap(gateway)
    before = await counts(gateway)
    status, problem = await login(gateway, admin, **HOSTILE_ASSERTIONS[name])
    assert status == 400, problem
    assert problem["type"].endswith("/webauthn-rejected")
    after = await counts(gateway)
    assert after["sessions"] == before["sessions"] and after["ledger"] == before["ledger"]


async def test_assertion_made_for_another_connection_is_refused(gateway) -> None:
    admin, bob = await _admin_and_bob(gateway)
    async with gateway.session(admin) as on_a, gateway.session(bob) as on_b:
        # begun on device A's connection, the answer replayed on device B's
        _, begun = await call(on_a, "POST", gateway.url + "/idwall/api/login/begin", {})
        credential = admin.auth.get(begun["options"])
        before = await counts(gateway)
        status, problem = await call(on_b, "POST", gateway.url + "/idwall/api/login/finish",
                                     {"credential": credential})
        assert status == 403 and "another connection" in problem["detail"]
        after = await counts(gateway)
        assert after["sessions"] == before["sessions"] and after["ledger"] == before["ledger"]
        # and bob cannot log in with the admin's passkey on his own connection's challenge
        _, begun = await call(on_b, "POST", gateway.url + "/idwall/api/login/begin", {})
        forged = admin.auth.get(begun["options"], credential_id=next(iter(admin.auth.credentials)))
        status, problem = await call(on_b, "POST", gateway.url + "/idwall/api/login/finish", {"credential": forged})
        assert status == 400 and "not bound to this device" in problem["detail"]


async def test_sign_count_regression_is_refused_and_recorded(gateway) -> None:
    admin = await bootstrap(gateway)
    assert (await login(gateway, admin))[0] == 200  # stored count is now 1
    before = await counts(gateway)
    status, problem = await login(gateway, admin, sign_count=1)
    assert status == 400 and "cloned" in problem["detail"]
    after = await counts(gateway)
    assert after["sessions"] == before["sessions"]
    assert after["ledger"] == before["ledger"] + 1
    entries = await ledger_ok(gateway)
    anomaly = entries[-1]
    assert anomaly["type"] == "signcount.anomaly" and anomaly["actor"] == "system"
    assert anomaly["data"]["stored"] == 1 and anomaly["data"]["received"] == 1
    assert anomaly["data"]["device_id"] == admin.device_id


async def test_login_on_a_revoked_device_is_refused(gateway) -> None:
    admin, bob = await _admin_and_bob(gateway)
    assert (await login(gateway, bob))[0] == 200
    gw = gateway.running.node
    await gateway.store.kill(scope="device", target=bob.device_id, revoke_devices=True, now=gw.clock(),
                             draft=LedgerDraft("kill", "admin", bob.device_id,
                                               {"scope": "device", "target": bob.device_id, "reason": "stolen",
                                                "revoke_devices": True}))
    before = await counts(gateway)
    async with gateway.session(bob) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        assert status == 403 and "revoked" in problem["detail"]
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert me["device"]["status"] == "revoked" and me["session"] is None
    assert await counts(gateway) == before
    await ledger_ok(gateway)


async def test_logout_ends_the_session_everywhere(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client, gateway.session(admin) as other:
        status, answer = await login(gateway, admin, client)
        assert status == 200
        async with other.get(gateway.url + "/x") as resp:
            assert resp.status == 200
        status, ended = await call(client, "POST", gateway.url + "/idwall/api/logout", {})
        assert status == 200 and ended == {"session_id": answer["session_id"], "ended": True}
        async with other.get(gateway.url + "/x", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 401
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert me["session"] is None
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/logout", {})
        assert status == 401
    entries = await ledger_ok(gateway)
    assert entries[-1]["type"] == "session.logout" and entries[-1]["subject"] == answer["session_id"]


def _garbage_client_data(cred):  # type: ignore[no-untyped-def]
    cred["response"]["clientDataJSON"] = b64url_encode(b"\x00not json")
    return cred


def _short_challenge(cred):  # type: ignore[no-untyped-def]
    cred["response"]["clientDataJSON"] = b64url_encode(b'{"type":"webauthn.get","challenge":"AAAA"}')
    return cred


def _not_object(cred):  # type: ignore[no-untyped-def]
    return [cred]


def _no_response(cred):  # type: ignore[no-untyped-def]
    del cred["response"]
    return cred


def _bad_signature_b64(cred):  # type: ignore[no-untyped-def]
    cred["response"]["signature"] = "***"
    return cred


def _garbage_authenticator_data(cred):  # type: ignore[no-untyped-def]
    cred["response"]["authenticatorData"] = b64url_encode(b"\x01\x02")
    return cred


def _unknown_challenge(cred):  # type: ignore[no-untyped-def]
    import json

    data = json.loads(b64url_decode(cred["response"]["clientDataJSON"]))
    data["challenge"] = b64url_encode(bytes(32))
    cred["response"]["clientDataJSON"] = b64url_encode(json.dumps(data).encode())
    return cred


MALFORMED = {
    "clientDataJSON not JSON": (_garbage_client_data, 400),
    "challenge too short": (_short_challenge, 400),
    "credential not an object": (_not_object, 400),
    "no response": (_no_response, 400),
    "signature not base64url": (_bad_signature_b64, 400),
    "authenticatorData garbage": (_garbage_authenticator_data, 400),
    "challenge of no ceremony": (_unknown_challenge, 409),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_login_finish_is_a_clear_4xx(gateway, name: str) -> None:
    mangle, expected = MALFORMED[name]
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        _, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
        before = await counts(gateway)
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                     {"credential": mangle(admin.auth.get(begun["options"]))})
        assert status == expected, problem
        assert problem["detail"]
        after = await counts(gateway)
        assert after["sessions"] == before["sessions"] and after["ledger"] == before["ledger"]


async def test_oversized_and_wrong_content_type_bodies(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                     data=b'{"credential": "' + b"A" * 70000 + b'"}',
                                     headers={"Content-Type": "application/json"})
        assert status == 413, problem
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/begin", data=b"{}",
                                     headers={"Content-Type": "text/plain"})
        assert status == 400 and "Content-Type" in problem["detail"]


async def test_concurrent_finishes_of_one_ceremony_make_one_session(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as a, gateway.session(admin) as b:
        _, begun = await call(a, "POST", gateway.url + "/idwall/api/login/begin", {})
        credential = admin.auth.get(begun["options"])
        results = await asyncio.gather(*(call(c, "POST", gateway.url + "/idwall/api/login/finish",
                                              {"credential": credential}) for c in (a, b)))
    assert sorted(status for status, _ in results) == [200, 409]
    assert (await counts(gateway))["sessions"] == 1


# -- adversarial review: login ceremonies per device ----------------------------------------------------


async def _ceremonies(gateway: Any, device_id: str) -> int:
    return await gateway.store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM ceremonies WHERE device_id = ?", (device_id,)).fetchone()[0])


async def test_login_ceremonies_per_device_are_bounded_and_the_newest_still_works(gateway) -> None:
    """Before: every login/begin stored a ceremony row; one device could hold any number of them."""
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        begun = []
        for _ in range(MAX_OPEN_CEREMONIES + 5):
            status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
            assert status == 200, answer
            begun.append(answer)
        assert await _ceremonies(gateway, admin.device_id) == MAX_OPEN_CEREMONIES
        # the oldest was dropped: its assertion finds no ceremony
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                     {"credential": admin.auth.get(begun[0]["options"])})
        assert status == 409, problem
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/login/finish",
                                    {"credential": admin.auth.get(begun[-1]["options"])})
        assert status == 200, answer


# -- adversarial review: cross-site writes to logout ---------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},
], ids=["foreign origin", "sec-fetch-site cross-site", "opaque origin"])
async def test_logout_refuses_cross_site_requests(gateway, headers: dict[str, str]) -> None:
    """Before: logout read no body, so a cross-site <form method=post> (no preflight) ended the session: the
    browser presents the client certificate to any site's requests."""
    device = await gateway.device("erin")
    async with gateway.session(device) as client:
        status, problem = await call(client, "POST", gateway.url + "/idwall/api/logout",
                                     data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                           **headers})
        assert status == 403, problem
        session = await gateway.store.get_session(device.session_id)
        assert session.revoked_at is None
        # our own page (same origin) still signs out
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/logout",
                                    headers={"Origin": gateway.url})
        assert status == 200, answer
