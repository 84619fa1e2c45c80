//! Bundles and environments: upload, list, deploy, promote, roll back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Body, check_env_name};
use crate::auth::{Principal, Role};
use crate::bundle::{BundleBody, BundleFile, Canonical};
use crate::error::{AppError, ErrorBody};
use crate::state::Shared;
use crate::store::{BundleInfo, EnvInfo, RollbackError};

/// The answer to an upload.
#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    /// The content hash: the version's id.
    pub id: String,
    /// False when the server already had this exact bundle.
    pub created: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BundleList {
    /// Newest first.
    pub bundles: Vec<BundleInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct EnvList {
    pub envs: Vec<EnvInfo>,
}

/// `PUT /v1/bundles`: validates the project and stores it under its content hash.
#[utoipa::path(put, path = "/v1/bundles", tag = "deployments", security(("bearer" = [])),
    request_body(content = BundleBody, description = "The project's files: `flowrun.yaml`, `prompts/`, `flows/`, `partials/`"),
    responses(
        (status = 201, description = "Stored", body = Uploaded),
        (status = 200, description = "Already stored", body = Uploaded),
        (status = 400, description = "The project is invalid, or would run local programs (command tools, stdio MCP servers)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not deploy", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody)
    ))]
pub async fn put_bundle(
    State(shared): State<Shared>,
    who: Principal,
    Body(body): Body<BundleBody>,
) -> Result<(StatusCode, Json<Uploaded>), AppError> {
    who.require_role(Role::Deploy)?;
    let canonical = Canonical::new(body.files)?;
    let project = match flowrun_core::Project::load(canonical.sources()) {
        Ok(p) => p,
        Err(diags) => return Err(AppError::bad("invalid_bundle", diags.to_string())),
    };
    // Command tools and stdio MCP servers would run programs on this machine: never here.
    let local = flowrun_core::check::local_programs(&project);
    if !local.is_empty() {
        return Err(AppError::bad(
            "local_programs",
            flowrun_core::Diagnostics(local).to_string(),
        ));
    }
    let id = canonical.id();
    let created = shared
        .store
        .put_bundle(&id, &canonical.to_json(), canonical.files.len())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Uploaded { id, created })))
}

/// `GET /v1/bundles`: every stored version, newest first.
#[utoipa::path(get, path = "/v1/bundles", tag = "deployments", security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored versions", body = BundleList),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not deploy", body = ErrorBody)
    ))]
pub async fn list_bundles(
    State(shared): State<Shared>,
    who: Principal,
) -> Result<Json<BundleList>, AppError> {
    who.require_role(Role::Deploy)?;
    let bundles = shared.store.bundles().await?;
    Ok(Json(BundleList { bundles }))
}

/// `GET /v1/envs`: what each environment the key sees points at.
#[utoipa::path(get, path = "/v1/envs", tag = "deployments", security(("bearer" = [])),
    responses(
        (status = 200, description = "The environments the key sees", body = EnvList),
        (status = 401, description = "No valid API key", body = ErrorBody)
    ))]
pub async fn list_envs(
    State(shared): State<Shared>,
    who: Principal,
) -> Result<Json<EnvList>, AppError> {
    let envs: Vec<EnvInfo> = shared
        .store
        .envs()
        .await?
        .into_iter()
        .filter(|e| who.sees_env(&e.name))
        .collect();
    Ok(Json(EnvList { envs }))
}

/// The version an environment runs, with its files.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvBundle {
    /// The version's id (content hash).
    pub id: String,
    pub env: String,
    pub files: Vec<BundleFile>,
}

/// `GET /v1/envs/{env}/bundle`: the files of the version `env` runs (for `flowrun eval
/// --baseline env:NAME`). Any key of the environment may read it: it is what the key runs.
#[utoipa::path(get, path = "/v1/envs/{env}/bundle", tag = "deployments", security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment")),
    responses(
        (status = 200, description = "The files of the version the environment runs", body = EnvBundle),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key is not for this environment", body = ErrorBody),
        (status = 404, description = "The environment has no deployment", body = ErrorBody)
    ))]
pub async fn env_bundle(
    State(shared): State<Shared>,
    Path(env): Path<String>,
    who: Principal,
) -> Result<Json<EnvBundle>, AppError> {
    check_env_name(&env)?;
    who.require(&env, Role::Run)?;
    let deployed = shared
        .store
        .env(&env)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("environment `{env}` has no deployment")))?;
    let text = shared
        .store
        .bundle(&deployed.bundle_id)
        .await?
        .ok_or_else(|| AppError::Internal(format!("bundle {} is missing", deployed.bundle_id)))?;
    let canonical: Canonical = serde_json::from_str(&text)
        .map_err(|e| AppError::Internal(format!("bundle {}: {e}", deployed.bundle_id)))?;
    Ok(Json(EnvBundle {
        id: deployed.bundle_id,
        env,
        files: canonical.files,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    bundle_id: String,
}

/// `POST /v1/envs/{env}/deploy`: points the environment at a stored version.
#[utoipa::path(post, path = "/v1/envs/{env}/deploy", tag = "deployments", security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment: 1 to 64 of `a-z 0-9 - _`")),
    request_body = DeployBody,
    responses(
        (status = 200, description = "What the environment runs now", body = EnvInfo),
        (status = 400, description = "Bad environment name or body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not deploy to this environment", body = ErrorBody),
        (status = 404, description = "No such bundle", body = ErrorBody)
    ))]
pub async fn deploy(
    State(shared): State<Shared>,
    Path(env): Path<String>,
    who: Principal,
    Body(body): Body<DeployBody>,
) -> Result<Json<EnvInfo>, AppError> {
    check_env_name(&env)?;
    who.require(&env, Role::Deploy)?;
    point(&shared, &env, &body.bundle_id, "deploy").await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    from: String,
}

/// `POST /v1/envs/{env}/promote`: deploys what `from` runs.
#[utoipa::path(post, path = "/v1/envs/{env}/promote", tag = "deployments", security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment to deploy to")),
    request_body = PromoteBody,
    responses(
        (status = 200, description = "What the environment runs now", body = EnvInfo),
        (status = 400, description = "Bad environment name or body", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not deploy to this environment", body = ErrorBody),
        (status = 404, description = "`from` has no deployment", body = ErrorBody)
    ))]
pub async fn promote(
    State(shared): State<Shared>,
    Path(to): Path<String>,
    who: Principal,
    Body(body): Body<PromoteBody>,
) -> Result<Json<EnvInfo>, AppError> {
    check_env_name(&to)?;
    who.require(&to, Role::Deploy)?;
    let from = shared.store.env(&body.from).await?.ok_or_else(|| {
        AppError::NotFound(format!("environment `{}` has no deployment", body.from))
    })?;
    point(&shared, &to, &from.bundle_id, "promote").await
}

/// `POST /v1/envs/{env}/rollback`: back to the deployment before the current one.
#[utoipa::path(post, path = "/v1/envs/{env}/rollback", tag = "deployments", security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment")),
    responses(
        (status = 200, description = "What the environment runs now", body = EnvInfo),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key may not deploy to this environment", body = ErrorBody),
        (status = 404, description = "The environment has no deployment", body = ErrorBody),
        (status = 409, description = "No earlier deployment (`nothing_to_roll_back`)", body = ErrorBody)
    ))]
pub async fn rollback(
    State(shared): State<Shared>,
    Path(env): Path<String>,
    who: Principal,
) -> Result<Json<EnvInfo>, AppError> {
    check_env_name(&env)?;
    who.require(&env, Role::Deploy)?;
    let rolled_back = shared.store.rollback(&env).await?;
    shared.forget_deployed(&env);
    match rolled_back {
        Ok(info) => Ok(Json(info)),
        Err(RollbackError::NoDeployment) => Err(AppError::NotFound(format!(
            "environment `{env}` has no deployment"
        ))),
        Err(RollbackError::NoPrevious) => Err(AppError::Conflict {
            code: "nothing_to_roll_back",
            message: format!("environment `{env}` has no earlier deployment"),
        }),
    }
}

async fn point(
    shared: &Shared,
    env: &str,
    bundle_id: &str,
    action: &str,
) -> Result<Json<EnvInfo>, AppError> {
    let deployed = shared.store.deploy(env, bundle_id, action).await?;
    shared.forget_deployed(env);
    if !deployed {
        return Err(AppError::NotFound(format!("no bundle `{bundle_id}`")));
    }
    let info = shared
        .store
        .env(env)
        .await?
        .ok_or_else(|| AppError::Internal(format!("env {env} vanished after deploy")))?;
    Ok(Json(info))
}
