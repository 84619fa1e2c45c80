//! `GET /v1/usage`: tokens, cost, calls, error rate and latency percentiles of the committed
//! steps of deployed runs, grouped like `flowrun cost` groups the local history (the
//! aggregation is flowrun-core's `usage`, shared with the CLI).
//!
//! The server keeps one record per step (not per call attempt): a step counts its attempts
//! as calls, all of them as errors when it failed, all but the last when it succeeded, and its
//! latency (attempts and backoff together) as one latency sample.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use flowrun_core::cost::Cost;
use flowrun_core::event::RunStatus;
use flowrun_core::usage::{self, Dimension, UsageRow};
use indexmap::IndexMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{AppError, ErrorBody};
use crate::state::Shared;
use crate::store::UsageStep;

/// A cost that may be partly unknown.
#[derive(Serialize, ToSchema)]
pub struct CostView {
    /// The known part, in USD.
    pub usd: f64,
    /// Models without a price: when not empty, the total is unknown (`usd` is a lower bound).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_models: Vec<String>,
}

/// Latency percentiles (nearest rank) in ms; absent without calls.
#[derive(Serialize, ToSchema)]
pub struct PercentilesView {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

/// The totals of one group.
#[derive(Serialize, ToSchema)]
pub struct UsageGroupView {
    /// The group's value of each dimension grouped by, in `by` order (empty for the total).
    #[schema(value_type = HashMap<String, String>)]
    pub key: IndexMap<String, String>,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost: CostView,
    pub latency_ms: PercentilesView,
}

/// The cost of one UTC day.
#[derive(Serialize, ToSchema)]
pub struct DayCostView {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub cost: CostView,
}

/// A cost and usage report.
#[derive(Serialize, ToSchema)]
pub struct UsageView {
    /// Only steps committed from this time on (ms since the epoch).
    pub since_ms: Option<i64>,
    /// The dimensions grouped by: `flow`, `prompt`, `version`, `model`, `provider`,
    /// `environment`, `day`.
    pub by: Vec<String>,
    /// One per distinct key, sorted by key.
    pub groups: Vec<UsageGroupView>,
    pub total: UsageGroupView,
    /// Every day with calls, oldest first.
    pub cost_per_day: Vec<DayCostView>,
}

/// `GET /v1/usage?env=&since=&by=`.
#[utoipa::path(get, path = "/v1/usage", tag = "runs", security(("bearer" = [])),
    params(
        ("env" = Option<String>, Query, description = "Only this environment (default: the key's; every one for a `*` key)"),
        ("since" = Option<String>, Query, description = "A duration back from now (`7d`, `12h`) or a UTC date (`2026-11-01`); default: everything"),
        ("by" = Option<String>, Query, description = "Comma-separated dimensions: flow, prompt, version (bundle), model, provider, environment, day")
    ),
    responses(
        (status = 200, description = "The report", body = UsageView),
        (status = 400, description = "Bad `since` or `by`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not read this environment", body = ErrorBody)
    ))]
pub async fn usage(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    who: Principal,
) -> Result<Json<UsageView>, AppError> {
    let env = who.read_scope(query.get("env"))?;
    let since_ms = match query.get("since") {
        None => None,
        Some(s) => Some(
            usage::parse_since(s, flowrun_core::event::now_ms())
                .map_err(|e| AppError::bad_field("invalid_since", "since", e))?,
        ),
    };
    let by = match query.get("by") {
        None => Vec::new(),
        Some(b) => {
            Dimension::parse_list(b).map_err(|e| AppError::bad_field("invalid_by", "by", e))?
        }
    };
    let steps = shared
        .store
        .usage_steps(env.as_deref(), since_ms.unwrap_or(i64::MIN))
        .await?;
    let rows: Vec<UsageRow> = steps.into_iter().map(row).collect();
    Ok(Json(view(usage::aggregate(&rows, &by, since_ms))))
}

/// A step as a usage row (see the module doc for how attempts count).
fn row(step: UsageStep) -> UsageRow {
    let r = step.record;
    let (provider, model) = match r.model.as_deref().and_then(|m| m.split_once('/')) {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => ("-".into(), r.model.clone().unwrap_or_else(|| "-".into())),
    };
    let calls = u64::from(r.attempts);
    let errors = match r.status {
        RunStatus::Succeeded => calls.saturating_sub(1),
        _ => calls,
    };
    UsageRow {
        flow: Some(step.flow),
        prompt: r.prompt,
        version: step.bundle_id,
        provider,
        model,
        environment: step.env,
        at_ms: step.committed_at,
        calls,
        errors,
        input_tokens: r.usage.input_tokens,
        output_tokens: r.usage.output_tokens,
        cached_tokens: r.usage.cached_tokens,
        cost: r.cost,
        latency_ms: r.latency_ms,
    }
}

fn cost_view(c: Cost) -> CostView {
    CostView {
        usd: c.usd,
        unknown_models: c.unknown_models.into_iter().collect(),
    }
}

fn group_view(g: usage::UsageGroup) -> UsageGroupView {
    UsageGroupView {
        key: g.key,
        calls: g.calls,
        errors: g.errors,
        error_rate: g.error_rate,
        input_tokens: g.input_tokens,
        output_tokens: g.output_tokens,
        cached_tokens: g.cached_tokens,
        cost: cost_view(g.cost),
        latency_ms: PercentilesView {
            p50: g.latency_ms.p50,
            p95: g.latency_ms.p95,
            p99: g.latency_ms.p99,
        },
    }
}

fn view(r: usage::UsageReport) -> UsageView {
    UsageView {
        since_ms: r.since_ms,
        by: r.by.iter().map(|d| d.as_str().to_string()).collect(),
        groups: r.groups.into_iter().map(group_view).collect(),
        total: group_view(r.total),
        cost_per_day: r
            .cost_per_day
            .into_iter()
            .map(|d| DayCostView {
                day: d.day,
                cost: cost_view(d.cost),
            })
            .collect(),
    }
}
