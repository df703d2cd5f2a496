-- IDWall store, schema version 5: incident runs (issue 11). A dry run writes nothing, so every row here is
-- a real run: its plan (the whole decision, made before anything changed), and each stage as it committed.
CREATE TABLE incidents (
    id           TEXT PRIMARY KEY,
    playbook     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    actor        TEXT NOT NULL,             -- the admin who signed incident.start, or token:<id>
    started_at   REAL NOT NULL,
    ended_at     REAL,                      -- NULL while active: restrictions below are in force
    ended_by     TEXT,
    plan_json    TEXT NOT NULL,
    stages_total INTEGER NOT NULL,
    stages_committed INTEGER NOT NULL DEFAULT 0,
    audit_seq    INTEGER NOT NULL           -- the incident.start entry
);

CREATE TABLE incident_stages (
    incident_id  TEXT NOT NULL REFERENCES incidents(id),
    number       INTEGER NOT NULL,
    committed_at REAL NOT NULL,
    result_json  TEXT NOT NULL,
    audit_seq    INTEGER NOT NULL,          -- the incident.stage entry
    PRIMARY KEY (incident_id, number)
);

-- The incident that marked a passkey suspect (NULL: not suspect). A suspect passkey cannot sign
-- device.recover: a new device then needs device.approve by an admin or the manager. Ending the incident
-- does not clear it (it is a finding about the passkey, not a restriction of the incident).
ALTER TABLE credentials ADD COLUMN suspect TEXT;

-- Per-user restrictions tied to an incident, in force while it is active (incidents.ended_at IS NULL).
CREATE TABLE incident_restrictions (
    incident_id  TEXT NOT NULL REFERENCES incidents(id),
    user_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('fresh_auth', 'block_code_enrollment')),
    fresh_auth   INTEGER,                   -- seconds, for kind fresh_auth
    PRIMARY KEY (incident_id, user_id, kind)
);
CREATE INDEX incident_restrictions_user ON incident_restrictions(user_id)
