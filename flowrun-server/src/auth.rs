//! API keys: `Authorization: Bearer <key>`, stored as SHA-256 hashes, each scoped to an
//! environment (`*` for all) and a role: `run` (submit and read runs), `deploy` (bundles,
//! deploy, promote, rollback), `admin` (both).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::Shared;
use crate::store::{KeyRow, ServerStore, StoreError};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Run,
    Deploy,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Run, Role::Deploy, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    fn covers(self, need: Role) -> bool {
        self == Role::Admin || self == need
    }
}

/// The caller, as its key says.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub env: String,
    pub role: Role,
}

impl Principal {
    /// Allows `need` on `env`, or answers 403.
    pub fn require(&self, env: &str, need: Role) -> Result<(), AppError> {
        if !self.role.covers(need) {
            return Err(AppError::Forbidden(format!(
                "this key has role `{}`; `{}` is needed",
                self.role.as_str(),
                need.as_str()
            )));
        }
        if !self.sees_env(env) {
            return Err(AppError::Forbidden(format!(
                "this key is for environment `{}`, not `{env}`",
                self.env
            )));
        }
        Ok(())
    }

    /// Allows `need` on some environment (bundles are shared by all of them).
    pub fn require_role(&self, need: Role) -> Result<(), AppError> {
        self.require(&self.env.clone(), need)
    }

    /// The environment a read is scoped to: the one asked for (which the key must be able to
    /// read), else the key's own, or every one (`None`) for a `*` key.
    pub fn read_scope(&self, asked: Option<&String>) -> Result<Option<String>, AppError> {
        let env = match asked {
            Some(e) => Some(e.clone()),
            None if self.env == "*" => None,
            None => Some(self.env.clone()),
        };
        match &env {
            Some(e) => self.require(e, Role::Run)?,
            None => self.require_role(Role::Run)?,
        }
        Ok(env)
    }

    pub fn sees_env(&self, env: &str) -> bool {
        self.env == "*" || self.env == env
    }
}

/// SHA-256 of a key's secret, hex.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Creates a key; returns its id and the secret (shown once, never stored).
pub async fn create_key(
    store: &dyn ServerStore,
    env: &str,
    role: Role,
) -> Result<(String, String), StoreError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!(
        "frk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let id = flowrun_core::new_id();
    store
        .insert_key(&KeyRow {
            id: id.clone(),
            hash: hash_secret(&secret),
            env: env.to_string(),
            role: role.as_str().to_string(),
            created_at: flowrun_core::event::now_ms(),
        })
        .await?;
    Ok((id, secret))
}

impl FromRequestParts<Shared> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AppError::Unauthorized)?;
        let secret = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(AppError::Unauthorized)?;
        let key = state
            .key(&hash_secret(secret))
            .await?
            .ok_or(AppError::Unauthorized)?;
        let role = Role::parse(&key.role).ok_or(AppError::Unauthorized)?;
        Ok(Principal {
            key_id: key.id,
            env: key.env,
            role,
        })
    }
}
