"""Self-service recovery from the enrollment page: which case applies, and what binds the ceremony.

Pure: no I/O. After a reset (a kill with ``revoke_devices``, an incident) a user enrolls a new device with
``user`` instead of a code; it waits in ``pending_approval`` until a signed ``device.recover`` or
``device.approve`` names it. Over the enrollment page's plain TLS connection (no client certificate) the user
signs ``device.recover`` with a passkey they still hold. Which passkeys vouch (DESIGN.md "Flows", Recover):

- a passkey of the same user on a device that was once active (it had a certificate), whatever that device's
  state now: a reset revokes certificates, not passkeys;
- not revoked: a passkey is revoked with its device when that one device is declared lost (a kill of scope
  ``device`` with ``revoke_devices``);
- not marked suspect by an incident: then only ``device.approve`` by an administrator or the user's manager
  activates the new device;
- never the new device's own passkey (its device was never active), and never one under
  ``devices.approval`` other than ``none``, where the operator wants a second person on every new device.

Consent phishing: anyone who knows a user id can begin a self-service enrollment for them and send them the
link. The page therefore shows what is being approved (device name, when, from which address) and says to
continue only if the user started it on their own device just now. If the user also created the device's
passkey on that page, the attacker's certificate is useless without the user's passkey at every login; if the
attacker created it, a user who approves anyway vouches for the attacker's device: the residual risk
(docs/incident-response.md "Users getting back in"), visible in the ledger and ended by one kill of the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .encoding import sha256
from .model import Credential

__all__ = ["MAX_OPEN_RECOVERIES", "RecoveryCase", "approvers", "case_words", "recovery_binding", "recovery_case",
           "usable"]

#: unanswered recovery ceremonies kept per waiting device (begin needs no certificate: the oldest are evicted)
MAX_OPEN_RECOVERIES = 5


@dataclass(frozen=True)
class RecoveryCase:
    """What the enrollment page of a waiting self-service device offers.

    ``case`` is ``self`` (a passkey the user holds can approve it: ``passkeys``), ``suspect`` (an incident,
    ``incident``, marked every such passkey suspect), ``none`` (no passkey of theirs can: all revoked, or none
    on a device that was ever active) or ``policy`` (``devices.approval`` wants a second person). In every case
    but ``self``, ``approvers`` says who must sign ``device.approve``.
    """

    case: str
    approvers: str
    passkeys: tuple[Credential, ...] = ()
    incident: str | None = None


def usable(credential: Credential) -> bool:
    """Whether a passkey (of a device once active) may vouch for a new device: neither revoked nor suspect."""
    return credential.revoked_at is None and credential.suspect is None


def approvers(approval: str) -> str:
    """Who may sign ``device.approve`` under ``devices.approval``, in words."""
    return "an administrator or your manager" if approval == "manager" else "an administrator"


def recovery_case(passkeys: Sequence[Credential], *, approval: str, new_device_id: str) -> RecoveryCase:
    """The case for a waiting device ``new_device_id`` of a user whose passkeys on devices once active are
    ``passkeys`` (with their ``suspect`` and ``revoked_at``), under ``devices.approval: approval``."""
    who = approvers(approval)
    if approval != "none":
        return RecoveryCase("policy", who)
    candidates = [c for c in passkeys if c.device_id != new_device_id]
    ok = tuple(c for c in candidates if usable(c))
    if ok:
        return RecoveryCase("self", who, ok)
    marked = [c.suspect for c in candidates if c.suspect is not None and c.revoked_at is None]
    if marked:
        return RecoveryCase("suspect", who, incident=marked[0])
    return RecoveryCase("none", who)


def case_words(case: RecoveryCase) -> tuple[str, str, str]:
    """What the enrollment page says of ``case``: a title, why, and what to do next (the page's status region)."""
    if case.case == "self":
        return ("Waiting for approval: you can approve this device yourself.",
                "A passkey you still hold (on another device of yours, even one cut off by a reset) can vouch for it.",
                "Check the device, place and time below, then press Approve with my passkey.")
    ask = f"Ask {case.approvers} to approve it (device.approve); keep the terminal open meanwhile."
    if case.case == "suspect":
        return (f"Waiting for {case.approvers}.",
                f"Incident {case.incident} marked your passkeys suspect, so your own passkey cannot approve this device.",
                ask)
    if case.case == "policy":
        return f"Waiting for {case.approvers}.", "This gateway requires a second person's approval for every new device.", ask
    return (f"Waiting for {case.approvers}.",
            "You hold no passkey that can approve it (a lost device's passkeys are revoked with it).", ask)


def recovery_binding(enrollment_id: str) -> bytes:
    """What a recovery ceremony is bound to instead of a certificate: the enrollment it approves.

    Domain-separated, so it can never equal a certificate thumbprint and a signed-action ceremony begun over
    mTLS can never be finished here, nor this one there.
    """
    return sha256(b"idwall/recover/v1", enrollment_id.encode("utf-8"))
