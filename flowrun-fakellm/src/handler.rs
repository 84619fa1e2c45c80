//! The HTTP routes and the request flow shared by both APIs: record, wait,
//! validate, pick the reply (fault, script or default), then render it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::chat::{ChatRequest, Completion, RequestError, default_reply};
use crate::record::{Api, RecordedRequest};
use crate::reply::{Reply, ReplyKind};
use crate::server::ConnControl;
use crate::state::Shared;
use crate::{anthropic, openai};

/// Path of the OpenAI chat-completions endpoint.
pub const OPENAI_PATH: &str = "/v1/chat/completions";
/// Path of the Anthropic Messages endpoint.
pub const ANTHROPIC_PATH: &str = "/v1/messages";

/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(OPENAI_PATH, post(openai_route))
        .route(ANTHROPIC_PATH, post(anthropic_route))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn openai_route(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnControl>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(Api::OpenAi, &shared, &conn, &headers, &body).await
}

async fn anthropic_route(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnControl>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(Api::Anthropic, &shared, &conn, &headers, &body).await
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!("Unknown request URL: {method} {}.", uri.path());
    let mut body = openai::error_json(404, &message);
    body["error"]["code"] = Value::from("unknown_url");
    json_response(404, &body, None)
}

async fn handle(
    api: Api,
    shared: &Shared,
    conn: &ConnControl,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
    let path = match api {
        Api::OpenAi => OPENAI_PATH,
        Api::Anthropic => ANTHROPIC_PATH,
    };
    let recorded = RecordedRequest::new(api, path, headers, raw);
    let body = recorded.body.clone();
    shared.lock().requests.push(recorded);

    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }

    let parsed: Result<ChatRequest, RequestError> = match api {
        Api::OpenAi => openai::parse(&body),
        Api::Anthropic => anthropic::parse(headers, &body),
    };
    let req = match parsed {
        Ok(req) => req,
        Err(e) => {
            shared.count(ReplyKind::Error);
            shared.count_status(e.status);
            return error_response(api, e.status, &e.message, None);
        }
    };

    let mut reply = shared
        .next_reply(&req.model)
        .unwrap_or_else(|| default_reply(&req, &shared.config));
    shared.count(reply.kind());
    loop {
        match reply {
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::Hang => return std::future::pending().await,
            Reply::Reset => {
                conn.reset();
                return std::future::pending().await;
            }
            Reply::Error {
                status,
                message,
                retry_after,
            } => {
                shared.count_status(status);
                return error_response(api, status, &message, retry_after);
            }
            reply @ (Reply::Text { .. } | Reply::ToolCalls { .. }) => {
                let completion = Completion::build(api, &req, reply);
                let chunk_delay = shared.config.stream_chunk_delay;
                return match api {
                    Api::OpenAi => openai::success(&req, &completion, chunk_delay),
                    Api::Anthropic => anthropic::success(&req, &completion, chunk_delay),
                };
            }
        }
    }
}

fn error_response(api: Api, status: u16, message: &str, retry_after: Option<Duration>) -> Response {
    match api {
        Api::OpenAi => openai::error(status, message, retry_after),
        Api::Anthropic => anthropic::error(status, message, retry_after),
    }
}

/// A JSON response; with `retry_after`, also the `Retry-After` header (whole
/// seconds, rounded up) and `retry-after-ms`.
pub(crate) fn json_response(status: u16, body: &Value, retry_after: Option<Duration>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(body.to_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(delay) = retry_after {
        let millis = delay.as_millis();
        let secs = millis.div_ceil(1000);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
        headers.insert("retry-after-ms", HeaderValue::from(millis as u64));
    }
    response
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
