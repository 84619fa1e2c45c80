//! `flowrun sync`: developers push their local runs, test runs and evaluations (upserted by
//! kind and id, with the pushing key remembered) and pull the deployment history. Any valid
//! key may sync (run, deploy or admin); deployments are filtered to the key's environments.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Body;
use crate::auth::Principal;
use crate::error::{AppError, ErrorBody};
use crate::state::Shared;
use crate::store::{Deployment, SyncRecord, SyncedRecord};

/// The most records one push may carry.
pub const MAX_BATCH: usize = 1000;

const KINDS: [&str; 3] = ["run", "test_run", "eval"];

/// A batch of records to upsert.
#[derive(Deserialize, ToSchema)]
pub struct PushBody {
    pub records: Vec<SyncRecord>,
}

/// What a push changed.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Pushed {
    /// Records in the batch.
    pub received: u64,
    /// Records that were new or differed from the stored copy.
    pub stored: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SyncedList {
    /// Most recently pushed first.
    pub records: Vec<SyncedRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    /// Oldest first, only environments the key may read.
    pub deployments: Vec<Deployment>,
    /// The cursor of the next pull (`after`): the last `seq` looked at.
    pub next_after: i64,
}

/// `POST /v1/sync/records`: upserts a batch of local records in one transaction.
#[utoipa::path(post, path = "/v1/sync/records", tag = "sync", security(("bearer" = [])),
    request_body(content = PushBody, description = "At most 1,000 records"),
    responses(
        (status = 200, description = "Stored", body = Pushed),
        (status = 400, description = "A bad record", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody)
    ))]
pub async fn push(
    State(shared): State<Shared>,
    who: Principal,
    Body(body): Body<PushBody>,
) -> Result<Json<Pushed>, AppError> {
    if body.records.len() > MAX_BATCH {
        return Err(AppError::bad_field(
            "batch_too_large",
            "records",
            format!("at most {MAX_BATCH} records per push; send several batches"),
        ));
    }
    for (i, r) in body.records.iter().enumerate() {
        if !KINDS.contains(&r.kind.as_str()) {
            return Err(AppError::bad_field(
                "invalid_kind",
                format!("records[{i}].kind"),
                "one of run, test_run, eval",
            ));
        }
        if r.id.is_empty() || r.id.len() > 128 || r.id.chars().any(char::is_control) {
            return Err(AppError::bad_field(
                "invalid_id",
                format!("records[{i}].id"),
                "1 to 128 printable characters",
            ));
        }
    }
    let now = flowrun_core::event::now_ms();
    let stored = shared
        .store
        .push_records(&body.records, &who.key_id, now)
        .await?;
    tracing::info!(
        key_id = who.key_id,
        received = body.records.len(),
        stored,
        "records pushed"
    );
    Ok(Json(Pushed {
        received: body.records.len() as u64,
        stored,
    }))
}

/// `GET /v1/sync/records?kind=&limit=`: pushed records with who pushed them.
#[utoipa::path(get, path = "/v1/sync/records", tag = "sync", security(("bearer" = [])),
    params(
        ("kind" = Option<String>, Query, description = "Only `run`, `test_run` or `eval`"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)")
    ),
    responses(
        (status = 200, description = "The records", body = SyncedList),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody)
    ))]
pub async fn list(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    // Any valid key may read what was pushed.
    _who: Principal,
) -> Result<Json<SyncedList>, AppError> {
    let kind = query.get("kind").map(String::as_str);
    if let Some(k) = kind
        && !KINDS.contains(&k)
    {
        return Err(AppError::bad_field(
            "invalid_kind",
            "kind",
            "one of run, test_run, eval",
        ));
    }
    let limit = limit(&query, 100)?;
    let records = shared.store.synced_records(kind, limit).await?;
    Ok(Json(SyncedList { records }))
}

/// `GET /v1/sync/deployments?after=&limit=`: the deployment history after a cursor.
#[utoipa::path(get, path = "/v1/sync/deployments", tag = "sync", security(("bearer" = [])),
    params(
        ("after" = Option<i64>, Query, description = "Only entries with a larger `seq` (default 0)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)")
    ),
    responses(
        (status = 200, description = "The entries, oldest first", body = DeploymentList),
        (status = 400, description = "Bad cursor", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody)
    ))]
pub async fn deployments(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    who: Principal,
) -> Result<Json<DeploymentList>, AppError> {
    let after = match query.get("after") {
        None => 0,
        Some(a) => a.parse::<i64>().map_err(|_| {
            AppError::bad_field("invalid_after", "after", "a `seq` from an earlier pull")
        })?,
    };
    let limit = limit(&query, 100)?;
    let rows = shared.store.deployments(after, limit).await?;
    let next_after = rows.last().map_or(after, |d| d.seq);
    let deployments = rows.into_iter().filter(|d| who.sees_env(&d.env)).collect();
    Ok(Json(DeploymentList {
        deployments,
        next_after,
    }))
}

fn limit(query: &HashMap<String, String>, default: u32) -> Result<u32, AppError> {
    match query.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| {
                AppError::bad_field("invalid_limit", "limit", "a number from 1 to 1000")
            }),
    }
}
