-- IDWall store, schema version 2: the worker processes of a node and their acknowledgements of events.
-- Neither table is trust state: a lost row costs at most a kill answer that reports a worker as unreached.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    nudge       TEXT,                      -- abstract unix datagram address that wakes its event poller
    started_at  REAL NOT NULL,
    heartbeat   REAL NOT NULL
);
CREATE INDEX workers_heartbeat ON workers(heartbeat);

-- Written by a worker's event poller once it has applied an event (a kill: cut its matching connections).
CREATE TABLE event_acks (
    event_id            INTEGER NOT NULL,
    worker_id           TEXT NOT NULL,
    connections_closed  INTEGER NOT NULL,
    acked_at            REAL NOT NULL,
    PRIMARY KEY (event_id, worker_id)
) WITHOUT ROWID;
CREATE INDEX event_acks_time ON event_acks(acked_at);
