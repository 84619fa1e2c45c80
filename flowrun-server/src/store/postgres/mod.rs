//! [`ServerStore`] on PostgreSQL, shared by several `flowrun serve` replicas: a connection
//! pool (deadpool-postgres over tokio-postgres), migrations applied at start under an advisory
//! lock, claims with `FOR UPDATE SKIP LOCKED`, and NOTIFY, after commit, of every change another
//! replica should hear about (see [`listen`]). Claims and heartbeats commit without waiting for
//! the WAL flush (`synchronous_commit = off`); every other write waits for it. Semantics match [`super::SqliteStore`] method for method; where
//! SQLite serializes through one writer, this store takes row or advisory locks instead.

mod listen;
mod migrate;
mod redact;

use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use flowrun_core::agent::AgentTurn;
use flowrun_core::event::StepRecord;
use postgres_native_tls::MakeTlsConnector;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use listen::{Note, Notifier};
pub use redact::redact_url;

use super::{
    BundleInfo, Claimed, Delivery, DeliveryOutcome, Deployment, EnvInfo, KeyRow, NewRun,
    RollbackError, RunFilter, RunResult, RunRow, RunState, ServerStore, StoreError, StoreEvent,
    StoredStep, Submitted, SyncRecord, SyncedRecord, UsageStep, record_hash,
};

/// The PostgreSQL server store. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeTlsConnector,
    notifier: Notifier,
}

const RUN_COLS: &str = "id, env, flow, bundle_id, input, status, output, error, usage, cost, \
     idempotency_key, attempts, cancel_requested, created_at, started_at, finished_at, \
     webhook_url";

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// What TLS checks of the server's certificate `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// `prefer`, `require` (libpq's meaning): encrypted, the certificate not checked.
    Nothing,
    /// `verify-ca`: signed by a trusted authority.
    Ca,
    /// `verify-full`: also issued for the host.
    Full,
}

/// libpq's `sslmode` values that tokio-postgres does not parse (`verify-ca`, `verify-full`)
/// become `require` plus the checks they stand for.
fn tls_verification(url: &str) -> (String, Verify) {
    for (mode, verify) in [("verify-full", Verify::Full), ("verify-ca", Verify::Ca)] {
        let given = format!("sslmode={mode}");
        if url.contains(&given) {
            return (url.replace(&given, "sslmode=require"), verify);
        }
    }
    (url.to_string(), Verify::Nothing)
}

impl PostgresStore {
    /// Connects to the database at `url` with at most `max_connections` pooled connections,
    /// and migrates it. Errors name the URL without its password.
    pub async fn connect(url: &str, max_connections: usize) -> Result<PostgresStore, StoreError> {
        let failed = |reason: String| StoreError::Connect {
            url: redact_url(url),
            reason,
        };
        let (url_for_driver, verify) = tls_verification(url);
        let config =
            tokio_postgres::Config::from_str(&url_for_driver).map_err(|e| StoreError::BadUrl {
                url: redact_url(url),
                reason: error_text(&e),
            })?;
        let tls = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(verify == Verify::Nothing)
            .danger_accept_invalid_hostnames(verify != Verify::Full)
            .build()
            .map(MakeTlsConnector::new)
            .map_err(|e| failed(format!("cannot set up TLS: {e}")))?;
        let (mut client, conn) = config
            .connect(tls.clone())
            .await
            .map_err(|e| failed(error_text(&e)))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let migrated = migrate::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        migrated?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let notifier = Notifier::start(config.clone(), tls.clone());
        Ok(PostgresStore {
            pool,
            config,
            tls,
            notifier,
        })
    }

    /// One statement on a pooled connection, prepared once per connection.
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&stmt, params).await?)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.query(&stmt, params).await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.execute(&stmt, params).await?)
    }

    /// One statement in a transaction whose commit does not wait for the WAL to reach the disk
    /// (`synchronous_commit = off`), for claims and heartbeats only. Losing one when the
    /// database server crashes is harmless: the lease expires and the run is claimed again,
    /// and any later durable commit (a step, an end) flushes it first. Pipelined: one round
    /// trip for `BEGIN`, the statement and `COMMIT`.
    async fn query_opt_async_commit(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self
            .query_async_commit(sql, params)
            .await?
            .into_iter()
            .next())
    }

    /// [`Self::query_opt_async_commit`] for a statement returning any number of rows.
    async fn query_async_commit(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        // All three requests are queued on the first poll, so the transaction always ends
        // (with a rollback if the statement failed), even if this future is dropped.
        let (begin, rows, commit) = futures::future::join3(
            c.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
            c.query(&stmt, params),
            c.batch_execute("COMMIT"),
        )
        .await;
        begin?;
        let rows = rows?;
        commit?;
        Ok(rows)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(pool_error_text(&e)))
    }
}

/// An error with its causes: tokio-postgres puts the server's message in the source.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => error_text(pg),
        other => error_text(other),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(error_text(&e))
    }
}

fn json_col(row: &Row, idx: usize) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(idx)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn run_row(row: &Row) -> Result<RunRow, StoreError> {
    let status: String = row.try_get(5)?;
    Ok(RunRow {
        id: row.try_get(0)?,
        env: row.try_get(1)?,
        flow: row.try_get(2)?,
        bundle_id: row.try_get(3)?,
        input: json_col(row, 4)?.unwrap_or(Value::Null),
        status: RunState::parse(&status).unwrap_or(RunState::Failed),
        output: json_col(row, 6)?,
        error: row.try_get(7)?,
        usage: json_col(row, 8)?,
        cost: json_col(row, 9)?,
        idempotency_key: row.try_get(10)?,
        attempts: u32::try_from(row.try_get::<_, i32>(11)?).unwrap_or(0),
        cancel_requested: row.try_get(12)?,
        created_at: row.try_get(13)?,
        started_at: row.try_get(14)?,
        finished_at: row.try_get(15)?,
        webhook_url: row.try_get(16)?,
    })
}

/// [`RUN_COLS`] qualified by the `runs` table, for statements that join another.
fn qualified_run_cols() -> String {
    RUN_COLS
        .split(',')
        .map(|c| format!("runs.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Queues the webhook delivery of run `id`, which has just ended, if it has a URL (inside the
/// transaction that ended it).
async fn enqueue_delivery(c: &impl GenericClient, id: &str, now: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO webhook_deliveries (run_id, status, next_attempt_at, created_at)
         SELECT id, 'pending', $2, $2 FROM runs WHERE id = $1 AND webhook_url IS NOT NULL
         ON CONFLICT (run_id) DO NOTHING",
        &[&id, &now],
    )
    .await?;
    Ok(())
}

async fn get_run(c: &impl GenericClient, id: &str) -> Result<Option<RunRow>, StoreError> {
    // Prepared once per connection: a statement given as text costs a round trip to prepare.
    let stmt = c
        .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = $1"))
        .await?;
    c.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(run_row)
        .transpose()
}

async fn get_env(c: &impl GenericClient, env: &str) -> Result<Option<EnvInfo>, StoreError> {
    let current = c
        .prepare_cached("SELECT bundle_id, updated_at FROM environments WHERE name = $1")
        .await?;
    let Some(row) = c.query_opt(&current, &[&env]).await? else {
        return Ok(None);
    };
    let previous = c
        .prepare_cached(
            "SELECT bundle_id FROM env_history WHERE env = $1 AND NOT rolled_back
             ORDER BY seq DESC OFFSET 1",
        )
        .await?;
    let previous = c
        .query(&previous, &[&env])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Some(EnvInfo {
        name: env.to_string(),
        bundle_id: row.try_get(0)?,
        updated_at: row.try_get(1)?,
        previous,
    }))
}

/// Serializes deployments and rollbacks of one environment until the transaction ends.
async fn lock_env(c: &impl GenericClient, env: &str) -> Result<(), StoreError> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flowrun.env:' || $1, 0))",
        &[&env],
    )
    .await?;
    Ok(())
}

fn to_text(v: Option<&Value>) -> Option<String> {
    v.map(Value::to_string)
}

fn ids(rows: &[Row]) -> Result<Vec<String>, StoreError> {
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?)
}

#[async_trait]
impl ServerStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn put_bundle(
        &self,
        id: &str,
        files_json: &str,
        count: usize,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "INSERT INTO bundles (id, files, file_count, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &files_json,
                    &(count as i64),
                    &flowrun_core::event::now_ms(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn bundle(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .query_opt("SELECT files FROM bundles WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn bundles(&self) -> Result<Vec<BundleInfo>, StoreError> {
        let rows = self
            .query(
                "SELECT id, file_count, created_at FROM bundles ORDER BY created_at DESC, id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BundleInfo {
                    id: r.try_get(0)?,
                    files: usize::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
                    created_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn deploy(&self, env: &str, bundle_id: &str, action: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_env(&tx, env).await?;
        if tx
            .query_opt("SELECT 1 FROM bundles WHERE id = $1", &[&bundle_id])
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let now = flowrun_core::event::now_ms();
        tx.execute(
            "INSERT INTO env_history (env, bundle_id, action, created_at) VALUES ($1, $2, $3, $4)",
            &[&env, &bundle_id, &action, &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO environments (name, bundle_id, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET bundle_id = EXCLUDED.bundle_id,
             updated_at = EXCLUDED.updated_at",
            &[&env, &bundle_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn envs(&self) -> Result<Vec<EnvInfo>, StoreError> {
        let c = self.client().await?;
        let names = c
            .query("SELECT name FROM environments ORDER BY name", &[])
            .await?;
        let mut out = Vec::new();
        for row in names {
            let name: String = row.try_get(0)?;
            out.extend(get_env(&c, &name).await?);
        }
        Ok(out)
    }

    async fn env(&self, env: &str) -> Result<Option<EnvInfo>, StoreError> {
        get_env(&self.client().await?, env).await
    }

    async fn rollback(&self, env: &str) -> Result<Result<EnvInfo, RollbackError>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_env(&tx, env).await?;
        let live = tx
            .query(
                "SELECT seq, bundle_id FROM env_history WHERE env = $1 AND NOT rolled_back
                 ORDER BY seq DESC LIMIT 2",
                &[&env],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        match live.as_slice() {
            [] => return Ok(Err(RollbackError::NoDeployment)),
            [_] => return Ok(Err(RollbackError::NoPrevious)),
            [(current, _), (_, previous), ..] => {
                let now = flowrun_core::event::now_ms();
                tx.execute(
                    "UPDATE env_history SET rolled_back = TRUE WHERE seq = $1",
                    &[current],
                )
                .await?;
                tx.execute(
                    "UPDATE environments SET bundle_id = $2, updated_at = $3 WHERE name = $1",
                    &[&env, previous, &now],
                )
                .await?;
            }
        }
        let info = get_env(&tx, env).await?;
        tx.commit().await?;
        Ok(info.ok_or(RollbackError::NoDeployment))
    }

    async fn submit(&self, run: NewRun) -> Result<Submitted, StoreError> {
        // One statement, its own transaction: one round trip. A concurrent submit with the
        // same key waits here for the other to commit, then inserts nothing; the existing run
        // is read below by a statement that sees that commit.
        let inserted = self
            .query_opt(
                &format!(
                    "INSERT INTO runs (id, env, flow, bundle_id, input, status, idempotency_key,
                       created_at, webhook_url)
                     VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8)
                     ON CONFLICT (env, idempotency_key) WHERE idempotency_key IS NOT NULL
                     DO NOTHING
                     RETURNING {RUN_COLS}"
                ),
                &[
                    &run.id,
                    &run.env,
                    &run.flow,
                    &run.bundle_id,
                    &run.input.to_string(),
                    &run.idempotency_key,
                    &run.created_at,
                    &run.webhook_url,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            self.notifier.send(Note::Queued(1));
            return Ok(Submitted {
                run: run_row(&row)?,
                created: true,
            });
        }
        let existing = self
            .query_opt(
                &format!("SELECT {RUN_COLS} FROM runs WHERE env = $1 AND idempotency_key = $2"),
                &[&run.env, &run.idempotency_key],
            )
            .await?
            .ok_or_else(|| {
                StoreError::Postgres("the run with this idempotency key vanished".into())
            })?;
        Ok(Submitted {
            run: run_row(&existing)?,
            created: false,
        })
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        get_run(&self.client().await?, id).await
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {RUN_COLS} FROM runs
                     WHERE ($1::text IS NULL OR env = $1) AND ($2::text IS NULL OR flow = $2)
                       AND ($3::text IS NULL OR status = $3)
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                ),
                &[
                    &filter.env,
                    &filter.flow,
                    &filter.status.map(RunState::as_str),
                    &i64::from(filter.limit),
                ],
            )
            .await?;
        rows.iter().map(run_row).collect()
    }

    async fn stored_steps(&self, run_id: &str) -> Result<Vec<StoredStep>, StoreError> {
        let rows = self
            .query(
                "SELECT step_index, record FROM steps WHERE run_id = $1 ORDER BY step_index",
                &[&run_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let step_index: i64 = r.try_get(0)?;
                let text: String = r.try_get(1)?;
                Ok(StoredStep {
                    step_index: u32::try_from(step_index).unwrap_or_default(),
                    record: serde_json::from_str(&text),
                })
            })
            .collect()
    }

    async fn usage_steps(
        &self,
        env: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<UsageStep>, StoreError> {
        let rows = self
            .query(
                "SELECT r.env, r.flow, r.bundle_id, s.created_at, s.record
                 FROM steps s JOIN runs r ON r.id = s.run_id
                 WHERE s.created_at >= $1 AND ($2::TEXT IS NULL OR r.env = $2)
                 ORDER BY s.created_at, s.run_id, s.step_index",
                &[&since_ms, &env],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(4)?;
                Ok(UsageStep {
                    env: r.try_get(0)?,
                    flow: r.try_get(1)?,
                    bundle_id: r.try_get(2)?,
                    committed_at: r.try_get(3)?,
                    record: serde_json::from_str(&text)?,
                })
            })
            .collect()
    }

    async fn spent(
        &self,
        env: &str,
        flow: Option<&str>,
        since_ms: i64,
        exclude_run: &str,
    ) -> Result<f64, StoreError> {
        let rows = self
            .query(
                "SELECT SUM((s.record::jsonb -> 'cost' ->> 'usd')::FLOAT8)
                 FROM steps s JOIN runs r ON r.id = s.run_id
                 WHERE r.env = $1 AND s.created_at >= $2 AND s.run_id <> $3
                   AND ($4::TEXT IS NULL OR r.flow = $4)",
                &[&env, &since_ms, &exclude_run, &flow],
            )
            .await?;
        let usd: Option<f64> = match rows.first() {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        Ok(usd.unwrap_or(0.0))
    }

    async fn cancel(&self, id: &str, now: i64) -> Result<Option<RunRow>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let ended = tx
            .execute(
                "UPDATE runs SET status = 'cancelled', error = 'cancelled', finished_at = $2
                 WHERE id = $1 AND status = 'queued'",
                &[&id, &now],
            )
            .await?;
        let asked = tx
            .execute(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
                &[&id],
            )
            .await?;
        if ended == 1 {
            enqueue_delivery(&tx, id, now).await?;
        }
        let row = get_run(&tx, id).await?;
        tx.commit().await?;
        if ended == 1 {
            self.notifier.send(Note::Ended(id.to_string()));
        }
        if asked == 1 {
            self.notifier.send(Note::Cancel(id.to_string()));
        }
        Ok(row)
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError> {
        // Concurrent claimers skip the rows another is taking instead of waiting for them. The
        // CTE picks the rows once (a subquery under `IN` may run again per row).
        let cols = qualified_run_cols();
        let rows = self
            .query_async_commit(
                &format!(
                    "WITH picked AS (
                       SELECT id FROM runs WHERE status = 'queued'
                       ORDER BY created_at, id LIMIT $4
                       FOR UPDATE SKIP LOCKED)
                     UPDATE runs SET status = 'running', lease_owner = $1,
                       lease_expires_at = $2, attempts = attempts + 1,
                       started_at = COALESCE(started_at, $3)
                     FROM picked
                     WHERE runs.id = picked.id AND runs.status = 'queued'
                     RETURNING {cols}"
                ),
                &[&owner, &lease_until, &now, &i64::from(limit)],
            )
            .await?;
        let mut runs = rows.iter().map(run_row).collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order.
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(runs)
    }

    async fn claim_with_steps(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        // As `claim_batch`, with each run's committed steps in the same statement: a worker
        // needs no second round trip before it starts.
        let rows = self
            .query_async_commit(
                &format!(
                    "WITH picked AS (
                       SELECT id FROM runs WHERE status = 'queued'
                       ORDER BY created_at, id LIMIT $4
                       FOR UPDATE SKIP LOCKED),
                     claimed AS (
                       UPDATE runs SET status = 'running', lease_owner = $1,
                         lease_expires_at = $2, attempts = attempts + 1,
                         started_at = COALESCE(started_at, $3)
                       FROM picked
                       WHERE runs.id = picked.id AND runs.status = 'queued'
                       RETURNING {})
                     SELECT claimed.*, ARRAY(SELECT record FROM steps
                       WHERE steps.run_id = claimed.id ORDER BY step_index)
                     FROM claimed",
                    qualified_run_cols()
                ),
                &[&owner, &lease_until, &now, &i64::from(limit)],
            )
            .await?;
        let steps_col = RUN_COLS.split(',').count();
        let mut claimed = rows
            .iter()
            .map(|row| {
                let steps = row
                    .try_get::<_, Vec<String>>(steps_col)
                    .map_err(StoreError::from)
                    .and_then(|texts| {
                        texts
                            .iter()
                            .map(|t| serde_json::from_str(t).map_err(StoreError::from))
                            .collect()
                    });
                Ok(Claimed {
                    run: run_row(row)?,
                    steps,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by(|a, b| (a.run.created_at, &a.run.id).cmp(&(b.run.created_at, &b.run.id)));
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<bool>, StoreError> {
        let row = self
            .query_opt_async_commit(
                "UPDATE runs SET lease_expires_at = $3
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'
                 RETURNING cancel_requested",
                &[&id, &owner, &lease_until],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn record_turn(&self, turn: &AgentTurn) -> Result<(), StoreError> {
        let record = serde_json::to_string(turn)?;
        self.execute(
            "INSERT INTO agent_turns (run_id, step_index, turn, record, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id, step_index, turn) DO UPDATE SET record = EXCLUDED.record",
            &[
                &turn.run_id,
                &i64::from(turn.step_index),
                &i64::from(turn.turn),
                &record,
                &flowrun_core::event::now_ms(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn turns(&self, run_id: &str) -> Result<Vec<AgentTurn>, StoreError> {
        let rows = self
            .query(
                "SELECT record FROM agent_turns WHERE run_id = $1 ORDER BY step_index, turn",
                &[&run_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(0)?;
                serde_json::from_str(&text).map_err(StoreError::from)
            })
            .collect()
    }

    async fn record_step(
        &self,
        run_id: &str,
        owner: &str,
        step: &StepRecord,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(step)?;
        // FOR SHARE: a reclaim racing this waits, or this sees the run no longer held.
        let n = self
            .execute(
                "WITH held AS (
                   SELECT id FROM runs WHERE id = $1 AND lease_owner = $6 AND status = 'running'
                   FOR SHARE)
                 INSERT INTO steps (run_id, step_index, step_id, record, created_at)
                 SELECT id, $2, $3, $4, $5 FROM held
                 ON CONFLICT (run_id, step_index) DO UPDATE SET step_id = EXCLUDED.step_id,
                   record = EXCLUDED.record",
                &[
                    &run_id,
                    &i64::from(step.step_index),
                    &step.step_id,
                    &record,
                    &flowrun_core::event::now_ms(),
                    &owner,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        result: &RunResult,
        last_step: Option<&StepRecord>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let step_record = last_step.map(serde_json::to_string).transpose()?;
        let step_index = last_step.map(|s| i64::from(s.step_index));
        let step_id = last_step.map(|s| s.step_id.as_str());
        let rows = self
            .query(
                "WITH ended AS (
                   UPDATE runs SET status = $3, output = $4, error = $5, usage = $6, cost = $7,
                     finished_at = $8, lease_owner = NULL, lease_expires_at = NULL
                   WHERE id = $1 AND lease_owner = $2 AND status = 'running'
                   RETURNING id, webhook_url),
                 delivery AS (
                   INSERT INTO webhook_deliveries (run_id, status, next_attempt_at, created_at)
                   SELECT id, 'pending', $8, $8 FROM ended WHERE webhook_url IS NOT NULL
                   ON CONFLICT (run_id) DO NOTHING),
                 step AS (
                   INSERT INTO steps (run_id, step_index, step_id, record, created_at)
                   SELECT id, $9::BIGINT, $10::TEXT, $11::TEXT, $12::BIGINT FROM ended
                   WHERE $11::TEXT IS NOT NULL
                   ON CONFLICT (run_id, step_index) DO UPDATE SET step_id = EXCLUDED.step_id,
                     record = EXCLUDED.record)
                 SELECT id FROM ended",
                &[
                    &id,
                    &owner,
                    &result.status.as_str(),
                    &to_text(result.output.as_ref()),
                    &result.error,
                    &to_text(result.usage.as_ref()),
                    &to_text(result.cost.as_ref()),
                    &now,
                    &step_index,
                    &step_id,
                    &step_record,
                    &flowrun_core::event::now_ms(),
                ],
            )
            .await?;
        let ended = rows.len() == 1;
        if ended {
            self.notifier.send(Note::Ended(id.to_string()));
        }
        Ok(ended)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let released = self
            .execute(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                   attempts = GREATEST(attempts - 1, 0)
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[&id, &owner],
            )
            .await?;
        if released == 1 {
            self.notifier.send(Note::Queued(1));
        }
        Ok(())
    }

    async fn reclaim_expired(
        &self,
        now: i64,
        max_attempts: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let params: [&(dyn ToSql + Sync); 1] = [&now];
        let cancelled = tx
            .query(
                "UPDATE runs SET status = 'cancelled', error = 'cancelled', finished_at = $1,
                   lease_owner = NULL, lease_expires_at = NULL
                 WHERE status = 'running' AND lease_expires_at < $1 AND cancel_requested
                 RETURNING id",
                &params,
            )
            .await?;
        let failed = tx
            .query(
                "UPDATE runs SET status = 'failed', finished_at = $1,
                   error = 'the run was abandoned by its worker ' || attempts || ' times; giving up',
                   lease_owner = NULL, lease_expires_at = NULL
                 WHERE status = 'running' AND lease_expires_at < $1 AND attempts >= $2
                 RETURNING id",
                &[&now, &max_attempts],
            )
            .await?;
        let requeued = tx
            .query(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL
                 WHERE status = 'running' AND lease_expires_at < $1
                 RETURNING id",
                &params,
            )
            .await?;
        let mut out = ids(&cancelled)?;
        out.extend(ids(&failed)?);
        for id in &out {
            enqueue_delivery(&tx, id, now).await?;
        }
        let ended = out.len();
        out.extend(ids(&requeued)?);
        tx.commit().await?;
        for id in &out[..ended] {
            self.notifier.send(Note::Ended(id.clone()));
        }
        if !requeued.is_empty() {
            self.notifier.send(Note::Queued(requeued.len()));
        }
        Ok(out)
    }

    async fn run_counts(&self) -> Result<Vec<(RunState, u64)>, StoreError> {
        let rows = self
            .query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let status: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            if let Some(state) = RunState::parse(&status) {
                out.push((state, n.max(0) as u64));
            }
        }
        Ok(out)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Deliverers on other replicas skip the rows this one is taking.
        let claimed = tx
            .query(
                "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2,
                   attempts = attempts + 1
                 WHERE run_id IN (
                   SELECT run_id FROM webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= $3
                     AND (lease_expires_at IS NULL OR lease_expires_at < $3)
                   ORDER BY next_attempt_at, run_id LIMIT $4
                   FOR UPDATE SKIP LOCKED)
                 RETURNING run_id, attempts",
                &[&owner, &lease_until, &now, &i64::from(limit)],
            )
            .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let run_id: String = row.try_get(0)?;
            let attempts = u32::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0);
            let Some(run) = get_run(&tx, &run_id).await? else {
                continue;
            };
            let Some(url) = run.webhook_url.clone() else {
                continue;
            };
            out.push(Delivery { url, attempts, run });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn settle_delivery(
        &self,
        run_id: &str,
        owner: &str,
        outcome: &DeliveryOutcome,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (status, next, error, delivered): (&str, Option<i64>, Option<&str>, Option<i64>) =
            match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, None, Some(now)),
                DeliveryOutcome::Retry { at, error } => ("pending", Some(*at), Some(error), None),
                DeliveryOutcome::Failed { error } => ("failed", None, Some(error), None),
            };
        let n = self
            .execute(
                "UPDATE webhook_deliveries SET status = $3,
                   next_attempt_at = COALESCE($4, next_attempt_at), last_error = $5,
                   delivered_at = $6, lease_owner = NULL, lease_expires_at = NULL
                 WHERE run_id = $1 AND lease_owner = $2 AND status = 'pending'",
                &[&run_id, &owner, &status, &next, &error, &delivered],
            )
            .await?;
        Ok(n == 1)
    }

    async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO api_keys (id, hash, env, role, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&key.id, &key.hash, &key.env, &key.role, &key.created_at],
        )
        .await?;
        Ok(())
    }

    async fn push_records(
        &self,
        records: &[SyncRecord],
        key_id: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO synced_records (kind, id, hash, record, pushed_by, pushed_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (kind, id) DO UPDATE SET hash = EXCLUDED.hash,
                     record = EXCLUDED.record, pushed_by = EXCLUDED.pushed_by,
                     pushed_at = EXCLUDED.pushed_at
                 WHERE synced_records.hash <> EXCLUDED.hash",
            )
            .await?;
        let mut changed = 0;
        for r in records {
            let hash = record_hash(&r.record);
            let record = r.record.to_string();
            changed += tx
                .execute(&stmt, &[&r.kind, &r.id, &hash, &record, &key_id, &now])
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn synced_records(
        &self,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SyncedRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT kind, id, record, pushed_by, pushed_at FROM synced_records
                 WHERE $1::TEXT IS NULL OR kind = $1
                 ORDER BY pushed_at DESC, kind, id LIMIT $2",
                &[&kind, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SyncedRecord {
                    kind: r.try_get(0)?,
                    id: r.try_get(1)?,
                    record: serde_json::from_str(r.try_get::<_, &str>(2)?)?,
                    pushed_by: r.try_get(3)?,
                    pushed_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn deployments(&self, after: i64, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        let rows = self
            .query(
                "SELECT seq, env, bundle_id, action, rolled_back, created_at FROM env_history
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Deployment {
                    seq: r.try_get(0)?,
                    env: r.try_get(1)?,
                    bundle_id: r.try_get(2)?,
                    action: r.try_get(3)?,
                    rolled_back: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = self
            .query_opt(
                "SELECT id, hash, env, role, created_at FROM api_keys WHERE hash = $1",
                &[&hash],
            )
            .await?;
        row.map(|r| {
            Ok(KeyRow {
                id: r.try_get(0)?,
                hash: r.try_get(1)?,
                env: r.try_get(2)?,
                role: r.try_get(3)?,
                created_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    fn subscribe(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen::run(self.config.clone(), self.tls.clone(), tx));
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_ssl_modes_become_require_with_checks() {
        assert_eq!(
            tls_verification("postgres://h/db?sslmode=verify-full"),
            ("postgres://h/db?sslmode=require".into(), Verify::Full)
        );
        assert_eq!(
            tls_verification("host=h sslmode=verify-ca"),
            ("host=h sslmode=require".into(), Verify::Ca)
        );
        assert_eq!(
            tls_verification("postgres://h/db"),
            ("postgres://h/db".into(), Verify::Nothing)
        );
    }
}
