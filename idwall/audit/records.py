"""The records :class:`~idwall.audit.replay.LedgerState` replays: what the ledger knows at some point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Envelope:
    """One entry's envelope, its fields checked for type; ``time`` in unix seconds."""

    seq: int
    time: float
    type: str
    actor: str
    subject: str
    data: dict[str, Any]
    approval: dict[str, Any] | None


@dataclass(frozen=True)
class UserRecord:
    """A user as the ledger knows them at some point."""

    id: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    seq: int  # the entry that created them
    manager: str | None = None  # who may approve their devices besides an admin


@dataclass(frozen=True)
class DeviceRecord:
    """A device; ``status`` is active, pending_approval or revoked."""

    id: str
    user: str
    enrollment_id: str
    cert_sha256: str | None
    status: str
    seq: int
    not_after: float | None = None  # the certificate's expiry, once a renewal recorded it
    activated: bool = False  # it was active at some point: its passkeys may vouch for a new device of its user


@dataclass(frozen=True)
class CredentialRecord:
    """A registered passkey: its owner, device, COSE key and highest sign count seen."""

    id: str
    user: str
    device_id: str
    public_key: bytes
    alg: int
    sign_count: int
    seq: int
    suspect: bool = False  # marked by an incident stage: it can no longer sign device.recover
    revoked: bool = False  # revoked with its lost device (a kill of that device with revoke_devices)


@dataclass(frozen=True)
class InviteRecord:
    """An invite made by a valid ``invite.create``; ``used_by`` is the enrolling seq."""

    id: str
    user: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    expires_at: float
    seq: int
    used_by: int | None = None
    manager: str | None = None


@dataclass(frozen=True)
class TokenRecord:
    """An API token made by a valid ``token.create``."""

    id: str
    scopes: tuple[str, ...]
    expires_at: float
    seq: int
    revoked_by: int | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A session started by a ``session.login``."""

    id: str
    user: str
    device_id: str
    seq: int


@dataclass(frozen=True)
class IncidentRecord:
    """An incident started by ``incident.start``: who runs it, how many stages, how far it got."""

    id: str
    actor: str
    stages: int
    committed: int
    seq: int
    ended_by: int | None = None
