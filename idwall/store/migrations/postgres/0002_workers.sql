-- IDWall store, schema version 2, for PostgreSQL (as ../0002_workers.sql): the worker processes of a node and
-- their acknowledgements of events. Neither table is trust state: a lost row costs at most a kill answer that
-- reports a worker as unreached.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    nudge       BYTEA,                     -- abstract unix datagram address that wakes its event poller, UTF-8
                                           -- (BYTEA, not TEXT: an abstract address begins with a NUL byte)
    started_at  DOUBLE PRECISION NOT NULL,
    heartbeat   DOUBLE PRECISION NOT NULL
);
CREATE INDEX workers_heartbeat ON workers(heartbeat);

-- Written by a worker's event poller once it has applied an event (a kill: cut its matching connections).
CREATE TABLE event_acks (
    event_id            BIGINT NOT NULL,
    worker_id           TEXT NOT NULL,
    connections_closed  INTEGER NOT NULL,
    acked_at            DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (event_id, worker_id)
);
CREATE INDEX event_acks_time ON event_acks(acked_at);
