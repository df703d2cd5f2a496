-- IDWall store, schema version 1, for PostgreSQL: the same tables, columns and meaning as ../0001_initial.sql.
-- SQLite's INTEGER flags are BOOLEAN here, REAL times DOUBLE PRECISION, BLOB BYTEA; JSON stays TEXT so every
-- value reads back byte for byte as it was written (the ledger entries above all).
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pending_approval', 'revoked')),
    cert_sha256   BYTEA UNIQUE,
    cert_pem      TEXT,
    enrolled_at   DOUBLE PRECISION NOT NULL,
    not_after     DOUBLE PRECISION,
    approved_by   TEXT,
    revoked_at    DOUBLE PRECISION,
    enrollment_id TEXT NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE credentials (
    id          BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    public_key  BYTEA NOT NULL,
    alg         INTEGER NOT NULL,
    sign_count  BIGINT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX credentials_device ON credentials(device_id);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    device_id     TEXT NOT NULL REFERENCES devices(id),
    credential_id BYTEA NOT NULL,
    cert_sha256   BYTEA NOT NULL,
    amr_json      TEXT NOT NULL,
    auth_time     DOUBLE PRECISION NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION NOT NULL,
    last_seen     DOUBLE PRECISION NOT NULL,
    revoked_at    DOUBLE PRECISION,
    revoke_reason TEXT
);
CREATE INDEX sessions_device ON sessions(device_id);

CREATE TABLE invites (
    id          TEXT PRIMARY KEY,          -- b64url(SHA-256(code)): the code itself is never stored
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin       BOOLEAN NOT NULL,
    bootstrap   BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    used_at     DOUBLE PRECISION
);

CREATE TABLE enrollments (
    id           TEXT PRIMARY KEY,
    nonce        BYTEA NOT NULL,
    challenge    BYTEA NOT NULL,
    spki_sha256  BYTEA NOT NULL,
    csr_pem      TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    invite_id    TEXT,
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    email        TEXT NOT NULL,
    groups_json  TEXT NOT NULL,
    admin        BOOLEAN NOT NULL,
    bootstrap    BOOLEAN NOT NULL DEFAULT FALSE,
    status       TEXT NOT NULL CHECK (status IN ('begun', 'pending_approval', 'active', 'rejected')),
    device_id    TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);

-- Login and signed-action ceremonies: single use (deleted when consumed), expiring.
CREATE TABLE ceremonies (
    id          TEXT PRIMARY KEY,          -- b64url(challenge)
    kind        TEXT NOT NULL CHECK (kind IN ('login', 'action')),
    nonce       BYTEA NOT NULL,
    binding     BYTEA NOT NULL,            -- cert_sha256 of the connection the ceremony began on
    user_id     TEXT,
    device_id   TEXT,
    payload     TEXT,                      -- canonical action JSON for signed actions
    expires_at  DOUBLE PRECISION NOT NULL,
    made        BIGINT GENERATED ALWAYS AS IDENTITY  -- insertion order (SQLite's rowid): a device keeps its newest
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        BYTEA NOT NULL UNIQUE,
    scopes_json TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION
);

CREATE TABLE ledger (
    seq    BIGINT PRIMARY KEY,
    hash   BYTEA NOT NULL UNIQUE,
    entry  TEXT NOT NULL
);

-- Trust changes other processes must react to (kill fan-out, device and group changes). Ids are taken under
-- the store's write lock, so they commit in order and a reader that has seen id N never misses one below N.
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    time     DOUBLE PRECISION NOT NULL
);
