"""Replay: the trust state the ledger builds, one entry at a time, each checked against all before it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit.records import (
    CredentialRecord,
    DeviceRecord,
    Envelope,
    IncidentRecord,
    InviteRecord,
    SessionRecord,
    TokenRecord,
    UserRecord,
)
from idwall.audit.replay_devices import DeviceEntries
from idwall.audit.replay_incidents import IncidentEntries
from idwall.audit.schemas import (
    ACTION_APPROVAL,
    ACTION_SCHEMAS,
    APPROVAL_OPTIONAL,
    APPROVAL_REQUIRED,
    DATA_SCHEMAS,
    ENVELOPE_KEYS,
    KILL_COUNTED,
    LOGIN_APPROVAL,
    OPTIONAL_ACTION,
    OPTIONAL_DATA,
    SYSTEM_TYPES,
    USER_FIELDS,
    Reject,
    check_cose_key,
    check_fields,
    instant,
    is_int,
    show,
)
from idwall.audit.sealing import (
    ENTRY_TYPES,
    GENESIS_PREV,
    entry_hash,
    ids_digest,
    revokes_passkeys,
    format_time,
    ledger_public_jwk,
    parse_time,
    public_key_from_jwk,
    root_fingerprint,
    verify_raw,
)
from idwall.challenges import LOGIN, action_challenge
from idwall.units import parse_duration
from idwall.encoding import EncodingError, b64url_decode, b64url_encode, is_b64url, sha256
from idwall.errors import IDWallError, WebAuthnRejected
from idwall.passkeys import verify_assertion

# Several gateway nodes stamp entries with their own clocks, so time may step back a little; more than this
# would let a ledger-key holder backdate an entry past an invite's or an action's expiry.
MAX_CLOCK_STEP_BACK = 60


class LedgerViolation(IDWallError):
    """An entry failed verification. ``seq`` names it; ``str()`` is ``"seq N: why"``."""

    status, slug, title = 500, "ledger-invalid", "Audit ledger failed verification"

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"seq {seq}: {problem}", seq=seq)
        self.seq = seq
        self.problem_text = problem


@dataclass(eq=False)
class LedgerState(DeviceEntries, IncidentEntries):
    """The trust state replayed from the ledger, one entry at a time.

    ``apply`` checks an entry against everything before it (chain, signature,
    approval, roles, effect) and folds it in, or raises :class:`LedgerViolation`;
    after a violation the state is no longer meaningful (verification stops there).
    ``root`` pins the genesis credential fingerprint; ``ledger_public_key``
    pins the ledger key (otherwise the bootstrap's JWK is trusted, which is
    safe only together with ``root``).
    """

    root_pin: str | None = None
    ledger_public_key: ec.EllipticCurvePublicKey | None = None
    root: str | None = field(default=None, init=False)
    last_seq: int = field(default=0, init=False)
    last_hash: bytes = field(default=GENESIS_PREV, init=False)
    last_time: float = field(default=0.0, init=False)
    rp_id: str = field(default="", init=False)
    origins: tuple[str, ...] = field(default=(), init=False)
    require_uv: bool = field(default=True, init=False)
    users: dict[str, UserRecord] = field(default_factory=dict, init=False)
    devices: dict[str, DeviceRecord] = field(default_factory=dict, init=False)
    enrollments: dict[str, str] = field(default_factory=dict, init=False)  # enrollment id -> device id
    credentials: dict[str, CredentialRecord] = field(default_factory=dict, init=False)
    certificates: dict[str, str] = field(default_factory=dict, init=False)  # cert_sha256 -> device id
    invites: dict[str, InviteRecord] = field(default_factory=dict, init=False)
    tokens: dict[str, TokenRecord] = field(default_factory=dict, init=False)
    sessions: dict[str, SessionRecord] = field(default_factory=dict, init=False)
    nonces: dict[str, int] = field(default_factory=dict, init=False)  # action and login nonces -> seq
    incidents: dict[str, IncidentRecord] = field(default_factory=dict, init=False)

    # -- the chain --

    def apply(self, entry: Any) -> None:
        """Verify one entry (the next in order) and fold it into the state."""
        expected = self.last_seq + 1
        label = entry.get("seq") if isinstance(entry, dict) and is_int(entry.get("seq")) else expected
        try:
            env = self._envelope(entry, expected)
            digest = self._check_chain(entry, env)
            handler = getattr(self, "_apply_" + env.type.replace(".", "_"))
            handler(env)
        except Reject as exc:
            raise LedgerViolation(label, str(exc)) from None
        self.last_seq = env.seq
        self.last_hash = digest
        self.last_time = max(self.last_time, env.time)

    def _envelope(self, entry: Any, expected: int) -> Envelope:
        if not isinstance(entry, dict):
            raise Reject(f"an entry must be a JSON object, got {type(entry).__name__}")
        missing = sorted(ENVELOPE_KEYS - set(entry))
        if missing:
            raise Reject(f"entry is missing {', '.join(missing)}")
        extra = sorted(set(entry) - ENVELOPE_KEYS - {"approval"})
        if extra:
            raise Reject(f"entry has unexpected field(s) {', '.join(extra)}")
        seq = entry["seq"]
        if not is_int(seq):
            raise Reject(f"seq must be an integer, got {show(seq)}")
        if seq != expected:
            after = f"after seq {expected - 1}" if expected > 1 else "at the start"
            raise Reject(
                f"expected seq {expected} {after}; entries were deleted, reordered or inserted"
            )
        for name in ("type", "actor", "subject"):
            if not isinstance(entry[name], str) or not entry[name]:
                raise Reject(f"{name} must be a non-empty string, got {show(entry[name])}")
        try:
            time = parse_time(entry["time"])
        except ValueError as exc:
            raise Reject(str(exc)) from None
        if time < self.last_time - MAX_CLOCK_STEP_BACK:
            raise Reject(
                f"time {entry['time']} is more than {MAX_CLOCK_STEP_BACK} s before the latest earlier entry "
                f"({format_time(self.last_time)})"
            )
        if entry["type"] not in ENTRY_TYPES:
            raise Reject(f"unknown entry type {show(entry['type'])}; refusing what we cannot check")
        approval = entry.get("approval")
        if approval is not None and not isinstance(approval, dict):
            raise Reject(f"approval must be an object or absent, got {type(approval).__name__}")
        return Envelope(seq, time, entry["type"], entry["actor"], entry["subject"], entry["data"], approval)

    def _check_chain(self, entry: dict[str, Any], env: Envelope) -> bytes:
        if not is_b64url(entry["prev"], 32) or b64url_decode(entry["prev"]) != self.last_hash:
            if self.last_seq == 0:
                raise Reject("prev must be 32 zero bytes for the first entry")
            raise Reject(f"prev does not match the hash of seq {self.last_seq}")
        try:
            digest = entry_hash(self.last_hash, entry)
        except EncodingError as exc:
            raise Reject(f"entry is not canonical JSON: {exc}") from None
        if not isinstance(entry["hash"], str) or entry["hash"] != b64url_encode(digest):
            raise Reject("hash does not match its contents")
        if env.seq == 1:
            if env.type != "bootstrap":
                raise Reject(f"the first entry must be a bootstrap, got {env.type}")
            self._adopt_ledger_key(env.data)
        assert self.ledger_public_key is not None  # set by the bootstrap or pinned by the caller
        signature = b64url_decode(entry["sig"]) if is_b64url(entry["sig"], 64) else b""
        if not verify_raw(self.ledger_public_key, signature, digest):
            raise Reject("ledger signature does not verify under the ledger key")
        return digest

    def _adopt_ledger_key(self, data: Any) -> None:
        jwk = data.get("ledger_key") if isinstance(data, dict) else None
        try:
            announced = public_key_from_jwk(jwk)
        except ValueError as exc:
            raise Reject(f"bootstrap data.ledger_key: {exc}") from None
        if self.ledger_public_key is None:
            self.ledger_public_key = announced
        elif ledger_public_jwk(self.ledger_public_key) != ledger_public_jwk(announced):
            raise Reject("bootstrap ledger_key is not the ledger public key given to the verifier")

    # -- shared checks --

    def _data(self, env: Envelope) -> dict[str, Any]:
        schema = (KILL_COUNTED if env.type == "kill" and isinstance(env.data, dict) and "sessions_revoked" in env.data
                  else DATA_SCHEMAS[env.type])
        data = check_fields(env.data, schema, "data", OPTIONAL_DATA.get(env.type, frozenset()))
        if env.approval is None and env.type in APPROVAL_REQUIRED:
            raise Reject(f"{env.type} needs an approval (a passkey assertion) and has none")
        if env.approval is not None and env.type not in APPROVAL_REQUIRED | APPROVAL_OPTIONAL:
            raise Reject(f"{env.type} must not carry an approval")
        if env.type in SYSTEM_TYPES and env.actor != "system":
            raise Reject(f"actor of {env.type} must be 'system', got {show(env.actor)}")
        return data

    def _require_admin(self, user_id: str, what: str) -> None:
        user = self.users.get(user_id)
        if user is None or not user.admin:
            raise Reject(f"{what} {user_id} is not an admin at this point")

    def _subject_is(self, env: Envelope, value: str, what: str) -> None:
        if env.subject != value:
            raise Reject(f"subject is {show(env.subject)}, expected the {what} {show(value)}")

    def _verify_action(self, env: Envelope, *, recovery: bool = False) -> tuple[dict[str, Any], CredentialRecord]:
        """Check the approval's action, its challenge and assertion; return the action and the signer's credential.

        ``recovery`` (a ``device.recover``): the signer's passkey may be on a device that is no longer active; the
        caller checks that it is not revoked or suspect and was once active.
        """
        approval = check_fields(env.approval, ACTION_APPROVAL, "approval")
        action = check_fields(approval["action"], ACTION_SCHEMAS[env.type], "approval.action",
                              OPTIONAL_ACTION.get(env.type, frozenset()))
        if action["type"] != env.type:
            raise Reject(f"approval action type {show(action['type'])} does not match entry type {env.type}")
        if action["actor"] != env.actor:
            raise Reject(f"approval action actor {show(action['actor'])} does not match entry actor {env.actor}")
        if action["not_after"] < env.time:
            raise Reject(
                f"approval action expired at not_after {action['not_after']}, before the entry time {format_time(env.time)}"
            )
        credential = self._verify_assertion(env, approval, action_challenge(action), "action", any_device=recovery)
        self._use_nonce(action["nonce"], "action", env.seq)
        return action, credential

    def _use_nonce(self, nonce: str, kind: str, seq: int) -> None:
        if nonce in self.nonces:
            raise Reject(f"{kind} nonce {nonce} was already used by seq {self.nonces[nonce]}")
        self.nonces[nonce] = seq

    def _verify_assertion(
        self, env: Envelope, approval: dict[str, Any], challenge: bytes, kind: str, *, any_device: bool = False
    ) -> CredentialRecord:
        """Check an approval's assertion by a credential the ledger registered; return it with its new sign count.

        The assertion itself goes through :func:`~idwall.passkeys.verify_assertion`, like a live login or action;
        :meth:`_assertion_reason` words its refusal for the ledger.
        """
        credential_id = approval["credential_id"]
        credential = self.credentials.get(credential_id)
        if credential is None:
            raise Reject(f"approval credential {credential_id} was never registered")
        if credential.user != env.actor:
            raise Reject(
                f"approval credential {credential_id} belongs to user {credential.user}, not to the actor {env.actor}"
            )
        device = self.devices[credential.device_id]
        if device.status != "active" and not any_device:
            raise Reject(f"approval credential {credential_id} is on device {device.id}, which is {device.status}")

        try:
            verified = verify_assertion(
                credential_id=b64url_decode(credential_id),
                authenticator_data=b64url_decode(approval["authenticator_data"]),
                client_data_json=b64url_decode(approval["client_data_json"]),
                signature=b64url_decode(approval["signature"]),
                expected_challenge=challenge,
                rp_id=self.rp_id,
                origins=self.origins,
                public_key=credential.public_key,
                stored_sign_count=credential.sign_count,
                require_uv=self.require_uv,
            )
        except WebAuthnRejected as exc:
            raise Reject(self._assertion_reason(exc, credential, kind)) from None
        credential = self.credentials[credential_id] = replace(credential, sign_count=verified.new_sign_count)
        return credential

    def _assertion_reason(self, exc: WebAuthnRejected, credential: CredentialRecord, kind: str) -> str:
        """What :func:`~idwall.passkeys.verify_assertion` refused, in the ledger's words."""
        match exc.check:
            case "type":
                return f"approval client_data_json type is {show(exc.received)}, expected webauthn.get"
            case "challenge":
                return f"approval challenge is not the challenge of this {kind}"
            case "origin":
                return (f"approval origin {show(exc.received)} is not one of the bootstrap origins "
                        f"{', '.join(self.origins)}")
            case "rp_id":
                return f"approval rpIdHash is not SHA-256 of the rp_id {self.rp_id}"
            case "user_present":
                return "approval authenticator_data lacks the user-present (UP) flag"
            case "user_verified":
                return "approval authenticator_data lacks the user-verified (UV) flag, which the bootstrap requires"
            case "signature":
                return f"approval signature does not verify under credential {credential.id} of user {credential.user}"
            case "sign_count":
                return (f"approval sign count {exc.received} does not go past {credential.sign_count} for credential "
                        f"{credential.id} (a cloned authenticator or a replayed assertion)")
        return f"approval assertion fails verification: {exc.detail}"

    def _match(self, action: dict[str, Any], name: str, expected: Any, where: str) -> None:
        if action[name] != expected:
            raise Reject(f"approval action {name} is {show(action[name])}, but the entry's {where} is {show(expected)}")

    def _register_key(self, env: Envelope, data: dict[str, Any]) -> None:
        """Register the device and credential an enrollment (or the bootstrap) records."""
        for taken, ident, what in (
            (self.devices, data["device_id"], "device"),
            (self.credentials, data["credential_id"], "credential"),
        ):
            if ident in taken:
                raise Reject(f"{what} {ident} was already registered by seq {taken[ident].seq}")
        enrollment_id = data.get("enrollment_id", f"bootstrap:{data['device_id']}")
        if enrollment_id in self.enrollments:
            raise Reject(f"enrollment {enrollment_id} was already completed by device {self.enrollments[enrollment_id]}")
        cert = data["cert_sha256"]
        if cert is not None and cert in self.certificates:
            raise Reject(f"cert_sha256 {cert} is already the certificate of device {self.certificates[cert]}")
        public_key = b64url_decode(data["public_key"])
        check_cose_key(public_key, data["alg"])
        status = data.get("status", "active")
        self.devices[data["device_id"]] = DeviceRecord(
            data["device_id"], data["user"], enrollment_id, cert, status, env.seq, activated=status == "active"
        )
        self.enrollments[enrollment_id] = data["device_id"]
        if cert is not None:
            self.certificates[cert] = data["device_id"]
        self.credentials[data["credential_id"]] = CredentialRecord(
            data["credential_id"], data["user"], data["device_id"], public_key, data["alg"], 0, env.seq
        )

    def _set_user(self, data: dict[str, Any], seq: int, *, manager: str | None) -> None:
        existing = self.users.get(data["user"])
        self.users[data["user"]] = UserRecord(
            data["user"], data["name"], data["email"], tuple(data["groups"]), data["admin"],
            existing.seq if existing else seq, manager,
        )

    def _check_manager(self, user: str, manager: str | None, where: str) -> None:
        """A manager is null, or a user known at this point other than ``user``."""
        if manager is None:
            return
        if manager == user:
            raise Reject(f"{where} names {user} as their own manager")
        if manager not in self.users:
            raise Reject(f"{where} names manager {manager}, who is not a user at this point")

    # -- one handler per entry type --

    def _apply_bootstrap(self, env: Envelope) -> None:
        if env.seq != 1:
            raise Reject("bootstrap is only allowed at seq 1")
        data = self._data(env)
        if data["admin"] is not True:
            raise Reject("the bootstrap user must be an admin")
        if env.actor != data["user"]:
            raise Reject(f"actor is {show(env.actor)}, expected the bootstrap user {show(data['user'])}")
        self._subject_is(env, data["user"], "bootstrap user")
        fingerprint = root_fingerprint(b64url_decode(data["public_key"]))
        if self.root_pin is not None and fingerprint != self.root_pin:
            raise Reject(
                f"genesis credential fingerprint does not match --root (the ledger's is {fingerprint}, "
                f"the pin is {self.root_pin})"
            )
        self.rp_id = data["rp_id"]
        self.origins = tuple(data["origins"])
        self.require_uv = data["user_verification"] == "required"
        self._register_key(env, data)
        self._set_user(data, env.seq, manager=None)
        self.root = fingerprint

    def _apply_invite_create(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["user"], "invited user")
        action, _ = self._verify_action(env)
        for name in USER_FIELDS:
            self._match(action, name, data[name], f"data.{name}")
        # absent (an invite from before managers) and null both mean no manager; the two must still agree
        manager = data.get("manager")
        self._match({"manager": action.get("manager")}, "manager", manager, "data.manager")
        self._require_admin(env.actor, "signer")
        self._check_manager(data["user"], manager, "data.manager")
        if data["invite_id"] in self.invites:
            raise Reject(f"invite {data['invite_id']} was already created by seq {self.invites[data['invite_id']].seq}")
        self.invites[data["invite_id"]] = InviteRecord(
            data["invite_id"], data["user"], data["name"], data["email"], tuple(data["groups"]), data["admin"],
            instant(data["expires_at"]), env.seq, manager=manager,
        )

    def _apply_user_set_manager(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["user"], "user")
        action, _ = self._verify_action(env)
        self._match(action, "user", data["user"], "data.user")
        self._match(action, "manager", data["manager"], "data.manager")
        self._require_admin(env.actor, "signer")
        user = self.users.get(data["user"])
        if user is None:
            raise Reject(f"user {data['user']} does not exist")
        self._check_manager(user.id, data["manager"], "data.manager")
        self.users[user.id] = replace(user, manager=data["manager"])

    def _apply_admin_grant(self, env: Envelope) -> None:
        self._apply_admin_change(env)

    def _apply_admin_revoke(self, env: Envelope) -> None:
        self._apply_admin_change(env)

    def _apply_admin_change(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["user"], "user")
        action, _ = self._verify_action(env)
        self._match(action, "user", data["user"], "data.user")
        self._require_admin(env.actor, "signer")
        user = self.users.get(data["user"])
        if user is None:
            raise Reject(f"user {data['user']} does not exist")
        self.users[user.id] = replace(user, admin=data["admin"])

    def _apply_token_create(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["token_id"], "token id")
        action, _ = self._verify_action(env)
        self._match(action, "name", data["name"], "data.name")
        self._match(action, "scopes", data["scopes"], "data.scopes")
        try:
            ttl = parse_duration(action["ttl"])
        except ValueError as exc:
            raise Reject(f"approval action ttl: {exc}") from None
        expires_at = instant(data["expires_at"])
        # The gateway computes expires_at when it performs the action, at most a moment before the entry's time.
        if expires_at > env.time + ttl + 1:
            raise Reject(f"data.expires_at {format_time(expires_at)} is later than the signed ttl {action['ttl']} allows")
        self._require_admin(env.actor, "signer")
        if data["token_id"] in self.tokens:
            raise Reject(f"token {data['token_id']} was already created by seq {self.tokens[data['token_id']].seq}")
        self.tokens[data["token_id"]] = TokenRecord(data["token_id"], tuple(data["scopes"]), expires_at, env.seq)

    def _apply_token_revoke(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["token_id"], "token id")
        if env.approval is not None:
            action, _ = self._verify_action(env)
            self._match(action, "token_id", data["token_id"], "data.token_id")
        self._require_admin(env.actor, "actor")
        token = self.tokens.get(data["token_id"])
        if token is None:
            raise Reject(f"token {data['token_id']} was never created")
        if token.revoked_by is not None:
            raise Reject(f"token {token.id} was already revoked by seq {token.revoked_by}")
        self.tokens[token.id] = replace(token, revoked_by=env.seq)

    def _apply_session_login(self, env: Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise Reject(f"actor is {show(env.actor)}, expected the user {show(data['user'])}")
        if env.subject in self.sessions:
            raise Reject(f"session {env.subject} was already started by seq {self.sessions[env.subject].seq}")
        approval = check_fields(env.approval, LOGIN_APPROVAL, "approval")
        if approval["credential_id"] != data["credential_id"]:
            raise Reject("approval credential_id is not data.credential_id")
        if approval["nonce"] != data["nonce"]:
            raise Reject("approval nonce is not data.nonce")
        credential = self.credentials.get(data["credential_id"])
        if credential is not None and credential.device_id != data["device_id"]:
            raise Reject(
                f"credential {credential.id} is bound to device {credential.device_id}, not {data['device_id']}"
            )
        device = self.devices.get(data["device_id"])
        if device is not None and device.cert_sha256 not in (None, data["cert_sha256"]):
            raise Reject(f"data.cert_sha256 is not the certificate the ledger recorded for device {device.id}")
        challenge = sha256(LOGIN, b64url_decode(data["nonce"]), b64url_decode(data["cert_sha256"]))
        signed_count = self._verify_assertion(env, approval, challenge, "login").sign_count
        if data["sign_count"] != signed_count:
            raise Reject(f"data.sign_count {data['sign_count']} is not the signed counter {signed_count}")
        self._use_nonce(data["nonce"], "login", env.seq)
        assert device is not None  # _verify_assertion found the credential's device
        if device.cert_sha256 is None:
            if data["cert_sha256"] in self.certificates:
                raise Reject(f"cert_sha256 {data['cert_sha256']} belongs to device {self.certificates[data['cert_sha256']]}")
            self.devices[device.id] = replace(device, cert_sha256=data["cert_sha256"])
            self.certificates[data["cert_sha256"]] = device.id
        self.sessions[env.subject] = SessionRecord(env.subject, data["user"], data["device_id"], env.seq)

    def _apply_session_logout(self, env: Envelope) -> None:
        data = self._data(env)
        if env.actor != data["user"]:
            raise Reject(f"actor is {show(env.actor)}, expected the user {show(data['user'])}")
        session = self.sessions.get(env.subject)
        if session is None:
            raise Reject(f"session {env.subject} was never started")
        if (session.user, session.device_id) != (data["user"], data["device_id"]):
            raise Reject(f"session {session.id} belongs to {session.user} on {session.device_id}")

    def _apply_kill(self, env: Envelope) -> None:
        data = self._data(env)
        if data["target"] is None and data["scope"] != "all":
            raise Reject(f"a kill with scope {data['scope']} needs a target")
        if data["target"] is not None:
            self._subject_is(env, data["target"], "kill target")
        if env.actor.startswith("token:"):
            # a token with scope incident kills only for an incident it runs (its stages' kills)
            scope = "incident" if self.may_kill_for_incident(env.actor) else "kill"
            self._incident_token(env.actor, scope, env.time)
        else:
            self._require_admin(env.actor, "actor")
        lists = "sessions" in data
        if lists:
            revoked = list(data["devices"]) if data["revoke_devices"] else []
            for device_id in revoked:
                if device_id not in self.devices:
                    raise Reject(f"kill revokes device {device_id}, which was never enrolled")
        else:
            # The ids are in the store, not here: the ledger alone says which devices the scope matched at this
            # point, and the entry's count and digest must be exactly those.
            revoked = self._kill_devices(data["scope"], data["target"]) if data["revoke_devices"] else []
            if (len(revoked), ids_digest(revoked)) != (data["devices_revoked"], data["devices_sha256"]):
                raise Reject(f"kill records {data['devices_revoked']} device(s) revoked (digest "
                             f"{data['devices_sha256'][:12]}...), but its scope matched {len(revoked)} at this point")
        for device_id in revoked:
            self.devices[device_id] = replace(self.devices[device_id], status="revoked")
        self._revoke_lost_passkeys(data)

    def _revoke_lost_passkeys(self, data: dict[str, Any]) -> None:
        """A kill that declares its device lost revokes the device's passkeys (those not revoked yet); an entry
        that records them (``passkeys_revoked``, ``passkeys_sha256``) must record exactly those."""
        lost = data["target"] if revokes_passkeys(data["scope"], data["revoke_devices"]) else None
        passkeys = sorted(c.id for c in self.credentials.values() if c.device_id == lost and not c.revoked)
        recorded = [name for name in ("passkeys_revoked", "passkeys_sha256") if name in data]
        if len(recorded) == 1:
            raise Reject(f"kill records {recorded[0]} without its pair; it records both or neither")
        if recorded and (len(passkeys), ids_digest(passkeys)) != (data["passkeys_revoked"], data["passkeys_sha256"]):
            raise Reject(f"kill records {data['passkeys_revoked']} passkey(s) revoked, but device {lost} had "
                         f"{len(passkeys)} passkey(s) not revoked at this point")
        for credential_id in passkeys:
            self.credentials[credential_id] = replace(self.credentials[credential_id], revoked=True)

    def _kill_devices(self, scope: str, target: str | None) -> list[str]:
        """The devices a kill of ``scope`` revokes at this point: those of its scope that are not revoked yet."""
        if scope == "session":
            session = self.sessions.get(target or "")
            candidates = [session.device_id] if session is not None else []
        elif scope == "device":
            candidates = [target] if target in self.devices else []
        elif scope == "user":
            candidates = [d.id for d in self.devices.values() if d.user == target]
        elif scope == "group":
            members = {u.id for u in self.users.values() if target in u.groups}
            candidates = [d.id for d in self.devices.values() if d.user in members]
        else:
            candidates = list(self.devices)
        return sorted(d for d in candidates if d in self.devices and self.devices[d].status != "revoked")

    def _apply_signcount_anomaly(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["credential_id"], "credential")
        credential = self.credentials.get(data["credential_id"])
        if credential is None:
            raise Reject(f"credential {data['credential_id']} was never registered")
        if (credential.user, credential.device_id) != (data["user"], data["device_id"]):
            raise Reject(f"credential {credential.id} belongs to {credential.user} on {credential.device_id}")
        if data["received"] > data["stored"]:
            raise Reject(f"received {data['received']} > stored {data['stored']} is not an anomaly")

    def _apply_key_rotate(self, env: Envelope) -> None:
        data = self._data(env)
        self._subject_is(env, data["kid"], "new kid")
        if data["kid"] == data["previous_kid"]:
            raise Reject("key.rotate kid equals previous_kid")
