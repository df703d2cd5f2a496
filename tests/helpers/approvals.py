"""Devices that wait for approval, made through the real enrollment API, and their approval by a signed action:
the flows of a gateway with ``devices.approval: manager`` (or ``admin``), where a new device is not active at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from idwall.testing.authenticator import SoftAuthenticator

from .api import Enrolled, begin_enroll, call, finish_enroll, save_device, sign

MANAGER_POLICY = {"edit": lambda text: text.replace("approval: none", "approval: manager")}


@dataclass
class Waiting:
    """A device whose enrollment finished and that waits for a signed ``device.approve``."""

    device_id: str
    enrollment_id: str
    user_id: str
    key: ec.EllipticCurvePrivateKey
    auth: SoftAuthenticator


async def enroll_waiting(gateway: Any, *, code: str | None = None, user: str | None = None,
                         device_name: str = "laptop", auth: SoftAuthenticator | None = None) -> Waiting:
    """Enroll with an invite ``code`` (or self-service for ``user``); the device must come out pending approval."""
    auth = auth or SoftAuthenticator(origin=gateway.url)
    key, status, begun = await begin_enroll(gateway, code=code, user=user, device_name=device_name)
    assert status == 200, begun
    status, answer = await finish_enroll(gateway, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and answer["status"] == "pending_approval", answer
    owner = (await gateway.store.get_enrollment(begun["enrollment_id"])).user_id
    return Waiting(answer["device_id"], begun["enrollment_id"], owner, key, auth)


async def approve(gateway: Any, signer: Enrolled, client: Any, waiting: Waiting) -> Enrolled:
    """``signer`` signs ``device.approve`` over ``client`` (a session); the device, now active, with its files."""
    status, answer = await sign(gateway, signer, client, {"type": "device.approve", "device_id": waiting.device_id})
    assert status == 200, answer
    async with gateway.session() as anon:
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/enroll/" + waiting.enrollment_id)
    assert status == 200 and view["status"] == "active", view
    return save_device(gateway, waiting.key, {"device_id": waiting.device_id,
                                              "certificate_pem": view["certificate_pem"]}, waiting.user_id,
                       waiting.auth)
