//! [`ServerStore`] on embedded SQLite, for one `flowrun serve` process per database file.
//! Writes go to one writer thread that commits whatever is pending in one transaction (group
//! commit, see [`writer`]); reads go to a small pool of read-only connections beside it (WAL).

mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowrun_core::agent::AgentTurn;
use flowrun_core::event::StepRecord;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{
    BundleInfo, Claimed, Delivery, DeliveryOutcome, Deployment, EnvInfo, KeyRow, NewRun,
    RollbackError, RunFilter, RunResult, RunRow, RunState, ServerStore, StoreError, StoredStep,
    Submitted, SyncRecord, SyncedRecord, UsageStep, record_hash,
};

/// The SQLite server store. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    conns: Arc<writer::Connections>,
}

const RUN_COLS: &str = "id, env, flow, bundle_id, input, status, output, error, usage, cost, \
     idempotency_key, attempts, cancel_requested, created_at, started_at, finished_at, webhook_url";

/// How far an acknowledged write survives (SQLite's `synchronous` in WAL mode).
///
/// `Full`, the default, makes every commit wait for the WAL to reach the disk: an accepted
/// run survives a power loss or a kernel crash, as on PostgreSQL with its defaults. `Normal`
/// skips that wait: a commit survives the process being killed but may be lost with the
/// machine. Group commit (one flush for every write pending at once) keeps `Full` affordable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

impl Durability {
    /// The `synchronous` pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it, with
    /// [`Durability::Full`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Durability::default())
    }

    /// [`SqliteStore::open`] with the durability of commits chosen.
    pub fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::setup(conn, Some(path), durability)
    }

    /// An in-memory store, for tests (reads go through the writer).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::setup(Connection::open_in_memory()?, None, Durability::default())
    }

    /// The connection settings of the store (WAL, `synchronous`, busy timeout, foreign keys);
    /// public so a benchmark can measure the database alone with the same durability.
    pub fn tune(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", durability.pragma())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn setup(
        mut conn: Connection,
        path: Option<&Path>,
        durability: Durability,
    ) -> Result<SqliteStore, StoreError> {
        Self::tune(&conn, durability)?;
        super::schema::migrations().to_latest(&mut conn)?;
        Ok(SqliteStore {
            conns: Arc::new(writer::Connections::start(conn, path)?),
        })
    }

    /// A write, committed (with the others pending) before it answers.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.conns.write(f).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.conns.read(f).await
    }
}

fn json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(idx)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let status: String = row.get(5)?;
    Ok(RunRow {
        id: row.get(0)?,
        env: row.get(1)?,
        flow: row.get(2)?,
        bundle_id: row.get(3)?,
        input: json_col(row, 4)?.unwrap_or(Value::Null),
        status: RunState::parse(&status).unwrap_or(RunState::Failed),
        output: json_col(row, 6)?,
        error: row.get(7)?,
        usage: json_col(row, 8)?,
        cost: json_col(row, 9)?,
        idempotency_key: row.get(10)?,
        attempts: row.get(11)?,
        cancel_requested: row.get::<_, i64>(12)? != 0,
        created_at: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
        webhook_url: row.get(16)?,
    })
}

/// Queues the webhook delivery of run `id`, which has just ended, if it has a URL (inside the
/// transaction that ended it).
fn enqueue_delivery(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries (run_id, status, next_attempt_at, created_at)
         SELECT id, 'pending', ?2, ?2 FROM runs WHERE id = ?1 AND webhook_url IS NOT NULL
         ON CONFLICT(run_id) DO NOTHING",
    )?
    .execute(params![id, now])?;
    Ok(())
}

fn get_run(conn: &Connection, id: &str) -> Result<Option<RunRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))?
        .query_row([id], run_row)
        .optional()?)
}

fn get_env(conn: &Connection, env: &str) -> Result<Option<EnvInfo>, StoreError> {
    let Some((bundle_id, updated_at)) = conn
        .prepare_cached("SELECT bundle_id, updated_at FROM environments WHERE name = ?1")?
        .query_row([env], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT bundle_id FROM env_history WHERE env = ?1 AND rolled_back = 0
         ORDER BY seq DESC LIMIT -1 OFFSET 1",
    )?;
    let previous = stmt
        .query_map([env], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Some(EnvInfo {
        name: env.to_string(),
        bundle_id,
        updated_at,
        previous,
    }))
}

fn to_text(v: Option<&Value>) -> Option<String> {
    v.map(Value::to_string)
}

/// Whether `owner` holds the lease of the running run `id`.
fn holds_lease(c: &Connection, id: &str, owner: &str) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM runs WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
    )?
    .exists(params![id, owner])?)
}

/// Upserts a finished step, keeping the first commit time.
fn insert_step(
    c: &Connection,
    run_id: &str,
    index: u32,
    step_id: &str,
    record: &str,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO steps (run_id, step_index, step_id, record, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id, step_index)
         DO UPDATE SET step_id = excluded.step_id, record = excluded.record",
    )?
    .execute(params![
        run_id,
        index,
        step_id,
        record,
        flowrun_core::event::now_ms()
    ])?;
    Ok(())
}

/// Ends or re-queues the running runs whose lease expired before `expired_before`: cancelled
/// when a cancel was asked, failed after `max_attempts` claims, else queued again.
fn requeue_running(
    c: &Connection,
    expired_before: i64,
    now: i64,
    max_attempts: u32,
) -> Result<Vec<String>, StoreError> {
    let collect = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<String>, StoreError> {
        let mut stmt = c.prepare_cached(sql)?;
        let got = stmt
            .query_map(p, |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(got)
    };
    let mut ids = collect(
        "UPDATE runs SET status = 'cancelled', error = 'cancelled', finished_at = ?2,
           lease_owner = NULL, lease_expires_at = NULL
         WHERE status = 'running' AND lease_expires_at < ?1 AND cancel_requested = 1
         RETURNING id",
        &[&expired_before, &now],
    )?;
    ids.extend(collect(
        "UPDATE runs SET status = 'failed', finished_at = ?2,
           error = 'the run was abandoned by its worker ' || attempts || ' times; giving up',
           lease_owner = NULL, lease_expires_at = NULL
         WHERE status = 'running' AND lease_expires_at < ?1 AND attempts >= ?3
         RETURNING id",
        &[&expired_before, &now, &max_attempts],
    )?);
    for id in &ids {
        enqueue_delivery(c, id, now)?;
    }
    ids.extend(collect(
        "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL
         WHERE status = 'running' AND lease_expires_at < ?1
         RETURNING id",
        &[&expired_before],
    )?);
    Ok(ids)
}

#[async_trait]
impl ServerStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| Ok(c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?))
            .await
    }

    async fn put_bundle(
        &self,
        id: &str,
        files_json: &str,
        count: usize,
    ) -> Result<bool, StoreError> {
        let (id, files_json) = (id.to_string(), files_json.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO bundles (id, files, file_count, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    id,
                    files_json,
                    count as i64,
                    flowrun_core::event::now_ms()
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn bundle(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT files FROM bundles WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn bundles(&self) -> Result<Vec<BundleInfo>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, file_count, created_at FROM bundles ORDER BY created_at DESC, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(BundleInfo {
                        id: r.get(0)?,
                        files: r.get::<_, i64>(1)? as usize,
                        created_at: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn deploy(&self, env: &str, bundle_id: &str, action: &str) -> Result<bool, StoreError> {
        let (env, bundle_id, action) = (env.to_string(), bundle_id.to_string(), action.to_string());
        self.write(move |c| {
            let exists: bool = c.prepare_cached("SELECT 1 FROM bundles WHERE id = ?1")?.query_row( [&bundle_id], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !exists {
                return Ok(false);
            }
            let now = flowrun_core::event::now_ms();
            c.prepare_cached("INSERT INTO env_history (env, bundle_id, action, created_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![env, bundle_id, action, now])?;
            c.prepare_cached("INSERT INTO environments (name, bundle_id, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET bundle_id = excluded.bundle_id,
                 updated_at = excluded.updated_at")?.execute(params![env, bundle_id, now])?;
            Ok(true)
        })
        .await
    }

    async fn envs(&self) -> Result<Vec<EnvInfo>, StoreError> {
        self.read(|c| {
            let names = c
                .prepare_cached("SELECT name FROM environments ORDER BY name")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::new();
            for name in names {
                out.extend(get_env(c, &name)?);
            }
            Ok(out)
        })
        .await
    }

    async fn env(&self, env: &str) -> Result<Option<EnvInfo>, StoreError> {
        let env = env.to_string();
        self.read(move |c| get_env(c, &env)).await
    }

    async fn rollback(&self, env: &str) -> Result<Result<EnvInfo, RollbackError>, StoreError> {
        let env = env.to_string();
        self.write(move |c| {
            let live = c
                .prepare_cached(
                    "SELECT seq, bundle_id FROM env_history WHERE env = ?1 AND rolled_back = 0
                     ORDER BY seq DESC LIMIT 2",
                )?
                .query_map([&env], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            match live.as_slice() {
                [] => return Ok(Err(RollbackError::NoDeployment)),
                [_] => return Ok(Err(RollbackError::NoPrevious)),
                [(current, _), (_, previous), ..] => {
                    let now = flowrun_core::event::now_ms();
                    c.prepare_cached("UPDATE env_history SET rolled_back = 1 WHERE seq = ?1")?
                        .execute([current])?;
                    c.prepare_cached(
                        "UPDATE environments SET bundle_id = ?2, updated_at = ?3 WHERE name = ?1",
                    )?
                    .execute(params![env, previous, now])?;
                }
            }
            let info = get_env(c, &env)?;
            Ok(info.ok_or(RollbackError::NoDeployment))
        })
        .await
    }

    async fn submit(&self, run: NewRun) -> Result<Submitted, StoreError> {
        self.write(move |c| {
            if let Some(key) = &run.idempotency_key {
                let existing = c
                    .prepare_cached(&format!(
                        "SELECT {RUN_COLS} FROM runs WHERE env = ?1 AND idempotency_key = ?2"
                    ))?
                    .query_row(params![run.env, key], run_row)
                    .optional()?;
                if let Some(existing) = existing {
                    return Ok(Submitted {
                        run: existing,
                        created: false,
                    });
                }
            }
            c.prepare_cached(
                "INSERT INTO runs (id, env, flow, bundle_id, input, status, idempotency_key,
                   created_at, webhook_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
            )?
            .execute(params![
                run.id,
                run.env,
                run.flow,
                run.bundle_id,
                run.input.to_string(),
                run.idempotency_key,
                run.created_at,
                run.webhook_url
            ])?;
            let row = get_run(c, &run.id)?
                .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))?;
            Ok(Submitted {
                run: row,
                created: true,
            })
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| get_run(c, &id)).await
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs
                 WHERE (?1 IS NULL OR env = ?1) AND (?2 IS NULL OR flow = ?2)
                   AND (?3 IS NULL OR status = ?3)
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        filter.env,
                        filter.flow,
                        filter.status.map(RunState::as_str),
                        filter.limit
                    ],
                    run_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn stored_steps(&self, run_id: &str) -> Result<Vec<StoredStep>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| Ok(read_stored_steps(c, &run_id)?)).await
    }

    async fn usage_steps(
        &self,
        env: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<UsageStep>, StoreError> {
        let env = env.map(str::to_string);
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT r.env, r.flow, r.bundle_id, s.created_at, s.record
                     FROM steps s JOIN runs r ON r.id = s.run_id
                     WHERE s.created_at >= ?1 AND (?2 IS NULL OR r.env = ?2)
                     ORDER BY s.created_at, s.run_id, s.step_index",
                )?
                .query_map(params![since_ms, env], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(env, flow, bundle_id, committed_at, text)| {
                    Ok(UsageStep {
                        env,
                        flow,
                        bundle_id,
                        committed_at,
                        record: serde_json::from_str(&text)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn spent(
        &self,
        env: &str,
        flow: Option<&str>,
        since_ms: i64,
        exclude_run: &str,
    ) -> Result<f64, StoreError> {
        let (env, flow, exclude) = (
            env.to_string(),
            flow.map(str::to_string),
            exclude_run.to_string(),
        );
        self.read(move |c| {
            let usd: Option<f64> = c
                .prepare_cached(
                    "SELECT SUM(json_extract(s.record, '$.cost.usd'))
                     FROM steps s JOIN runs r ON r.id = s.run_id
                     WHERE r.env = ?1 AND s.created_at >= ?2 AND s.run_id <> ?3
                       AND (?4 IS NULL OR r.flow = ?4)",
                )?
                .query_row(params![env, since_ms, exclude, flow], |r| r.get(0))?;
            Ok(usd.unwrap_or(0.0))
        })
        .await
    }

    async fn cancel(&self, id: &str, now: i64) -> Result<Option<RunRow>, StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            let ended = c
                .prepare_cached(
                    "UPDATE runs SET status = 'cancelled', error = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                )?
                .execute(params![id, now])?;
            if ended == 1 {
                enqueue_delivery(c, &id, now)?;
            }
            c.prepare_cached(
                "UPDATE runs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'",
            )?
            .execute([&id])?;
            let row = get_run(c, &id)?;
            Ok(row)
        })
        .await
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError> {
        let owner = owner.to_string();
        self.write(move |c| claim_rows(c, &owner, now, lease_until, limit))
            .await
    }

    async fn claim_with_steps(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let owner = owner.to_string();
        // The steps are read on the writer with the claim: an index lookup per run, and no
        // hop through the read pool before the run starts.
        self.write(move |c| {
            let runs = claim_rows(c, &owner, now, lease_until, limit)?;
            Ok(runs
                .into_iter()
                .map(|run| {
                    let steps = read_stored_steps(c, &run.id)
                        .map_err(StoreError::from)
                        .and_then(StoredStep::records);
                    Claimed { run, steps }
                })
                .collect())
        })
        .await
    }

    async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<bool>, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE runs SET lease_expires_at = ?3
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'
                 RETURNING cancel_requested",
            )?
            .query_row(params![id, owner, lease_until], |r| {
                Ok(r.get::<_, i64>(0)? != 0)
            })
            .optional()?)
        })
        .await
    }

    async fn record_turn(&self, turn: &AgentTurn) -> Result<(), StoreError> {
        let record = serde_json::to_string(turn)?;
        let (run_id, index, number) = (turn.run_id.clone(), turn.step_index, turn.turn);
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO agent_turns (run_id, step_index, turn, record, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, step_index, turn) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![
                run_id,
                index,
                number,
                record,
                flowrun_core::event::now_ms()
            ])?;
            Ok(())
        })
        .await
    }

    async fn turns(&self, run_id: &str) -> Result<Vec<AgentTurn>, StoreError> {
        let run_id = run_id.to_string();
        self.read(move |c| {
            let texts = c
                .prepare_cached(
                    "SELECT record FROM agent_turns WHERE run_id = ?1 ORDER BY step_index, turn",
                )?
                .query_map([run_id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            texts
                .iter()
                .map(|t| serde_json::from_str(t).map_err(StoreError::from))
                .collect()
        })
        .await
    }

    async fn record_step(
        &self,
        run_id: &str,
        owner: &str,
        step: &StepRecord,
    ) -> Result<bool, StoreError> {
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        let record = serde_json::to_string(step)?;
        let (index, step_id) = (step.step_index, step.step_id.clone());
        self.write(move |c| {
            if !holds_lease(c, &run_id, &owner)? {
                return Ok(false);
            }
            insert_step(c, &run_id, index, &step_id, &record)?;
            Ok(true)
        })
        .await
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        result: &RunResult,
        last_step: Option<&StepRecord>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (id, owner, result) = (id.to_string(), owner.to_string(), result.clone());
        let last_step = last_step
            .map(|s| {
                Ok::<_, StoreError>((s.step_index, s.step_id.clone(), serde_json::to_string(s)?))
            })
            .transpose()?;
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE runs SET status = ?3, output = ?4, error = ?5, usage = ?6, cost = ?7,
                       finished_at = ?8, lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                )?
                .execute(params![
                    id,
                    owner,
                    result.status.as_str(),
                    to_text(result.output.as_ref()),
                    result.error,
                    to_text(result.usage.as_ref()),
                    to_text(result.cost.as_ref()),
                    now
                ])?;
            if n != 1 {
                return Ok(false);
            }
            if let Some((index, step_id, record)) = &last_step {
                insert_step(c, &id, *index, step_id, record)?;
            }
            enqueue_delivery(c, &id, now)?;
            Ok(true)
        })
        .await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                   attempts = MAX(attempts - 1, 0)
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            )?
            .execute(params![id, owner])?;
            Ok(())
        })
        .await
    }

    async fn reclaim_expired(
        &self,
        now: i64,
        max_attempts: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |c| requeue_running(c, now, now, max_attempts))
            .await
    }

    async fn recover_abandoned(
        &self,
        now: i64,
        max_attempts: u32,
    ) -> Result<Vec<String>, StoreError> {
        // One process per database file: every run still `running` was this file's previous
        // process's, whatever its lease says.
        self.write(move |c| requeue_running(c, i64::MAX, now, max_attempts))
            .await
    }

    async fn run_counts(&self) -> Result<Vec<(RunState, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(s, n)| Some((RunState::parse(&s)?, n.max(0) as u64)))
                .collect())
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let owner = owner.to_string();
        self.write(move |c| {
            let claimed = c
                .prepare_cached(
                    "UPDATE webhook_deliveries SET lease_owner = ?1, lease_expires_at = ?2,
                       attempts = attempts + 1
                     WHERE run_id IN (
                       SELECT run_id FROM webhook_deliveries
                       WHERE status = 'pending' AND next_attempt_at <= ?3
                         AND (lease_expires_at IS NULL OR lease_expires_at < ?3)
                       ORDER BY next_attempt_at, run_id LIMIT ?4)
                     RETURNING run_id, attempts",
                )?
                .query_map(params![owner, lease_until, now, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(claimed.len());
            for (run_id, attempts) in claimed {
                let Some(run) = get_run(c, &run_id)? else {
                    continue;
                };
                let Some(url) = run.webhook_url.clone() else {
                    continue;
                };
                out.push(Delivery { url, attempts, run });
            }
            Ok(out)
        })
        .await
    }

    async fn settle_delivery(
        &self,
        run_id: &str,
        owner: &str,
        outcome: &DeliveryOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (run_id, owner, outcome) = (run_id.to_string(), owner.to_string(), outcome.clone());
        self.write(move |c| {
            let (status, next, error, delivered) = match &outcome {
                DeliveryOutcome::Delivered => ("delivered", None, None, Some(now)),
                DeliveryOutcome::Retry { at, error } => ("pending", Some(*at), Some(error), None),
                DeliveryOutcome::Failed { error } => ("failed", None, Some(error), None),
            };
            let n = c
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = ?3,
                   next_attempt_at = COALESCE(?4, next_attempt_at), last_error = ?5,
                   delivered_at = ?6, lease_owner = NULL, lease_expires_at = NULL
                 WHERE run_id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                )?
                .execute(params![run_id, owner, status, next, error, delivered])?;
            Ok(n == 1)
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |c| {
            c.prepare_cached("INSERT INTO api_keys (id, hash, env, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![key.id, key.hash, key.env, key.role, key.created_at])?;
            Ok(())
        })
        .await
    }

    async fn push_records(
        &self,
        records: &[SyncRecord],
        key_id: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let rows: Vec<(String, String, String, String)> = records
            .iter()
            .map(|r| {
                let hash = record_hash(&r.record);
                (r.kind.clone(), r.id.clone(), hash, r.record.to_string())
            })
            .collect();
        let key_id = key_id.to_string();
        self.write(move |c| {
            let mut changed = 0;
            {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO synced_records (kind, id, hash, record, pushed_by, pushed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (kind, id) DO UPDATE SET hash = excluded.hash,
                         record = excluded.record, pushed_by = excluded.pushed_by,
                         pushed_at = excluded.pushed_at
                     WHERE synced_records.hash <> excluded.hash",
                )?;
                for (kind, id, hash, record) in &rows {
                    changed += stmt.execute(params![kind, id, hash, record, key_id, now])? as u64;
                }
            }
            Ok(changed)
        })
        .await
    }

    async fn synced_records(
        &self,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SyncedRecord>, StoreError> {
        let kind = kind.map(str::to_string);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, id, record, pushed_by, pushed_at FROM synced_records
                 WHERE ?1 IS NULL OR kind = ?1
                 ORDER BY pushed_at DESC, kind, id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![kind, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(kind, id, record, pushed_by, pushed_at)| {
                    Ok(SyncedRecord {
                        kind,
                        id,
                        record: serde_json::from_str(&record)?,
                        pushed_by,
                        pushed_at,
                    })
                })
                .collect()
        })
        .await
    }

    async fn deployments(&self, after: i64, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, env, bundle_id, action, rolled_back, created_at FROM env_history
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after, limit], |r| {
                    Ok(Deployment {
                        seq: r.get(0)?,
                        env: r.get(1)?,
                        bundle_id: r.get(2)?,
                        action: r.get(3)?,
                        rolled_back: r.get::<_, i64>(4)? != 0,
                        created_at: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let hash = hash.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, hash, env, role, created_at FROM api_keys WHERE hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    env: r.get(2)?,
                    role: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })
            .optional()?)
        })
        .await
    }
}

/// A run's committed steps, in order, each decoded or with why it cannot be.
fn read_stored_steps(c: &Connection, run_id: &str) -> rusqlite::Result<Vec<StoredStep>> {
    let mut read = c.prepare_cached(
        "SELECT step_index, record FROM steps WHERE run_id = ?1 ORDER BY step_index",
    )?;
    let rows = read.query_map([run_id], |r| {
        Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|row| {
        let (step_index, text) = row?;
        Ok(StoredStep {
            step_index,
            record: serde_json::from_str(&text),
        })
    })
    .collect()
}

/// Leases up to `limit` of the oldest queued runs to `owner`, oldest first.
fn claim_rows(
    c: &Connection,
    owner: &str,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<RunRow>, StoreError> {
    let mut rows = c
        .prepare_cached(&format!(
            "UPDATE runs SET status = 'running', lease_owner = ?1,
               lease_expires_at = ?2, attempts = attempts + 1,
               started_at = COALESCE(started_at, ?3)
             WHERE id IN (SELECT id FROM runs WHERE status = 'queued'
                          ORDER BY created_at, id LIMIT ?4)
               AND status = 'queued'
             RETURNING {RUN_COLS}"
        ))?
        .query_map(params![owner, lease_until, now, limit], run_row)?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order.
    rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn store_with_run(key: Option<&str>) -> (SqliteStore, String) {
        let s = SqliteStore::in_memory().unwrap();
        s.put_bundle("b1", r#"{"files":[]}"#, 0).await.unwrap();
        let sub = s
            .submit(NewRun {
                id: "r1".into(),
                env: "prod".into(),
                flow: "f".into(),
                bundle_id: "b1".into(),
                input: json!({}),
                idempotency_key: key.map(str::to_string),
                webhook_url: Some("http://127.0.0.1:9/hook".into()),
                created_at: 1,
            })
            .await
            .unwrap();
        (s, sub.run.id)
    }

    #[tokio::test]
    async fn durability_sets_how_the_writer_commits() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let path = dir.path().join(format!("{}.db", durability.pragma()));
            let s = SqliteStore::open_with(&path, durability).unwrap();
            let (sync, mode) = s
                .write(|c| {
                    let sync: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                    let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                    Ok((sync, mode))
                })
                .await
                .unwrap();
            assert_eq!((sync, mode.as_str()), (expected, "wal"), "{durability:?}");
        }
        assert_eq!(Durability::default(), Durability::Full);
    }

    #[tokio::test]
    async fn a_run_is_claimed_once_and_reclaimed_when_its_lease_expires() {
        let (s, id) = store_with_run(None).await;
        let run = s.claim("w1", 10, 100).await.unwrap().unwrap();
        assert_eq!(
            (run.id.as_str(), run.status, run.attempts),
            (id.as_str(), RunState::Running, 1)
        );
        assert!(s.claim("w2", 10, 100).await.unwrap().is_none());
        assert_eq!(s.heartbeat(&id, "w2", 200).await.unwrap(), None);
        assert_eq!(s.heartbeat(&id, "w1", 200).await.unwrap(), Some(false));
        assert!(s.reclaim_expired(150, 5).await.unwrap().is_empty());
        assert_eq!(s.reclaim_expired(250, 5).await.unwrap(), vec![id.clone()]);
        let again = s.claim("w2", 300, 400).await.unwrap().unwrap();
        assert_eq!(again.attempts, 2);
        // The first worker lost its lease: its end is not committed.
        let done = RunResult {
            status: RunState::Succeeded,
            output: Some(json!("x")),
            error: None,
            usage: None,
            cost: None,
        };
        assert!(!s.finish(&id, "w1", &done, None, 350).await.unwrap());
        assert!(s.finish(&id, "w2", &done, None, 350).await.unwrap());
        assert_eq!(
            s.run(&id).await.unwrap().unwrap().status,
            RunState::Succeeded
        );
    }

    #[tokio::test]
    async fn a_step_committed_again_keeps_its_first_commit_time() {
        let (s, id) = store_with_run(None).await;
        let step = |output: &str| StepRecord {
            run_id: id.clone(),
            step_index: 0,
            step_id: "a".into(),
            prompt: "a".into(),
            status: flowrun_core::RunStatus::Succeeded,
            output_text: Some(output.into()),
            output: Some(json!(output)),
            model: None,
            usage: Default::default(),
            cost: Default::default(),
            latency_ms: 1,
            attempts: 1,
            error: None,
            cached: false,
            agent: None,
        };
        let committed_at = async |s: &SqliteStore| {
            s.read(|c| {
                Ok(c.prepare_cached("SELECT created_at FROM steps")?
                    .query_row([], |r| r.get::<_, i64>(0))?)
            })
            .await
            .unwrap()
        };
        s.claim("w1", 0, 100).await.unwrap().unwrap();
        assert!(s.record_step(&id, "w1", &step("first")).await.unwrap());
        let first = committed_at(&s).await;
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.record_step(&id, "w1", &step("second")).await.unwrap());
        let steps = s.steps(&id).await.unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].output, Some(json!("second")));
        assert_eq!(committed_at(&s).await, first);
    }

    #[tokio::test]
    async fn a_run_whose_workers_keep_dying_fails() {
        let (s, id) = store_with_run(None).await;
        s.claim("w1", 0, 10).await.unwrap().unwrap();
        assert_eq!(s.reclaim_expired(20, 1).await.unwrap(), vec![id.clone()]);
        let run = s.run(&id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Failed);
        assert!(run.error.unwrap().contains("giving up"));
    }

    #[tokio::test]
    async fn an_idempotency_key_is_unique_per_env() {
        let (s, id) = store_with_run(Some("k")).await;
        let again = s
            .submit(NewRun {
                id: "r2".into(),
                env: "prod".into(),
                flow: "f".into(),
                bundle_id: "b1".into(),
                input: json!({}),
                idempotency_key: Some("k".into()),
                webhook_url: None,
                created_at: 2,
            })
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.run.id, id);
    }

    #[tokio::test]
    async fn cancelling_a_queued_run_ends_it_and_a_running_one_is_asked() {
        let (s, id) = store_with_run(None).await;
        s.claim("w1", 0, 100).await.unwrap();
        let run = s.cancel(&id, 5).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Running);
        assert_eq!(s.heartbeat(&id, "w1", 200).await.unwrap(), Some(true));
        assert!(s.cancel("nope", 5).await.unwrap().is_none());
    }
}
