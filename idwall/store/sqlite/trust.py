"""Who and what is trusted, in SQLite: invites, users, enrollments and devices, credentials, admins, tokens,
and the effect of a verified signed action committed with its sign count.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...errors import Conflict, Forbidden, SuspectPasskey
from ...model import (
    ActionEffect,
    ActivateEffect,
    AdminEffect,
    Credential,
    Device,
    Enrollment,
    Invite,
    InviteEffect,
    LedgerDraft,
    ManagerEffect,
    NewDevice,
    RejectEffect,
    RenewEffect,
    Signer,
    Token,
    TokenEffect,
    User,
)
from ..base import AlreadyUsed, Expired, LastAdmin, LimitReached, Missing
from .core import (
    credential_from_row,
    device_from_row,
    enrollment_from_row,
    invite_from_row,
    token_from_row,
    user_from_row,
)
from .renewals import RenewalRecords


def _check_manager(conn: sqlite3.Connection, user_id: str, manager: str) -> None:
    """Refuse a manager who is not a user, or who is the user themself."""
    if manager == user_id:
        raise Conflict(f"{user_id} cannot be their own manager")
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (manager,)).fetchone() is None:
        raise Conflict(f"no user {manager!r} to be the manager; invite them first")


def check_signing_passkey(row: Any, signer: Signer) -> None:
    """Refuse a signer's passkey that may not sign now (``row``: its device's status and certificate, its
    ``suspect`` and ``revoked_at``, read inside the action's transaction).

    An action needs a passkey on an active device; a recovery over the enrollment page (``signer.recovery``)
    one on a device that was once active (it has had a certificate), whatever its state now, and neither
    revoked nor marked suspect, so a concurrent kill or incident stage cannot let it through.
    """
    if not signer.recovery:
        if row is None or row["status"] != "active":
            raise Forbidden("the signing passkey is not on an active device of the signer")
        return
    if row is None:
        raise Forbidden("the signing passkey is not one of the signer's")
    if row["revoked_at"] is not None:
        raise Forbidden("the signing passkey was revoked with its lost device; it cannot approve a new device")
    if row["suspect"] is not None:
        raise SuspectPasskey(f"incident {row['suspect']} marked the signing passkey suspect; an administrator's or "
                             "your manager's device.approve is needed", incident=row["suspect"])
    if row["cert_sha256"] is None:
        raise Forbidden("the signing passkey is on a device that was never approved; it cannot vouch for another")


class TrustRecords(RenewalRecords):
    """Invites, users, enrollments, devices, credentials, tokens, admins, and the effects of signed actions."""

    async def create_invite(self, invite: Invite, draft: LedgerDraft | None) -> int | None:
        """Store an invite (only its hash); append ``draft`` when given (the bootstrap invite has none)."""

        def tx(conn: sqlite3.Connection) -> int | None:
            self._insert_invite(conn, invite)
            return self._append(conn, draft) if draft else None

        return await self.write(tx)

    @staticmethod
    def _insert_invite(conn: sqlite3.Connection, invite: Invite) -> None:
        if invite.manager is not None:
            _check_manager(conn, invite.user_id, invite.manager)
        conn.execute(
            "INSERT INTO invites (id, user_id, name, email, groups_json, admin, bootstrap, created_by,"
            " created_at, expires_at, manager) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (invite.id, invite.user_id, invite.name, invite.email, json.dumps(list(invite.groups)),
             int(invite.admin), int(invite.bootstrap), invite.created_by, invite.created_at,
             invite.expires_at, invite.manager),
        )

    async def get_invite(self, invite_id: str) -> Invite | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM invites WHERE id = ?", (invite_id,)).fetchone())
        return invite_from_row(row) if row else None

    async def get_user(self, user_id: str) -> User | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
        return user_from_row(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self.read(lambda c: c.execute("SELECT * FROM users ORDER BY id").fetchall())
        return [user_from_row(r) for r in rows]

    async def has_admin(self) -> bool:
        """Whether any administrator has enrolled (the bootstrap has happened)."""
        row = await self.read(lambda c: c.execute("SELECT 1 FROM users WHERE admin = 1 LIMIT 1").fetchone())
        return row is not None

    async def create_enrollment(self, enrollment: Enrollment, *, max_open: int | None = None,
                                max_pending_devices: int | None = None, forget_before: float | None = None) -> None:
        """Store a begun enrollment.

        Anyone may begin one, so the bounds are checked in the same transaction as the insert: at most
        ``max_open`` unexpired begun enrollments per invite (or, self-service, per user), and a self-service
        one only while the user has fewer than ``max_pending_devices`` devices waiting for approval. Begun
        enrollments that expired before ``forget_before`` are deleted. Raises :class:`LimitReached`.
        """

        def tx(conn: sqlite3.Connection) -> None:
            if forget_before is not None:
                conn.execute("DELETE FROM enrollments WHERE status = 'begun' AND expires_at <= ?", (forget_before,))
            if max_open is not None:
                if enrollment.invite_id is not None:
                    where, key = "invite_id = ?", enrollment.invite_id
                else:
                    where, key = "invite_id IS NULL AND user_id = ?", enrollment.user_id
                row = conn.execute(f"SELECT COUNT(*) FROM enrollments WHERE status = 'begun' AND expires_at > ?"
                                   f" AND {where}", (enrollment.created_at, key)).fetchone()
                if row[0] >= max_open:
                    raise LimitReached(f"{row[0]} enrollments are already open for this "
                                       f"{'code' if enrollment.invite_id else 'user'}; finish one or wait until "
                                       "they expire")
            if max_pending_devices is not None and enrollment.invite_id is None:
                self._check_pending_devices(conn, enrollment.user_id, max_pending_devices)
            conn.execute(
                "INSERT INTO enrollments (id, nonce, challenge, spki_sha256, csr_pem, device_name, invite_id,"
                " user_id, name, email, groups_json, admin, bootstrap, status, device_id, created_at, expires_at, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (enrollment.id, enrollment.nonce, enrollment.challenge, enrollment.spki_sha256, enrollment.csr_pem,
                 enrollment.device_name, enrollment.invite_id, enrollment.user_id, enrollment.name,
                 enrollment.email, json.dumps(list(enrollment.groups)), int(enrollment.admin),
                 int(enrollment.bootstrap), enrollment.status, enrollment.device_id, enrollment.created_at,
                 enrollment.expires_at, enrollment.source),
            )

        await self.write(tx)

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        row = await self.read(
            lambda c: c.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone())
        return enrollment_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone())
        return device_from_row(row) if row else None

    async def credential_exists(self, credential_id: bytes) -> bool:
        row = await self.read(
            lambda c: c.execute("SELECT 1 FROM credentials WHERE id = ?", (credential_id,)).fetchone())
        return row is not None

    async def user_credentials(self, user_id: str) -> list[Credential]:
        rows = await self.read(lambda c: c.execute(
            "SELECT c.* FROM credentials c JOIN devices d ON d.id = c.device_id"
            " WHERE c.user_id = ? AND d.status = 'active'", (user_id,)).fetchall())
        return [credential_from_row(r) for r in rows]

    async def user_passkeys(self, user_id: str) -> list[Credential]:
        """Every passkey of the user on a device that was once active (whatever its state now), with its
        ``suspect`` and ``revoked_at``; recovery may use those with neither (:func:`idwall.recovery.usable`)."""
        rows = await self.read(lambda c: c.execute(
            "SELECT c.* FROM credentials c JOIN devices d ON d.id = c.device_id"
            " WHERE c.user_id = ? AND d.cert_sha256 IS NOT NULL ORDER BY c.created_at, c.id", (user_id,)).fetchall())
        return [credential_from_row(r) for r in rows]

    @staticmethod
    def _check_pending_devices(conn: sqlite3.Connection, user_id: str, limit: int) -> None:
        row = conn.execute("SELECT COUNT(*) FROM devices WHERE user_id = ? AND status = 'pending_approval'",
                           (user_id,)).fetchone()
        if row[0] >= limit:
            raise LimitReached(f"{row[0]} devices of this user are already waiting for approval; approve or "
                               "revoke them first")

    @staticmethod
    def _check_an_admin_remains(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM users WHERE admin = 1 LIMIT 1").fetchone() is None:
            raise LastAdmin("this would leave no administrator; grant another one first")

    async def complete_enrollment(self, *, enrollment_id: str, new: NewDevice, now: float,
                                  draft: LedgerDraft, max_pending_devices: int | None = None) -> int:
        """Consume the enrollment (and its invite), write user, device and credential, and append the entry.

        Raises :class:`AlreadyUsed` when the enrollment or invite was consumed by a concurrent finish,
        :class:`Conflict` when the credential ID is registered already (to anyone), :class:`LimitReached`
        when a self-service device would make more than ``max_pending_devices`` wait for approval, and
        :class:`LastAdmin` when an invite's role would demote the last administrator.
        """

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
            if row is None:
                raise Missing("unknown enrollment")
            enrollment = enrollment_from_row(row)
            if enrollment.status != "begun":
                raise AlreadyUsed("this enrollment was already completed; start a new one")
            if enrollment.expires_at <= now:
                raise Expired("this enrollment challenge has expired; start again")
            if enrollment.invite_id is not None:
                used = conn.execute("UPDATE invites SET used_at = ? WHERE id = ? AND used_at IS NULL"
                                    " AND expires_at > ?", (now, enrollment.invite_id, now))
                if used.rowcount != 1:
                    raise AlreadyUsed("this enrollment code was already used or has expired")
            if conn.execute("SELECT 1 FROM credentials WHERE id = ?", (new.credential.id,)).fetchone():
                raise Conflict("this passkey is already registered; use a new passkey for this device")
            user = new.user
            # an invite says who the user's manager is from now on (read here, in the transaction that uses it)
            manager = conn.execute("SELECT manager FROM invites WHERE id = ?", (enrollment.invite_id,)).fetchone() \
                if enrollment.invite_id is not None else None
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user.id,)).fetchone() is None:
                conn.execute(
                    "INSERT INTO users (id, name, email, groups_json, admin, created_at, manager)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, user.name, user.email, json.dumps(list(user.groups)), int(user.admin),
                     user.created_at, manager["manager"] if manager else None))
            elif enrollment.invite_id is not None:
                conn.execute("UPDATE users SET name = ?, email = ?, groups_json = ?, admin = ?, manager = ?"
                             " WHERE id = ?", (user.name, user.email, json.dumps(list(user.groups)),
                                               int(user.admin), manager["manager"] if manager else None, user.id))
                self._check_an_admin_remains(conn)
            device = new.device
            if max_pending_devices is not None and enrollment.invite_id is None \
                    and device.status == "pending_approval":
                self._check_pending_devices(conn, user.id, max_pending_devices)
            conn.execute(
                "INSERT INTO devices (id, user_id, name, status, cert_sha256, cert_pem, enrolled_at, not_after,"
                " approved_by, revoked_at, enrollment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device.id, device.user_id, device.name, device.status, device.cert_sha256, device.cert_pem,
                 device.enrolled_at, device.not_after, device.approved_by, device.revoked_at,
                 device.enrollment_id))
            cred = new.credential
            conn.execute(
                "INSERT INTO credentials (id, user_id, device_id, public_key, alg, sign_count, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cred.id, cred.user_id, cred.device_id, cred.public_key, cred.alg, cred.sign_count,
                 cred.created_at))
            conn.execute("UPDATE enrollments SET status = ?, device_id = ? WHERE id = ?",
                         (device.status, device.id, enrollment_id))
            return self._append(conn, draft)

        return await self.write(tx)

    async def set_admin(self, user_id: str, admin: bool, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            updated = conn.execute("UPDATE users SET admin = ? WHERE id = ?", (int(admin), user_id))
            if updated.rowcount != 1:
                raise Missing(f"no user {user_id!r}")
            seq = self._append(conn, draft)
            self._event(conn, "user.changed", {"user": user_id}, self._clock())
            return seq

        return await self.write(tx)

    async def create_token(self, token: Token, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO tokens (id, name, hash, scopes_json, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.name, token.hash, json.dumps(list(token.scopes)), token.created_by,
                 token.created_at, token.expires_at))
            return self._append(conn, draft)

        return await self.write(tx)

    async def get_token_by_hash(self, token_hash: bytes) -> Token | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone())
        return token_from_row(row) if row else None

    async def list_tokens(self) -> list[Token]:
        rows = await self.read(lambda c: c.execute("SELECT * FROM tokens ORDER BY created_at").fetchall())
        return [token_from_row(r) for r in rows]

    async def revoke_token(self, token_id: str, *, now: float, draft: LedgerDraft) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            updated = conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                   (now, token_id))
            if updated.rowcount != 1:
                raise Missing(f"no active token {token_id!r}")
            return self._append(conn, draft)

        return await self.write(tx)

    async def get_credential(self, credential_id: bytes) -> Credential | None:
        """The stored credential (fresh, with its current sign count), or None."""
        row = await self.read(
            lambda c: c.execute("SELECT * FROM credentials WHERE id = ?", (credential_id,)).fetchone())
        return credential_from_row(row) if row else None

    async def perform_action(self, *, signer: Signer, effect: ActionEffect, now: float,
                             draft: LedgerDraft) -> int:
        """Commit a signed action at once: the signer's sign count (compare-and-set), the effect, the entry.

        The signer's device must still be active and, when ``signer.must_be_admin``, the signer must still be
        an admin inside this transaction, so a concurrent revocation cannot slip an action through.
        Raises :class:`Forbidden`, :class:`AlreadyUsed` (counter raced, device not pending), :class:`Missing`.
        """

        def tx(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT d.status, d.cert_sha256, c.suspect, c.revoked_at, u.admin FROM credentials c"
                " JOIN devices d ON d.id = c.device_id JOIN users u ON u.id = c.user_id"
                " WHERE c.id = ? AND c.user_id = ?", (signer.credential_id, signer.user_id)).fetchone()
            check_signing_passkey(row, signer)
            if signer.must_be_admin and not row["admin"] and not self._manages(conn, signer):
                if signer.or_manager_of is not None:
                    raise Forbidden(f"user {signer.user_id} is neither an administrator nor the manager of "
                                    f"{signer.or_manager_of}; this action needs one of those")
                raise Forbidden(f"user {signer.user_id} is not an administrator; this action needs one")
            bumped = conn.execute("UPDATE credentials SET sign_count = ? WHERE id = ? AND sign_count = ?",
                                  (signer.new_sign_count, signer.credential_id, signer.expected_sign_count))
            if bumped.rowcount != 1:
                raise AlreadyUsed("the passkey's signature counter changed during this action; try again")
            self._apply_effect(conn, effect, now)
            return self._append(conn, draft)

        return await self.write(tx)

    @staticmethod
    def _manages(conn: sqlite3.Connection, signer: Signer) -> bool:
        """Whether the signer is, inside this transaction, the manager of ``signer.or_manager_of``."""
        if signer.or_manager_of is None:
            return False
        row = conn.execute("SELECT manager FROM users WHERE id = ?", (signer.or_manager_of,)).fetchone()
        return row is not None and row["manager"] == signer.user_id

    def _apply_effect(self, conn: sqlite3.Connection, effect: ActionEffect, now: float) -> None:
        if isinstance(effect, InviteEffect):
            self._insert_invite(conn, effect.invite)
        elif isinstance(effect, AdminEffect):
            updated = conn.execute("UPDATE users SET admin = ? WHERE id = ?", (int(effect.admin), effect.user_id))
            if updated.rowcount != 1:
                raise Missing(f"no user {effect.user_id!r}")
            # the handler's last-admin check ran before this transaction; two concurrent revocations pass it
            self._check_an_admin_remains(conn)
            self._event(conn, "user.changed", {"user": effect.user_id}, now)
        elif isinstance(effect, TokenEffect):
            token = effect.token
            conn.execute(
                "INSERT INTO tokens (id, name, hash, scopes_json, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.name, token.hash, json.dumps(list(token.scopes)), token.created_by,
                 token.created_at, token.expires_at))
        elif isinstance(effect, ActivateEffect):
            updated = conn.execute(
                "UPDATE devices SET status = 'active', cert_sha256 = ?, cert_pem = ?, not_after = ?, approved_by = ?"
                " WHERE id = ? AND enrollment_id = ? AND user_id = ? AND status = 'pending_approval'",
                (effect.cert_sha256, effect.cert_pem, effect.not_after, effect.approved_by, effect.device_id,
                 effect.enrollment_id, effect.user_id))
            if updated.rowcount != 1:
                raise AlreadyUsed(f"device {effect.device_id} is not pending approval (already approved or revoked)")
            conn.execute("UPDATE enrollments SET status = 'active' WHERE id = ?", (effect.enrollment_id,))
            self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id}, now)
        elif isinstance(effect, RejectEffect):
            updated = conn.execute(
                "UPDATE devices SET status = 'revoked', revoked_at = ? WHERE id = ? AND enrollment_id = ?"
                " AND user_id = ? AND status = 'pending_approval'",
                (now, effect.device_id, effect.enrollment_id, effect.user_id))
            if updated.rowcount != 1:
                raise AlreadyUsed(f"device {effect.device_id} is not pending approval (already approved or revoked)")
            conn.execute("UPDATE enrollments SET status = 'rejected' WHERE id = ?", (effect.enrollment_id,))
            self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id}, now)
        elif isinstance(effect, ManagerEffect):
            if effect.manager is not None:
                _check_manager(conn, effect.user_id, effect.manager)
            updated = conn.execute("UPDATE users SET manager = ? WHERE id = ?", (effect.manager, effect.user_id))
            if updated.rowcount != 1:
                raise Missing(f"no user {effect.user_id!r}")
            self._event(conn, "user.changed", {"user": effect.user_id}, now)
        elif isinstance(effect, RenewEffect):
            self._renew(conn, effect, now)
        else:
            raise TypeError(f"unknown action effect {type(effect).__name__}")
