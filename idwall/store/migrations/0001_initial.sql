-- IDWall store, schema version 1.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pending_approval', 'revoked')),
    cert_sha256   BLOB UNIQUE,
    cert_pem      TEXT,
    enrolled_at   REAL NOT NULL,
    not_after     REAL,
    approved_by   TEXT,
    revoked_at    REAL,
    enrollment_id TEXT NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE credentials (
    id          BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    public_key  BLOB NOT NULL,
    alg         INTEGER NOT NULL,
    sign_count  INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX credentials_device ON credentials(device_id);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    device_id     TEXT NOT NULL REFERENCES devices(id),
    credential_id BLOB NOT NULL,
    cert_sha256   BLOB NOT NULL,
    amr_json      TEXT NOT NULL,
    auth_time     REAL NOT NULL,
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    last_seen     REAL NOT NULL,
    revoked_at    REAL,
    revoke_reason TEXT
);
CREATE INDEX sessions_device ON sessions(device_id);

CREATE TABLE invites (
    id          TEXT PRIMARY KEY,          -- b64url(SHA-256(code)): the code itself is never stored
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin       INTEGER NOT NULL,
    bootstrap   INTEGER NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);

CREATE TABLE enrollments (
    id           TEXT PRIMARY KEY,
    nonce        BLOB NOT NULL,
    challenge    BLOB NOT NULL,
    spki_sha256  BLOB NOT NULL,
    csr_pem      TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    invite_id    TEXT,
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    email        TEXT NOT NULL,
    groups_json  TEXT NOT NULL,
    admin        INTEGER NOT NULL,
    bootstrap    INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL CHECK (status IN ('begun', 'pending_approval', 'active', 'rejected')),
    device_id    TEXT,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL
);

-- Login and signed-action ceremonies: single use (deleted when consumed), expiring.
CREATE TABLE ceremonies (
    id          TEXT PRIMARY KEY,          -- b64url(challenge)
    kind        TEXT NOT NULL CHECK (kind IN ('login', 'action')),
    nonce       BLOB NOT NULL,
    binding     BLOB NOT NULL,             -- cert_sha256 of the connection the ceremony began on
    user_id     TEXT,
    device_id   TEXT,
    payload     TEXT,                      -- canonical action JSON for signed actions
    expires_at  REAL NOT NULL
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    scopes_json TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    revoked_at  REAL
);

CREATE TABLE ledger (
    seq    INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE,
    entry  TEXT NOT NULL
);

-- Trust changes other processes must react to (kill fan-out, device and group changes).
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    time     REAL NOT NULL
);
