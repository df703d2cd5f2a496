"""idwall.renewal: who may renew which device's certificate, over which connection, for which key; and what the
polling CLI is told. Pure: hand-built records (helpers/records.py), time passed in."""

from __future__ import annotations

import re

import pytest

from idwall.errors import Conflict, Forbidden, Gone
from idwall.renewal import RenewalTarget, check_renewal, new_renewal_id, public_status
from idwall.model import Renewal
from tests.helpers.records import NOW, device

OLD, NEW = b"o" * 32, b"n" * 32


def target(**changes) -> RenewalTarget:  # type: ignore[no-untyped-def]
    values = {"device": device(), "connection_device_id": "dev-1", "current_spki_sha256": OLD,
              "new_spki_sha256": NEW, **changes}
    return RenewalTarget(**values)


def test_the_devices_own_user_over_its_own_connection_for_a_new_key_renews() -> None:
    check_renewal(target(), signer="alice", now=NOW)


@pytest.mark.parametrize(("changes", "signer", "now", "error", "words"), [
    ({"connection_device_id": "dev-2"}, "alice", NOW, Forbidden,
     "device dev-1 can only be renewed over its own connection (presenting its current certificate); this "
     "connection is device dev-2"),
    ({}, "bob", NOW, Forbidden, "device dev-1 belongs to alice; only they can renew its certificate"),
    ({"device": device(status="revoked")}, "alice", NOW, Conflict, "device dev-1 is revoked; only an active"),
    ({"device": device(status="pending_approval")}, "alice", NOW, Conflict, "is pending approval"),
    ({"device": device(not_after=NOW)}, "alice", NOW, Gone, "the certificate of device dev-1 has expired"),
    ({"device": device(not_after=None)}, "alice", NOW, Gone, "has expired"),
    ({}, "alice", NOW + 31 * 86400, Gone, "has expired"),  # a keep-alive connection that outlived its certificate
    ({"new_spki_sha256": OLD}, "alice", NOW, Conflict, "the CSR is for the device's current key"),
])
def test_what_is_refused(changes, signer: str, now: float, error: type, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=re.escape(words)):
        check_renewal(target(**changes), signer=signer, now=now)


def test_renewal_ids_are_unguessable_and_url_safe() -> None:
    ids = {new_renewal_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"ren-[A-Za-z0-9_-]{24}", i) for i in ids)


@pytest.mark.parametrize(("status", "expires_at", "shown"), [
    ("begun", NOW + 1, "begun"), ("begun", NOW, "expired"), ("renewed", NOW - 1, "renewed")])
def test_public_status(status: str, expires_at: float, shown: str) -> None:
    renewal = Renewal("ren-1", "dev-1", "alice", "csr", NEW, status, NOW - 300, expires_at)
    assert public_status(renewal, now=NOW) == shown
