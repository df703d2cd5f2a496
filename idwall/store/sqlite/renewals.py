"""Certificate renewal in SQLite: the renewal requests the polling CLI reads, and the renewal itself (the
device's certificate replaced, its live sessions moved to the new certificate) as a signed action's effect.
"""

from __future__ import annotations

import sqlite3

from ...encoding import b64url_encode
from ...model import Renewal, RenewEffect
from ..base import AlreadyUsed, LimitReached
from .core import SQLiteCore, renewal_from_row


class RenewalRecords(SQLiteCore):
    """Renewal requests and the effect of ``device.renew``."""

    async def create_renewal(self, renewal: Renewal, *, max_open: int, forget_before: float) -> None:
        """Store a begun renewal; at most ``max_open`` unexpired begun ones per device.

        Renewals that expired before ``forget_before`` are deleted, whatever their status. Raises
        :class:`LimitReached`.
        """

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM renewals WHERE expires_at <= ?", (forget_before,))
            row = conn.execute("SELECT COUNT(*) FROM renewals WHERE device_id = ? AND status = 'begun'"
                               " AND expires_at > ?", (renewal.device_id, renewal.created_at)).fetchone()
            if row[0] >= max_open:
                raise LimitReached(f"{row[0]} renewals of this device are already waiting for a passkey; finish "
                                   "one or wait until they expire")
            conn.execute(
                "INSERT INTO renewals (id, device_id, user_id, csr_pem, spki_sha256, status, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (renewal.id, renewal.device_id, renewal.user_id, renewal.csr_pem, renewal.spki_sha256,
                 renewal.status, renewal.created_at, renewal.expires_at))

        await self.write(tx)

    async def get_renewal(self, renewal_id: str) -> Renewal | None:
        row = await self.read(lambda c: c.execute("SELECT * FROM renewals WHERE id = ?", (renewal_id,)).fetchone())
        return renewal_from_row(row) if row else None

    def _renew(self, conn: sqlite3.Connection, effect: RenewEffect, now: float) -> None:
        """Replace the device's certificate, move its live sessions to it, and answer its renewal request."""
        updated = conn.execute(
            "UPDATE devices SET cert_sha256 = ?, cert_pem = ?, not_after = ? WHERE id = ? AND user_id = ?"
            " AND status = 'active' AND cert_sha256 = ?",
            (effect.cert_sha256, effect.cert_pem, effect.not_after, effect.device_id, effect.user_id,
             effect.old_cert_sha256))
        if updated.rowcount != 1:
            raise AlreadyUsed(f"device {effect.device_id} no longer has the certificate this renewal was signed "
                              "over (it was renewed or revoked meanwhile); start again")
        # The session is (certificate, passkey assertion): the same passkey just vouched for the new key, so
        # the session carries over to the new certificate instead of ending with the old one.
        conn.execute("UPDATE sessions SET cert_sha256 = ? WHERE device_id = ? AND cert_sha256 = ?"
                     " AND revoked_at IS NULL", (effect.cert_sha256, effect.device_id, effect.old_cert_sha256))
        conn.execute("UPDATE renewals SET status = 'renewed', cert_pem = ?, not_after = ? WHERE device_id = ?"
                     " AND spki_sha256 = ? AND status = 'begun'",
                     (effect.cert_pem, effect.not_after, effect.device_id, effect.spki_sha256))
        # retired_cert: every process cuts the WebSockets, streams and tunnels still riding on the old certificate
        self._event(conn, "device.changed", {"device": effect.device_id, "user": effect.user_id,
                                             "retired_cert": b64url_encode(effect.old_cert_sha256)}, now)
