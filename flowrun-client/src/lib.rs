//! A typed async client of the flowrun server (`flowrun serve`): upload bundles, deploy,
//! promote and roll back environments, submit runs (with idempotency keys) and read them with
//! long polling, and check the signatures of webhook deliveries ([`verify_webhook`]). No
//! server dependencies: reqwest and serde (plus HMAC-SHA256 for webhooks).
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowrun_client::ClientError> {
//! let client = flowrun_client::Client::new("http://127.0.0.1:8080", Some("frk_…".into()))?;
//! let run = client.submit("prod", "triage", &serde_json::json!({"ticket": "…"}), Some("req-1")).await?;
//! let done = client.get_run(&run.id, Some(std::time::Duration::from_secs(30))).await?;
//! println!("{:?} {:?}", done.status, done.output);
//! # Ok(()) }
//! ```

mod deployed;
mod usage;
mod webhook;

use std::time::Duration;

pub use deployed::{Bundle, Deployed};
pub use usage::{DayCost, Percentiles, UsageCost, UsageGroup, UsageQuery, UsageReport};
pub use webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, WebhookError, WebhookEvent, verify_webhook};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
        /// Field-level problems (`invalid_input`), each `{field, message}`.
        details: Vec<FieldError>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not what this client understands.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// The server's error code, if the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One field-level problem.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    pub path: String,
    pub text: String,
}

/// The answer to an upload.
#[derive(Debug, Clone, Deserialize)]
pub struct Uploaded {
    pub id: String,
    /// False when the server already had this exact bundle.
    pub created: bool,
}

/// A stored version.
#[derive(Debug, Clone, Deserialize)]
pub struct BundleInfo {
    pub id: String,
    pub files: usize,
    pub created_at: i64,
}

/// What an environment runs.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvInfo {
    pub name: String,
    pub bundle_id: String,
    pub updated_at: i64,
    /// Earlier deployments a rollback returns to, newest first.
    pub previous: Vec<String>,
}

/// A local record pushed by `flowrun sync` (`kind`: `run`, `test_run` or `eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub kind: String,
    pub id: String,
    pub record: Value,
}

/// What one push changed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Pushed {
    pub received: u64,
    /// New or changed records.
    pub stored: u64,
}

/// A pushed record as the server keeps it, with the id of the key that pushed it.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncedRecord {
    pub kind: String,
    pub id: String,
    pub record: Value,
    pub pushed_by: String,
    pub pushed_at: i64,
}

/// One entry of the deployment history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub seq: i64,
    pub env: String,
    pub bundle_id: String,
    pub action: String,
    pub rolled_back: bool,
    pub created_at: i64,
}

/// A page of the deployment history and the cursor of the next one.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentPage {
    pub deployments: Vec<Deployment>,
    pub next_after: i64,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// The version an environment runs, with its files.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvBundle {
    pub id: String,
    pub env: String,
    pub files: Vec<BundleFile>,
}

/// The answer to a submission.
#[derive(Debug, Clone, Deserialize)]
pub struct Submitted {
    pub id: String,
    pub status: RunStatus,
}

/// A run.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub id: String,
    pub env: String,
    pub flow: String,
    pub bundle_id: String,
    pub input: Value,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Token counts: `input_tokens`, `output_tokens`, …
    pub usage: Option<Value>,
    /// `{"usd": …, "unknown_models": […]}`.
    pub cost: Option<Value>,
    pub attempts: u32,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Per-step records (only from [`Client::get_run`] and [`Client::cancel`]).
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One finished step of a run.
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub step_index: u32,
    pub step_id: String,
    pub prompt: String,
    pub status: String,
    pub output: Option<Value>,
    pub model: Option<String>,
    pub usage: Option<Value>,
    pub cost: Option<Value>,
    pub error: Option<String>,
}

/// Options of a submission.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// A repeat with the same key (in the same environment) returns the same run.
    pub idempotency_key: Option<String>,
    /// An `http(s)` URL the server POSTs a signed [`WebhookEvent`] to when the run ends (sent
    /// as the `Flowrun-Webhook` header; the server needs a webhook secret).
    pub webhook: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub env: Option<String>,
    pub flow: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: Option<u32>,
}

/// The client: a base URL (`http://host:port`) and an API key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    field: Option<String>,
    #[serde(default)]
    details: Vec<FieldError>,
}

impl Client {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self::with_http(http, base, token))
    }

    /// With a reqwest client of your own (timeouts, proxies, TLS).
    pub fn with_http(
        http: reqwest::Client,
        base: impl Into<String>,
        token: Option<String>,
    ) -> Self {
        Client {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => ClientError::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                    field: b.error.field,
                    details: b.error.details,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: status_code(status),
                    message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                    field: None,
                    details: Vec::new(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Uploads a project's files (`flowrun.yaml`, `prompts/`, `flows/`, `partials/`).
    pub async fn upload_bundle(&self, files: &[BundleFile]) -> Result<Uploaded, ClientError> {
        Self::send(
            self.request(Method::PUT, "/v1/bundles")
                .json(&json!({ "files": files })),
        )
        .await
    }

    /// Every stored version, newest first.
    pub async fn bundles(&self) -> Result<Vec<BundleInfo>, ClientError> {
        #[derive(Deserialize)]
        struct L {
            bundles: Vec<BundleInfo>,
        }
        let l: L = Self::send(self.request(Method::GET, "/v1/bundles")).await?;
        Ok(l.bundles)
    }

    pub async fn deploy(&self, env: &str, bundle_id: &str) -> Result<EnvInfo, ClientError> {
        Self::send(
            self.request(Method::POST, &format!("/v1/envs/{}/deploy", seg(env)))
                .json(&json!({ "bundle_id": bundle_id })),
        )
        .await
    }

    /// What each environment runs.
    pub async fn envs(&self) -> Result<Vec<EnvInfo>, ClientError> {
        #[derive(Deserialize)]
        struct L {
            envs: Vec<EnvInfo>,
        }
        let l: L = Self::send(self.request(Method::GET, "/v1/envs")).await?;
        Ok(l.envs)
    }

    /// Upserts a batch (at most 1,000) of local records by kind and id.
    pub async fn push_records(&self, records: &[SyncRecord]) -> Result<Pushed, ClientError> {
        Self::send(
            self.request(Method::POST, "/v1/sync/records")
                .json(&json!({ "records": records })),
        )
        .await
    }

    /// Pushed records, most recent first (`kind`: `run`, `test_run` or `eval`).
    pub async fn synced_records(
        &self,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SyncedRecord>, ClientError> {
        #[derive(Deserialize)]
        struct L {
            records: Vec<SyncedRecord>,
        }
        let mut req = self
            .request(Method::GET, "/v1/sync/records")
            .query(&[("limit", limit.to_string())]);
        if let Some(k) = kind {
            req = req.query(&[("kind", k)]);
        }
        let l: L = Self::send(req).await?;
        Ok(l.records)
    }

    /// The deployment history after the cursor `after` (0 for all), oldest first.
    pub async fn deployments(&self, after: i64, limit: u32) -> Result<DeploymentPage, ClientError> {
        Self::send(
            self.request(Method::GET, "/v1/sync/deployments")
                .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
        )
        .await
    }

    /// The files of the version `env` runs.
    pub async fn env_bundle(&self, env: &str) -> Result<EnvBundle, ClientError> {
        Self::send(self.request(Method::GET, &format!("/v1/envs/{}/bundle", seg(env)))).await
    }

    /// Deploys to `to` what `from` runs.
    pub async fn promote(&self, from: &str, to: &str) -> Result<EnvInfo, ClientError> {
        Self::send(
            self.request(Method::POST, &format!("/v1/envs/{}/promote", seg(to)))
                .json(&json!({ "from": from })),
        )
        .await
    }

    /// Points `env` back at its previous deployment.
    pub async fn rollback(&self, env: &str) -> Result<EnvInfo, ClientError> {
        Self::send(self.request(Method::POST, &format!("/v1/envs/{}/rollback", seg(env)))).await
    }

    /// Queues a run of `flow` in `env`; with an idempotency key, a repeat returns the same run.
    pub async fn submit(
        &self,
        env: &str,
        flow: &str,
        input: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let options = SubmitOptions {
            idempotency_key: idempotency_key.map(str::to_string),
            webhook: None,
        };
        self.submit_with(env, flow, input, &options).await
    }

    /// Queues a run with options (idempotency key, webhook URL).
    pub async fn submit_with(
        &self,
        env: &str,
        flow: &str,
        input: &Value,
        options: &SubmitOptions,
    ) -> Result<Submitted, ClientError> {
        let mut req = self
            .request(
                Method::POST,
                &format!("/v1/envs/{}/flows/{}/runs", seg(env), seg(flow)),
            )
            .json(input);
        if let Some(k) = &options.idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(url) = &options.webhook {
            req = req.header("Flowrun-Webhook", url);
        }
        Self::send(req).await
    }

    /// A run; with `wait`, answers when it ends or after `wait` (the server caps it at 60 s).
    pub async fn get_run(&self, id: &str, wait: Option<Duration>) -> Result<Run, ClientError> {
        let mut req = self.request(Method::GET, &format!("/v1/runs/{}", seg(id)));
        if let Some(w) = wait {
            req = req.query(&[("wait", format!("{}ms", w.as_millis()))]);
        }
        Self::send(req).await
    }

    /// Waits for a run to end, long-polling as long as it takes.
    pub async fn wait_run(&self, id: &str) -> Result<Run, ClientError> {
        loop {
            let run = self.get_run(id, Some(Duration::from_secs(30))).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<Run, ClientError> {
        Self::send(self.request(Method::POST, &format!("/v1/runs/{}/cancel", seg(id)))).await
    }

    /// Runs, newest first (without their steps).
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, ClientError> {
        #[derive(Deserialize)]
        struct L {
            runs: Vec<Run>,
        }
        let mut q: Vec<(&str, String)> = Vec::new();
        q.extend(filter.env.clone().map(|e| ("env", e)));
        q.extend(filter.flow.clone().map(|f| ("flow", f)));
        if let Some(s) = filter.status {
            let s = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            q.push(("status", s));
        }
        q.extend(filter.limit.map(|l| ("limit", l.to_string())));
        let l: L = Self::send(self.request(Method::GET, "/v1/runs").query(&q)).await?;
        Ok(l.runs)
    }

    /// Tokens, cost, calls, error rate and latency of deployed runs, grouped (`GET /v1/usage`).
    pub async fn usage(&self, query: &UsageQuery) -> Result<UsageReport, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        q.extend(query.env.clone().map(|e| ("env", e)));
        q.extend(query.since.clone().map(|s| ("since", s)));
        if !query.by.is_empty() {
            q.push(("by", query.by.join(",")));
        }
        Self::send(self.request(Method::GET, "/v1/usage").query(&q)).await
    }

    /// The server's Prometheus metrics (OpenMetrics text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.request(Method::GET, "/metrics").send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: status_code(status),
                message: text.chars().take(500).collect(),
                field: None,
                details: Vec::new(),
            });
        }
        Ok(text)
    }

    /// The server's OpenAPI document.
    pub async fn openapi(&self) -> Result<Value, ClientError> {
        Self::send(self.request(Method::GET, "/v1/openapi.json")).await
    }

    /// Whether the server is up and its database reachable.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let resp = self.request(Method::GET, "/readyz").send().await?;
        Ok(resp.status().is_success())
    }
}

fn status_code(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_")
}

/// Percent-encodes a path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
