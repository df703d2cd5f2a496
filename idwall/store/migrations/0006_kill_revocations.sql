-- IDWall store, schema version 6: the sessions and devices each kill revoked. The kill's ledger entry records
-- only how many and a digest of their ids (audit.ids_digest), so a kill of everyone stays one small entry; the
-- ids themselves are kept here, queryable, and checkable against that digest.
CREATE TABLE kill_revocations (
    audit_seq INTEGER NOT NULL,               -- the kill's ledger entry
    kind      TEXT NOT NULL CHECK (kind IN ('session', 'device')),
    id        TEXT NOT NULL,
    PRIMARY KEY (audit_seq, kind, id)
)
