"""The records the parts of IDWall pass each other: users, devices, passkeys, sessions, invites, enrollments,
ceremonies, tokens, ledger drafts, incidents, and the effects of signed actions.

Plain frozen dataclasses, no behaviour and no I/O: the store returns and takes them (``idwall.store.base`` holds
the interface every backend implements), the node keeps them for live connections, the web layer answers with
them. They live here, not under ``idwall/store``, so nothing has to import the storage package to name a user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    created_at: float
    manager: str | None = None  # the user who may approve this user's devices (devices.approval: manager)


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    user_id: str
    name: str
    status: str  # active | pending_approval | revoked
    cert_sha256: bytes | None
    cert_pem: str | None
    enrolled_at: float
    not_after: float | None
    approved_by: str | None
    revoked_at: float | None
    enrollment_id: str


@dataclass(frozen=True, slots=True)
class Credential:
    id: bytes
    user_id: str
    device_id: str
    public_key: bytes
    alg: int
    sign_count: int
    created_at: float
    #: the incident that marked this passkey suspect: it can no longer vouch for a new device (device.recover)
    suspect: str | None = None
    #: set when its device was declared lost (a kill of that one device with revoke_devices): it signs nothing
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    device_id: str
    credential_id: bytes
    cert_sha256: bytes
    amr: tuple[str, ...]
    auth_time: float
    created_at: float
    expires_at: float
    last_seen: float
    revoked_at: float | None = None
    revoke_reason: str | None = None


@dataclass(frozen=True)
class Invite:
    id: str
    user_id: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    bootstrap: bool
    created_by: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    manager: str | None = None  # becomes the user's manager when the invite is used


@dataclass(frozen=True)
class Enrollment:
    id: str
    nonce: bytes
    challenge: bytes
    spki_sha256: bytes
    csr_pem: str
    device_name: str
    invite_id: str | None
    user_id: str
    name: str
    email: str
    groups: tuple[str, ...]
    admin: bool
    bootstrap: bool
    status: str  # begun | pending_approval | active | rejected
    device_id: str | None
    created_at: float
    expires_at: float
    #: the client address that began it (the recovery page shows it, against consent phishing)
    source: str | None = None


@dataclass(frozen=True)
class Ceremony:
    id: str
    kind: str  # login | action
    nonce: bytes
    binding: bytes
    user_id: str | None
    device_id: str | None
    payload: str | None
    expires_at: float


@dataclass(frozen=True)
class SignRequest:
    """A signed action begun on the command line, waiting for the passkey on a one-time page (idwall.sign_requests)."""

    id: str
    link_hash: bytes
    poll_hash: bytes
    binding: bytes  # cert_sha256 of the connection that began it
    user_id: str
    device_id: str
    action_id: str  # the action ceremony's id: b64url(challenge)
    action: str  # canonical JSON of the action the passkey signs
    state: str  # waiting | opened | signed | declined | refused | collected
    credential: str | None  # the page's assertion (JSON) until the command line collects it
    detail: str | None  # why it was refused
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class Renewal:
    """A device's request for a certificate for a new key, begun over its own mTLS connection.

    The polling CLI reads it by id; ``device.renew`` (signed by the user's passkey on that device) fills in
    ``cert_pem`` and ``not_after`` and sets ``status`` to ``renewed``.
    """

    id: str
    device_id: str
    user_id: str
    csr_pem: str
    spki_sha256: bytes
    status: str  # begun | renewed
    created_at: float
    expires_at: float
    cert_pem: str | None = None
    not_after: float | None = None


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    hash: bytes
    scopes: tuple[str, ...]
    created_by: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class LedgerDraft:
    """A ledger entry before the store gives it its ``seq``, ``time``, ``prev``, ``hash`` and ``sig``."""

    type: str
    actor: str
    subject: str
    data: dict[str, Any]
    approval: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewDevice:
    """Everything an enrollment writes at once: user, device, credential."""

    user: User
    device: Device
    credential: Credential


@dataclass(frozen=True)
class KillResult:
    sessions: tuple[str, ...]
    devices: tuple[str, ...]
    users: tuple[str, ...]
    audit_seq: int
    #: the passkeys revoked with their device (a kill of scope device with revoke_devices), base64url ids
    passkeys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    payload: dict[str, Any]
    time: float


@dataclass(frozen=True)
class WorkerRow:
    """A worker process as the ``workers`` table knows it."""

    id: str
    host: str
    pid: int
    nudge: str | None
    started_at: float
    heartbeat: float


@dataclass(frozen=True, slots=True)
class Resolved:
    """What one connection certificate resolves to; ``session`` is None when no live session exists.

    ``device.cert_pem`` is not loaded (None): a live connection keeps this record and never needs the PEM.
    """

    device: Device
    user: User
    credentials: tuple[Credential, ...] = field(default=())
    session: Session | None = None
    #: while an incident with ``raise_fresh_auth`` covers the user: every route wants an assertion this fresh
    fresh_auth: int | None = None


@dataclass(frozen=True)
class DirectoryDevice:
    """A device as the admin console lists it (no certificate, no key material)."""

    id: str
    user_id: str
    user_name: str
    name: str
    status: str
    enrolled_at: float
    not_after: float | None
    approved_by: str | None
    revoked_at: float | None
    credentials: int


@dataclass(frozen=True)
class DirectoryCredential:
    """A passkey as the admin console lists it: which device it is bound to, never its public key."""

    id: bytes
    device_id: str
    created_at: float
    sign_count: int


@dataclass(frozen=True)
class DirectoryUser:
    """A user with everything the People page shows: manager, devices, passkeys, last passkey login."""

    user: User
    manager: str | None
    devices: tuple[DirectoryDevice, ...]
    credentials: tuple[DirectoryCredential, ...]
    last_login: float | None


@dataclass(frozen=True)
class Incident:
    """A real incident run (dry runs are never stored): its plan, and how far it got."""

    id: str
    playbook: str
    reason: str
    actor: str
    started_at: float
    plan: dict[str, Any]
    stages_total: int
    stages_committed: int
    audit_seq: int
    ended_at: float | None = None
    ended_by: str | None = None


@dataclass(frozen=True)
class IncidentStageRow:
    """One committed stage: when, what it did (the report's ``result``), its ledger entry."""

    number: int
    committed_at: float
    result: dict[str, Any]
    audit_seq: int


@dataclass(frozen=True)
class StageWork:
    """What a stage's own transaction does beyond the kills (which went through the kill switch first)."""

    users: tuple[str, ...]
    reapprove: bool = False          # the users' active devices go back to pending_approval
    suspect: bool = False            # the users' passkeys are marked suspect
    tokens: tuple[str, ...] = ()     # these tokens are revoked
    fresh_auth: int | None = None    # a fresh_auth restriction on the users while the incident is active
    block_code_enrollment: bool = False


@dataclass(frozen=True)
class StageCommit:
    """What a stage's transaction changed, by id (the same ids its ledger entry lists)."""

    devices_reapproval: tuple[str, ...]
    credentials_suspect: tuple[str, ...]
    tokens_revoked: tuple[str, ...]
    audit_seq: int


@dataclass(frozen=True)
class IncidentSnapshot:
    """Who exists and what each holds right now, read at once (a plan and a dry run's counts)."""

    users: tuple[User, ...]
    device_owners: dict[str, str]             # every device that is not revoked -> its user
    tokens: dict[str, str]                    # every live token -> the user who created it
    sessions: dict[str, int]                  # live sessions per user
    devices: dict[str, int]                   # devices not revoked per user
    credentials: dict[str, int]               # passkeys on devices not revoked per user


@dataclass(frozen=True)
class Signer:
    """Who signed an action and the compare-and-set of their credential's sign count."""

    user_id: str
    credential_id: bytes
    expected_sign_count: int
    new_sign_count: int
    must_be_admin: bool
    #: with ``must_be_admin``: this user's manager may sign too (device approvals under ``devices.approval: manager``)
    or_manager_of: str | None = None
    #: a ``device.recover`` over the enrollment page: the passkey's device need not be active (its certificate
    #: may have been revoked), but the passkey must be on a device that was once active, not revoked, not suspect
    recovery: bool = False


@dataclass(frozen=True)
class InviteEffect:
    invite: Invite


@dataclass(frozen=True)
class AdminEffect:
    user_id: str
    admin: bool


@dataclass(frozen=True)
class TokenEffect:
    token: Token


@dataclass(frozen=True)
class ActivateEffect:
    """A pending device approved (or recovered): it becomes active with its first certificate."""

    device_id: str
    enrollment_id: str
    user_id: str
    cert_sha256: bytes
    cert_pem: str
    not_after: float
    approved_by: str


@dataclass(frozen=True)
class RejectEffect:
    """A pending device refused: it is revoked and its enrollment rejected."""

    device_id: str
    enrollment_id: str
    user_id: str


@dataclass(frozen=True)
class ManagerEffect:
    """A user's manager set (or cleared, ``manager`` None)."""

    user_id: str
    manager: str | None


@dataclass(frozen=True)
class RenewEffect:
    """An active device's certificate replaced by one for a new key; its live sessions move to the new one.

    ``old_cert_sha256`` is a compare-and-set: the renewal happens only while the device still has the
    certificate it was signed over.
    """

    device_id: str
    user_id: str
    old_cert_sha256: bytes
    cert_sha256: bytes
    cert_pem: str
    not_after: float
    spki_sha256: bytes


@dataclass(frozen=True)
class IncidentEffect:
    """An incident started by an admin's signed ``incident.start``: its row, committed with the entry."""

    incident: Incident


ActionEffect = (InviteEffect | AdminEffect | TokenEffect | ActivateEffect | RejectEffect | ManagerEffect | RenewEffect
                | IncidentEffect)
