//! Operations endpoints, without auth: liveness, readiness (the database answers), Prometheus
//! metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::error::AppError;
use crate::state::Shared;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The database is not reachable", body = crate::error::ErrorBody)
    ))]
pub async fn readyz(State(shared): State<Shared>) -> Result<&'static str, AppError> {
    match shared.store.ping().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(AppError::Unavailable)
        }
    }
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text). Run counts and the queue depth
/// come from the database; the rest is this process's.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, description = "The database could not be read", body = crate::error::ErrorBody)
    ))]
pub async fn metrics(State(shared): State<Shared>) -> Result<impl IntoResponse, AppError> {
    let text = shared.metrics.render(&*shared.store).await?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}

/// `GET /v1/openapi.json`: this API's OpenAPI 3 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], super::openapi_json())
}
