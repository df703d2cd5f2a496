-- IDWall store, schema version 6, for PostgreSQL (as ../0006_kill_revocations.sql): the sessions and devices
-- each kill revoked; its ledger entry records only how many and a digest of their ids.
CREATE TABLE kill_revocations (
    audit_seq BIGINT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('session', 'device')),
    id        TEXT NOT NULL,
    PRIMARY KEY (audit_seq, kind, id)
)
