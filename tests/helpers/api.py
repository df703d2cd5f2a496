"""The API flows the tests drive over real mTLS: one API call helper, enroll, log in, sign, invite, ledger checks.

Every flow goes through the gateway's real HTTP API with a software passkey
(:class:`idwall.testing.authenticator.SoftAuthenticator`) and a device key made here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idwall import pki
from idwall.audit import verify_ledger
from idwall.encoding import sha256
from idwall.testing.authenticator import SoftAuthenticator

TABLES = ("users", "devices", "credentials", "sessions", "invites", "enrollments", "ceremonies", "tokens", "ledger")


@dataclass
class Enrolled:
    """A device enrolled through the API: its files (usable as ``gateway.session(device)``) and passkey."""

    device_id: str
    user_id: str
    cert_path: Path
    key_path: Path
    auth: SoftAuthenticator
    cert_sha256: bytes
    answer: dict[str, Any] = field(default_factory=dict)


def make_csr() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = pki.generate_p256_key()
    return key, pki.make_csr(key, "test-device")


async def call(session: Any, method: str, url: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """One API request; the status and the JSON (or problem+json) body."""
    if body is not None and "data" not in kwargs:
        kwargs["json"] = body
    async with session.request(method, url, **kwargs) as resp:
        text = await resp.text()
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", (resp.status, text)
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, {"raw": text}


async def call_fresh(gateway: Any, method: str, path: str, *, device: Any = None, token: str | None = None,
                     body: Any = None, headers: dict[str, str] | None = None,
                     raw: bytes | None = None) -> tuple[int, Any, Any]:
    """One request on a fresh connection of ``device`` (or none); (status, parsed body or text, headers).

    Unlike :func:`call` it does not insist on problem+json: the console's pages answer HTML.
    """
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    kwargs: dict[str, Any] = {"headers": hdrs, "allow_redirects": False}
    if body is not None:
        kwargs["json"] = body
    if raw is not None:
        kwargs["data"] = raw
    async with gateway.session(device) as client:
        async with client.request(method, gateway.url + path, **kwargs) as resp:
            text = await resp.text()
            parsed = json.loads(text) if "json" in (resp.content_type or "") else text
            return resp.status, parsed, resp.headers


async def counts(gateway: Any) -> dict[str, int]:
    """Rows per table, to show a refused request stored nothing."""
    def read(conn: Any) -> dict[str, int]:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    return await gateway.store.read(read)


async def begin_enroll(gateway: Any, *, code: str | None = None, user: str | None = None,
                       device_name: str = "laptop") -> tuple[ec.EllipticCurvePrivateKey, int, dict[str, Any]]:
    key, csr = make_csr()
    body: dict[str, Any] = {"csr_pem": csr, "device_name": device_name}
    if code is not None:
        body["code"] = code
    if user is not None:
        body["user"] = user
    async with gateway.session() as anon:
        status, answer = await call(anon, "POST", gateway.url + "/idwall/api/enroll/begin", body)
    return key, status, answer


async def finish_enroll(gateway: Any, enrollment_id: str, credential: Any) -> tuple[int, dict[str, Any]]:
    async with gateway.session() as anon:
        return await call(anon, "POST", gateway.url + "/idwall/api/enroll/finish",
                          {"enrollment_id": enrollment_id, "credential": credential})


def save_device(gateway: Any, key: ec.EllipticCurvePrivateKey, answer: dict[str, Any], user_id: str,
                auth: SoftAuthenticator) -> Enrolled:
    out = gateway.dir / "enrolled"
    out.mkdir(exist_ok=True)
    cert = x509.load_pem_x509_certificate(answer["certificate_pem"].encode())
    cert_path, key_path = out / f"{answer['device_id']}.pem", out / f"{answer['device_id']}-key.pem"
    pki.write_cert(cert_path, cert)
    pki.write_private_key(key_path, key)
    return Enrolled(answer["device_id"], user_id, cert_path, key_path, auth,
                    sha256(cert.public_bytes(serialization.Encoding.DER)), answer)


async def enroll(gateway: Any, code: str, *, auth: SoftAuthenticator | None = None,
                 device_name: str = "laptop") -> Enrolled:
    """Enroll a device with ``code`` and a (new) software passkey; the device must come out active."""
    auth = auth or SoftAuthenticator(origin=gateway.url)
    key, status, begun = await begin_enroll(gateway, code=code, device_name=device_name)
    assert status == 200, begun
    status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200, answer
    assert answer["status"] == "active", answer
    user_id = (await gateway.store.get_enrollment(begun["enrollment_id"])).user_id
    return save_device(gateway, key, answer, user_id, auth)


async def bootstrap(gateway: Any) -> Enrolled:
    return await enroll(gateway, gateway.init["bootstrap_code"])


async def login(gateway: Any, device: Enrolled, client: Any = None, **get_kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Log in over ``client`` (a new mTLS client of ``device`` when None)."""
    if client is None:
        async with gateway.session(device) as own:
            return await login(gateway, device, own, **get_kwargs)
    status, begun = await call(client, "POST", gateway.url + "/idwall/api/login/begin", {})
    assert status == 200, begun
    credential = device.auth.get(begun["options"], **get_kwargs)
    return await call(client, "POST", gateway.url + "/idwall/api/login/finish", {"credential": credential})


async def sign(gateway: Any, device: Enrolled, client: Any, action: dict[str, Any],
               **get_kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Begin and finish a signed action over ``client`` (which must have a session)."""
    status, begun = await call(client, "POST", gateway.url + "/idwall/api/actions/begin", {"action": action})
    if status != 200:
        return status, begun
    credential = device.auth.get(begun["options"], **get_kwargs)
    return await call(client, "POST", gateway.url + "/idwall/api/actions/finish",
                      {"action_id": begun["action_id"], "credential": credential})


async def invite(gateway: Any, admin: Enrolled, client: Any, user: str, *, groups: list[str] | None = None,
                 is_admin: bool = False, email: str = "", manager: str | None = None) -> str:
    """An invite signed by ``admin`` over ``client``; ``manager`` is sent only when given (as older clients do)."""
    action: dict[str, Any] = {
        "type": "invite.create", "user": user, "name": user.title(), "email": email or f"{user}@example.com",
        "groups": groups or [], "admin": is_admin}
    if manager is not None:
        action["manager"] = manager
    status, answer = await sign(gateway, admin, client, action)
    assert status == 200, answer
    return str(answer["result"]["code"])


async def begin_renewal(gateway: Any, device: Enrolled) -> tuple[ec.EllipticCurvePrivateKey, int, dict[str, Any]]:
    """A new key, and ``POST /idwall/api/renew/begin`` with its CSR over a fresh connection of ``device``."""
    key, csr = make_csr()
    async with gateway.session(device) as client:
        status, answer = await call(client, "POST", gateway.url + "/idwall/api/renew/begin", {"csr_pem": csr})
    return key, status, {**answer, "csr_pem": csr}


def renewed(gateway: Any, device: Enrolled, key: ec.EllipticCurvePrivateKey, certificate_pem: str) -> Enrolled:
    """``device`` with the certificate a renewal issued for ``key`` (new files; the old ones stay for attacks)."""
    out = gateway.dir / "enrolled"
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    thumbprint = sha256(cert.public_bytes(serialization.Encoding.DER))
    cert_path, key_path = out / f"{device.device_id}-{thumbprint.hex()[:8]}.pem", out / f"{device.device_id}-" \
        f"{thumbprint.hex()[:8]}-key.pem"
    pki.write_cert(cert_path, cert)
    pki.write_private_key(key_path, key)
    return Enrolled(device.device_id, device.user_id, cert_path, key_path, device.auth, thumbprint, device.answer)


async def ledger_ok(gateway: Any) -> list[dict[str, Any]]:
    """The whole ledger, after checking that the independent verifier accepts every entry."""
    entries = await gateway.store.ledger_entries()
    result = verify_ledger(entries)
    assert result.ok, result.reason
    return entries
