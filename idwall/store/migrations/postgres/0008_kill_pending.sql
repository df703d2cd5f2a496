-- IDWall store, schema version 8, for PostgreSQL (as ../0008_kill_pending.sql): the sessions a kill revoked, in
-- one row, until they are written out to their own rows and to kill_revocations after the kill has answered.
CREATE TABLE kill_pending (
    audit_seq BIGINT PRIMARY KEY,
    at        DOUBLE PRECISION NOT NULL,
    sessions  TEXT[] NOT NULL
)
