"""Certificate renewal rules: who may renew which device's certificate, over which connection, for which key.

Pure: no I/O, time is a parameter. A device renews before its certificate
expires: over its current mTLS connection it asks for a certificate for a NEW
key (``POST /idwall/api/renew/begin`` with a CSR), and the user signs
``device.renew {device_id, csr_pem}`` with a passkey bound to that device. The
signed action holds the CSR, so the assertion commits to the new key exactly as
the enrollment challenge commits to the first one.

- Only over the device's own live connection: the renewing connection presents
  the certificate being replaced, so a passkey assertion made on another
  device (even the same user's) cannot move this device to a key of its choice.
- Only the device's own user, with a credential bound to that device.
- Only before the certificate's ``notAfter``: an expired certificate does not
  get past the TLS handshake, and a keep-alive connection that outlived it is
  refused here.
- The new key must differ from the current one and pass the enrollment CSR checks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .errors import Conflict, Forbidden, Gone
from .model import Device, Renewal

__all__ = [
    "KEEP_EXPIRED_RENEWAL",
    "MAX_OPEN_RENEWALS",
    "RenewalTarget",
    "check_renewal",
    "new_renewal_id",
    "public_status",
]

#: begun renewals per device waiting for a passkey (each is a row the device can make the store keep)
MAX_OPEN_RENEWALS = 3
#: how long an expired renewal is kept, so the polling CLI can still read "expired"
KEEP_EXPIRED_RENEWAL = 3600


@dataclass(frozen=True)
class RenewalTarget:
    """What a renewal is checked against: the device named, and the connection the request came over."""

    device: Device
    connection_device_id: str  # the device whose certificate the connection presents
    current_spki_sha256: bytes  # the key of that certificate
    new_spki_sha256: bytes  # the key of the CSR


def new_renewal_id() -> str:
    """An unguessable renewal id: it names the request in the URL the CLI prints and polls."""
    return "ren-" + secrets.token_urlsafe(18)


def check_renewal(target: RenewalTarget, *, signer: str, now: float) -> None:
    """Refuse a renewal of ``target.device`` by ``signer`` over that connection at ``now``.

    Raises :class:`Forbidden` (another device's connection, another user), :class:`Conflict` (device not
    active, the same key) or :class:`Gone` (the certificate has expired).
    """
    device = target.device
    if target.connection_device_id != device.id:
        raise Forbidden(f"device {device.id} can only be renewed over its own connection (presenting its current "
                        f"certificate); this connection is device {target.connection_device_id}")
    if device.user_id != signer:
        raise Forbidden(f"device {device.id} belongs to {device.user_id}; only they can renew its certificate")
    if device.status != "active":
        raise Conflict(f"device {device.id} is {device.status.replace('_', ' ')}; only an active device renews")
    if device.not_after is None or device.not_after <= now:
        raise Gone(f"the certificate of device {device.id} has expired; enroll the device again")
    if target.new_spki_sha256 == target.current_spki_sha256:
        raise Conflict("the CSR is for the device's current key; a renewal needs a new key (make a new key and CSR)")


def public_status(renewal: Renewal, *, now: float) -> str:
    """What ``GET /idwall/api/renew/{id}`` reports: begun, renewed or expired."""
    if renewal.status == "begun" and renewal.expires_at <= now:
        return "expired"
    return renewal.status
