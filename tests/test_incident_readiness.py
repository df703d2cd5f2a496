"""idwall.incident.readiness: who could not recover alone, expiring certificates, single-passkey admins, tokens."""

from __future__ import annotations

from idwall.incident.inventory import Holder, TokenInfo
from idwall.incident.readiness import DeviceExpiry, readiness_report
from idwall.units import DAY

NOW = 1_800_000_000.0


def _holder(user: str, *devices: str, admin: bool = False) -> Holder:
    return Holder(user, user.title(), admin=admin, groups=(), active_devices=len(set(devices)),
                  credential_devices=devices)


def test_a_ready_organisation_has_no_findings() -> None:
    report = readiness_report([_holder("root", "d1", "d2", admin=True), _holder("alice", "d3", "d4")],
                              [DeviceExpiry("d1", "root", NOW + 20 * DAY)],
                              [TokenInfo("t1", "soar", ("kill",), "root", NOW + 30 * DAY)], now=NOW)
    assert report.ready and report.users == 2 and report.findings == ()


def test_who_cannot_recover_alone() -> None:
    report = readiness_report([_holder("alice", "d1", "d1"), _holder("bob", "d2"), _holder("carol"),
                               _holder("dave", "d3", "d4")], [], [], now=NOW)
    found = {f.subject: f.detail for f in report.of_kind("cannot_self_recover")}
    assert sorted(found) == ["alice", "bob", "carol"]
    assert found["alice"].startswith("2 passkey(s), all bound to one device")
    assert found["carol"].startswith("no usable passkey")
    assert "add a passkey on a second device" in found["bob"]
    assert not report.ready


def test_admins_with_a_single_passkey() -> None:
    report = readiness_report([_holder("root", "d1", admin=True), _holder("ann", "d2", "d2", admin=True),
                               _holder("bob", "d3")], [], [], now=NOW)
    assert [f.subject for f in report.of_kind("admin_single_passkey")] == ["root"]


def test_certificates_expiring_within_the_window_or_already_expired() -> None:
    devices = [DeviceExpiry("d-late", "alice", NOW + 30 * DAY), DeviceExpiry("d-soon", "alice", NOW + 2 * DAY),
               DeviceExpiry("d-gone", "bob", NOW - 1), DeviceExpiry("d-hours", "bob", NOW + 5 * 3600)]
    found = {f.subject: f.detail for f in readiness_report([], devices, [], now=NOW).of_kind("certificate_expiring")}
    assert found == {
        "d-gone": "bob's certificate expired; renew it (idwall device renew)",
        "d-hours": "bob's certificate expires in 5 hours; renew it (idwall device renew)",
        "d-soon": "alice's certificate expires in 2 days; renew it (idwall device renew)",
    }
    assert readiness_report([], devices, [], now=NOW, expiry_window=40 * DAY).of_kind("certificate_expiring")[-1].subject == "d-soon"


def test_long_lived_tokens_and_tokens_whose_maker_lost_the_role() -> None:
    tokens = [TokenInfo("t1", "forever", ("kill",), "root", NOW + 300 * DAY),
              TokenInfo("t2", "cron", ("read",), "carol", NOW + 10 * DAY)]
    report = readiness_report([_holder("root", "d1", "d2", admin=True)], [], tokens, now=NOW)
    assert [(f.kind, f.subject) for f in report.findings] == [("token_long_lived", "t1"), ("token_maker_not_admin", "t2")]
    assert "lives 300 days more" in report.findings[0].detail
    assert "carol, who is no longer an administrator" in report.findings[1].detail


def test_findings_come_in_a_stable_order() -> None:
    holders = [_holder("zed"), _holder("amy"), _holder("root", admin=True)]
    report = readiness_report(holders, [], [], now=NOW)
    assert [(f.kind, f.subject) for f in report.findings] == [
        ("cannot_self_recover", "amy"), ("cannot_self_recover", "root"), ("cannot_self_recover", "zed"),
        ("admin_single_passkey", "root")]
