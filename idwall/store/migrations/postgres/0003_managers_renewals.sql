-- IDWall store, schema version 3, for PostgreSQL (as ../0003_managers_renewals.sql): managers (issue 10) and
-- certificate renewals. A user's manager may approve or reject their new devices under devices.approval:
-- manager; an invite carries the manager the user gets when it is used. NULL: no manager (every user before
-- this version).
ALTER TABLE users ADD COLUMN manager TEXT REFERENCES users(id);
ALTER TABLE invites ADD COLUMN manager TEXT;

-- A device's request for a certificate for a new key, begun over its own mTLS connection; the polling
-- CLI reads it by id, and the signed device.renew fills in the certificate.
CREATE TABLE renewals (
    id           TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    csr_pem      TEXT NOT NULL,
    spki_sha256  BYTEA NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('begun', 'renewed')),
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL,
    cert_pem     TEXT,
    not_after    DOUBLE PRECISION
);
CREATE INDEX renewals_device ON renewals(device_id);
