"""idwall.store.sqlite.renewals: renewal requests (bounded per device, forgotten after a while) and the renewal
itself: the device's certificate replaced only while it still has the one the renewal was signed over, its live
sessions moved to the new certificate, its request answered, and other processes told.

Tested on a real SQLite file in ``tmp_path`` and on a fresh PostgreSQL schema (the same tests on both backends,
helpers/store.py); a refused change leaves every table as it was.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from idwall.encoding import b64url_encode
from idwall.model import LedgerDraft, Renewal, RenewEffect, Signer
from idwall.store.base import AlreadyUsed, LimitReached
from idwall.store.sqlite import SQLiteStore
from tests.helpers.records import NOW
from tests.helpers.store import BACKENDS, dump, enroll, login, opened, place

NEW_CERT, NEW_KEY = b"N" * 32, b"K" * 32


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with opened(await place(request, tmp_path)) as opened_store:
        yield opened_store


def renewal(ident: str = "ren-1", *, device_id: str, created_at: float = NOW, spki: bytes = NEW_KEY) -> Renewal:
    return Renewal(ident, device_id, "alice", "CSR", spki, "begun", created_at, created_at + 300)


async def test_a_renewal_request_reads_back_and_open_ones_are_bounded_per_device(store: SQLiteStore) -> None:
    new = await enroll(store, "alice")
    first = renewal("ren-1", device_id=new.device.id)
    await store.create_renewal(first, max_open=2, forget_before=0)
    assert await store.get_renewal("ren-1") == first
    await store.create_renewal(renewal("ren-2", device_id=new.device.id), max_open=2, forget_before=0)
    before = await dump(store)
    with pytest.raises(LimitReached, match="2 renewals of this device are already waiting"):
        await store.create_renewal(renewal("ren-3", device_id=new.device.id), max_open=2, forget_before=0)
    assert await dump(store) == before
    # an hour after they expired they are forgotten, and no longer count
    later = NOW + 300 + 3600
    await store.create_renewal(renewal("ren-4", device_id=new.device.id, created_at=later), max_open=2,
                               forget_before=later - 3600)
    assert [await store.get_renewal(i) is not None for i in ("ren-1", "ren-2", "ren-4")] == [False, False, True]


def _renew(store: SQLiteStore, new, effect: RenewEffect, *, expected: int = 1):  # type: ignore[no-untyped-def]
    who = Signer(new.user.id, new.credential.id, expected, expected + 1, False)
    return store.perform_action(signer=who, effect=effect, now=NOW,
                                draft=LedgerDraft("device.renew", new.user.id, new.device.id, {}, {"signature": "s"}))


async def test_a_renewal_replaces_the_certificate_and_carries_the_session_over(store: SQLiteStore) -> None:
    new = await enroll(store, "alice")
    device = new.device
    session = await login(store, new)
    await store.create_renewal(renewal(device_id=device.id), max_open=3, forget_before=0)
    assert device.cert_sha256 is not None
    effect = RenewEffect(device.id, "alice", device.cert_sha256, NEW_CERT, "PEM-NEW", NOW + 86400, NEW_KEY)
    await _renew(store, new, effect)
    assert await store.get_device(device.id) == dataclasses.replace(device, cert_sha256=NEW_CERT, cert_pem="PEM-NEW",
                                                                   not_after=NOW + 86400)
    assert await store.resolve_certificate(device.cert_sha256, now=NOW) is None
    resolved = await store.resolve_certificate(NEW_CERT, now=NOW)
    assert resolved is not None and resolved.session == dataclasses.replace(session, cert_sha256=NEW_CERT)
    answered = await store.get_renewal("ren-1")
    assert (answered.status, answered.cert_pem, answered.not_after) == ("renewed", "PEM-NEW", NOW + 86400)  # type: ignore[union-attr]
    assert [e.payload for e in await store.events_after(0) if e.kind == "device.changed"][-1] == {
        "device": device.id, "user": "alice", "retired_cert": b64url_encode(device.cert_sha256)}
    # signed over the old certificate, it cannot happen twice (nor after a concurrent renewal)
    before = await dump(store)
    with pytest.raises(AlreadyUsed, match="no longer has the certificate this renewal was signed over"):
        await _renew(store, new, dataclasses.replace(effect, cert_sha256=b"M" * 32), expected=2)
    assert await dump(store) == before


async def test_a_revoked_device_does_not_renew(store: SQLiteStore) -> None:
    new = await enroll(store, "alice")
    other = await enroll(store, "alice")  # signs: the revoked device's own passkey cannot
    await store.kill(scope="device", target=new.device.id, revoke_devices=True, now=NOW,
                     draft=LedgerDraft("kill", "alice", new.device.id, {}))
    assert new.device.cert_sha256 is not None
    effect = RenewEffect(new.device.id, "alice", new.device.cert_sha256, NEW_CERT, "PEM", NOW + 86400, NEW_KEY)
    before = await dump(store)
    with pytest.raises(AlreadyUsed):
        await _renew(store, other, effect, expected=0)
    assert await dump(store) == before
