//! Runs: submit (committed before the 202, optionally naming a webhook), read with long
//! polling, cancel, list.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{Body, check_env_name};
use crate::auth::{Principal, Role};
use crate::error::{AppError, ErrorBody};
use crate::state::Shared;
use crate::store::{NewRun, RunFilter, RunRow, RunState};
use crate::webhook;

/// The answer to a submission.
#[derive(Serialize, ToSchema)]
pub struct SubmitAnswer {
    pub id: String,
    pub status: RunState,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    /// Newest first, without steps.
    pub runs: Vec<RunRow>,
}

/// The longest a `?wait=` long poll lasts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// `POST /v1/envs/{env}/flows/{flow}/runs`: checks the input against the flow deployed in
/// `env`, commits a queued run and answers 202 (a repeated `Idempotency-Key`: the same run).
#[utoipa::path(post, path = "/v1/envs/{env}/flows/{flow}/runs", tag = "runs", security(("bearer" = [])),
    params(
        ("env" = String, Path, description = "The environment"),
        ("flow" = String, Path, description = "The flow (or prompt) to run"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 characters; a repeat in the same environment returns the same run"),
        ("Flowrun-Webhook" = Option<String>, Header,
            description = "An `http(s)` URL POSTed a signed JSON body when the run ends (needs a server webhook secret)")
    ),
    request_body(content = Object, description = "The flow's named input values"),
    responses(
        (status = 202, description = "Queued and committed", body = SubmitAnswer),
        (status = 200, description = "A repeat of an earlier submission (same `Idempotency-Key`)", body = SubmitAnswer),
        (status = 400, description = "Invalid input (field-level `details`), header or webhook", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not run in this environment", body = ErrorBody),
        (status = 404, description = "No deployment or no such flow", body = ErrorBody),
        (status = 409, description = "The `Idempotency-Key` was used for a different request", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody)
    ))]
pub async fn submit(
    State(shared): State<Shared>,
    Path((env, flow)): Path<(String, String)>,
    headers: HeaderMap,
    who: Principal,
    Body(input): Body<Value>,
) -> Result<(StatusCode, Json<SubmitAnswer>), AppError> {
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
    let webhook_url = match headers.get(webhook::URL_HEADER) {
        None => None,
        Some(v) => {
            if !shared.webhooks {
                return Err(AppError::bad_field(
                    "webhooks_disabled",
                    webhook::URL_HEADER,
                    "this server has no webhook signing secret; start it with \
                     `FLOWRUN_WEBHOOK_SECRET` set (or `--webhook-secret-env VAR`)",
                ));
            }
            let text = v.to_str().map_err(|_| {
                AppError::bad_field(
                    "invalid_webhook",
                    webhook::URL_HEADER,
                    "the webhook URL must be visible ASCII",
                )
            })?;
            Some(webhook::check_url(text)?)
        }
    };
    let bundle_id = shared
        .deployed_bundle(&env)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("environment `{env}` has no deployment")))?;
    let executor = shared.executor(&bundle_id).await?;
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
            bundle_id,
            input: Value::Object(given),
            idempotency_key: key.map(str::to_string),
            webhook_url: webhook_url.clone(),
            created_at: flowrun_core::event::now_ms(),
        })
        .await?;
    let run = submitted.run;
    if !submitted.created {
        let same_input =
            run.input == input || input.is_null() && run.input == Value::Object(Map::new());
        if run.flow != flow || !same_input || run.webhook_url != webhook_url {
            return Err(AppError::Conflict {
                code: "idempotency_conflict",
                message: "this Idempotency-Key was used for a different request".into(),
            });
        }
        return Ok((
            StatusCode::OK,
            Json(SubmitAnswer {
                id: run.id,
                status: run.status,
            }),
        ));
    }
    shared.queued.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitAnswer {
            id: run.id,
            status: run.status,
        }),
    ))
}

/// A run as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRow,
    /// The committed steps, in order.
    pub steps: Vec<StepView>,
}

/// One finished step of a run.
#[derive(Serialize, ToSchema)]
pub struct StepView {
    pub step_index: u32,
    pub step_id: String,
    pub prompt: String,
    /// `succeeded`, `failed` or `cancelled`; `unreadable` when the step's stored record cannot
    /// be decoded (`error` says why; its other fields are then empty).
    pub status: Value,
    pub output: Option<Value>,
    /// `provider/model` that produced the output.
    pub model: Option<String>,
    pub usage: Value,
    pub cost: Value,
    pub latency_ms: u64,
    pub attempts: u32,
    pub error: Option<String>,
}

/// `GET /v1/runs/{id}[?wait=30s]`: the run; with `wait`, answers when it ends or the wait is
/// over (at most 60 s).
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The run id"),
        ("wait" = Option<String>, Query,
            description = "Long poll: answer when the run ends or after this long (`30s`, `500ms`; at most 60 s)")
    ),
    responses(
        (status = 200, description = "The run with its steps", body = RunView),
        (status = 400, description = "Bad `wait`", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such run (for this key)", body = ErrorBody)
    ))]
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

/// `POST /v1/runs/{id}/cancel`: a queued run ends now; a running one is asked to stop.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id")),
    responses(
        (status = 200, description = "The run after the request", body = RunView),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "No such run (for this key)", body = ErrorBody)
    ))]
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
#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("bearer" = [])),
    params(
        ("env" = Option<String>, Query, description = "Only this environment (default: the key's)"),
        ("flow" = Option<String>, Query, description = "Only this flow"),
        ("status" = Option<RunState>, Query, description = "Only runs in this state"),
        ("limit" = Option<u32>, Query, description = "1 to 500 (default 50)")
    ),
    responses(
        (status = 200, description = "The runs, newest first", body = RunList),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not read this environment", body = ErrorBody)
    ))]
pub async fn list(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    who: Principal,
) -> Result<Json<RunList>, AppError> {
    let env = who.read_scope(query.get("env"))?;
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
    Ok(Json(RunList { runs }))
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
    let steps = shared.store.stored_steps(&run.id).await?;
    let steps = steps
        .into_iter()
        .map(|stored| match stored.record {
            Ok(s) => StepView {
                step_index: s.step_index,
                step_id: s.step_id,
                prompt: s.prompt,
                status: serde_json::to_value(s.status).unwrap_or(Value::Null),
                output: s.output,
                model: s.model,
                usage: serde_json::to_value(s.usage).unwrap_or(Value::Null),
                cost: serde_json::to_value(&s.cost).unwrap_or(Value::Null),
                latency_ms: s.latency_ms,
                attempts: s.attempts,
                error: s.error,
            },
            // The run is still shown: one damaged step record must not hide it (or answer
            // 500 for it); the step says what is wrong.
            Err(e) => {
                tracing::warn!(run = %run.id, step = stored.step_index, error = %e,
                    "a stored step record cannot be decoded");
                StepView {
                    step_index: stored.step_index,
                    step_id: String::new(),
                    prompt: String::new(),
                    status: Value::from("unreadable"),
                    output: None,
                    model: None,
                    usage: Value::Null,
                    cost: Value::Null,
                    latency_ms: 0,
                    attempts: 0,
                    error: Some(format!(
                        "the stored record of this step cannot be read: {e}"
                    )),
                }
            }
        })
        .collect();
    Ok(RunView { run, steps })
}
