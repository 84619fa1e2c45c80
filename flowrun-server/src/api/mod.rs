//! The HTTP API under `/v1`, plus `/healthz`, `/readyz` and `/metrics`. JSON in and out; every
//! error is `{"error": {"code", "message", "field"?}}`. Every route is declared through
//! `utoipa-axum`'s `routes!`, so the OpenAPI document (`/v1/openapi.json`, [`openapi`]) is
//! generated from the same handlers the router serves.

mod deploy;
mod ops;
mod runs;
pub mod sync;
mod usage;

use std::sync::OnceLock;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::Shared;

pub use runs::{RunView, StepView};

/// The name of the Bearer scheme in the document.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowrun",
        description = "Deployed flowrun flows over HTTP: bundles and environments (deploy, \
            promote, roll back) and a durable run queue. Every endpoint but `/healthz`, \
            `/readyz`, `/metrics` and `/v1/openapi.json` needs `Authorization: Bearer <key>` \
            (keys from `flowrun serve keys create`). Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"?, \"details\"?}}`."
    ),
    modifiers(&Security),
    tags(
        (name = "runs", description = "Submit, read, wait for, cancel and list runs"),
        (name = "deployments", description = "Bundles and what each environment runs"),
        (name = "sync", description = "Local history pushed by `flowrun sync`; the deployment history it pulls"),
        (name = "operations", description = "Health, readiness, metrics and this document")
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API key, `frk_…`"))
                    .build(),
            ),
        );
    }
}

/// Every route with its document. Add routes only here, through `routes!`.
fn parts() -> (Router<Shared>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(deploy::put_bundle, deploy::list_bundles))
        .routes(routes!(deploy::list_envs))
        .routes(routes!(deploy::env_bundle))
        .routes(routes!(deploy::deploy))
        .routes(routes!(deploy::promote))
        .routes(routes!(deploy::rollback))
        .routes(routes!(runs::submit))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(usage::usage))
        .routes(routes!(sync::push, sync::list))
        .routes(routes!(sync::deployments))
        .split_for_parts()
}

/// The OpenAPI 3 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The document as pretty JSON (what `/v1/openapi.json` serves and `schemas/openapi.json`
/// holds), built once.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    })
}

/// The router of the whole API.
pub fn router(shared: Shared, max_body: usize) -> Router {
    parts()
        .0
        .fallback(|| async { AppError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
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
