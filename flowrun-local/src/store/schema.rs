//! The history schema, as versioned migrations. Append new migrations; never edit old ones.

use rusqlite_migration::{M, Migrations};

const MIGRATIONS: &[M<'static>] = &[
    // 1: runs, steps and call attempts.
    M::up(
        "CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        target_kind   TEXT NOT NULL,
        target        TEXT NOT NULL,
        version       TEXT NOT NULL,
        status        TEXT NOT NULL,
        input         TEXT NOT NULL,
        output        TEXT,
        error         TEXT,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd      REAL,
        cost_unknown  TEXT,
        latency_ms    INTEGER,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER
    );
    CREATE INDEX runs_by_start ON runs(started_at DESC);
    CREATE TABLE steps (
        run_id        TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index    INTEGER NOT NULL,
        step_id       TEXT NOT NULL,
        prompt        TEXT NOT NULL,
        version       TEXT NOT NULL,
        model         TEXT,
        messages      TEXT NOT NULL,
        status        TEXT NOT NULL,
        output_text   TEXT,
        output        TEXT,
        error         TEXT,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd      REAL,
        cost_unknown  TEXT,
        latency_ms    INTEGER,
        attempts      INTEGER NOT NULL DEFAULT 0,
        started_at    INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_index)
    );
    CREATE TABLE calls (
        run_id        TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index    INTEGER NOT NULL,
        attempt       INTEGER NOT NULL,
        provider      TEXT NOT NULL,
        model         TEXT NOT NULL,
        error_kind    TEXT,
        error         TEXT,
        latency_ms    INTEGER NOT NULL,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd      REAL,
        cost_unknown  TEXT,
        raw_response  TEXT,
        repair        INTEGER NOT NULL DEFAULT 0,
        started_at    INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_index, attempt)
    );",
    ),
    // 2: the response cache, and whether a call was answered from it.
    M::up(
        "CREATE TABLE response_cache (
        key           TEXT PRIMARY KEY,
        provider      TEXT NOT NULL,
        model         TEXT NOT NULL,
        request       TEXT,
        response      TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    ALTER TABLE calls ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;",
    ),
    // 3: test runs: summary columns for listing, the whole report for `test show`.
    M::up(
        "CREATE TABLE test_runs (
        id            TEXT PRIMARY KEY,
        started_at    INTEGER NOT NULL,
        wall_ms       INTEGER NOT NULL,
        min_pass_rate REAL NOT NULL,
        runs          INTEGER NOT NULL,
        passed        INTEGER NOT NULL,
        failed        INTEGER NOT NULL,
        pass_rate     REAL NOT NULL,
        mean_score    REAL NOT NULL,
        cost_usd      REAL,
        cost_unknown  TEXT,
        report        TEXT NOT NULL
    );
    CREATE INDEX test_runs_by_start ON test_runs(started_at DESC);",
    ),
    // 4: evaluations of a draft against a baseline.
    M::up(
        "CREATE TABLE evals (
        id            TEXT PRIMARY KEY,
        started_at    INTEGER NOT NULL,
        wall_ms       INTEGER NOT NULL,
        baseline      TEXT NOT NULL,
        verdict       TEXT NOT NULL,
        cases         INTEGER NOT NULL,
        draft_pass_rate    REAL NOT NULL,
        baseline_pass_rate REAL NOT NULL,
        draft_wins    INTEGER NOT NULL,
        baseline_wins INTEGER NOT NULL,
        p_value       REAL NOT NULL,
        report        TEXT NOT NULL
    );
    CREATE INDEX evals_by_start ON evals(started_at DESC);",
    ),
    // 5: agent steps: each turn as it completes (the full record, enough to rebuild the
    // conversation), and why the loop stopped.
    M::up(
        "CREATE TABLE agent_turns (
        run_id        TEXT NOT NULL REFERENCES runs(id),
        step_index    INTEGER NOT NULL,
        turn          INTEGER NOT NULL,
        model         TEXT NOT NULL,
        tools         TEXT NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd      REAL,
        cost_unknown  TEXT,
        latency_ms    INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        record        TEXT NOT NULL,
        PRIMARY KEY (run_id, step_index, turn)
    );
    ALTER TABLE steps ADD COLUMN agent_stop TEXT;",
    ),
    // 6: cost reports and daily budgets read calls by start time.
    M::up("CREATE INDEX calls_by_start ON calls(started_at);"),
    // 7: `flowrun sync`, per remote: what was pushed (content hash per record), cursors, and
    // the deployment history pulled.
    M::up(
        "CREATE TABLE sync_pushed (
        remote        TEXT NOT NULL,
        kind          TEXT NOT NULL,
        id            TEXT NOT NULL,
        hash          TEXT NOT NULL,
        pushed_at     INTEGER NOT NULL,
        PRIMARY KEY (remote, kind, id)
    );
    CREATE TABLE sync_cursors (
        remote        TEXT NOT NULL,
        name          TEXT NOT NULL,
        value         INTEGER NOT NULL,
        PRIMARY KEY (remote, name)
    );
    CREATE TABLE deployments (
        remote        TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        env           TEXT NOT NULL,
        bundle_id     TEXT NOT NULL,
        action        TEXT NOT NULL,
        rolled_back   INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (remote, seq)
    );",
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
