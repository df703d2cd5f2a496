"""The ``privileged`` and ``incident`` sections: who is privileged, the playbooks, the notice, the webhooks.

A playbook is checked whole at start-up, so a typo in a rehearsed response is found on the day it is
written, not on the day of the breach: every step and scope is known, a stage names the groups or users
its scope needs (and only then), ``raise_fresh_auth`` says how fresh, no step appears twice in a stage,
and a webhook secret is a usable Standard Webhooks key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from .checks import Ctx, kind
from .model import IncidentConfig, IncidentNotice, Playbook, PlaybookStage, PrivilegedConfig, WebhookTarget
from .urls import split_url
from .yaml_lines import KeyPath

__all__ = ["SCOPES", "STEPS", "incident_section", "privileged_section"]

#: what a stage can do; each one only takes access away or raises the bar to get it back
STEPS = (
    "kill",                    # end sessions and cut their live connections
    "revoke_devices",          # revoke device certificates: the device must re-enroll
    "revoke_tokens",           # revoke automation tokens the users in scope created
    "require_reapproval",      # active devices go back to pending_approval
    "suspect_passkeys",        # recovery then needs an approver, never the user's own passkey alone
    "raise_fresh_auth",        # every route demands a passkey assertion at most fresh_auth old
    "block_code_enrollment",   # no enrollment by invite code while the incident is active
)
SCOPES = ("privileged", "all", "groups", "users", "target")

_PLAYBOOK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_STAGE_KEYS = ("scope", "steps", "groups", "users", "fresh_auth")
_WEBHOOK_SECRET_BYTES = (24, 64)  # Standard Webhooks: 24 to 64 random bytes, base64, optional whsec_ prefix


def privileged_section(ctx: Ctx, value: Any) -> PrivilegedConfig:
    """``privileged: {groups: [...]}``: members count as privileged (admins always do)."""
    m = ctx.mapping(value, ("privileged",), ("groups",))
    return PrivilegedConfig(groups=ctx.string_list(m, ("privileged",), "groups"))


def incident_section(ctx: Ctx, value: Any) -> IncidentConfig:
    """``incident: {playbooks, notice, webhooks}``, each optional."""
    path: KeyPath = ("incident",)
    m = ctx.mapping(value, path, ("playbooks", "notice", "webhooks"))
    return IncidentConfig(
        playbooks=_playbooks(ctx, m.get("playbooks", {}), path + ("playbooks",)),
        notice=_notice(ctx, m["notice"], path + ("notice",)) if "notice" in m else None,
        webhooks=_webhooks(ctx, m.get("webhooks", []), path + ("webhooks",)),
    )


def _playbooks(ctx: Ctx, value: Any, path: KeyPath) -> tuple[Playbook, ...]:
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"expected a mapping of playbooks by name, got {kind(value)}",
                        "write 'org-wide-reset: {trigger: ..., stages: [...]}' entries")
    playbooks = []
    for name, body in value.items():
        if not isinstance(name, str) or not _PLAYBOOK_NAME.fullmatch(name):
            raise ctx.error(path + (str(name),), f"{name!r} is not a playbook name",
                            "use lower-case letters, digits and dashes, e.g. org-wide-reset (it is typed on the command line)")
        playbooks.append(_playbook(ctx, name, body, path + (name,)))
    return tuple(playbooks)


def _playbook(ctx: Ctx, name: str, value: Any, path: KeyPath) -> Playbook:
    m = ctx.mapping(value, path, ("trigger", "exclude", "stages"), required=("trigger", "stages"))
    trigger = ctx.string(m, path, "trigger", hint="say in words when to run it, e.g. 'privileged credentials exposed'")
    exclude = ctx.mapping(m.get("exclude", {}), path + ("exclude",), ("groups", "users"))
    stages_value = m["stages"]
    if not isinstance(stages_value, list) or not stages_value:
        raise ctx.error(path + ("stages",), f"expected a non-empty list of stages, got {kind(stages_value)}",
                        "write '- {scope: privileged, steps: [kill, revoke_devices]}' items, run in order")
    return Playbook(
        name=name,
        trigger=trigger,
        stages=tuple(_stage(ctx, item, path + ("stages", index)) for index, item in enumerate(stages_value)),
        exclude_groups=ctx.string_list(exclude, path + ("exclude",), "groups"),
        exclude_users=ctx.string_list(exclude, path + ("exclude",), "users"),
    )


def _stage(ctx: Ctx, value: Any, path: KeyPath) -> PlaybookStage:
    m = ctx.mapping(value, path, _STAGE_KEYS, required=("scope", "steps"))
    scope = ctx.choice(m, path, "scope", "", SCOPES)
    for key in ("groups", "users"):
        if key in m and scope != key:
            raise ctx.error(path + (key,), f"'{key}' only goes with scope: {key}, and this stage's scope is {scope}",
                            f"remove '{key}:' or set 'scope: {key}'")
    names = ctx.string_list(m, path, scope) if scope in ("groups", "users") else ()
    if scope in ("groups", "users") and not names:
        raise ctx.error(path + (scope,), f"scope {scope} needs the {scope} it covers", f"add '{scope}: [name, ...]'")
    steps = _steps(ctx, m["steps"], path + ("steps",))
    fresh_auth = ctx.duration(m, path, "fresh_auth", None)
    if ("raise_fresh_auth" in steps) != (fresh_auth is not None):
        if fresh_auth is None:
            raise ctx.error(path + ("fresh_auth",), "step raise_fresh_auth needs to know how fresh",
                            "add 'fresh_auth: 5m' (every route then wants a passkey assertion at most that old)")
        raise ctx.error(path + ("fresh_auth",), "fresh_auth is only read by the step raise_fresh_auth",
                        "add raise_fresh_auth to steps or remove fresh_auth")
    return PlaybookStage(scope=scope, steps=steps, groups=names if scope == "groups" else (),
                         users=names if scope == "users" else (), fresh_auth=fresh_auth)


def _steps(ctx: Ctx, value: Any, path: KeyPath) -> tuple[str, ...]:
    valid = "use a non-empty list of: " + ", ".join(STEPS)
    if not isinstance(value, list) or not value:
        raise ctx.error(path, f"expected a non-empty list of steps, got {kind(value)}", valid)
    seen: list[str] = []
    for index, step in enumerate(value):
        if not isinstance(step, str) or step not in STEPS:
            shown = repr(step) if isinstance(step, str) else kind(step)
            raise ctx.error(path + (index,), f"{shown} is not a step", valid)
        if step in seen:
            raise ctx.error(path + (index,), f"{step} is listed twice in this stage", "list each step once")
        seen.append(step)
    return tuple(seen)


def _notice(ctx: Ctx, value: Any, path: KeyPath) -> IncidentNotice:
    m = ctx.mapping(value, path, ("title", "body", "contact"), required=("title", "body", "contact"))
    return IncidentNotice(
        title=ctx.string(m, path, "title", hint="a short heading, e.g. 'Security incident'"),
        body=ctx.string(m, path, "body", hint="what happened and what the user should do"),
        contact=ctx.string(m, path, "contact", hint="whom to contact, e.g. soc@example.com"),
    )


def _webhooks(ctx: Ctx, value: Any, path: KeyPath) -> tuple[WebhookTarget, ...]:
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list, got {kind(value)}",
                        "write '- {url: https://soar.example/hook, secret_file: certs/webhook.secret}' items")
    return tuple(_webhook(ctx, item, path + (index,)) for index, item in enumerate(value))


def _webhook(ctx: Ctx, value: Any, path: KeyPath) -> WebhookTarget:
    m = ctx.mapping(value, path, ("url", "secret_file"), required=("url", "secret_file"))
    url = ctx.string(m, path, "url", hint="write the receiver's https:// URL")
    try:
        parts, host, _ = split_url(url, ("https", "http"))
    except ValueError as exc:
        raise ctx.error(path + ("url",), f"{url!r} {exc}", "write the receiver's https:// URL") from None
    if parts.scheme.lower() == "http" and host not in ("127.0.0.1", "::1", "localhost"):
        raise ctx.error(path + ("url",), f"{url!r} would send incident details unencrypted",
                        "use https:// (plain http is accepted only for a receiver on this machine)")
    secret_path = ctx.file(m, path, "secret_file", "a file holding the webhook secret (whsec_ + base64 of 24-64 random bytes)")
    return WebhookTarget(url=url, secret=_webhook_secret(ctx, secret_path.read_text(encoding="utf-8", errors="replace"),
                                                         path + ("secret_file",)))


def _webhook_secret(ctx: Ctx, text: str, path: KeyPath) -> bytes:
    encoded = text.strip().removeprefix("whsec_")
    low, high = _WEBHOOK_SECRET_BYTES
    hint = f"write whsec_ followed by the base64 of {low} to {high} random bytes (e.g. python -c \"import base64,os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\")"
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ctx.error(path, "the file does not hold a base64 secret", hint) from None
    if not low <= len(secret) <= high:
        raise ctx.error(path, f"the secret is {len(secret)} bytes", hint)
    return secret
