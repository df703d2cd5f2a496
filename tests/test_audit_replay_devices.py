"""idwall.audit.replay_devices: the replay of device entries (enroll, approve, reject, recover, renew) on a ledger the
generator builds, each refusal a passkey-signed entry the gateway would never have written. A recovery may be signed
with the passkey of a device whose certificate a reset revoked, never with a lost device's (revoked with it by a
kill of that device), one of a device never active, or the recovered device's own."""

from __future__ import annotations

from typing import Any

import pytest

from idwall.audit import ids_digest, verify_ledger
from idwall.encoding import b64url_encode
from tests.helpers.ledger import fails, gen


@pytest.fixture(scope="module")
def world() -> Any:
    return gen.build_world()


def _pending_tablet(world: Any) -> Any:
    ledger = world.ledger.fork(30)
    gen.enroll(ledger, world.erin, "dev-erin-tablet", invite=None, status="pending_approval", cert=None,
               enrollment_id="enr-erin-tablet")
    return ledger


def test_an_approved_device_cannot_be_approved_or_rejected_again(world: Any) -> None:
    for kind in ("device.approve", "device.reject"):
        ledger = _pending_tablet(world)
        gen.decide(ledger, world.dave, "dev-dave-laptop", "device.approve", "dev-erin-tablet", "enr-erin-tablet",
                   label="first-" + kind)
        gen.decide(ledger, world.dave, "dev-dave-laptop", kind, "dev-erin-tablet", "enr-erin-tablet",
                   label="again-" + kind)
        fails(ledger.entries, 33, "device dev-erin-tablet is active, not pending_approval")


def test_a_decision_must_name_the_devices_own_enrollment(world: Any) -> None:
    ledger = _pending_tablet(world)
    gen.decide(ledger, world.dave, "dev-dave-laptop", "device.approve", "dev-erin-tablet", "enr-other",
               label="wrong-enrollment")
    fails(ledger.entries, 32, "device dev-erin-tablet came from enrollment enr-erin-tablet, not enr-other")


def test_a_renewal_must_be_signed_on_the_renewed_device(world: Any) -> None:
    ledger = world.ledger.fork(30)
    gen.enroll(ledger, world.erin, "dev-erin-tablet", invite=None, status="pending_approval", cert=None,
               enrollment_id="enr-erin-tablet")
    gen.decide(ledger, world.dave, "dev-dave-laptop", "device.approve", "dev-erin-tablet", "enr-erin-tablet",
               label="dave-approves-tablet")
    gen.renew(ledger, world.erin, "dev-erin-laptop", world.certs["renewed"], key_label="tablet/renewed",
              signer_device="dev-erin-tablet", label="renew-from-tablet")
    fails(ledger.entries, 33, "device.renew must be signed with a credential bound to device dev-erin-laptop")


def _bob_tablet(world: Any) -> Any:
    """The whole valid ledger (bob's laptop was killed as lost at seq 16, his phone's certificate revoked by the
    incident at seq 43), then bob's self-service tablet waiting at seq 46."""
    ledger = world.ledger.fork(45)
    gen.enroll(ledger, world.bob, "dev-bob-tablet", invite=None, status="pending_approval", cert=None,
               enrollment_id="enr-bob-tablet")
    return ledger


def _recover(ledger: Any, world: Any, signer_device: str, label: str) -> None:
    approval = ledger.action(world.bob, signer_device, "device.recover", {"enrollment_id": "enr-bob-tablet"},
                             label=label)
    ledger.append("device.recover", "bob", "dev-bob-tablet",
                  {"device_id": "dev-bob-tablet", "enrollment_id": "enr-bob-tablet", "status": "active"}, approval)


def _counted_kill(ledger: Any, target: str, **passkeys: Any) -> None:
    """A kill of one device as the store writes it now (counts and digests; nothing left to cut but passkeys)."""
    ledger.append("kill", "alice", target, {
        "scope": "device", "target": target, "reason": "lost", "revoke_devices": True, "sessions_revoked": 0,
        "sessions_sha256": ids_digest([]), "devices_revoked": 0, "devices_sha256": ids_digest([]), **passkeys})


def test_after_a_reset_the_passkey_of_a_revoked_device_recovers_a_new_one(world: Any) -> None:
    ledger = _bob_tablet(world)
    _recover(ledger, world, "dev-bob-phone", "recover-with-phone")
    assert verify_ledger(ledger.entries).ok, verify_ledger(ledger.entries).reason


def test_a_lost_devices_passkey_cannot_recover(world: Any) -> None:
    ledger = _bob_tablet(world)
    _recover(ledger, world, "dev-bob-laptop", "recover-with-lost-laptop")
    fails(ledger.entries, 47, "which was revoked with its lost device dev-bob-laptop")


def test_a_passkey_of_a_device_never_active_cannot_recover(world: Any) -> None:
    ledger = _bob_tablet(world)
    gen.enroll(ledger, world.bob, "dev-bob-watch", invite=None, status="pending_approval", cert=None,
               enrollment_id="enr-bob-watch")
    _recover(ledger, world, "dev-bob-watch", "recover-with-watch")
    fails(ledger.entries, 48, "which was never active")


def test_the_new_devices_own_passkey_cannot_recover_it(world: Any) -> None:
    ledger = _bob_tablet(world)
    _recover(ledger, world, "dev-bob-tablet", "recover-with-itself")
    fails(ledger.entries, 47, "not the recovered one's")


def test_declaring_a_device_lost_revokes_its_passkeys_and_the_count_is_checked(world: Any) -> None:
    phone = b64url_encode(world.bob.credentials["dev-bob-phone"])
    ledger = _bob_tablet(world)
    _counted_kill(ledger, "dev-bob-phone", passkeys_revoked=1, passkeys_sha256=ids_digest([phone]))
    assert verify_ledger(ledger.entries).ok, verify_ledger(ledger.entries).reason
    _recover(ledger, world, "dev-bob-phone", "recover-with-lost-phone")
    fails(ledger.entries, 48, "which was revoked with its lost device dev-bob-phone")
    for wrong, reason in (({"passkeys_revoked": 0, "passkeys_sha256": ids_digest([])},
                           "kill records 0 passkey(s) revoked, but device dev-bob-phone had 1"),
                          ({"passkeys_revoked": 1}, "kill records passkeys_revoked without its pair")):
        ledger = _bob_tablet(world)
        _counted_kill(ledger, "dev-bob-phone", **wrong)
        fails(ledger.entries, 47, reason)
