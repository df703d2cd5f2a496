"""The tamper-evident audit ledger. Each module owns one thing; this package re-exports their API:

- :mod:`~idwall.audit.sealing`: the entry format, time stamps, ``entry_hash``,
  ``seal`` and ``new_entry``, the ledger key's JWK, the root fingerprint;
- :mod:`~idwall.audit.jsonl`: exports as JSON lines;
- :mod:`~idwall.audit.schemas`: the fields each entry type, approval and
  signed action must hold;
- :mod:`~idwall.audit.records` and :mod:`~idwall.audit.replay`: the trust
  state replayed entry by entry (:class:`LedgerState`), with the ``device.*``
  entries in :mod:`~idwall.audit.replay_devices`;
- :mod:`~idwall.audit.verify`: :func:`verify_ledger` and its pins.

:func:`verify_ledger` replays the ledger into a :class:`LedgerState` and stops at
the first entry that fails, naming its ``seq`` and why. It checks:

- the envelope: exactly the documented fields, each of the documented type;
  time never goes back more than ``MAX_CLOCK_STEP_BACK`` seconds (nodes' clocks
  differ a little; an entry cannot be backdated past an expiry);
- ``seq`` starts at 1 and goes up by one (deletion, reordering, insertion and
  truncation in the middle all break it), ``prev`` is the previous ``hash``,
  ``hash`` is the hash of the contents, ``sig`` verifies under the ledger key
  (the JWK in the bootstrap entry unless the caller pins one);
- ``bootstrap`` at seq 1 and nowhere else; with ``root``, the genesis admin
  credential's fingerprint equals the pin, so a wholly replaced ledger fails;
- every approval: a ``webauthn.get`` assertion whose challenge is the action's
  challenge (or, for ``session.login``, ``H(LOGIN || nonce || cert_sha256)``),
  whose origin is one of the bootstrap's origins, whose ``rpIdHash`` is
  ``H(rp_id)``, with UP (and UV when the bootstrap requires it), signed by a
  credential the ledger registered earlier to the actor, on a device that is
  active at that point, with a sign count that only goes up (the assertion
  goes through :func:`idwall.passkeys.verify_assertion`, as live logins and
  actions do); the action names the entry's type and actor, has not expired
  at the entry's time, its nonce is used once, and its fields are the entry's
  effect;
- roles: admin for ``invite.create``, ``admin.grant``/``admin.revoke``,
  ``user.set_manager``, ``token.create``/``token.revoke`` and kills by a user;
  ``device.approve``/``device.reject`` by an admin or by the device owner's
  manager at that point (the user's manager comes from the invite that last
  enrolled them and from later ``user.set_manager`` entries; the approval
  policy is configuration, not in the ledger, so a manager's approval is
  accepted under any policy); ``device.recover`` by the pending device's own
  user with another active credential; ``device.renew`` by the device's own
  user with a credential bound to that device, while it is active and before
  the certificate a previous renewal recorded expires, for a CSR that parses;
  its new ``cert_sha256`` is the one later logins must present; a kill token
  must have been created with the ``kill`` scope;
- managers: an invite's or ``user.set_manager``'s manager is null or another
  user known at that point, and equal to the signed action's;
- enrollments: an invited ``device.enroll`` names an invite a valid
  ``invite.create`` made earlier, unused and unexpired, and copies its user,
  name, email, groups and admin flag; an enrollment without an invite is for a
  known user, changes none of their attributes and stays ``pending_approval``;
  device, enrollment and credential ids are never registered twice;
- unknown entry types fail (closed).

What the ledger alone cannot show, and how to close it:

- Truncation at the end: a ledger cut after seq N is a valid ledger of N
  entries. Pin the head (``expected_last`` and ``expected_last_hash``, e.g. a
  copy kept off the gateway) to detect it.
- Whoever holds the ledger key can rewrite entries that carry no passkey
  approval (``kill``, ``session.logout``, ``signcount.anomaly``, ``key.rotate``)
  and reseal the chain; every check above still holds for them. Dropping a
  ``kill`` is only visible against a head pin or an exported copy.
- ``device.enroll`` carries no passkey signature: the invite authorises it. A
  ledger-key holder who rewrites the public key of an existing enrollment is
  caught as soon as that user's real passkey signs anything later (the
  signature no longer verifies), but not before.
- A device enrolled as ``pending_approval`` has no certificate yet, so its
  ``cert_sha256`` is null; its first ``session.login`` pins the certificate the
  passkey vouched for, and later logins must use the same one.
"""

from idwall.audit.jsonl import entries_from_jsonl, entry_to_jsonl
from idwall.audit.replay import LedgerState, LedgerViolation
from idwall.audit.sealing import (
    GENESIS_PREV,
    entry_hash,
    format_time,
    ids_digest,
    ledger_public_jwk,
    new_entry,
    parse_time,
    public_key_from_jwk,
    revokes_passkeys,
    root_fingerprint,
    seal,
)
from idwall.audit.verify import VerifyResult, verify_ledger

__all__ = [
    "GENESIS_PREV",
    "LedgerState",
    "LedgerViolation",
    "VerifyResult",
    "entries_from_jsonl",
    "entry_hash",
    "entry_to_jsonl",
    "format_time",
    "ids_digest",
    "ledger_public_jwk",
    "new_entry",
    "parse_time",
    "public_key_from_jwk",
    "revokes_passkeys",
    "root_fingerprint",
    "seal",
    "verify_ledger",
]
