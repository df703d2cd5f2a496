"""idwall.self_recovery: which passkeys may vouch for a user's new device on the enrollment page (once active,
neither revoked with a lost device nor marked suspect, never the new device's own), which case the page then
shows, who approves otherwise, and a ceremony binding that no certificate thumbprint or other enrollment shares."""

from __future__ import annotations

import pytest

from idwall.encoding import sha256
from idwall.model import Credential
from idwall.self_recovery import approvers, case_words, recovery_binding, recovery_case, usable
from tests.helpers.records import NOW


def passkey(device_id: str, *, suspect: str | None = None, revoked_at: float | None = None) -> Credential:
    return Credential(f"cred-{device_id}".encode(), "bob", device_id, b"cose", -7, 0, NOW, suspect, revoked_at)


def test_a_passkey_is_usable_unless_revoked_or_suspect() -> None:
    assert usable(passkey("dev-1"))
    assert not usable(passkey("dev-1", suspect="inc-1"))
    assert not usable(passkey("dev-1", revoked_at=NOW))


def test_bob_approves_himself_with_the_passkeys_he_still_holds() -> None:
    held = [passkey("dev-laptop"), passkey("dev-lost", revoked_at=NOW), passkey("dev-phone", suspect="inc-1"),
            passkey("dev-new")]
    case = recovery_case(held, approval="none", new_device_id="dev-new")
    assert case.case == "self" and [c.device_id for c in case.passkeys] == ["dev-laptop"]


def test_suspect_passkeys_send_bob_to_an_administrator_naming_the_incident() -> None:
    held = [passkey("dev-laptop", suspect="inc-7"), passkey("dev-lost", revoked_at=NOW, suspect="inc-3")]
    case = recovery_case(held, approval="none", new_device_id="dev-new")
    assert (case.case, case.incident, case.approvers, case.passkeys) == ("suspect", "inc-7", "an administrator", ())


def test_with_only_revoked_passkeys_or_none_nobody_but_an_approver_helps() -> None:
    for held in ([passkey("dev-lost", revoked_at=NOW)], [], [passkey("dev-new")]):
        case = recovery_case(held, approval="none", new_device_id="dev-new")
        assert (case.case, case.incident, case.passkeys) == ("none", None, ())


@pytest.mark.parametrize(("approval", "who"), [("manager", "an administrator or your manager"),
                                               ("admin", "an administrator")])
def test_a_second_persons_policy_never_lets_the_users_own_passkey_approve(approval: str, who: str) -> None:
    case = recovery_case([passkey("dev-laptop")], approval=approval, new_device_id="dev-new")
    assert (case.case, case.approvers, case.passkeys) == ("policy", who, ())
    assert approvers(approval) == who


def test_the_binding_is_per_enrollment_and_never_a_certificate_thumbprint() -> None:
    assert recovery_binding("enr-a") == recovery_binding("enr-a") != recovery_binding("enr-b")
    assert len(recovery_binding("enr-a")) == 32
    # domain-separated: not the hash of the id alone (nor of anything without the prefix)
    assert recovery_binding("enr-a") != sha256(b"enr-a")



def test_each_case_says_who_approves_and_what_to_do() -> None:
    said = {kind: case_words(recovery_case(held, approval=approval, new_device_id="dev-new")) for kind, held, approval
            in (("self", [passkey("dev-laptop")], "none"), ("suspect", [passkey("dev-laptop", suspect="inc-7")], "none"),
                ("none", [], "none"), ("policy", [passkey("dev-laptop")], "manager"))}
    assert "you can approve this device yourself" in said["self"][0] and "Approve with my passkey" in said["self"][2]
    assert said["suspect"][0] == "Waiting for an administrator." and "Incident inc-7" in said["suspect"][1]
    assert "revoked with it" in said["none"][1] and "device.approve" in said["none"][2]
    assert said["policy"][0] == "Waiting for an administrator or your manager." and "second person" in said["policy"][1]
