-- IDWall store, schema version 4: sign requests (idwall.sign_requests), an action begun on the command line
-- and signed on a one-time page. Not trust state: a lost row only fails that request; the action itself is
-- performed (with its ledger entry) by actions/finish as any other.
CREATE TABLE sign_requests (
    id          TEXT PRIMARY KEY,
    link_hash   BLOB NOT NULL,             -- SHA-256 of the link secret (the secret is in the link only)
    poll_hash   BLOB NOT NULL,             -- SHA-256 of the poll secret (the command line holds it)
    binding     BLOB NOT NULL,             -- cert_sha256 of the connection that began it
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    action_id   TEXT NOT NULL,
    action      TEXT NOT NULL,             -- canonical JSON of the action
    state       TEXT NOT NULL CHECK (state IN ('waiting', 'opened', 'signed', 'declined', 'refused', 'collected')),
    credential  TEXT,                      -- the page's assertion until it is collected
    detail      TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX sign_requests_device ON sign_requests(device_id, state);
CREATE INDEX sign_requests_expiry ON sign_requests(expires_at);
