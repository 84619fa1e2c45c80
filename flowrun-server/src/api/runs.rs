//! Runs: submit (committed before the 202), read with long polling, cancel, list.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Body, check_env_name};
use crate::auth::{Principal, Role};
use crate::error::AppError;
use crate::state::Shared;
use crate::store::{NewRun, RunFilter, RunRow, RunState};

/// The longest a `?wait=` long poll lasts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// `POST /v1/envs/{env}/flows/{flow}/runs`: checks the input against the flow deployed in
/// `env`, commits a queued run and answers 202 (a repeated `Idempotency-Key`: the same run).
pub async fn submit(
    State(shared): State<Shared>,
    Path((env, flow)): Path<(String, String)>,
    headers: HeaderMap,
    who: Principal,
    Body(input): Body<Value>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    check_env_name(&env)?;
    who.require(&env, Role::Run)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255);
            Some(k.ok_or_else(|| {
                AppError::bad_field(
                    "invalid_idempotency_key",
                    "Idempotency-Key",
                    "the key must be 1 to 255 visible ASCII characters",
                )
            })?)
        }
    };
    let deployed = shared
        .store
        .env(&env)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("environment `{env}` has no deployment")))?;
    let executor = shared.executor(&deployed.bundle_id).await?;
    let project = executor.project();
    let (kind, name) = project
        .resolve_target(&flow)
        .map_err(|m| AppError::NotFound(format!("in environment `{env}`: {m}")))?;
    let decl = match kind {
        flowrun_core::project::TargetKind::Prompt => &project.prompts[&name].spec.input,
        flowrun_core::project::TargetKind::Flow => &project.flows[&name].spec.input,
    };
    let given = match &input {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(AppError::bad_field(
                "invalid_input",
                "input",
                "the body must be a JSON object of named input values",
            ));
        }
    };
    flowrun_core::spec::input::resolve_inputs(decl, &given).map_err(AppError::InvalidInput)?;
    let submitted = shared
        .store
        .submit(NewRun {
            id: flowrun_core::new_id(),
            env: env.clone(),
            flow: flow.clone(),
            bundle_id: deployed.bundle_id,
            input: Value::Object(given),
            idempotency_key: key.map(str::to_string),
            created_at: flowrun_core::event::now_ms(),
        })
        .await?;
    let run = submitted.run;
    if !submitted.created {
        if run.flow != flow || run.input != input && !(input.is_null() && run.input == json!({})) {
            return Err(AppError::Conflict {
                code: "idempotency_conflict",
                message: "this Idempotency-Key was used for a different request".into(),
            });
        }
        return Ok((
            StatusCode::OK,
            Json(json!({ "id": run.id, "status": run.status })),
        ));
    }
    shared.queued.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": run.id, "status": run.status })),
    ))
}

/// A run as the API shows it.
#[derive(Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRow,
    pub steps: Vec<Value>,
}

/// `GET /v1/runs/{id}[?wait=30s]`: the run; with `wait`, answers when it ends or the wait is
/// over (at most 60 s).
pub async fn get(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    who: Principal,
) -> Result<Json<RunView>, AppError> {
    let wait = match query.get("wait") {
        None => Duration::ZERO,
        Some(w) => humantime::parse_duration(w)
            .map_err(|e| {
                AppError::bad_field("invalid_wait", "wait", format!("`{w}`: {e} (e.g. `30s`)"))
            })?
            .min(MAX_WAIT),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut run = visible_run(&shared, &who, &id).await?;
    while !run.status.is_terminal() && tokio::time::Instant::now() < deadline {
        let notify = shared.waiter(&id);
        {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            run = visible_run(&shared, &who, &id).await?;
            if run.status.is_terminal() {
                break;
            }
            // Also re-reads now and then: another process may have finished the run.
            let step = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(step) => {}
                _ = shared.stopping.cancelled() => break,
            }
        }
        drop(notify);
        shared.forget_waiter(&id);
        run = visible_run(&shared, &who, &id).await?;
    }
    view(&shared, run).await.map(Json)
}

/// `POST /v1/runs/{id}/cancel`.
pub async fn cancel(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    who: Principal,
) -> Result<Json<RunView>, AppError> {
    visible_run(&shared, &who, &id).await?;
    let run = shared
        .store
        .cancel(&id, flowrun_core::event::now_ms())
        .await?
        .ok_or_else(|| not_found(&id))?;
    if run.status == RunState::Running {
        shared.cancel_local(&id);
    } else if run.status.is_terminal() {
        shared.wake(&id);
    }
    view(&shared, run).await.map(Json)
}

/// `GET /v1/runs?env=&flow=&status=&limit=`: newest first, without steps.
pub async fn list(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    who: Principal,
) -> Result<Json<Value>, AppError> {
    let env = match query.get("env") {
        Some(e) => Some(e.clone()),
        None if who.env == "*" => None,
        None => Some(who.env.clone()),
    };
    match &env {
        Some(e) => who.require(e, Role::Run)?,
        None => who.require_role(Role::Run)?,
    }
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            AppError::bad_field(
                "invalid_status",
                "status",
                "one of queued, running, succeeded, failed, cancelled",
            )
        })?),
    };
    let limit = match query.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| {
                AppError::bad_field("invalid_limit", "limit", "a number from 1 to 500")
            })?,
    };
    let runs = shared
        .store
        .runs(&RunFilter {
            env,
            flow: query.get("flow").cloned(),
            status,
            limit,
        })
        .await?;
    Ok(Json(json!({ "runs": runs })))
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no run `{id}`"))
}

/// The run, if the key may read it (runs of other environments do not exist for it).
async fn visible_run(shared: &Shared, who: &Principal, id: &str) -> Result<RunRow, AppError> {
    let run = shared.store.run(id).await?.ok_or_else(|| not_found(id))?;
    if !who.sees_env(&run.env) {
        return Err(not_found(id));
    }
    who.require(&run.env, Role::Run)?;
    Ok(run)
}

async fn view(shared: &Shared, run: RunRow) -> Result<RunView, AppError> {
    let steps = shared.store.steps(&run.id).await?;
    let steps = steps
        .into_iter()
        .map(|s| {
            json!({
                "step_index": s.step_index,
                "step_id": s.step_id,
                "prompt": s.prompt,
                "status": s.status,
                "output": s.output,
                "model": s.model,
                "usage": s.usage,
                "cost": s.cost,
                "latency_ms": s.latency_ms,
                "attempts": s.attempts,
                "error": s.error,
            })
        })
        .collect();
    Ok(RunView { run, steps })
}
