-- IDWall store, schema version 8: the sessions a kill revoked, in one row, until they are written out.
--
-- Rewriting 10,000 session rows and inserting 10,000 kill_revocations rows held a kill of everyone's transaction
-- (and its answer) for hundreds of milliseconds. The kill now records the ids it revoked here, in one row, and
-- every read that decides whether a session lives treats them as revoked; right after the kill has answered,
-- each id goes to its session row (revoked_at) and to kill_revocations, and the row here is deleted, in one
-- transaction (idwall.store.settle).
CREATE TABLE kill_pending (
    audit_seq INTEGER PRIMARY KEY,            -- the kill's ledger entry
    at        REAL NOT NULL,                  -- when it revoked them: their sessions' revoked_at
    sessions  TEXT NOT NULL                   -- the session ids, a JSON array
)
