"""idwall.incident.inventory: the privileged users and every token, with why each is listed."""

from __future__ import annotations

from idwall.incident.inventory import Holder, PrivilegedEntry, TokenInfo, privileged_inventory

HOLDERS = [
    Holder("root", "Root", admin=True, groups=("ops",), active_devices=2, credential_devices=("d1", "d2"),
           last_login=100.0),
    Holder("bob", "Bob", admin=False, groups=("eng", "sre"), active_devices=1, credential_devices=("d3",)),
    Holder("alice", "Alice", admin=False, groups=("eng",), active_devices=1, credential_devices=("d4",)),
    Holder("ann", "Ann", admin=True, groups=("sre",), active_devices=0, credential_devices=()),
]
TOKENS = [
    TokenInfo("t2", "soar", ("kill", "incident"), created_by="root", expires_at=5000.0),
    TokenInfo("t1", "grafana", ("read",), created_by="root", expires_at=4000.0),
    TokenInfo("t3", "old-cron", ("kill",), created_by="carol", expires_at=3000.0),
]


def test_admins_and_privileged_groups_are_listed_with_why() -> None:
    users = [e for e in privileged_inventory(HOLDERS, TOKENS, privileged_groups=("sre",)) if e.kind == "user"]
    assert users == [
        PrivilegedEntry("user", "ann", "Ann", ("admin", "group sre"), None, 0, 0),
        PrivilegedEntry("user", "bob", "Bob", ("group sre",), None, 1, 1),
        PrivilegedEntry("user", "root", "Root", ("admin",), 100.0, 2, 2),
    ]


def test_every_token_is_listed_and_an_orphaned_one_says_so() -> None:
    tokens = [e for e in privileged_inventory(HOLDERS, TOKENS) if e.kind == "token"]
    assert [(e.id, e.name, e.why, e.created_by, e.expires_at) for e in tokens] == [
        ("t3", "old-cron", ("made by carol", "scopes kill", "carol is no longer privileged"), "carol", 3000.0),
        ("t1", "grafana", ("made by root", "scopes read"), "root", 4000.0),
        ("t2", "soar", ("made by root", "scopes kill,incident"), "root", 5000.0),
    ]


def test_without_privileged_groups_only_admins_are_privileged_users() -> None:
    assert [e.id for e in privileged_inventory(HOLDERS, []) if e.kind == "user"] == ["ann", "root"]
    assert privileged_inventory([], []) == []
