"""idwall.audit.replay_devices: the replay of device entries (enroll, approve, reject, recover, renew) on a ledger the
generator builds, each refusal a passkey-signed entry the gateway would never have written."""

from __future__ import annotations

from typing import Any

import pytest

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
