"""Hand-built records (idwall.store.base) and configurations for the pure trust decisions.

Times are plain numbers around :data:`NOW` so a test moves the clock by passing another ``now``; nothing here
sleeps or reads the wall clock. :func:`gateway_config` validates a configuration the way ``load_config``
does (through :func:`idwall.config.config_from_mapping`), with placeholder key files it never opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from idwall.config import Config, config_from_mapping
from idwall.model import Device, Enrollment, Invite, Resolved, Session, SignRequest, User

__all__ = ["CERT", "NOW", "device", "enrollment", "gateway_config", "invite", "resolved", "session", "sign_request",
           "user"]

NOW = 1_800_000_000.0
#: the thumbprint of the device certificate on the test connection
CERT = bytes(range(32))

_KEY_FILES = ("server.pem", "server-key.pem", "device-ca.pem", "device-ca-key.pem", "assertion-key.pem",
              "ledger-key.pem")


def user(id: str = "alice", *, groups: tuple[str, ...] = (), admin: bool = False) -> User:
    return User(id, id.title(), f"{id}@example.com", groups, admin, NOW - 86400)


def device(id: str = "dev-1", *, user_id: str = "alice", status: str = "active",
           not_after: float | None = NOW + 30 * 86400, cert_sha256: bytes = CERT) -> Device:
    return Device(id, user_id, "laptop", status, cert_sha256, None, NOW - 86400, not_after, None,
                  NOW - 60 if status == "revoked" else None, "enr-1")


def session(id: str = "ses-1", *, user_id: str = "alice", auth_time: float = NOW - 60,
            expires_at: float = NOW + 3600, last_seen: float = NOW - 10, revoked_at: float | None = None) -> Session:
    return Session(id, user_id, "dev-1", b"cred", CERT, ("hwk", "user"), auth_time, auth_time, expires_at, last_seen,
                   revoked_at)


def resolved(*, user_: User | None = None, device_: Device | None = None, session_: Session | None = None,
             with_session: bool = True) -> Resolved:
    """alice's active device with a live session (unless told otherwise)."""
    return Resolved(device_ or device(), user_ or user(), (), session_ or (session() if with_session else None))


def invite(id: str = "inv-1", *, user_id: str = "bob", groups: tuple[str, ...] = (), admin: bool = False,
           bootstrap: bool = False, expires_at: float = NOW + 3600, used_at: float | None = None) -> Invite:
    """An invite alice made a minute ago for ``user_id``."""
    return Invite(id, user_id, user_id.title(), f"{user_id}@example.com", groups, admin, bootstrap, "alice", NOW - 60,
                  expires_at, used_at)


def sign_request(id: str = "sgn-" + "A" * 22, *, device_id: str = "dev-1", state: str = "waiting",
                 link_hash: bytes = b"L" * 32, poll_hash: bytes = b"P" * 32, expires_at: float = NOW + 300,
                 credential: str | None = None) -> SignRequest:
    """alice's request from her device ``dev-1`` over the certificate :data:`CERT` (secret hashes are placeholders)."""
    return SignRequest(id, link_hash, poll_hash, CERT, "alice", device_id, "ACTION-ID", '{"type":"admin.grant"}',
                       state, credential, None, NOW, expires_at)


def enrollment(id: str = "enr-1", *, user_id: str = "bob", invite_id: str | None = None, groups: tuple[str, ...] = (),
               admin: bool = False, bootstrap: bool = False, status: str = "begun", created_at: float = NOW,
               expires_at: float = NOW + 300) -> Enrollment:
    """An enrollment of ``user_id``'s laptop, begun at ``created_at`` (with ``invite_id``'s code when given)."""
    return Enrollment(id, bytes(32), bytes(range(32)), bytes(32), "csr", "laptop", invite_id, user_id, user_id.title(),
                      f"{user_id}@example.com", groups, admin, bootstrap, status, None, created_at, expires_at)


def gateway_config(directory: Path, *, public_url: str = "https://localhost:8443",
                   routes: list[dict[str, Any]] | None = None, **sections: Any) -> Config:
    """A validated :class:`Config` in ``directory``: ``routes`` as YAML would give them, other top-level
    sections (``session``, ``admin``, ``webauthn``, ...) as keyword arguments."""
    certs = directory / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for name in _KEY_FILES:
        (certs / name).write_text("placeholder: the configuration only checks that it can be read\n")
    data: dict[str, Any] = {
        "public_url": public_url,
        "tls": {"cert": "certs/server.pem", "key": "certs/server-key.pem"},
        "device_ca": {"cert": "certs/device-ca.pem", "key": "certs/device-ca-key.pem"},
        "assertion": {"key": "certs/assertion-key.pem"},
        "ledger": {"key": "certs/ledger-key.pem"},
        "store": "sqlite:idwall.db",
        "routes": routes if routes is not None else [
            {"name": "app", "match": {"path": "/"}, "upstream": "http://127.0.0.1:9001"}],
        **sections,
    }
    return config_from_mapping(data, source=directory / "idwall.yaml", base_dir=directory)
