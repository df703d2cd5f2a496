-- IDWall store, schema version 7, for PostgreSQL (as ../0007_passkey_revocation.sql): a passkey's own
-- revocation (only a kill of one device with revoke_devices sets it), and the address that began an enrollment.
ALTER TABLE credentials ADD COLUMN revoked_at DOUBLE PRECISION;
ALTER TABLE enrollments ADD COLUMN source TEXT;

-- earlier kills of one device with revoke_devices revoked its passkeys too, as the ledger replay reads them
UPDATE credentials SET revoked_at = (SELECT COALESCE(d.revoked_at, d.enrolled_at) FROM devices d
                                     WHERE d.id = credentials.device_id)
WHERE device_id IN (SELECT (entry::jsonb -> 'data' ->> 'target') FROM ledger
                    WHERE entry::jsonb ->> 'type' = 'kill' AND entry::jsonb -> 'data' ->> 'scope' = 'device'
                    AND entry::jsonb -> 'data' ->> 'revoke_devices' = 'true');
