//! The HTTP API under `/v1`, plus `/healthz` and `/readyz`. JSON in and out; every error is
//! `{"error": {"code", "message", "field"?}}`.

mod deploy;
mod runs;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::state::Shared;

/// The router of the whole API.
pub fn router(shared: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/v1/bundles",
            put(deploy::put_bundle).get(deploy::list_bundles),
        )
        .route("/v1/envs", get(deploy::list_envs))
        .route("/v1/envs/{env}/bundle", get(deploy::env_bundle))
        .route("/v1/envs/{env}/deploy", post(deploy::deploy))
        .route("/v1/envs/{env}/promote", post(deploy::promote))
        .route("/v1/envs/{env}/rollback", post(deploy::rollback))
        .route("/v1/envs/{env}/flows/{flow}/runs", post(runs::submit))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .fallback(|| async { AppError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

async fn readyz(State(shared): State<Shared>) -> Result<&'static str, AppError> {
    match shared.store.ping().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            crate::log(&format!("readiness check failed: {e}"));
            Err(AppError::Unavailable)
        }
    }
}

/// A JSON body whose rejections are API errors.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::PayloadTooLarge;
    }
    AppError::bad("invalid_body", rejection.body_text())
}

/// Environment names: 1 to 64 of `a-z 0-9 - _`.
fn check_env_name(env: &str) -> Result<(), AppError> {
    let ok = !env.is_empty()
        && env.len() <= 64
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_field(
            "invalid_env",
            "env",
            "environment names are 1 to 64 of a-z, 0-9, `-` and `_`",
        ))
    }
}
