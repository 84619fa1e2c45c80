//! The server's durable state behind [`ServerStore`]: bundles, environments with their
//! deployment history, the run queue with leases, committed steps and API keys.
//!
//! Two implementations: [`SqliteStore`] (embedded, one process) and [`PostgresStore`] (several
//! replicas on one database). Every method is one short transaction; both behave alike, which
//! `tests/store.rs` checks against each. A run that ends with a webhook URL gets a pending
//! delivery row in the transaction that ends it; deliverers lease those rows.

mod postgres;
mod schema;
mod sqlite;

use async_trait::async_trait;
use flowrun_core::agent::AgentTurn;
use flowrun_core::event::StepRecord;
use serde::Serialize;
use serde_json::Value;

pub use postgres::{PostgresStore, is_postgres_url, redact_url};
pub use sqlite::{Durability, SqliteStore};
use tokio::sync::mpsc;

/// A store operation failed. Its text is for logs, never for API responses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the server database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot migrate the server database: {0}")]
    Migrate(#[from] rusqlite_migration::Error),
    #[error("server database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database task failed: {0}")]
    Task(String),
    /// A write ran, but the transaction it was batched in did not commit.
    #[error("cannot commit to the server database: {0}")]
    Commit(String),
    /// `url` has its password redacted.
    #[error("invalid database URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// `url` has its password redacted.
    #[error("cannot connect to the server database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("server database error: {0}")]
    Postgres(String),
    #[error("no connection to the server database: {0}")]
    Pool(String),
    #[error(
        "the server database has schema version {found}, newer than this flowrun knows \
         ({known}); upgrade flowrun"
    )]
    SchemaTooNew { found: i64, known: i64 },
}

/// A change another process sharing the database made, for waking this process's workers
/// and long polls early.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A run was queued (submitted, released or re-queued).
    Queued,
    /// The run with this id ended.
    Ended(String),
    /// Cancelling the running run with this id was asked.
    CancelRequested(String),
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the run has ended (it will not change again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// A stored version of a project.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BundleInfo {
    pub id: String,
    pub files: usize,
    pub created_at: i64,
}

/// What an environment runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnvInfo {
    pub name: String,
    pub bundle_id: String,
    pub updated_at: i64,
    /// Earlier deployments a rollback can return to.
    pub previous: Vec<String>,
}

/// A run to put in the queue.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub env: String,
    pub flow: String,
    pub bundle_id: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    /// Where to POST the run's end (`http`/`https`, checked at submission).
    pub webhook_url: Option<String>,
    pub created_at: i64,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: String,
    pub env: String,
    pub flow: String,
    pub bundle_id: String,
    /// The named input values.
    pub input: Value,
    pub status: RunState,
    /// The flow's output (text or JSON) once it succeeded.
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Token counts: `input_tokens`, `output_tokens`, `cached_tokens`, `reasoning_tokens`.
    pub usage: Option<Value>,
    /// `{"usd": …, "unknown_models": […]}`.
    pub cost: Option<Value>,
    pub idempotency_key: Option<String>,
    /// Where the run's end is POSTed. Not shown by the API: a URL may carry a token.
    #[serde(skip)]
    pub webhook_url: Option<String>,
    /// How many times a worker claimed the run.
    pub attempts: u32,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A committed step as stored: its record, or the reason it cannot be decoded (a damaged
/// row, or one written by a version of flowrun whose record this one does not read).
#[derive(Debug)]
pub struct StoredStep {
    pub step_index: u32,
    pub record: Result<StepRecord, serde_json::Error>,
}

impl StoredStep {
    /// Every step's record, or the first decoding error.
    pub fn records(steps: Vec<StoredStep>) -> Result<Vec<StepRecord>, StoreError> {
        steps
            .into_iter()
            .map(|step| step.record.map_err(StoreError::from))
            .collect()
    }
}

/// A run a worker has just claimed, with the steps earlier attempts committed, in order.
#[derive(Debug)]
pub struct Claimed {
    pub run: RunRow,
    /// `Err` when they could not be read (the worker gives that run back) or decoded (the
    /// worker fails it); the other runs of the claim go on either way.
    pub steps: Result<Vec<StepRecord>, StoreError>,
}

/// How a run ended, as a worker reports it.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub status: RunState,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub usage: Option<Value>,
    pub cost: Option<Value>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub env: Option<String>,
    pub flow: Option<String>,
    pub status: Option<RunState>,
    pub limit: u32,
}

/// An API key as stored: only the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub hash: String,
    pub env: String,
    pub role: String,
    pub created_at: i64,
}

/// Submitting a run: the stored row, and whether it is new (false: an idempotent repeat).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run: RunRow,
    pub created: bool,
}

/// A webhook delivery leased to a deliverer: the ended run it reports and its URL.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    /// Attempts so far, counting this one (a claim counts as an attempt).
    pub attempts: u32,
    pub run: RunRow,
}

/// How a delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx: done.
    Delivered,
    /// Try again at `at` (ms since the epoch).
    Retry { at: i64, error: String },
    /// Out of attempts: given up.
    Failed { error: String },
}

/// A committed step with the run attributes a usage report groups by.
#[derive(Debug, Clone)]
pub struct UsageStep {
    pub env: String,
    pub flow: String,
    pub bundle_id: String,
    /// When the step was first committed (ms since the epoch).
    pub committed_at: i64,
    pub record: StepRecord,
}

/// A record of a developer's local history, pushed by `flowrun sync`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SyncRecord {
    /// `run`, `test_run` or `eval`.
    pub kind: String,
    /// The record's id in the local history (UUIDv7).
    pub id: String,
    /// The record as `flowrun show --json`, `test show --json` or `eval show --json` prints
    /// it, without prompts, inputs and outputs unless the project allows them.
    #[schema(value_type = Object)]
    pub record: Value,
}

/// A pushed record as stored, with who pushed it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncedRecord {
    pub kind: String,
    pub id: String,
    #[schema(value_type = Object)]
    pub record: Value,
    /// The id of the API key that last changed it.
    pub pushed_by: String,
    pub pushed_at: i64,
}

/// One entry of the deployment history: what an environment was pointed at, and how.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Deployment {
    /// Increases with every deployment, over all environments: the cursor of a pull.
    pub seq: i64,
    pub env: String,
    pub bundle_id: String,
    /// `deploy`, `promote` or `rollback`.
    pub action: String,
    /// Whether a later rollback undid it.
    pub rolled_back: bool,
    pub created_at: i64,
}

/// SHA-256 of a record's JSON text: an unchanged record is not rewritten.
pub fn record_hash(record: &Value) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(record.to_string().as_bytes()))
}

/// Rolling back could not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackError {
    NoDeployment,
    NoPrevious,
}

/// The server's durable state.
#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a bundle (its canonical JSON) under its id; false when it was already there.
    async fn put_bundle(
        &self,
        id: &str,
        files_json: &str,
        count: usize,
    ) -> Result<bool, StoreError>;
    /// The canonical JSON of a bundle.
    async fn bundle(&self, id: &str) -> Result<Option<String>, StoreError>;
    async fn bundles(&self) -> Result<Vec<BundleInfo>, StoreError>;

    /// Points `env` at `bundle_id`, remembering what it pointed at. False when no such bundle.
    async fn deploy(&self, env: &str, bundle_id: &str, action: &str) -> Result<bool, StoreError>;
    async fn envs(&self) -> Result<Vec<EnvInfo>, StoreError>;
    async fn env(&self, env: &str) -> Result<Option<EnvInfo>, StoreError>;
    /// Points `env` back at the deployment before the current one.
    async fn rollback(&self, env: &str) -> Result<Result<EnvInfo, RollbackError>, StoreError>;

    /// Commits a queued run; with an idempotency key already used in the env, returns that run.
    async fn submit(&self, run: NewRun) -> Result<Submitted, StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError>;
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError>;
    /// The committed steps of a run, in order, each decoded or with why it cannot be.
    async fn stored_steps(&self, run_id: &str) -> Result<Vec<StoredStep>, StoreError>;
    /// The committed steps of a run, in order; an error if any cannot be decoded.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        StoredStep::records(self.stored_steps(run_id).await?)
    }
    /// Cancels a queued run now; asks a running one to stop. `None`: no such run.
    async fn cancel(&self, id: &str, now: i64) -> Result<Option<RunRow>, StoreError>;

    /// Atomically takes the oldest queued run, leasing it to `owner` until `lease_until` (the
    /// claim counts as the lease's first heartbeat).
    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .claim_batch(owner, now, lease_until, 1)
            .await?
            .into_iter()
            .next())
    }
    /// Atomically takes up to `limit` of the oldest queued runs, oldest first, leasing each to
    /// `owner` until `lease_until`, counting an attempt on each.
    async fn claim_batch(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<RunRow>, StoreError>;
    /// [`ServerStore::claim_batch`], each run with the steps earlier attempts committed (a
    /// resumed run goes on after them), read in the claim's own round trip where the store can.
    async fn claim_with_steps(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let runs = self.claim_batch(owner, now, lease_until, limit).await?;
        let mut claimed = Vec::with_capacity(runs.len());
        for run in runs {
            let steps = self.steps(&run.id).await;
            claimed.push(Claimed { run, steps });
        }
        Ok(claimed)
    }
    /// Extends a lease. `None`: the lease is lost; else whether a cancel was requested.
    async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<bool>, StoreError>;
    /// Commits one finished turn of an agent step (replacing one from an earlier attempt), so a
    /// resumed run goes on after it.
    async fn record_turn(&self, turn: &AgentTurn) -> Result<(), StoreError>;
    /// The committed agent turns of a run, by step and turn.
    async fn turns(&self, run_id: &str) -> Result<Vec<AgentTurn>, StoreError>;
    /// Commits one finished step (replacing one from an earlier attempt; the commit time kept,
    /// `steps.created_at`, stays the first one, so a step committed twice can be told), only
    /// while `owner` holds the run's lease. False: the lease is lost and nothing was written;
    /// the caller must stop the run.
    async fn record_step(
        &self,
        run_id: &str,
        owner: &str,
        step: &StepRecord,
    ) -> Result<bool, StoreError>;
    /// Ends a run the owner holds, committing `last_step` (the run's last finished step, not
    /// yet recorded) in the same transaction; false when it no longer holds it (nothing is
    /// written then).
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        result: &RunResult,
        last_step: Option<&StepRecord>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Gives a held run back to the queue (shutting down), not counting the attempt.
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// Re-queues runs whose lease expired (their worker died); fails those claimed
    /// `max_attempts` times. Returns the ids of runs re-queued or ended.
    async fn reclaim_expired(&self, now: i64, max_attempts: u32)
    -> Result<Vec<String>, StoreError>;
    /// At start, before any claim: re-queues (or fails or cancels, as
    /// [`ServerStore::reclaim_expired`] does) the runs a previous process left running without
    /// waiting for their leases to expire. Only a store with one process per database (SQLite)
    /// can know nobody else holds them; others do nothing and rely on lease expiry.
    async fn recover_abandoned(
        &self,
        _now: i64,
        _max_attempts: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// The steps committed at or after `since_ms`, in runs of `env` (every env with `None`),
    /// for `GET /v1/usage`.
    async fn usage_steps(
        &self,
        env: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<UsageStep>, StoreError>;
    /// The known USD of the steps committed at or after `since_ms` in runs of `env` (and of
    /// `flow` when given) other than `exclude_run`: the spend `max_cost_per_day` checks.
    async fn spent(
        &self,
        env: &str,
        flow: Option<&str>,
        since_ms: i64,
        exclude_run: &str,
    ) -> Result<f64, StoreError>;

    /// How many runs are in each state (states with none may be left out): the same answer
    /// from every replica, for `/metrics`.
    async fn run_counts(&self) -> Result<Vec<(RunState, u64)>, StoreError>;

    /// Leases up to `limit` webhook deliveries that are due (pending, `next_attempt_at <= now`,
    /// no live lease) to `owner` until `lease_until`, counting an attempt on each.
    ///
    /// Every method that ends a run (`finish`, `cancel` of a queued run, `reclaim_expired`)
    /// commits, in the same transaction, a pending delivery due at once for a run that has a
    /// `webhook_url` (at most one per run).
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Records how an attempt went and drops the lease; false when `owner` no longer holds it.
    async fn settle_delivery(
        &self,
        run_id: &str,
        owner: &str,
        outcome: &DeliveryOutcome,
        now: i64,
    ) -> Result<bool, StoreError>;

    async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError>;

    /// Upserts pushed records by `(kind, id)` in one transaction, remembering `key_id` as
    /// the pusher of each new or changed one; returns how many were new or changed.
    async fn push_records(
        &self,
        records: &[SyncRecord],
        key_id: &str,
        now: i64,
    ) -> Result<u64, StoreError>;
    /// Pushed records, newest push first (ties by kind and id).
    async fn synced_records(
        &self,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SyncedRecord>, StoreError>;
    /// The deployment history after `after` (a `seq`), oldest first.
    async fn deployments(&self, after: i64, limit: u32) -> Result<Vec<Deployment>, StoreError>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError>;

    /// Changes made through the database by any process (this one included), as they commit.
    /// `None`: the store has no such feed (SQLite serves one process, which wakes itself);
    /// events may be dropped, so callers keep polling as well. Call within a tokio runtime.
    fn subscribe(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        None
    }
}
