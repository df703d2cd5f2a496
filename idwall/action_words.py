"""A signed action in words: the one line a person reads before their passkey signs it.

Pure. The terminal (``idwall invite create`` and the other signing verbs) and the signing page both show
this line beside the canonical JSON, so the words and the bytes the passkey signs come from the same action.
A type without words of its own (one a newer gateway knows) is still described, field by field: nothing
is signed unseen.
"""

from __future__ import annotations

import json
from typing import Any, Callable

__all__ = ["ENVELOPE", "describe"]

#: the fields every action carries that say who signs and when, not what happens
ENVELOPE = ("type", "actor", "nonce", "not_after")


def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)


def _invite(a: dict[str, Any]) -> str:
    groups = a.get("groups") or []
    text = f"Invite {a.get('name')} <{a.get('email')}> as user {a.get('user')}"
    text += f", in group{'s' if len(groups) > 1 else ''} {_list(groups)}" if groups else ", in no group"
    if a.get("admin"):
        text += ", as an administrator"
    if a.get("manager"):
        text += f", with manager {a['manager']}"
    return text + "."


def _token(a: dict[str, Any]) -> str:
    scopes = a.get("scopes") or []
    return (f"Create the automation token {json.dumps(a.get('name'), ensure_ascii=False)} with "
            f"scope{'s' if len(scopes) > 1 else ''} {_list(scopes)}, valid for {a.get('ttl')}.")


_WORDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "invite.create": _invite,
    "device.approve": lambda a: f"Approve the pending device {a.get('device_id')}: it gets its certificate.",
    "device.recover": lambda a: f"Approve your own new device of enrollment {a.get('enrollment_id')}.",
    "admin.grant": lambda a: f"Make {a.get('user')} an administrator.",
    "admin.revoke": lambda a: f"Take administrator rights away from {a.get('user')}.",
    "token.create": _token,
}


def describe(action: dict[str, Any]) -> str:
    """One sentence saying what ``action`` does once signed (every field, for a type without words)."""
    kind = action.get("type")
    words = _WORDS.get(kind) if isinstance(kind, str) else None
    if words is not None:
        return words(action)
    fields = [f"{name} = {json.dumps(value, ensure_ascii=False, sort_keys=True)}"
              for name, value in sorted(action.items()) if name not in ENVELOPE]
    return f"Sign {kind}: " + ("; ".join(fields) if fields else "no fields") + "."
