"""Who holds what: the people and tokens an incident reaches first, as ``idwall users --privileged`` lists them.

Privileged means an administrator, a member of a ``privileged.groups`` group, or an automation token (a
token outlives its maker's role unless someone revokes it, so it is listed with its maker).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Holder", "PrivilegedEntry", "TokenInfo", "privileged_inventory"]


@dataclass(frozen=True)
class Holder:
    """One user and what they hold: ``credential_devices`` has the device of each usable passkey."""

    user_id: str
    name: str
    admin: bool
    groups: tuple[str, ...]
    active_devices: int
    credential_devices: tuple[str, ...]
    last_login: float | None = None


@dataclass(frozen=True)
class TokenInfo:
    """A live automation token, without its secret."""

    token_id: str
    name: str
    scopes: tuple[str, ...]
    created_by: str
    expires_at: float


@dataclass(frozen=True)
class PrivilegedEntry:
    """One line of the inventory: a user (``kind`` ``user``) or a token (``token``), and why it is there."""

    kind: str
    id: str
    name: str
    why: tuple[str, ...]
    last_login: float | None = None
    devices: int = 0
    credentials: int = 0
    created_by: str | None = None
    expires_at: float | None = None


def privileged_inventory(holders: Sequence[Holder], tokens: Iterable[TokenInfo], *,
                         privileged_groups: Iterable[str] = ()) -> list[PrivilegedEntry]:
    """Privileged users (sorted by id), then every live token (sorted by maker, name).

    Every token is privileged (only administrators create them, and a kill or read scope is power); one
    whose maker is no longer privileged says so, since nobody may be watching it any more.
    """
    groups = set(privileged_groups)
    users: list[PrivilegedEntry] = []
    for holder in sorted(holders, key=lambda h: h.user_id):
        why = (("admin",) if holder.admin else ()) + tuple(f"group {g}" for g in holder.groups if g in groups)
        if why:
            users.append(PrivilegedEntry(kind="user", id=holder.user_id, name=holder.name, why=why,
                                         last_login=holder.last_login, devices=holder.active_devices,
                                         credentials=len(holder.credential_devices)))
    makers = {entry.id for entry in users}
    made = sorted(tokens, key=lambda t: (t.created_by, t.name, t.token_id))
    return users + [PrivilegedEntry(kind="token", id=t.token_id, name=t.name,
                                    why=(f"made by {t.created_by}", "scopes " + ",".join(t.scopes))
                                    + (() if t.created_by in makers else (f"{t.created_by} is no longer privileged",)),
                                    created_by=t.created_by, expires_at=t.expires_at) for t in made]
