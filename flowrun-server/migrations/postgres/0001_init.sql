-- 1: bundles, environments, runs, steps, API keys (the same tables as the SQLite schema).
-- Keys and ids sort bytewise (COLLATE "C"), as in SQLite, so both stores order alike.
CREATE TABLE bundles (
    id          TEXT COLLATE "C" PRIMARY KEY,
    files       TEXT NOT NULL,
    file_count  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE environments (
    name        TEXT COLLATE "C" PRIMARY KEY,
    bundle_id   TEXT COLLATE "C" NOT NULL REFERENCES bundles(id),
    updated_at  BIGINT NOT NULL
);
CREATE TABLE env_history (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env         TEXT COLLATE "C" NOT NULL,
    bundle_id   TEXT COLLATE "C" NOT NULL REFERENCES bundles(id),
    action      TEXT NOT NULL,
    rolled_back BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX env_history_by_env ON env_history(env, seq);
CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    env              TEXT COLLATE "C" NOT NULL,
    flow             TEXT COLLATE "C" NOT NULL,
    bundle_id        TEXT COLLATE "C" NOT NULL REFERENCES bundles(id),
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    usage            TEXT,
    cost             TEXT,
    idempotency_key  TEXT COLLATE "C",
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE UNIQUE INDEX runs_idempotency ON runs(env, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The queue: only queued rows, in claim order.
CREATE INDEX runs_queued ON runs(created_at, id) WHERE status = 'queued';
-- Leases the reclaimer checks.
CREATE INDEX runs_leased ON runs(lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_by_env ON runs(env, created_at DESC);
CREATE INDEX runs_by_created ON runs(created_at DESC, id DESC);
CREATE TABLE steps (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_index  BIGINT NOT NULL,
    step_id     TEXT NOT NULL,
    record      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_index)
);
CREATE TABLE api_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    hash        TEXT COLLATE "C" NOT NULL UNIQUE,
    env         TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
