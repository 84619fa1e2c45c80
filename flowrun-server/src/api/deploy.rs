//! Bundles and environments: upload, list, deploy, promote, roll back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, check_env_name};
use crate::auth::{Principal, Role};
use crate::bundle::{BundleBody, Canonical};
use crate::error::AppError;
use crate::state::Shared;
use crate::store::{EnvInfo, RollbackError};

/// `PUT /v1/bundles`: validates the project and stores it under its content hash.
pub async fn put_bundle(
    State(shared): State<Shared>,
    who: Principal,
    Body(body): Body<BundleBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    who.require_role(Role::Deploy)?;
    let canonical = Canonical::new(body.files)?;
    if let Err(diags) = flowrun_core::Project::load(canonical.sources()) {
        return Err(AppError::bad("invalid_bundle", diags.to_string()));
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
    Ok((status, Json(json!({ "id": id, "created": created }))))
}

/// `GET /v1/bundles`: every stored version, newest first.
pub async fn list_bundles(
    State(shared): State<Shared>,
    who: Principal,
) -> Result<Json<Value>, AppError> {
    who.require_role(Role::Deploy)?;
    let bundles = shared.store.bundles().await?;
    Ok(Json(json!({ "bundles": bundles })))
}

/// `GET /v1/envs`: what each environment the key sees points at.
pub async fn list_envs(
    State(shared): State<Shared>,
    who: Principal,
) -> Result<Json<Value>, AppError> {
    let envs: Vec<EnvInfo> = shared
        .store
        .envs()
        .await?
        .into_iter()
        .filter(|e| who.sees_env(&e.name))
        .collect();
    Ok(Json(json!({ "envs": envs })))
}

/// `GET /v1/envs/{env}/bundle`: the files of the version `env` runs (for `flowrun eval
/// --baseline env:NAME`). Any key of the environment may read it: it is what the key runs.
pub async fn env_bundle(
    State(shared): State<Shared>,
    Path(env): Path<String>,
    who: Principal,
) -> Result<Json<Value>, AppError> {
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
    Ok(Json(json!({
        "id": deployed.bundle_id,
        "env": env,
        "files": canonical.files,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    bundle_id: String,
}

/// `POST /v1/envs/{env}/deploy`.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    from: String,
}

/// `POST /v1/envs/{to}/promote`: deploys what `from` runs.
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
pub async fn rollback(
    State(shared): State<Shared>,
    Path(env): Path<String>,
    who: Principal,
) -> Result<Json<EnvInfo>, AppError> {
    check_env_name(&env)?;
    who.require(&env, Role::Deploy)?;
    match shared.store.rollback(&env).await? {
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
    if !shared.store.deploy(env, bundle_id, action).await? {
        return Err(AppError::NotFound(format!("no bundle `{bundle_id}`")));
    }
    let info = shared
        .store
        .env(env)
        .await?
        .ok_or_else(|| AppError::Internal(format!("env {env} vanished after deploy")))?;
    Ok(Json(info))
}
