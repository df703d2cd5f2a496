"""Building blocks for tests against a real gateway: a gateway directory, TLS clients, devices.

``register_device_directly`` is the seam the proxy tests use: it writes a device
and a session into the store the way an enrollment and a login would, without
the passkey ceremonies (those are tested through the real API elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from .. import pki
from ..encoding import b64url_encode
from ..model import Credential, Device, Enrollment, LedgerDraft, NewDevice, Session, User
from ..store.base import Store


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_gateway_dir(directory: Path, *, port: int, upstream: str | None = None, admin: str = "admin",
                     extra_yaml: str = "", store: str | None = None) -> dict[str, Any]:
    """Run ``idwall init`` into ``directory`` (``--store store`` when given) and point its example route at
    ``upstream``.

    Returns the ``--json`` answer of init (config, bootstrap_code, ca_pem, device_ca_pem, public_url).
    """
    from ..bootstrap import init_directory

    result = init_directory(directory, admin=admin, port=port, force=False, now=datetime.now(timezone.utc),
                            store=store)
    config_path = Path(result.config_path)
    text = config_path.read_text()
    if upstream is not None:
        text = text.replace("http://127.0.0.1:9001", upstream)
    if extra_yaml:
        text += "\n" + extra_yaml
    config_path.write_text(text)
    return {"config": str(config_path), "bootstrap_code": result.bootstrap_code, "ca_pem": str(result.ca_pem),
            "device_ca_pem": str(result.device_ca_pem), "public_url": result.public_url}


def client_ssl_context(ca_pem: str | Path, cert: str | Path | None = None,
                       key: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the gateway against ``ca_pem`` and presents a device certificate."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


@dataclass(frozen=True)
class DeviceFiles:
    """A device written to disk: its certificate and key, and the ids the store knows it by."""

    device_id: str
    user_id: str
    cert_path: Path
    key_path: Path
    cert_sha256: bytes
    session_id: str | None


async def register_device_directly(
    store: Store, *, device_ca_cert: Any, device_ca_key: Any, out_dir: Path, user_id: str,
    groups: tuple[str, ...] = (), admin: bool = False, name: str | None = None, email: str = "",
    with_session: bool = True, auth_time: float | None = None, cert_ttl: int = 3600,
) -> DeviceFiles:
    """Write user, device, credential (and a live session) into ``store`` with a real device certificate."""
    now = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    key = pki.generate_p256_key()
    csr = pki.check_csr(pki.make_csr(key, "test-device"))
    device_id = "dev-" + secrets.token_hex(8)
    cert = pki.issue_device_cert(ca_cert=device_ca_cert, ca_key=device_ca_key, csr=csr, device_id=device_id,
                                 now=datetime.now(timezone.utc), ttl=cert_ttl)
    der = cert.public_bytes(serialization.Encoding.DER)
    cert_sha256 = pki.cert_thumbprint(der)
    cert_path, key_path = out_dir / f"{device_id}.pem", out_dir / f"{device_id}-key.pem"
    pki.write_cert(cert_path, cert)
    pki.write_private_key(key_path, key)
    enrollment_id = "enr-" + secrets.token_hex(8)
    await store.create_enrollment(Enrollment(
        enrollment_id, os.urandom(32), os.urandom(32), csr.spki_sha256, pki.make_csr(key, "x"), name or device_id,
        None, user_id, name or user_id, email, groups, admin, False, "begun", None, now, now + 300))
    credential_id = os.urandom(16)
    user = User(user_id, name or user_id, email, groups, admin, now)
    device = Device(device_id, user_id, name or device_id, "active", cert_sha256, pki.cert_pem(cert), now,
                    now + cert_ttl, None, None, enrollment_id)
    credential = Credential(credential_id, user_id, device_id, b"test-only", -7, 0, now)
    await store.complete_enrollment(enrollment_id=enrollment_id, new=NewDevice(user, device, credential), now=now,
                                    draft=LedgerDraft("device.enroll", user_id, device_id, {"test": True}))
    session_id = None
    if with_session:
        session_id = "ses-" + secrets.token_hex(8)
        at = now if auth_time is None else auth_time
        await store.create_session(
            Session(session_id, user_id, device_id, credential_id, cert_sha256, ("hwk", "user", "mfa"), at, now,
                    now + 3600, now),
            expected_sign_count=0, new_sign_count=1,
            draft=LedgerDraft("session.login", user_id, session_id, {"test": True}))
    return DeviceFiles(device_id, user_id, cert_path, key_path, cert_sha256, session_id)


async def raw_https(host: str, port: int, ctx: ssl.SSLContext, request: bytes, *, server_hostname: str = "localhost",
                    read_timeout: float = 5.0) -> bytes:
    """Send raw bytes over TLS and return everything read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname)
    writer.write(request)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return b"".join(chunks)


def problem(body: bytes | str) -> dict[str, Any]:
    """Parse a problem+json body."""
    return json.loads(body)


__all__ = ["DeviceFiles", "b64url_encode", "client_ssl_context", "free_port", "init_gateway_dir", "problem",
           "raw_https", "register_device_directly"]
