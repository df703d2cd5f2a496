"""The readiness report: who could not get back in by themselves after a reset, before one is needed.

A user recovers alone by signing ``device.recover`` with a passkey they still hold; a lost device's own
passkeys are revoked with it, so losing any one device is survivable only with usable passkeys bound
to at least two different devices. The report also lists certificates about to expire (their devices
stop working unless renewed), administrators with a single passkey (one lost key away from needing
another administrator), and tokens that live long or whose maker no longer holds the role.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..units import DAY
from .inventory import Holder, TokenInfo

__all__ = ["DeviceExpiry", "Finding", "Readiness", "readiness_report"]

#: a token with more life left than this is called long-lived
LONG_LIVED = 90 * DAY


@dataclass(frozen=True)
class DeviceExpiry:
    """An active device and when its certificate expires."""

    device_id: str
    user_id: str
    not_after: float


@dataclass(frozen=True)
class Finding:
    """One thing to fix before an incident: ``kind`` names the rule, ``subject`` the user, device or token."""

    kind: str
    subject: str
    detail: str


@dataclass(frozen=True)
class Readiness:
    """Every finding, in a stable order (by rule, then subject), and how many users were looked at."""

    users: int
    findings: tuple[Finding, ...]

    @property
    def ready(self) -> bool:
        """True when nothing needs fixing."""
        return not self.findings

    def of_kind(self, kind: str) -> tuple[Finding, ...]:
        """The findings of one rule."""
        return tuple(f for f in self.findings if f.kind == kind)


KINDS = ("cannot_self_recover", "admin_single_passkey", "certificate_expiring", "token_long_lived",
         "token_maker_not_admin")


def readiness_report(holders: Sequence[Holder], devices: Iterable[DeviceExpiry], tokens: Iterable[TokenInfo], *,
                     now: float, expiry_window: float = 7 * DAY) -> Readiness:
    """The report at ``now``; certificates expiring within ``expiry_window`` seconds are listed."""
    findings: list[Finding] = []
    admins = {h.user_id for h in holders if h.admin}
    for holder in holders:
        bound = set(holder.credential_devices)
        if len(bound) < 2:
            have = ("no usable passkey" if not holder.credential_devices else
                    f"{len(holder.credential_devices)} passkey(s), all bound to one device")
            findings.append(Finding("cannot_self_recover", holder.user_id,
                                    f"{have}: losing that device needs an approver; add a passkey on a second device"))
        if holder.admin and len(holder.credential_devices) < 2:
            findings.append(Finding("admin_single_passkey", holder.user_id,
                                    "an administrator with one passkey; register a second (a security key kept apart)"))
    for device in devices:
        left = device.not_after - now
        if left <= expiry_window:
            when = "expired" if left <= 0 else f"expires in {_days(left)}"
            findings.append(Finding("certificate_expiring", device.device_id,
                                    f"{device.user_id}'s certificate {when}; renew it (idwall device renew)"))
    for token in tokens:
        if token.expires_at - now > LONG_LIVED:
            findings.append(Finding("token_long_lived", token.token_id,
                                    f"{token.name!r} lives {_days(token.expires_at - now)} more; "
                                    "prefer tokens of 90 days or less"))
        if token.created_by not in admins:
            findings.append(Finding("token_maker_not_admin", token.token_id,
                                    f"{token.name!r} was made by {token.created_by}, who is no longer an administrator; "
                                    "revoke it or have an administrator re-issue it"))
    order = {kind: index for index, kind in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind], f.subject))
    return Readiness(users=len(holders), findings=tuple(findings))


def _days(seconds: float) -> str:
    days = seconds / DAY
    return f"{days:.0f} days" if days >= 1.5 else f"{seconds / 3600:.0f} hours"
