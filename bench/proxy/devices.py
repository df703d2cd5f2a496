"""Bulk device registration for the proxy benchmark: thousands of devices with a live session each, fast.

``idwall.testing.fixtures.register_device_directly`` writes one device per store transaction, with its
ledger entries, each commit fsync'd: about 100 s for 10,000 devices. The benchmark needs the same rows
(user, device, credential, live session) but neither the ceremonies nor the ledger, so this module
issues the certificates in a loop and inserts every row in one SQLite transaction, straight against the
schema in ``idwall/store/migrations/``. It is benchmark set-up, not a product path: a benchmark store has
no ledger entries and no enrollment rows for these devices.

Every device has its own P-256 key and its own certificate from the device CA (so its own serial and
thumbprint), exactly as an enrolled device would; one user per device.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from idwall import pki
from idwall.config import Config
from idwall.encoding import sha256


@dataclass(frozen=True)
class BenchDevice:
    """A registered device: its ids, and one PEM file holding its key and certificate."""

    device_id: str
    user_id: str
    session_id: str
    cert_sha256: bytes
    pem_path: Path


def database_path(config: Config) -> Path:
    """The SQLite file of ``config`` (``sqlite:relative.db`` is relative to the config's directory)."""
    if config.sqlite_path is not None:
        return config.sqlite_path
    return config.source.parent / config.store[len("sqlite:"):]


def register_devices(config: Config, count: int, out_dir: Path, *, cert_ttl: int = 86400) -> list[BenchDevice]:
    """``count`` active devices, each with a certificate on disk and a live session, in one transaction."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = pki.load_cert(config.device_ca.cert), pki.load_private_key(config.device_ca.key)
    now = time.time()
    amr = json.dumps(["hwk", "user", "mfa"])
    devices: list[BenchDevice] = []
    users, device_rows, credentials, sessions = [], [], [], []
    for index in range(count):
        key = pki.generate_p256_key()
        public = key.public_key()
        spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        device_id = f"dev-bench-{index:06d}"
        cert = pki.issue_device_cert(ca_cert=ca_cert, ca_key=ca_key, device_id=device_id, now=now, ttl=cert_ttl,
                                     csr=pki.CSRInfo(public_key=public, spki_der=spki, spki_sha256=sha256(spki)))
        thumbprint = pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))
        pem_path = out_dir / f"{device_id}.pem"
        # key and certificate in one file: the client's load_cert_chain reads both from it
        fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pki.private_key_pem(key) + pki.cert_pem(cert).encode("ascii"))
        user_id, session_id, credential_id = f"user{index:06d}", f"ses-bench-{index:06d}", os.urandom(16)
        users.append((user_id, user_id, f"{user_id}@example.com", json.dumps(["eng"]), 0, now))
        device_rows.append((device_id, user_id, device_id, "active", thumbprint, pki.cert_pem(cert), now,
                            now + cert_ttl, None, None, "enr-bench-" + secrets.token_hex(8)))
        # sign_count 1: as after the login that created the session
        credentials.append((credential_id, user_id, device_id, b"bench-only", -7, 1, now))
        sessions.append((session_id, user_id, device_id, credential_id, thumbprint, amr, now, now,
                         now + config.session.max_age, now))
        devices.append(BenchDevice(device_id, user_id, session_id, thumbprint, pem_path))
    conn = sqlite3.connect(database_path(config), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO users (id, name, email, groups_json, admin, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", users)
        conn.executemany("INSERT INTO devices (id, user_id, name, status, cert_sha256, cert_pem, enrolled_at,"
                         " not_after, approved_by, revoked_at, enrollment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         device_rows)
        conn.executemany("INSERT INTO credentials (id, user_id, device_id, public_key, alg, sign_count, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", credentials)
        conn.executemany("INSERT INTO sessions (id, user_id, device_id, credential_id, cert_sha256, amr_json,"
                         " auth_time, created_at, expires_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         sessions)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return devices
