//! The server's durable state behind [`ServerStore`]: bundles, environments with their
//! deployment history, the run queue with leases, committed steps and API keys.
//!
//! One implementation today, [`SqliteStore`]; the trait is what a PostgreSQL store implements
//! next. Every method is one short transaction.

mod schema;
mod sqlite;

use async_trait::async_trait;
use flowrun_core::event::StepRecord;
use serde::Serialize;
use serde_json::Value;

pub use sqlite::SqliteStore;

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
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    pub id: String,
    pub files: usize,
    pub created_at: i64,
}

/// What an environment runs.
#[derive(Debug, Clone, Serialize)]
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
    pub created_at: i64,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub env: String,
    pub flow: String,
    pub bundle_id: String,
    pub input: Value,
    pub status: RunState,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub usage: Option<Value>,
    pub cost: Option<Value>,
    pub idempotency_key: Option<String>,
    /// How many times a worker claimed the run.
    pub attempts: u32,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
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
    /// The committed steps of a run, in order.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError>;
    /// Cancels a queued run now; asks a running one to stop. `None`: no such run.
    async fn cancel(&self, id: &str, now: i64) -> Result<Option<RunRow>, StoreError>;

    /// Atomically takes the oldest queued run, leasing it to `owner` until `lease_until`.
    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<RunRow>, StoreError>;
    /// Extends a lease. `None`: the lease is lost; else whether a cancel was requested.
    async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<bool>, StoreError>;
    /// Commits one finished step (replacing one from an earlier attempt; the commit time kept,
    /// `steps.created_at`, stays the first one, so a step committed twice can be told).
    async fn record_step(&self, run_id: &str, step: &StepRecord) -> Result<(), StoreError>;
    /// Ends a run the owner holds; false when it no longer holds it.
    async fn finish(
        &self,
        id: &str,
        owner: &str,
        result: &RunResult,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Gives a held run back to the queue (shutting down), not counting the attempt.
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// Re-queues runs whose lease expired (their worker died); fails those claimed
    /// `max_attempts` times. Returns the ids of runs re-queued or ended.
    async fn reclaim_expired(&self, now: i64, max_attempts: u32)
    -> Result<Vec<String>, StoreError>;

    async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>, StoreError>;
}
