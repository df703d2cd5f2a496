"""Who and what is trusted, in PostgreSQL: invites, users, enrollments and devices, credentials, admins,
managers, tokens, certificate renewals, and the effect of a verified signed action committed with its sign count.
The same rules, checks and errors as :mod:`idwall.store.sqlite.trust` and :mod:`idwall.store.sqlite.renewals`;
each check runs inside the write lock, so it holds across nodes.
"""

from __future__ import annotations

import json

from ...encoding import b64url_encode
from ...errors import Conflict, Forbidden
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
    Renewal,
    RenewEffect,
    Signer,
    Token,
    TokenEffect,
    User,
)
from ..base import AlreadyUsed, Expired, LastAdmin, LimitReached, Missing
from ..sqlite.core import (
    credential_from_row,
    device_from_row,
    enrollment_from_row,
    invite_from_row,
    renewal_from_row,
    token_from_row,
    user_from_row,
)
from ..sqlite.trust import check_signing_passkey
from .core import Conn, PostgresCore, rowcount

_INSERT_INVITE = (
    "INSERT INTO invites (id, user_id, name, email, groups_json, admin, bootstrap, created_by, created_at,"
    " expires_at, manager) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
_INSERT_TOKEN = ("INSERT INTO tokens (id, name, hash, scopes_json, created_by, created_at, expires_at)"
                 " VALUES ($1, $2, $3, $4, $5, $6, $7)")


async def _check_manager(conn: Conn, user_id: str, manager: str) -> None:
    """Refuse a manager who is not a user, or who is the user themself."""
    if manager == user_id:
        raise Conflict(f"{user_id} cannot be their own manager")
    if await conn.fetchrow("SELECT 1 FROM users WHERE id = $1", manager) is None:
        raise Conflict(f"no user {manager!r} to be the manager; invite them first")


async def _insert_invite(conn: Conn, invite: Invite) -> None:
    if invite.manager is not None:
        await _check_manager(conn, invite.user_id, invite.manager)
    await conn.execute(_INSERT_INVITE, invite.id, invite.user_id, invite.name, invite.email,
                       json.dumps(list(invite.groups)), invite.admin, invite.bootstrap, invite.created_by,
                       invite.created_at, invite.expires_at, invite.manager)


async def _insert_token(conn: Conn, token: Token) -> None:
    await conn.execute(_INSERT_TOKEN, token.id, token.name, token.hash, json.dumps(list(token.scopes)),
                       token.created_by, token.created_at, token.expires_at)


class TrustRecords(PostgresCore):
    """Invites, users, enrollments, devices, credentials, tokens, admins, managers, renewals, and the effects of
    signed actions."""

    async def create_invite(self, invite: Invite, draft: LedgerDraft | None) -> int | None:
        """Store an invite (only its hash); append ``draft`` when given (the bootstrap invite has none)."""

        async def tx(conn: Conn) -> int | None:
            await _insert_invite(conn, invite)
            return await self._append(conn, draft) if draft else None

        return await self.write(tx)

    async def create_bootstrap_invite(self, invite: Invite, *, replace: bool) -> None:
        """Make this database a new gateway's: store its bootstrap invite (``idwall init --store``).

        Refused with :class:`AlreadyUsed` when the database already holds a gateway (any user, invite or ledger
        entry) unless ``replace``, which first deletes every row of the old one, ledger included: a new gateway
        has a new ledger key, and its chain cannot continue another's. Check and write are one transaction under
        the write lock, so two ``init`` runs at once cannot both claim the database.
        """

        async def tx(conn: Conn) -> None:
            held = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM invites)"
                                       " OR EXISTS (SELECT 1 FROM ledger)")
            if held and not replace:
                raise AlreadyUsed("this database already holds a gateway; use --force to replace it "
                                  "(its users, devices and ledger are deleted)")
            if held:
                tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                          " AND tablename != 'schema_version'")
                await conn.execute("TRUNCATE " + ", ".join(f'"{r[0]}"' for r in tables) + " RESTART IDENTITY")
            await _insert_invite(conn, invite)

        await self.write(tx)

    async def get_invite(self, invite_id: str) -> Invite | None:
        row = await self._fetchrow("SELECT * FROM invites WHERE id = $1", invite_id)
        return invite_from_row(row) if row else None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        return user_from_row(row) if row else None

    async def list_users(self) -> list[User]:
        return [user_from_row(r) for r in await self._fetch("SELECT * FROM users ORDER BY id")]

    async def has_admin(self) -> bool:
        """Whether any administrator has enrolled (the bootstrap has happened)."""
        return await self._fetchrow("SELECT 1 FROM users WHERE admin LIMIT 1") is not None

    async def create_enrollment(self, enrollment: Enrollment, *, max_open: int | None = None,
                                max_pending_devices: int | None = None, forget_before: float | None = None) -> None:
        """Store a begun enrollment, within the same bounds as the SQLite store (raises :class:`LimitReached`)."""

        async def tx(conn: Conn) -> None:
            if forget_before is not None:
                await conn.execute("DELETE FROM enrollments WHERE status = 'begun' AND expires_at <= $1",
                                   forget_before)
            if max_open is not None:
                if enrollment.invite_id is not None:
                    where, key = "invite_id = $2", enrollment.invite_id
                else:
                    where, key = "invite_id IS NULL AND user_id = $2", enrollment.user_id
                count = await conn.fetchval(f"SELECT COUNT(*) FROM enrollments WHERE status = 'begun'"
                                            f" AND expires_at > $1 AND {where}", enrollment.created_at, key)
                if count >= max_open:
                    raise LimitReached(f"{count} enrollments are already open for this "
                                       f"{'code' if enrollment.invite_id else 'user'}; finish one or wait until "
                                       "they expire")
            if max_pending_devices is not None and enrollment.invite_id is None:
                await self._check_pending_devices(conn, enrollment.user_id, max_pending_devices)
            await conn.execute(
                "INSERT INTO enrollments (id, nonce, challenge, spki_sha256, csr_pem, device_name, invite_id,"
                " user_id, name, email, groups_json, admin, bootstrap, status, device_id, created_at, expires_at, source)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                enrollment.id, enrollment.nonce, enrollment.challenge, enrollment.spki_sha256, enrollment.csr_pem,
                enrollment.device_name, enrollment.invite_id, enrollment.user_id, enrollment.name,
                enrollment.email, json.dumps(list(enrollment.groups)), enrollment.admin, enrollment.bootstrap,
                enrollment.status, enrollment.device_id, enrollment.created_at, enrollment.expires_at,
                enrollment.source)

        await self.write(tx)

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        row = await self._fetchrow("SELECT * FROM enrollments WHERE id = $1", enrollment_id)
        return enrollment_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._fetchrow("SELECT * FROM devices WHERE id = $1", device_id)
        return device_from_row(row) if row else None

    async def credential_exists(self, credential_id: bytes) -> bool:
        return await self._fetchrow("SELECT 1 FROM credentials WHERE id = $1", credential_id) is not None

    async def user_credentials(self, user_id: str) -> list[Credential]:
        rows = await self._fetch("SELECT c.* FROM credentials c JOIN devices d ON d.id = c.device_id"
                                 " WHERE c.user_id = $1 AND d.status = 'active'", user_id)
        return [credential_from_row(r) for r in rows]

    async def user_passkeys(self, user_id: str) -> list[Credential]:
        """Every passkey of the user on a device that was once active, with ``suspect`` and ``revoked_at``
        (as SQLite's)."""
        rows = await self._fetch("SELECT c.* FROM credentials c JOIN devices d ON d.id = c.device_id"
                                 " WHERE c.user_id = $1 AND d.cert_sha256 IS NOT NULL ORDER BY c.created_at, c.id",
                                 user_id)
        return [credential_from_row(r) for r in rows]

    @staticmethod
    async def _check_pending_devices(conn: Conn, user_id: str, limit: int) -> None:
        count = await conn.fetchval("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND status = 'pending_approval'",
                                    user_id)
        if count >= limit:
            raise LimitReached(f"{count} devices of this user are already waiting for approval; approve or "
                               "revoke them first")

    @staticmethod
    async def _check_an_admin_remains(conn: Conn) -> None:
        if await conn.fetchrow("SELECT 1 FROM users WHERE admin LIMIT 1") is None:
            raise LastAdmin("this would leave no administrator; grant another one first")

    async def complete_enrollment(self, *, enrollment_id: str, new: NewDevice, now: float,
                                  draft: LedgerDraft, max_pending_devices: int | None = None) -> int:
        """Consume the enrollment (and its invite), write user, device and credential, and append the entry.

        Raises as the SQLite store does: :class:`Missing`, :class:`AlreadyUsed`, :class:`Expired`,
        :class:`Conflict` (passkey registered already), :class:`LimitReached`, :class:`LastAdmin`.
        """

        async def tx(conn: Conn) -> int:
            row = await conn.fetchrow("SELECT * FROM enrollments WHERE id = $1", enrollment_id)
            if row is None:
                raise Missing("unknown enrollment")
            enrollment = enrollment_from_row(row)
            if enrollment.status != "begun":
                raise AlreadyUsed("this enrollment was already completed; start a new one")
            if enrollment.expires_at <= now:
                raise Expired("this enrollment challenge has expired; start again")
            if enrollment.invite_id is not None:
                used = await conn.execute("UPDATE invites SET used_at = $1 WHERE id = $2 AND used_at IS NULL"
                                          " AND expires_at > $1", now, enrollment.invite_id)
                if rowcount(used) != 1:
                    raise AlreadyUsed("this enrollment code was already used or has expired")
            if await conn.fetchrow("SELECT 1 FROM credentials WHERE id = $1", new.credential.id):
                raise Conflict("this passkey is already registered; use a new passkey for this device")
            user = new.user
            # an invite says who the user's manager is from now on (read here, in the transaction that uses it)
            manager = await conn.fetchval("SELECT manager FROM invites WHERE id = $1", enrollment.invite_id) \
                if enrollment.invite_id is not None else None
            if await conn.fetchrow("SELECT 1 FROM users WHERE id = $1", user.id) is None:
                await conn.execute(
                    "INSERT INTO users (id, name, email, groups_json, admin, created_at, manager)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    user.id, user.name, user.email, json.dumps(list(user.groups)), user.admin, user.created_at,
                    manager)
            elif enrollment.invite_id is not None:
                await conn.execute("UPDATE users SET name = $1, email = $2, groups_json = $3, admin = $4,"
                                   " manager = $5 WHERE id = $6", user.name, user.email,
                                   json.dumps(list(user.groups)), user.admin, manager, user.id)
                await self._check_an_admin_remains(conn)
            device = new.device
            if max_pending_devices is not None and enrollment.invite_id is None \
                    and device.status == "pending_approval":
                await self._check_pending_devices(conn, user.id, max_pending_devices)
            await conn.execute(
                "INSERT INTO devices (id, user_id, name, status, cert_sha256, cert_pem, enrolled_at, not_after,"
                " approved_by, revoked_at, enrollment_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                device.id, device.user_id, device.name, device.status, device.cert_sha256, device.cert_pem,
                device.enrolled_at, device.not_after, device.approved_by, device.revoked_at, device.enrollment_id)
            cred = new.credential
            await conn.execute(
                "INSERT INTO credentials (id, user_id, device_id, public_key, alg, sign_count, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                cred.id, cred.user_id, cred.device_id, cred.public_key, cred.alg, cred.sign_count, cred.created_at)
            await conn.execute("UPDATE enrollments SET status = $1, device_id = $2 WHERE id = $3",
                               device.status, device.id, enrollment_id)
            return await self._append(conn, draft)

        return await self.write(tx)

    async def set_admin(self, user_id: str, admin: bool, draft: LedgerDraft) -> int:
        async def tx(conn: Conn) -> int:
            if rowcount(await conn.execute("UPDATE users SET admin = $1 WHERE id = $2", admin, user_id)) != 1:
                raise Missing(f"no user {user_id!r}")
            seq = await self._append(conn, draft)
            await self._event(conn, "user.changed", {"user": user_id}, self._clock())
            return seq

        return await self.write(tx)

    async def create_token(self, token: Token, draft: LedgerDraft) -> int:
        async def tx(conn: Conn) -> int:
            await _insert_token(conn, token)
            return await self._append(conn, draft)

        return await self.write(tx)

    async def get_token_by_hash(self, token_hash: bytes) -> Token | None:
        row = await self._fetchrow("SELECT * FROM tokens WHERE hash = $1", token_hash)
        return token_from_row(row) if row else None

    async def list_tokens(self) -> list[Token]:
        return [token_from_row(r) for r in await self._fetch("SELECT * FROM tokens ORDER BY created_at")]

    async def revoke_token(self, token_id: str, *, now: float, draft: LedgerDraft) -> int:
        async def tx(conn: Conn) -> int:
            updated = await conn.execute("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                                         now, token_id)
            if rowcount(updated) != 1:
                raise Missing(f"no active token {token_id!r}")
            return await self._append(conn, draft)

        return await self.write(tx)

    async def get_credential(self, credential_id: bytes) -> Credential | None:
        """The stored credential (fresh, with its current sign count), or None."""
        row = await self._fetchrow("SELECT * FROM credentials WHERE id = $1", credential_id)
        return credential_from_row(row) if row else None

    async def perform_action(self, *, signer: Signer, effect: ActionEffect, now: float,
                             draft: LedgerDraft) -> int:
        """Commit a signed action at once: the signer's sign count (compare-and-set), the effect, the entry.

        The signer's device must still be active and, when ``signer.must_be_admin``, the signer still an admin,
        checked inside the write lock. Raises :class:`Forbidden`, :class:`AlreadyUsed`, :class:`Missing`.
        """

        async def tx(conn: Conn) -> int:
            row = await conn.fetchrow(
                "SELECT d.status, d.cert_sha256, c.suspect, c.revoked_at, u.admin FROM credentials c"
                " JOIN devices d ON d.id = c.device_id JOIN users u ON u.id = c.user_id"
                " WHERE c.id = $1 AND c.user_id = $2", signer.credential_id, signer.user_id)
            check_signing_passkey(row, signer)
            if signer.must_be_admin and not row["admin"] and not await self._manages(conn, signer):
                if signer.or_manager_of is not None:
                    raise Forbidden(f"user {signer.user_id} is neither an administrator nor the manager of "
                                    f"{signer.or_manager_of}; this action needs one of those")
                raise Forbidden(f"user {signer.user_id} is not an administrator; this action needs one")
            bumped = await conn.execute("UPDATE credentials SET sign_count = $1 WHERE id = $2 AND sign_count = $3",
                                        signer.new_sign_count, signer.credential_id, signer.expected_sign_count)
            if rowcount(bumped) != 1:
                raise AlreadyUsed("the passkey's signature counter changed during this action; try again")
            await self._apply_effect(conn, effect, now)
            return await self._append(conn, draft)

        return await self.write(tx)

    @staticmethod
    async def _manages(conn: Conn, signer: Signer) -> bool:
        """Whether the signer is, inside this transaction, the manager of ``signer.or_manager_of``."""
        if signer.or_manager_of is None:
            return False
        manager = await conn.fetchval("SELECT manager FROM users WHERE id = $1", signer.or_manager_of)
        return manager is not None and manager == signer.user_id

    async def _apply_effect(self, conn: Conn, effect: ActionEffect, now: float) -> None:
        if isinstance(effect, InviteEffect):
            await _insert_invite(conn, effect.invite)
        elif isinstance(effect, AdminEffect):
            updated = await conn.execute("UPDATE users SET admin = $1 WHERE id = $2", effect.admin, effect.user_id)
            if rowcount(updated) != 1:
                raise Missing(f"no user {effect.user_id!r}")
            await self._check_an_admin_remains(conn)
            await self._event(conn, "user.changed", {"user": effect.user_id}, now)
        elif isinstance(effect, TokenEffect):
            await _insert_token(conn, effect.token)
        elif isinstance(effect, ActivateEffect):
            updated = await conn.execute(
                "UPDATE devices SET status = 'active', cert_sha256 = $1, cert_pem = $2, not_after = $3,"
                " approved_by = $4 WHERE id = $5 AND enrollment_id = $6 AND user_id = $7"
                " AND status = 'pending_approval'",
                effect.cert_sha256, effect.cert_pem, effect.not_after, effect.approved_by, effect.device_id,
                effect.enrollment_id, effect.user_id)
            if rowcount(updated) != 1:
                raise AlreadyUsed(f"device {effect.device_id} is not pending approval (already approved or revoked)")
            await conn.execute("UPDATE enrollments SET status = 'active' WHERE id = $1", effect.enrollment_id)
            await self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id}, now)
        elif isinstance(effect, RejectEffect):
            updated = await conn.execute(
                "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE id = $2 AND enrollment_id = $3"
                " AND user_id = $4 AND status = 'pending_approval'",
                now, effect.device_id, effect.enrollment_id, effect.user_id)
            if rowcount(updated) != 1:
                raise AlreadyUsed(f"device {effect.device_id} is not pending approval (already approved or revoked)")
            await conn.execute("UPDATE enrollments SET status = 'rejected' WHERE id = $1", effect.enrollment_id)
            await self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id}, now)
        elif isinstance(effect, ManagerEffect):
            if effect.manager is not None:
                await _check_manager(conn, effect.user_id, effect.manager)
            updated = await conn.execute("UPDATE users SET manager = $1 WHERE id = $2", effect.manager,
                                         effect.user_id)
            if rowcount(updated) != 1:
                raise Missing(f"no user {effect.user_id!r}")
            await self._event(conn, "user.changed", {"user": effect.user_id}, now)
        elif isinstance(effect, RenewEffect):
            await self._renew(conn, effect, now)
        else:
            raise TypeError(f"unknown action effect {type(effect).__name__}")

    # -- certificate renewal: the rendezvous of the device that asked and the passkey that signs ---------------

    async def create_renewal(self, renewal: Renewal, *, max_open: int, forget_before: float) -> None:
        """Store a begun renewal; at most ``max_open`` unexpired begun ones per device.

        Renewals that expired before ``forget_before`` are deleted, whatever their status. Raises
        :class:`LimitReached`. Counted inside the write lock, so two nodes cannot both take the last place.
        """

        async def tx(conn: Conn) -> None:
            await conn.execute("DELETE FROM renewals WHERE expires_at <= $1", forget_before)
            count = await conn.fetchval("SELECT COUNT(*) FROM renewals WHERE device_id = $1 AND status = 'begun'"
                                        " AND expires_at > $2", renewal.device_id, renewal.created_at)
            if count >= max_open:
                raise LimitReached(f"{count} renewals of this device are already waiting for a passkey; finish "
                                   "one or wait until they expire")
            await conn.execute(
                "INSERT INTO renewals (id, device_id, user_id, csr_pem, spki_sha256, status, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                renewal.id, renewal.device_id, renewal.user_id, renewal.csr_pem, renewal.spki_sha256,
                renewal.status, renewal.created_at, renewal.expires_at)

        await self.write(tx)

    async def get_renewal(self, renewal_id: str) -> Renewal | None:
        row = await self._fetchrow("SELECT * FROM renewals WHERE id = $1", renewal_id)
        return renewal_from_row(row) if row else None

    async def _renew(self, conn: Conn, effect: RenewEffect, now: float) -> None:
        """Replace the device's certificate, move its live sessions to it, and answer its renewal request."""
        updated = await conn.execute(
            "UPDATE devices SET cert_sha256 = $1, cert_pem = $2, not_after = $3 WHERE id = $4 AND user_id = $5"
            " AND status = 'active' AND cert_sha256 = $6",
            effect.cert_sha256, effect.cert_pem, effect.not_after, effect.device_id, effect.user_id,
            effect.old_cert_sha256)
        if rowcount(updated) != 1:
            raise AlreadyUsed(f"device {effect.device_id} no longer has the certificate this renewal was signed "
                              "over (it was renewed or revoked meanwhile); start again")
        # The session is (certificate, passkey assertion): the same passkey just vouched for the new key, so
        # the session carries over to the new certificate instead of ending with the old one.
        await conn.execute("UPDATE sessions SET cert_sha256 = $1 WHERE device_id = $2 AND cert_sha256 = $3"
                           " AND revoked_at IS NULL", effect.cert_sha256, effect.device_id, effect.old_cert_sha256)
        await conn.execute("UPDATE renewals SET status = 'renewed', cert_pem = $1, not_after = $2 WHERE device_id = $3"
                           " AND spki_sha256 = $4 AND status = 'begun'",
                           effect.cert_pem, effect.not_after, effect.device_id, effect.spki_sha256)
        await self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id,
                                                   "retired_cert": b64url_encode(effect.old_cert_sha256)}, now)
