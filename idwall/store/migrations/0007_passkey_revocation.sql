-- IDWall store, schema version 7: a passkey's own revocation, and where a self-service enrollment came from.
--
-- The device certificate is the revocable credential and the passkey the durable one: a kill with
-- revoke_devices revokes certificates, and the user rebinds a new device key by signing device.recover with a
-- passkey they still hold. A passkey is revoked only when its device is declared lost: a kill of scope device
-- with revoke_devices (by hand, or a playbook's target stage naming the device). A revoked passkey signs nothing.
ALTER TABLE credentials ADD COLUMN revoked_at REAL;

-- The client address that began an enrollment: the recovery page shows it, so someone sent a link to approve a
-- device they did not start can see it came from elsewhere.
ALTER TABLE enrollments ADD COLUMN source TEXT;

-- Kills of one device with revoke_devices written before this version revoked its passkeys too (the ledger
-- replay reads every such kill that way), so the store says the same of them.
UPDATE credentials SET revoked_at = (SELECT COALESCE(d.revoked_at, d.enrolled_at) FROM devices d
                                     WHERE d.id = credentials.device_id)
WHERE device_id IN (SELECT json_extract(entry, '$.data.target') FROM ledger
                    WHERE json_extract(entry, '$.type') = 'kill' AND json_extract(entry, '$.data.scope') = 'device'
                    AND json_extract(entry, '$.data.revoke_devices') = 1)
