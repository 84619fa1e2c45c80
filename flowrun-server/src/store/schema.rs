//! The server schema, as versioned migrations. Append new migrations; never edit old ones.

use rusqlite_migration::{M, Migrations};

const MIGRATIONS: &[M<'static>] = &[
    // 1: bundles, environments, runs, steps, API keys.
    M::up(
        "CREATE TABLE bundles (
        id          TEXT PRIMARY KEY,
        files       TEXT NOT NULL,
        file_count  INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE environments (
        name        TEXT PRIMARY KEY,
        bundle_id   TEXT NOT NULL REFERENCES bundles(id),
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE env_history (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        env         TEXT NOT NULL,
        bundle_id   TEXT NOT NULL REFERENCES bundles(id),
        action      TEXT NOT NULL,
        rolled_back INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX env_history_by_env ON env_history(env, seq);
    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        env              TEXT NOT NULL,
        flow             TEXT NOT NULL,
        bundle_id        TEXT NOT NULL REFERENCES bundles(id),
        input            TEXT NOT NULL,
        status           TEXT NOT NULL,
        output           TEXT,
        error            TEXT,
        usage            TEXT,
        cost             TEXT,
        idempotency_key  TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_expires_at INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        finished_at      INTEGER
    );
    CREATE UNIQUE INDEX runs_idempotency ON runs(env, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_queue ON runs(status, created_at, id);
    CREATE INDEX runs_by_env ON runs(env, created_at DESC);
    CREATE TABLE steps (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index  INTEGER NOT NULL,
        step_id     TEXT NOT NULL,
        record      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_index)
    );
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        hash        TEXT NOT NULL UNIQUE,
        env         TEXT NOT NULL,
        role        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );",
    ),
    // 2: webhooks. A run may name a URL; when it ends, a delivery row is committed in the same
    // transaction, and deliverers lease due rows (`next_attempt_at`) to send them.
    M::up(
        "ALTER TABLE runs ADD COLUMN webhook_url TEXT;
    CREATE TABLE webhook_deliveries (
        run_id           TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        status           TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER NOT NULL,
        lease_owner      TEXT,
        lease_expires_at INTEGER,
        last_error       TEXT,
        created_at       INTEGER NOT NULL,
        delivered_at     INTEGER
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);",
    ),
    // 3: agent turns, committed as each completes, so a resumed agent goes on after the last.
    M::up(
        "CREATE TABLE agent_turns (
        run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index  INTEGER NOT NULL,
        turn        INTEGER NOT NULL,
        record      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_index, turn)
    );",
    ),
    // 4: developers' local history pushed by `flowrun sync`, upserted by (kind, id).
    M::up(
        "CREATE TABLE synced_records (
        kind        TEXT NOT NULL,
        id          TEXT NOT NULL,
        hash        TEXT NOT NULL,
        record      TEXT NOT NULL,
        pushed_by   TEXT NOT NULL,
        pushed_at   INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX synced_records_by_push ON synced_records(pushed_at DESC);",
    ),
];

pub fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
