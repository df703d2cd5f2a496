"""Regenerate the audit ledger vectors: ``python tests/vectors/ledger/make_vectors.py [--out DIR]``.

Writes ``valid/*.jsonl`` and ``invalid/*.jsonl`` (one sealed entry a line) with a
``manifest.json`` in each: for valid files the root pin, entry count and head
hash; for invalid files the ``seq`` that must fail, a substring of the reason,
and the pins the verifier is given (``root``, ``expected_last``).

Everything the script controls is deterministic: the ledger key, device keys
and certificates, times, nonces, ids and the ledger's RFC 6979 signatures.
The passkeys are real ``SoftAuthenticator`` credentials (ES256, EdDSA and RS256),
whose keys and credential ids are random, so a rerun changes those bytes.

Each invalid ledger is the valid one with one thing done to it, and when the
attack models someone holding the gateway's ledger key (but no admin's
passkey), everything from the changed entry on is resealed with that key, so
only the checks beyond the hash chain can catch it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idwall.audit import (
    GENESIS_PREV,
    entry_to_jsonl,
    ledger_public_jwk,
    new_entry,
    parse_time,
    root_fingerprint,
    seal,
    verify_ledger,
)
from idwall.challenges import action_challenge, login_challenge
from idwall.pki import make_csr
from idwall.encoding import b64url_decode, b64url_encode, sha256
from idwall.testing import EDDSA, ES256, RS256, SoftAuthenticator

ORIGIN = "https://localhost:8443"
RP_ID = "localhost"
T0 = parse_time("2026-11-22T09:00:00.000Z")
STEP = 60  # seconds between entries
ACTION_LIFETIME = 300
HERE = Path(__file__).resolve().parent
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def derived(label: str) -> bytes:
    """32 reproducible bytes named by ``label``."""
    return sha256(b"idwall/test-vectors/ledger/", label.encode("utf-8"))


def derived_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A reproducible P-256 key (test vectors only: the scalar is public)."""
    scalar = int.from_bytes(derived(label), "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


DEVICE_CA_KEY = derived_key("device-ca")


def device_certificate(device_id: str) -> bytes:
    """A device certificate as the gateway issues it (CN and SAN URI name the device); DER."""
    key = derived_key("device/" + device_id)
    issued = datetime.fromtimestamp(T0, timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IDWall test device CA")]))
        .public_key(key.public_key())
        .serial_number(int.from_bytes(derived("serial/" + device_id)[:16], "big") >> 1)
        .not_valid_before(issued)
        .not_valid_after(issued + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:idwall:device:{device_id}")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(DEVICE_CA_KEY, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class Person:
    """A user with one software authenticator and the credentials it made, by device id."""

    user: str
    name: str
    groups: list[str]
    admin: bool
    alg: int = ES256
    auth: SoftAuthenticator = field(init=False)
    credentials: dict[str, bytes] = field(default_factory=dict)  # device id -> credential id

    def __post_init__(self) -> None:
        self.auth = SoftAuthenticator(origin=ORIGIN, rp_id=RP_ID, alg=self.alg)

    @property
    def email(self) -> str:
        return f"{self.user}@example.com"

    def user_fields(self) -> dict[str, Any]:
        return {"user": self.user, "name": self.name, "email": self.email, "groups": self.groups, "admin": self.admin}

    def register(self, device_id: str) -> dict[str, Any]:
        """Create a passkey for ``device_id``; return the registration fields a ledger entry records."""
        options = {
            "rp": {"id": RP_ID, "name": "IDWall"},
            "user": {"id": b64url_encode(self.user.encode()), "name": self.user, "displayName": self.name},
            "challenge": b64url_encode(derived("enroll/" + device_id)),
            "pubKeyCredParams": [{"type": "public-key", "alg": alg} for alg in (ES256, EDDSA, RS256)],
            "authenticatorSelection": {"userVerification": "required"},
            "attestation": "none",
        }
        credential_id = b64url_decode(self.auth.create(options)["rawId"])
        self.credentials[device_id] = credential_id
        return {
            "device_id": device_id,
            "device_name": f"{self.name}'s {device_id.rsplit('-', 1)[-1]}",
            "credential_id": b64url_encode(credential_id),
            "public_key": b64url_encode(self.auth.public_key_cose(credential_id)),
            "alg": self.alg,
        }

    def assert_(self, device_id: str, challenge: bytes, **knobs: Any) -> dict[str, Any]:
        """A WebAuthn assertion over ``challenge`` with the credential of ``device_id``, as ledger approval fields."""
        credential_id = self.credentials[device_id]
        options = {
            "challenge": b64url_encode(challenge),
            "rpId": RP_ID,
            "allowCredentials": [{"id": b64url_encode(credential_id), "type": "public-key"}],
            "userVerification": "required",
        }
        response = self.auth.get(options, credential_id=credential_id, **knobs)["response"]
        return {
            "credential_id": b64url_encode(credential_id),
            "authenticator_data": response["authenticatorData"],
            "client_data_json": response["clientDataJSON"],
            "signature": response["signature"],
        }


@dataclass
class Ledger:
    """Entries sealed with one ledger key; time moves ``STEP`` seconds per entry."""

    key: ec.EllipticCurvePrivateKey
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def next_seq(self) -> int:
        return len(self.entries) + 1

    @property
    def next_time(self) -> float:
        return T0 + STEP * self.next_seq

    def append(self, type_: str, actor: str, subject: str, data: dict[str, Any],
               approval: dict[str, Any] | None = None) -> dict[str, Any]:
        prev = b64url_decode(self.entries[-1]["hash"]) if self.entries else GENESIS_PREV
        entry = new_entry(seq=self.next_seq, time=self.next_time, type=type_, actor=actor, subject=subject,
                          data=data, approval=approval)
        sealed = seal(entry, prev=prev, key=self.key)
        self.entries.append(sealed)
        return sealed

    def fork(self, upto: int) -> Ledger:
        """A copy holding entries 1..upto."""
        return Ledger(self.key, copy.deepcopy(self.entries[:upto]))

    def action(self, signer: Person, device_id: str, type_: str, fields: dict[str, Any], *,
               label: str, not_after: int | None = None, **knobs: Any) -> dict[str, Any]:
        """The approval of a signed action by ``signer``, made for the next entry."""
        action = {
            "type": type_,
            **fields,
            "actor": signer.user,
            "nonce": b64url_encode(derived("nonce/" + label)),
            "not_after": int(self.next_time) + ACTION_LIFETIME if not_after is None else not_after,
        }
        return {**signer.assert_(device_id, action_challenge(action), **knobs), "action": action}

    def login(self, person: Person, device_id: str, session_id: str, cert_der: bytes, *,
              label: str, **knobs: Any) -> dict[str, Any]:
        """Append a ``session.login`` of ``person`` on ``device_id`` over a connection with ``cert_der``."""
        nonce = derived("login/" + label)
        approval = {**person.assert_(device_id, login_challenge(nonce, cert_der), **knobs),
                    "nonce": b64url_encode(nonce)}
        sign_count = int.from_bytes(b64url_decode(approval["authenticator_data"])[33:37], "big")
        data = {
            "user": person.user,
            "device_id": device_id,
            "credential_id": approval["credential_id"],
            "cert_sha256": b64url_encode(sha256(cert_der)),
            "nonce": b64url_encode(nonce),
            "sign_count": sign_count,
        }
        return self.append("session.login", person.user, session_id, data, approval)


def reseal(entries: list[dict[str, Any]], key: ec.EllipticCurvePrivateKey, start: int = 1) -> list[dict[str, Any]]:
    """Renumber nothing, but recompute prev, hash and sig from seq ``start`` on: what a ledger-key holder can do."""
    out = copy.deepcopy(entries)
    for index in range(start - 1, len(out)):
        prev = b64url_decode(out[index - 1]["hash"]) if index else GENESIS_PREV
        out[index] = seal(out[index], prev=prev, key=key)
    return out


def invite_id(code_label: str) -> str:
    return b64url_encode(sha256(b64url_encode(derived("code/" + code_label)).encode("ascii")))


@dataclass
class World:
    """The people, their devices and the valid ledger built from them."""

    ledger: Ledger
    alice: Person
    bob: Person
    carol: Person
    dave: Person
    erin: Person
    certs: dict[str, bytes]
    ids: dict[str, Any]


def bootstrap(ledger: Ledger, admin: Person, device_id: str, cert: bytes) -> None:
    data = {
        **admin.user_fields(),
        **admin.register(device_id),
        "cert_sha256": b64url_encode(sha256(cert)),
        "rp_id": RP_ID,
        "origins": [ORIGIN],
        "user_verification": "required",
        "ledger_key": ledger_public_jwk(ledger.key),
    }
    ledger.append("bootstrap", admin.user, admin.user, data)


LEGACY = "legacy"  # an invite as gateways before managers wrote it: no manager field at all


def invite(ledger: Ledger, signer: Person, signer_device: str, invitee: Person, code_label: str,
           manager: str | None = None) -> str:
    ident = invite_id(code_label)
    fields = invitee.user_fields() if manager == LEGACY else {**invitee.user_fields(), "manager": manager}
    data = {"invite_id": ident, **fields, "expires_at": int(ledger.next_time) + 3600}
    approval = ledger.action(signer, signer_device, "invite.create", fields, label="invite/" + code_label)
    ledger.append("invite.create", signer.user, invitee.user, data, approval)
    return ident


def enroll(ledger: Ledger, person: Person, device_id: str, *, invite: str | None, status: str,
           cert: bytes | None, enrollment_id: str) -> dict[str, Any]:
    data = {
        **person.user_fields(),
        **person.register(device_id),
        "cert_sha256": b64url_encode(sha256(cert)) if cert is not None else None,
        "invite_id": invite,
        "enrollment_id": enrollment_id,
        "status": status,
    }
    return ledger.append("device.enroll", person.user, device_id, data)


def build_world(label: str = "main") -> World:
    """The valid ledger: every entry type, all three passkey algorithms."""
    ledger = Ledger(derived_key(f"ledger/{label}"))
    alice = Person("alice", "Alice Admin", ["soc", "eng"], True)
    bob = Person("bob", "Bob Builder", ["eng"], False)
    carol = Person("carol", "Carol Ops", ["eng", "sre"], False, alg=EDDSA)
    dave = Person("dave", "Dave Data", ["data"], False, alg=RS256)
    certs = {d: device_certificate(f"{label}/{d}") for d in
             ("dev-alice-laptop", "dev-bob-laptop", "dev-bob-phone", "dev-carol-laptop", "dev-dave-laptop")}
    ids: dict[str, Any] = {}

    bootstrap(ledger, alice, "dev-alice-laptop", certs["dev-alice-laptop"])                         # 1
    ids["bob_invite"] = invite(ledger, alice, "dev-alice-laptop", bob, f"{label}/bob", LEGACY)                           # 2
    enroll(ledger, bob, "dev-bob-laptop", invite=ids["bob_invite"], status="active",
           cert=certs["dev-bob-laptop"], enrollment_id="enr-bob-laptop")                             # 3
    ledger.login(bob, "dev-bob-laptop", "ses-bob-1", certs["dev-bob-laptop"], label="bob-1")         # 4
    ids["carol_invite"] = invite(ledger, alice, "dev-alice-laptop", carol, f"{label}/carol")                             # 5
    enroll(ledger, carol, "dev-carol-laptop", invite=ids["carol_invite"], status="pending_approval",
           cert=None, enrollment_id="enr-carol-laptop")                                              # 6
    approval = ledger.action(alice, "dev-alice-laptop", "device.approve", {"device_id": "dev-carol-laptop"},
                             label="approve-carol")
    ledger.append("device.approve", "alice", "dev-carol-laptop",
                  {"device_id": "dev-carol-laptop", "enrollment_id": "enr-carol-laptop", "status": "active"},
                  approval)                                                                          # 7
    ledger.login(carol, "dev-carol-laptop", "ses-carol-1", certs["dev-carol-laptop"], label="carol-1")  # 8
    approval = ledger.action(alice, "dev-alice-laptop", "admin.grant", {"user": "carol"}, label="grant-carol")
    ledger.append("admin.grant", "alice", "carol", {"user": "carol", "admin": True}, approval)        # 9
    token_fields = {"name": "soar", "scopes": ["kill", "read"], "ttl": "1h"}
    approval = ledger.action(carol, "dev-carol-laptop", "token.create", token_fields, label="token-soar")
    ledger.append("token.create", "carol", "tok-soar",
                  {"token_id": "tok-soar", "name": "soar", "scopes": ["kill", "read"],
                   "expires_at": int(ledger.next_time) + 3600}, approval)                            # 10
    enroll(ledger, bob, "dev-bob-phone", invite=None, status="pending_approval", cert=None,
           enrollment_id="enr-bob-phone")                                                            # 11
    approval = ledger.action(bob, "dev-bob-laptop", "device.recover", {"enrollment_id": "enr-bob-phone"},
                             label="recover-bob-phone")
    ledger.append("device.recover", "bob", "dev-bob-phone",
                  {"device_id": "dev-bob-phone", "enrollment_id": "enr-bob-phone", "status": "active"},
                  approval)                                                                          # 12
    ledger.login(bob, "dev-bob-phone", "ses-bob-2", certs["dev-bob-phone"], label="bob-2")           # 13
    ledger.append("session.logout", "bob", "ses-bob-2", {"user": "bob", "device_id": "dev-bob-phone"})  # 14
    bob_laptop = b64url_encode(bob.credentials["dev-bob-laptop"])
    ledger.append("signcount.anomaly", "system", bob_laptop,
                  {"user": "bob", "device_id": "dev-bob-laptop", "credential_id": bob_laptop,
                   "stored": 2, "received": 1})                                                      # 15
    ledger.append("kill", "token:tok-soar", "dev-bob-laptop",
                  {"scope": "device", "target": "dev-bob-laptop", "reason": "sign count went backwards",
                   "revoke_devices": True, "sessions": ["ses-bob-1"], "devices": ["dev-bob-laptop"]})  # 16
    ledger.append("key.rotate", "system", "kid-2",
                  {"kind": "assertion", "kid": "kid-2", "previous_kid": "kid-1"})                    # 17
    ids["dave_invite"] = invite(ledger, alice, "dev-alice-laptop", dave, f"{label}/dave")                                # 18
    enroll(ledger, dave, "dev-dave-laptop", invite=ids["dave_invite"], status="active",
           cert=certs["dev-dave-laptop"], enrollment_id="enr-dave-laptop")                           # 19
    ledger.login(dave, "dev-dave-laptop", "ses-dave-1", certs["dev-dave-laptop"], label="dave-1")    # 20
    approval = ledger.action(alice, "dev-alice-laptop", "admin.revoke", {"user": "carol"}, label="revoke-carol")
    ledger.append("admin.revoke", "alice", "carol", {"user": "carol", "admin": False}, approval)     # 21
    approval = ledger.action(alice, "dev-alice-laptop", "token.revoke", {"token_id": "tok-soar"},
                             label="revoke-soar")
    ledger.append("token.revoke", "alice", "tok-soar", {"token_id": "tok-soar"}, approval)           # 22
    ledger.append("kill", "alice", "dave",
                  {"scope": "user", "target": "dave", "reason": "left the company", "revoke_devices": False,
                   "sessions": ["ses-dave-1"], "devices": ["dev-dave-laptop"]})                      # 23
    erin = Person("erin", "Erin Eng", ["eng"], False)
    certs["renewed"] = device_certificate(f"{label}/dev-erin-laptop/renewed")
    world = World(ledger, alice, bob, carol, dave, erin, certs, ids)
    manager_story(ledger, world, label)                                                              # 24..32
    incident_story(ledger, world)                                                                    # 33..45
    return world


def decide(ledger: Ledger, signer: Person, signer_device: str, type_: str, device_id: str, enrollment_id: str,
           *, label: str) -> dict[str, Any]:
    """Append a ``device.approve`` or ``device.reject`` of a pending device signed by ``signer``."""
    approval = ledger.action(signer, signer_device, type_, {"device_id": device_id}, label=label)
    status = "active" if type_ == "device.approve" else "revoked"
    return ledger.append(type_, signer.user, device_id,
                         {"device_id": device_id, "enrollment_id": enrollment_id, "status": status}, approval)


def set_manager(ledger: Ledger, signer: Person, signer_device: str, user: str, manager: str | None, *,
                label: str) -> dict[str, Any]:
    fields = {"user": user, "manager": manager}
    approval = ledger.action(signer, signer_device, "user.set_manager", fields, label=label)
    return ledger.append("user.set_manager", signer.user, user, fields, approval)


def renew(ledger: Ledger, person: Person, device_id: str, new_cert: bytes, *, key_label: str,
          signer_device: str | None = None, label: str) -> dict[str, Any]:
    """Append a ``device.renew`` of ``device_id`` to the certificate ``new_cert`` (for the key ``key_label``)."""
    fields = {"device_id": device_id, "csr_pem": make_csr(derived_key("device/" + key_label), device_id)}
    approval = ledger.action(person, signer_device or device_id, "device.renew", fields, label=label)
    return ledger.append("device.renew", person.user, device_id,
                         {"device_id": device_id, "cert_sha256": b64url_encode(sha256(new_cert)),
                          "not_after": int(T0) + 30 * 86400}, approval)


def manager_story(ledger: Ledger, world: World, label: str) -> None:
    """Erin is invited with bob as her manager; bob (no admin) approves one device of hers and rejects
    another; alice makes dave her manager; erin renews her laptop's certificate and logs in on the new one."""
    alice, bob, erin = world.alice, world.bob, world.erin
    erin_laptop = world.certs["renewed"]
    world.ids["erin_invite"] = invite(ledger, alice, "dev-alice-laptop", erin, f"{label}/erin", "bob")  # 24
    enroll(ledger, erin, "dev-erin-laptop", invite=world.ids["erin_invite"], status="pending_approval",
           cert=None, enrollment_id="enr-erin-laptop")                                               # 25
    decide(ledger, bob, "dev-bob-phone", "device.approve", "dev-erin-laptop", "enr-erin-laptop",
           label="bob-approves-erin")                                                                # 26
    world.certs["dev-erin-laptop"] = device_certificate(f"{label}/dev-erin-laptop")
    ledger.login(erin, "dev-erin-laptop", "ses-erin-1", world.certs["dev-erin-laptop"], label="erin-1")  # 27
    enroll(ledger, erin, "dev-erin-phone", invite=None, status="pending_approval", cert=None,
           enrollment_id="enr-erin-phone")                                                           # 28
    decide(ledger, bob, "dev-bob-phone", "device.reject", "dev-erin-phone", "enr-erin-phone",
           label="bob-rejects-erin-phone")                                                           # 29
    set_manager(ledger, alice, "dev-alice-laptop", "erin", "dave", label="erin-to-dave")           # 30
    renew(ledger, erin, "dev-erin-laptop", erin_laptop, key_label=f"{label}/dev-erin-laptop/renewed",
          label="renew-erin-laptop")                                                                 # 31
    ledger.login(erin, "dev-erin-laptop", "ses-erin-2", erin_laptop, label="erin-2")                # 32


NO_TARGETS: dict[str, list[str]] = {"users": [], "devices": []}


def stage(ledger: Ledger, actor: str, incident: str, number: int, users: list[str], steps: list[str], *,
          kills: tuple[int, ...] = (), reapproval: tuple[str, ...] = (), suspect: tuple[str, ...] = (),
          tokens: tuple[str, ...] = ()) -> dict[str, Any]:
    """Append an ``incident.stage`` (part ``others``) as the executor writes it."""
    return ledger.append("incident.stage", actor, incident, {
        "incident_id": incident, "number": number, "part": "others", "steps": steps, "users": users,
        "devices": [], "kills": list(kills), "devices_reapproval": list(reapproval),
        "credentials_suspect": list(suspect), "tokens_revoked": list(tokens), "fresh_auth": None, "block_code_enrollment": False})


def incident_story(ledger: Ledger, world: World) -> None:
    """Alice runs an incident: dave's laptop goes back to approval, erin's passkey is marked suspect; alice
    approves dave's laptop again and dave (erin's manager) approves erin's new tablet; the incident ends. Then
    an automation token with scope incident runs one that kills bob and revokes his devices."""
    alice, dave, erin = world.alice, world.dave, world.erin
    fields = {"playbook": "org-wide-reset", "reason": "admin laptop stolen", "dry_run": False, "targets": NO_TARGETS}
    approval = ledger.action(alice, "dev-alice-laptop", "incident.start", fields, label="incident-1")
    ledger.append("incident.start", "alice", "inc-1",
                  {"incident_id": "inc-1", "playbook": "org-wide-reset", "reason": "admin laptop stolen",
                   "targets": NO_TARGETS, "stages": 2}, approval)                                    # 33
    kill = ledger.append("kill", "alice", "dave",
                         {"scope": "user", "target": "dave", "reason": "incident inc-1 stage 1",
                          "revoke_devices": False, "sessions": [], "devices": []})                   # 34
    stage(ledger, "alice", "inc-1", 1, ["dave"], ["kill", "require_reapproval"], kills=(kill["seq"],),
          reapproval=("dev-dave-laptop",))                                                            # 35
    stage(ledger, "alice", "inc-1", 2, ["erin"], ["suspect_passkeys"],
          suspect=(b64url_encode(erin.credentials["dev-erin-laptop"]),))                              # 36
    enroll(ledger, erin, "dev-erin-tablet", invite=None, status="pending_approval", cert=None,
           enrollment_id="enr-erin-tablet")                                                          # 37
    decide(ledger, alice, "dev-alice-laptop", "device.approve", "dev-dave-laptop", "enr-dave-laptop",
           label="reapprove-dave")                                                                   # 38
    decide(ledger, dave, "dev-dave-laptop", "device.approve", "dev-erin-tablet", "enr-erin-tablet",
           label="dave-approves-erin-tablet")                                                        # 39
    ledger.append("incident.end", "alice", "inc-1", {"incident_id": "inc-1"})                       # 40
    token_fields = {"name": "soar-ir", "scopes": ["incident"], "ttl": "1h"}
    approval = ledger.action(alice, "dev-alice-laptop", "token.create", token_fields, label="token-ir")
    ledger.append("token.create", "alice", "tok-ir",
                  {"token_id": "tok-ir", "name": "soar-ir", "scopes": ["incident"],
                   "expires_at": int(ledger.next_time) + 3600}, approval)                           # 41
    ledger.append("incident.start", "token:tok-ir", "inc-2",
                  {"incident_id": "inc-2", "playbook": "one-user", "reason": "bob phished",
                   "targets": {"users": ["bob"], "devices": []}, "stages": 1})                       # 42
    kill = ledger.append("kill", "token:tok-ir", "bob",
                         {"scope": "user", "target": "bob", "reason": "incident inc-2 stage 1",
                          "revoke_devices": True, "sessions": [], "devices": ["dev-bob-phone"]})     # 43
    stage(ledger, "token:tok-ir", "inc-2", 1, ["bob"], ["kill", "revoke_devices"], kills=(kill["seq"],))  # 44
    ledger.append("incident.end", "token:tok-ir", "inc-2", {"incident_id": "inc-2"})                # 45


def incident_vectors(world: World, expect: Any) -> dict[str, Vector]:
    """Incidents: a suspect passkey recovering, stages rewritten, a token killing outside its incident."""
    full, key = world.ledger.entries, world.ledger.key
    out: dict[str, Vector] = {}
    suspect = world.ledger.fork(38)
    approval = suspect.action(world.erin, "dev-erin-laptop", "device.recover", {"enrollment_id": "enr-erin-tablet"},
                              label="erin-recovers-with-suspect")
    suspect.append("device.recover", "erin", "dev-erin-tablet",
                   {"device_id": "dev-erin-tablet", "enrollment_id": "enr-erin-tablet", "status": "active"}, approval)
    out["recover_with_suspect_passkey"] = (suspect.entries, expect(
        39, "which an incident marked suspect", "erin recovers her tablet with the passkey stage 2 marked suspect"))
    skipped = copy.deepcopy(full)
    skipped[35]["data"]["number"] = 3
    out["incident_stage_out_of_order"] = (reseal(skipped, key, 36), expect(
        36, "stage 3 of incident inc-1 is out of order", "a ledger-key holder renumbers stage 2 as stage 3"))
    unsent = copy.deepcopy(full)
    unsent[34]["data"]["devices_reapproval"] = []
    out["incident_stage_rewritten"] = (reseal(unsent, key, 35), expect(
        38, "device dev-dave-laptop is active, not pending_approval",
        "stage 1's device sent back to approval erased; the later re-approval no longer fits"))
    late = world.ledger.fork(45)
    late.append("kill", "token:tok-ir", "carol",
                {"scope": "user", "target": "carol", "reason": "after the incident", "revoke_devices": False,
                 "sessions": [], "devices": []})
    out["incident_token_kills_after_end"] = (late.entries, expect(
        46, "actor token:tok-ir is not a live token with the kill scope",
        "the incident token kills once its incident has ended"))
    return out


Vector = tuple[list[dict[str, Any]], dict[str, Any]]


def invalid_vectors(world: World) -> dict[str, Vector]:
    """Every tampered ledger with what the verifier must say about it."""
    full, key = world.ledger.entries, world.ledger.key
    alice, bob, carol = world.alice, world.bob, world.carol
    out: dict[str, Vector] = {}

    def expect(seq: int, reason: str, description: str, **pins: Any) -> dict[str, Any]:
        return {"seq": seq, "reason": reason, "description": description, **pins}

    # --- the hash chain ---
    tampered = copy.deepcopy(full)
    tampered[8]["data"]["user"] = "bob"
    out["data_changed"] = (tampered, expect(9, "hash does not match its contents",
                                            "admin.grant's data.user edited in place"))
    out["entry_deleted"] = ([e for e in full if e["seq"] != 5],
                            expect(6, "expected seq 5 after seq 4", "seq 5 (an invite) removed"))
    swapped = copy.deepcopy(full)
    swapped[6], swapped[7] = swapped[7], swapped[6]
    out["entries_swapped"] = (swapped, expect(8, "expected seq 7 after seq 6", "seq 7 and seq 8 swapped"))
    out["truncated_middle"] = (full[:9] + full[15:],
                               expect(16, "expected seq 10 after seq 9", "seq 10..15 cut out"))
    out["truncated_end"] = (full[:20], expect(21, "truncated", "the last entries cut off; caught by a head pin",
                                              expected_last=len(full)))
    broken = copy.deepcopy(full)
    broken[5] = seal(broken[5], prev=b64url_decode(full[3]["hash"]), key=key)
    out["prev_relinked"] = (broken,
                            expect(6, "prev does not match the hash of seq 5",
                                   "seq 6 resealed but linked to seq 4"))
    forged_sig = copy.deepcopy(full)
    forged_sig[4] = seal(forged_sig[4], prev=b64url_decode(full[3]["hash"]), key=derived_key("ledger/other"))
    out["foreign_ledger_sig"] = (forged_sig, expect(5, "ledger signature does not verify",
                                                    "seq 5 signed by a key other than the bootstrap's"))

    # --- a ledger-key holder rewrites and reseals ---
    moved = copy.deepcopy(full)
    moved[1]["approval"] = copy.deepcopy(full[4]["approval"])
    out["approval_moved"] = (reseal(moved, key, 2), expect(
        2, "approval action user is \"carol\"", "carol's invite approval attached to bob's invite"))
    moved = copy.deepcopy(full)
    moved[20]["approval"] = copy.deepcopy(full[8]["approval"])
    out["approval_moved_type"] = (reseal(moved, key, 21), expect(
        21, "approval action type \"admin.grant\" does not match entry type admin.revoke",
        "the admin.grant approval attached to the admin.revoke"))
    swapped_key = copy.deepcopy(full)
    intruder = Person("bob", "Bob Builder", ["eng"], False)
    swapped_key[2]["data"]["public_key"] = intruder.register("dev-bob-laptop")["public_key"]
    out["public_key_swapped"] = (reseal(swapped_key, key, 3), expect(
        4, f"approval signature does not verify under credential {full[2]['data']['credential_id']} of user bob",
        "bob's registered public key replaced; his real login no longer verifies"))
    other_action = copy.deepcopy(full)
    other_action[8]["subject"] = "bob"
    other_action[8]["data"]["user"] = "bob"
    other_action[8]["approval"]["action"]["user"] = "bob"
    out["challenge_other_action"] = (reseal(other_action, key, 9), expect(
        9, "approval challenge is not the challenge of this action",
        "alice's assertion over 'grant carol' presented for 'grant bob'"))
    inserted = full[:3] + [{**copy.deepcopy(full[2]), "subject": "dev-mallory"}] + copy.deepcopy(full[3:])
    mallory = Person("mallory", "Mallory", ["eng"], True)
    inserted[3]["data"] = {**mallory.user_fields(), **mallory.register("dev-mallory"),
                           "cert_sha256": b64url_encode(sha256(b"mallory's certificate")),
                           "invite_id": invite_id("never-issued"), "enrollment_id": "enr-mallory", "status": "active"}
    inserted[3]["actor"] = "mallory"
    for index, entry in enumerate(inserted, start=1):
        entry["seq"] = index
    out["enroll_inserted"] = (reseal(inserted, key, 4), expect(
        4, f"invite {invite_id('never-issued')} was never created by a valid invite.create",
        "a hand-written admin enrollment claiming an invite nobody signed"))
    twice = world.ledger.fork(3)
    twice.append("device.enroll", "bob", "dev-bob-desktop",
                 {**bob.user_fields(), **bob.register("dev-bob-desktop"),
                  "cert_sha256": b64url_encode(sha256(b"bob's desktop certificate")),
                  "invite_id": world.ids["bob_invite"], "enrollment_id": "enr-bob-desktop", "status": "active"})
    out["invite_used_twice"] = (twice.entries, expect(
        4, f"invite {world.ids['bob_invite']} was already used by seq 3", "bob's invite enrolls a second device"))
    elevated = copy.deepcopy(full)
    elevated[2]["data"]["admin"] = True
    out["enroll_elevates_invite"] = (reseal(elevated, key, 3), expect(
        3, "data.admin is true, but invite", "bob's enrollment claims admin although his invite did not"))
    expired = copy.deepcopy(full)
    expired[1]["data"]["expires_at"] = int(T0) + STEP * 2 + 30
    out["invite_expired"] = (reseal(expired, key, 2), expect(
        3, "expired at", "bob's enrollment comes after his invite's expiry"))
    no_invite = world.ledger.fork(10)
    no_invite.append("device.enroll", "bob", "dev-bob-tablet",
                     {**bob.user_fields(), **bob.register("dev-bob-tablet"),
                      "cert_sha256": b64url_encode(sha256(b"bob's tablet certificate")),
                      "invite_id": None, "enrollment_id": "enr-bob-tablet", "status": "active"})
    out["enroll_without_invite_active"] = (no_invite.entries, expect(
        11, "must be pending_approval", "a self-service enrollment that makes itself active"))
    private = copy.deepcopy(full[:1])
    private[0]["data"]["ledger_key"] = {
        **ledger_public_jwk(key), "d": b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))}
    out["ledger_key_private"] = (reseal(private, key), expect(1, "holds a private key", "the bootstrap leaks 'd'"))
    second = world.ledger.fork(2)
    second.append("bootstrap", "mallory", "mallory", {**copy.deepcopy(full[0]["data"]), "user": "mallory"})
    out["second_bootstrap"] = (second.entries, expect(3, "bootstrap is only allowed at seq 1",
                                                      "a bootstrap in the middle"))
    unknown = world.ledger.fork(3)
    unknown.entries.append(seal({**new_entry(seq=4, time=unknown.next_time, type="kill", actor="alice",
                                              subject="bob", data={}), "type": "user.delete"},
                                prev=b64url_decode(unknown.entries[-1]["hash"]), key=key))
    out["unknown_type"] = (unknown.entries, expect(4, "unknown entry type \"user.delete\"",
                                                   "a type the verifier does not know: fail closed"))

    # --- roles and authority, with real passkey signatures ---
    by_bob = world.ledger.fork(4)
    mallory_fields = Person("mallory", "Mallory", ["eng"], True).user_fields()
    approval = by_bob.action(bob, "dev-bob-laptop", "invite.create", mallory_fields, label="bob-invites-mallory")
    by_bob.append("invite.create", "bob", "mallory",
                  {"invite_id": invite_id("mallory"), **mallory_fields, "expires_at": int(by_bob.next_time) + 3600},
                  approval)
    out["invite_by_non_admin"] = (by_bob.entries, expect(
        5, "signer bob is not an admin at this point", "bob (not an admin) signs an admin invite with his passkey"))
    approve = world.ledger.fork(6)
    approval = approve.action(bob, "dev-bob-laptop", "device.approve", {"device_id": "dev-carol-laptop"},
                              label="bob-approves")
    approve.append("device.approve", "bob", "dev-carol-laptop",
                   {"device_id": "dev-carol-laptop", "enrollment_id": "enr-carol-laptop", "status": "active"},
                   approval)
    out["approve_by_non_admin"] = (approve.entries, expect(
        7, "signer bob is neither an admin nor the manager of carol", "bob approves carol's device"))
    recover = world.ledger.fork(11)
    approval = recover.action(alice, "dev-alice-laptop", "device.recover", {"enrollment_id": "enr-bob-phone"},
                              label="alice-recovers-bob")
    recover.append("device.recover", "alice", "dev-bob-phone",
                   {"device_id": "dev-bob-phone", "enrollment_id": "enr-bob-phone", "status": "active"}, approval)
    out["recover_by_other_user"] = (recover.entries, expect(
        12, "signer alice is not the user bob of the pending device", "alice 'recovers' bob's device"))
    stranger = Person("alice", "Alice Admin", ["soc", "eng"], True)
    stranger.register("dev-alice-laptop")
    unknown_cred = world.ledger.fork(8)
    approval = unknown_cred.action(stranger, "dev-alice-laptop", "admin.grant", {"user": "bob"}, label="unknown")
    unknown_cred.append("admin.grant", "alice", "bob", {"user": "bob", "admin": True}, approval)
    out["unknown_credential"] = (unknown_cred.entries, expect(
        9, f"approval credential {approval['credential_id']} was never registered",
        "an admin.grant signed by a passkey the ledger never registered"))
    pending = world.ledger.fork(6)
    pending.login(carol, "dev-carol-laptop", "ses-carol-early", world.certs["dev-carol-laptop"], label="early")
    out["pending_device_signs"] = (pending.entries, expect(
        7, "which is pending_approval", "carol logs in before her device is approved"))
    revoked = world.ledger.fork(len(full))
    revoked.login(bob, "dev-bob-laptop", "ses-bob-late", world.certs["dev-bob-laptop"], label="late")
    out["revoked_device_signs"] = (revoked.entries, expect(
        len(full) + 1, "which is revoked", "bob's killed laptop logs in again"))

    # --- the assertion itself ---
    def grant_bob(name: str, reason: str, description: str, **knobs: Any) -> None:
        ledger = world.ledger.fork(8)
        not_after = knobs.pop("not_after", None)
        approval = ledger.action(alice, "dev-alice-laptop", "admin.grant", {"user": "bob"}, label="grant-bob/" + name,
                                 not_after=not_after, **knobs)
        ledger.append("admin.grant", "alice", "bob", {"user": "bob", "admin": True}, approval)
        out[name] = (ledger.entries, expect(9, reason, description))

    grant_bob("uv_missing", "user-verified (UV) flag", "assertion without user verification", uv=False)
    grant_bob("up_missing", "user-present (UP) flag", "assertion without user presence", up=False)
    grant_bob("wrong_origin", "origin \"https://evil.example\"", "assertion made on another origin",
              origin="https://evil.example")
    grant_bob("wrong_rp_id", "rpIdHash is not SHA-256 of the rp_id localhost", "assertion for another RP ID",
              rp_id="evil.example")
    grant_bob("create_not_get", "expected webauthn.get", "a registration's clientData type",
              client_data={"type": "webauthn.create"})
    grant_bob("action_expired", "expired at not_after", "the action's not_after is before the entry",
              not_after=int(T0))
    grant_bob("sign_count_stale", "does not go past", "an assertion whose counter went backwards", sign_count=1)

    replayed = world.ledger.fork(9)
    replayed.append("admin.grant", "alice", "carol", {"user": "carol", "admin": True},
                    copy.deepcopy(full[8]["approval"]))
    out["approval_replayed"] = (replayed.entries, expect(10, "does not go past",
                                                         "seq 9's approval copied into a new entry"))
    again = world.ledger.fork(9)
    action = full[8]["approval"]["action"]
    approval = {**alice.assert_("dev-alice-laptop", action_challenge(action)), "action": action}
    again.append("admin.grant", "alice", "carol", {"user": "carol", "admin": True}, approval)
    out["action_nonce_reused"] = (again.entries, expect(
        10, f"action nonce {action['nonce']} was already used by seq 9", "the same action signed and performed twice"))
    wrong_cert = world.ledger.fork(13)
    wrong_cert.login(bob, "dev-bob-phone", "ses-bob-other", world.certs["dev-bob-laptop"], label="wrong-cert")
    out["login_other_certificate"] = (wrong_cert.entries, expect(
        14, "not the certificate the ledger recorded", "a login over a certificate that is not the device's"))

    out.update(manager_vectors(world, expect))
    out.update(incident_vectors(world, expect))

    # --- a whole ledger from another init: only the root pin tells ---
    other = build_world("other")
    out["other_init"] = (other.ledger.entries, expect(
        1, "genesis credential fingerprint does not match --root", "a complete, self-consistent foreign ledger",
        root=root_fingerprint(b64url_decode(full[0]["data"]["public_key"]))))
    return out


def manager_vectors(world: World, expect: Any) -> dict[str, Vector]:
    """Managers, rejections and renewals: signers who are not entitled, and manager entries rewritten."""
    full, key = world.ledger.entries, world.ledger.key
    bob, carol, dave, erin = world.bob, world.carol, world.dave, world.erin
    out: dict[str, Vector] = {}
    by_carol = world.ledger.fork(25)
    decide(by_carol, carol, "dev-carol-laptop", "device.approve", "dev-erin-laptop", "enr-erin-laptop",
           label="carol-approves-erin")
    out["approve_by_non_manager"] = (by_carol.entries, expect(
        26, "signer carol is neither an admin nor the manager of erin",
        "carol (no longer an admin, not erin's manager) approves erin's device"))
    by_dave = world.ledger.fork(28)
    decide(by_dave, dave, "dev-dave-laptop", "device.reject", "dev-erin-phone", "enr-erin-phone",
           label="dave-rejects-erin")
    out["reject_by_non_manager"] = (by_dave.entries, expect(
        29, "signer dave is neither an admin nor the manager of erin", "dave rejects erin's phone before he is her manager"))
    former = world.ledger.fork(31)
    enroll(former, erin, "dev-erin-tablet", invite=None, status="pending_approval", cert=None,
           enrollment_id="enr-erin-tablet")
    decide(former, bob, "dev-bob-phone", "device.approve", "dev-erin-tablet", "enr-erin-tablet",
           label="former-manager")
    out["approve_by_former_manager"] = (former.entries, expect(
        33, "signer bob is neither an admin nor the manager of erin", "bob approves erin's tablet after seq 30 "
        "made dave her manager"))
    changed = copy.deepcopy(full)
    changed[23]["data"]["manager"] = "carol"
    out["invite_manager_changed"] = (reseal(changed, key, 24), expect(
        24, "approval action manager is \"bob\", but the entry's data.manager is \"carol\"",
        "a ledger-key holder names carol as erin's manager in the invite's data"))
    dropped = copy.deepcopy(full)
    del dropped[23]["data"]["manager"]
    out["invite_manager_dropped"] = (reseal(dropped, key, 24), expect(
        24, "approval action manager is \"bob\", but the entry's data.manager is null",
        "the manager removed from the invite's data, as if it were an invite from before managers"))
    repointed = copy.deepcopy(full)
    repointed[29]["data"]["manager"] = "carol"
    repointed[29]["approval"]["action"]["manager"] = "carol"
    out["set_manager_repointed"] = (reseal(repointed, key, 30), expect(
        30, "approval challenge is not the challenge of this action",
        "user.set_manager re-pointed to carol in data and action; alice's signature was over dave"))
    other_user = world.ledger.fork(30)
    renew(other_user, bob, "dev-erin-laptop", world.certs["renewed"], key_label="mallory/renewed",
          signer_device="dev-bob-phone", label="bob-renews-erin")
    out["renew_by_other_user"] = (other_user.entries, expect(
        31, "signer bob is not the user erin of device dev-erin-laptop", "bob renews erin's laptop to a key of his"))
    reused = copy.deepcopy(full)
    reused[30]["data"]["cert_sha256"] = b64url_encode(sha256(world.certs["dev-bob-phone"]))
    out["renew_cert_reused"] = (reseal(reused, key, 31), expect(
        31, "is already the certificate of device dev-bob-phone", "the renewal records another device's certificate"))
    old_cert = world.ledger.fork(31)
    old_cert.login(erin, "dev-erin-laptop", "ses-erin-old", world.certs["dev-erin-laptop"], label="erin-old")
    out["login_replaced_certificate"] = (old_cert.entries, expect(
        32, "not the certificate the ledger recorded", "erin logs in on the certificate her renewal replaced"))
    return out


def write_jsonl(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text("".join(entry_to_jsonl(entry) + "\n" for entry in entries), encoding="utf-8")


def generate(out_dir: Path) -> None:
    """Build every vector, check it against the verifier, and write it under ``out_dir``."""
    world = build_world()
    full = world.ledger.entries
    root = root_fingerprint(b64url_decode(full[0]["data"]["public_key"]))
    valid = {"full.jsonl": full, "bootstrap_only.jsonl": full[:1]}
    invalid = {f"{name}.jsonl": vector for name, vector in invalid_vectors(world).items()}

    (out_dir / "valid").mkdir(parents=True, exist_ok=True)
    (out_dir / "invalid").mkdir(parents=True, exist_ok=True)
    valid_manifest: dict[str, Any] = {}
    for name, entries in valid.items():
        result = verify_ledger(entries, root=root)
        if not result.ok:
            raise SystemExit(f"valid/{name} does not verify: {result.reason}")
        valid_manifest[name] = {"root": root, "entries": len(entries), "head": result.head}
        write_jsonl(out_dir / "valid" / name, entries)
    invalid_manifest: dict[str, Any] = {}
    for name, (entries, expected) in sorted(invalid.items()):
        pins = {k: expected[k] for k in ("root", "expected_last") if k in expected}
        result = verify_ledger(entries, **pins)
        if result.ok or result.seq != expected["seq"] or expected["reason"] not in result.reason:
            raise SystemExit(f"invalid/{name}: expected seq {expected['seq']} {expected['reason']!r}, "
                             f"got {result}")
        invalid_manifest[name] = expected
        write_jsonl(out_dir / "invalid" / name, entries)
    for sub, manifest in (("valid", valid_manifest), ("invalid", invalid_manifest)):
        (out_dir / sub / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write valid/ and invalid/ into")
    args = parser.parse_args(argv)
    generate(args.out)
    print(f"wrote ledger vectors to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
