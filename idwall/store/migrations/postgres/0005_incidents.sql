-- IDWall store, schema version 5, for PostgreSQL (as ../0005_incidents.sql): incident runs (issue 11). A dry
-- run writes nothing, so every row here is a real run: its plan, and each stage as it committed.
CREATE TABLE incidents (
    id               TEXT PRIMARY KEY,
    playbook         TEXT NOT NULL,
    reason           TEXT NOT NULL,
    actor            TEXT NOT NULL,
    started_at       DOUBLE PRECISION NOT NULL,
    ended_at         DOUBLE PRECISION,
    ended_by         TEXT,
    plan_json        TEXT NOT NULL,
    stages_total     INTEGER NOT NULL,
    stages_committed INTEGER NOT NULL DEFAULT 0,
    audit_seq        BIGINT NOT NULL
);

CREATE TABLE incident_stages (
    incident_id  TEXT NOT NULL REFERENCES incidents(id),
    number       INTEGER NOT NULL,
    committed_at DOUBLE PRECISION NOT NULL,
    result_json  TEXT NOT NULL,
    audit_seq    BIGINT NOT NULL,
    PRIMARY KEY (incident_id, number)
);

-- The incident that marked a passkey suspect (NULL: not suspect); ending the incident does not clear it.
ALTER TABLE credentials ADD COLUMN suspect TEXT;

CREATE TABLE incident_restrictions (
    incident_id  TEXT NOT NULL REFERENCES incidents(id),
    user_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('fresh_auth', 'block_code_enrollment')),
    fresh_auth   INTEGER,
    PRIMARY KEY (incident_id, user_id, kind)
);
CREATE INDEX incident_restrictions_user ON incident_restrictions(user_id)
