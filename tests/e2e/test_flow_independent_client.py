"""The whole flow with an independently written WebAuthn client, over real TLS, checked with PyJWT.

Bootstrap admin (code from init) -> signed invite -> second user's device
enrolled with that code -> mTLS login with that device's certificate -> the
proxied route; the assertion the upstream received names that user and device
and verifies against the JWKS. Nothing here comes from idwall except the
running gateway: keys, CSRs and TLS clients are made with cryptography and ssl.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.webauthn_client import Passkey, b64u

pytestmark = pytest.mark.asyncio


def _key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "independent")]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _client(ca: Path, cert: Path | None = None, key: Path | None = None) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1))


async def _post(client: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with client.post(url, json=body) as resp:
        answer = await resp.json(content_type=None)
        assert resp.status == 200, (url, answer)
        return answer  # type: ignore[no-any-return]


async def _enroll(base: str, ca: Path, out: Path, code: str, name: str) -> tuple[Passkey, dict[str, Any], Path, Path]:
    key, csr = _key_and_csr()
    passkey = Passkey(origin=base)
    async with _client(ca) as anon:
        begun = await _post(anon, base + "/idwall/api/enroll/begin",
                            {"code": code, "csr_pem": csr, "device_name": name})
        done = await _post(anon, base + "/idwall/api/enroll/finish",
                           {"enrollment_id": begun["enrollment_id"], "credential": passkey.create(begun["options"])})
    assert done["status"] == "active"
    cert_path, key_path = out / f"{name}.pem", out / f"{name}-key.pem"
    cert_path.write_text(done["certificate_pem"])
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    # the certificate is for exactly the key whose CSR the passkey vouched for
    issued = x509.load_pem_x509_certificate(done["certificate_pem"].encode())
    assert issued.public_key().public_numbers() == key.public_key().public_numbers()
    return passkey, done, cert_path, key_path


async def _login(client: aiohttp.ClientSession, base: str, passkey: Passkey) -> dict[str, Any]:
    begun = await _post(client, base + "/idwall/api/login/begin", {})
    return await _post(client, base + "/idwall/api/login/finish", {"credential": passkey.get(begun["options"])})


async def test_independent_client_enrolls_invites_logs_in_and_reaches_the_upstream(gateway, tmp_path: Path) -> None:
    base = gateway.url
    ca = Path(gateway.init["ca_pem"])

    admin_key, admin, admin_cert, admin_pem_key = await _enroll(base, ca, tmp_path, gateway.init["bootstrap_code"],
                                                                "admin-laptop")
    assert admin["root_fingerprint"] == b64u(hashlib.sha256(admin_key.cose_public_key()).digest())

    async with _client(ca, admin_cert, admin_pem_key) as admin_client:
        session = await _login(admin_client, base, admin_key)
        assert session["user"] == "admin"
        begun = await _post(admin_client, base + "/idwall/api/actions/begin", {"action": {
            "type": "invite.create", "user": "carol", "name": "Carol Jones", "email": "carol@example.com",
            "groups": ["eng", "sre"], "admin": False}})
        assert begun["action"]["actor"] == "admin"
        done = await _post(admin_client, base + "/idwall/api/actions/finish",
                           {"action_id": begun["action_id"], "credential": admin_key.get(begun["options"])})
    code = done["result"]["code"]

    carol_key, carol, carol_cert, carol_pem_key = await _enroll(base, ca, tmp_path, code, "carol-laptop")
    carol_der = x509.load_pem_x509_certificate(carol_cert.read_bytes()).public_bytes(serialization.Encoding.DER)

    async with _client(ca, carol_cert, carol_pem_key) as carol_client:
        session = await _login(carol_client, base, carol_key)
        assert session["user"] == "carol"
        async with carol_client.get(base + "/reports/q3?x=1") as resp:
            assert resp.status == 200
            seen = await resp.json()
        async with carol_client.get(base + "/.well-known/idwall/jwks.json") as resp:
            jwks = await resp.json()

    tokens = [v for k, v in seen["headers"] if k.lower() == "x-idwall-assertion"]
    assert len(tokens) == 1
    kid = jwt.get_unverified_header(tokens[0])["kid"]
    claims = jwt.decode(tokens[0], jwt.PyJWKSet.from_dict(jwks)[kid].key, algorithms=["ES256"],
                        audience="whoami", issuer=base)
    assert claims["sub"] == "carol"
    assert claims["email"] == "carol@example.com" and claims["name"] == "Carol Jones"
    assert claims["groups"] == ["eng", "sre"]
    assert claims["sid"] == session["session_id"]
    assert claims["device"]["id"] == carol["device_id"]
    assert claims["device"]["credential_id"] == b64u(carol_key.credential_id)
    assert claims["cnf"] == {"x5t#S256": b64u(hashlib.sha256(carol_der).digest())}
    assert claims["htm"] == "GET" and claims["htu"] == base + "/reports/q3"
    assert "hwk" in claims["amr"]
