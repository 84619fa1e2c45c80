//! `flowrun serve`: the HTTP server with its workers and webhook deliverer, until ctrl-c or
//! SIGTERM (runs in flight get a grace period, the rest go back to the queue); `flowrun serve
//! keys create`; `flowrun serve openapi`. State in a SQLite file (`--db`) or a PostgreSQL
//! database shared by replicas (`--database-url`).

use std::sync::Arc;

use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{
    Durability, PostgresStore, ServerStore, SqliteStore, StoreError, is_postgres_url, redact_url,
};
use flowrun_server::webhook::{WebhookConfig, WebhookSecret};
use flowrun_server::{Server, ServerConfig};

use crate::cli::{
    DatabaseArgs, KeyCreateArgs, KeyRole, KeysSub, ServeArgs, ServeCmd, ServeSub, SqliteSynchronous,
};
use crate::exit::Exit;

pub fn serve(cmd: ServeCmd) -> Exit {
    match cmd.sub {
        Some(ServeSub::Keys(keys)) => match keys.sub {
            KeysSub::Create(args) => keys_create(&args),
        },
        Some(ServeSub::Openapi) => {
            print!("{}", flowrun_server::api::openapi_json());
            Exit::Success
        }
        None => run_server(&cmd.args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            super::error(&format!("cannot start the async runtime: {e}"), None);
            Exit::Failure
        })
}

/// Opens (and migrates) the store `args` name; PostgreSQL pools `connections` connections.
async fn open(args: &DatabaseArgs, connections: usize) -> Result<Arc<dyn ServerStore>, Exit> {
    let Some(url) = &args.database_url else {
        let durability = match args.sqlite_synchronous {
            SqliteSynchronous::Full => Durability::Full,
            SqliteSynchronous::Normal => Durability::Normal,
        };
        return match SqliteStore::open_with(&args.db, durability) {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) => {
                super::error(&e.to_string(), Some("give a writable path with `--db`"));
                Err(Exit::Failure)
            }
        };
    };
    if !is_postgres_url(url) {
        super::error(
            &format!(
                "`--database-url` must be a PostgreSQL URL, got `{}`",
                redact_url(url)
            ),
            Some("give `postgres://user@host/db`, or use `--db PATH` for SQLite"),
        );
        return Err(Exit::Usage);
    }
    match PostgresStore::connect(url, connections).await {
        Ok(s) => Ok(Arc::new(s)),
        Err(e @ StoreError::BadUrl { .. }) => {
            super::error(
                &e.to_string(),
                Some("fix `--database-url` (or `FLOWRUN_DATABASE_URL`)"),
            );
            Err(Exit::Usage)
        }
        Err(e) => {
            super::error(
                &e.to_string(),
                Some("check that the database server is up and the URL's user may connect"),
            );
            Err(Exit::Failure)
        }
    }
}

/// What the log says the database is (never a password).
fn describe(args: &DatabaseArgs) -> String {
    match &args.database_url {
        Some(url) => redact_url(url),
        None => args.db.display().to_string(),
    }
}

fn keys_create(args: &KeyCreateArgs) -> Exit {
    let role = match args.role {
        KeyRole::Run => Role::Run,
        KeyRole::Deploy => Role::Deploy,
        KeyRole::Admin => Role::Admin,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let store = match rt.block_on(open(&args.database, 1)) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    match rt.block_on(create_key(&*store, &args.env, role)) {
        Ok((id, secret)) => {
            eprintln!(
                "created key {id} (env `{}`, role `{}`); it is shown only this once:",
                args.env,
                role.as_str()
            );
            println!("{secret}");
            Exit::Success
        }
        Err(e) => {
            super::error(&e.to_string(), None);
            Exit::Failure
        }
    }
}

/// The webhook signing secret from the environment variable `--webhook-secret-env` names
/// (default `FLOWRUN_WEBHOOK_SECRET`). Unset: webhooks are off, unless the flag named the
/// variable.
fn webhook_secret(args: &ServeArgs) -> Result<Option<WebhookSecret>, Exit> {
    let var = args
        .webhook_secret_env
        .as_deref()
        .unwrap_or("FLOWRUN_WEBHOOK_SECRET");
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => {
            if s.len() < 16 {
                tracing::warn!(
                    variable = var,
                    "the webhook secret is short; use 32 random bytes or more"
                );
            }
            Ok(Some(WebhookSecret::new(s)))
        }
        Ok(_) => {
            super::error(
                &format!("`{var}` is empty"),
                Some("set it to a long random string, e.g. `openssl rand -hex 32`"),
            );
            Err(Exit::Usage)
        }
        Err(_) if args.webhook_secret_env.is_some() => {
            super::error(
                &format!("`--webhook-secret-env {var}`: `{var}` is not set"),
                Some("export the webhook signing secret in that variable"),
            );
            Err(Exit::Usage)
        }
        Err(_) => {
            tracing::info!(
                "webhooks are off: set FLOWRUN_WEBHOOK_SECRET to sign deliveries and accept `Flowrun-Webhook`"
            );
            Ok(None)
        }
    }
}

fn run_server(args: &ServeArgs) -> Exit {
    let secret = match webhook_secret(args) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let connections = args.db_max_connections.map_or_else(
        || flowrun_server::default_pool_size(args.workers as usize),
        |n| n as usize,
    );
    let store = match rt.block_on(open(&args.database, connections)) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let otel = match super::otel("flowrun-server") {
        Ok(o) => o,
        Err(exit) => return exit,
    };
    let config = ServerConfig {
        otel: otel.clone(),
        workers: args.workers as usize,
        webhook: WebhookConfig {
            secret,
            ..WebhookConfig::default()
        },
        lease: args.lease,
        grace: args.grace,
        max_attempts: args.max_attempts,
        ..ServerConfig::default()
    };
    let config_webhooks = config.webhook.secret.is_some();
    let exit = rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.addr).await {
            Ok(l) => l,
            Err(e) => {
                super::error(
                    &format!("cannot listen on {}: {e}", args.addr),
                    Some("pick another address with `--addr`"),
                );
                return Exit::Usage;
            }
        };
        let server = match Server::start(listener, store, config).await {
            Ok(s) => s,
            Err(e) => {
                super::error(&format!("cannot start the server: {e}"), None);
                return Exit::Failure;
            }
        };
        println!("listening on http://{}", server.addr());
        tracing::info!(
            addr = %server.addr(),
            workers = args.workers,
            database = %describe(&args.database),
            webhooks = config_webhooks,
            "serving"
        );
        shutdown_signal().await;
        tracing::info!("shutting down; runs in flight get a grace period");
        server.shutdown().await;
        Exit::Success
    });
    if let Some(otel) = otel {
        otel.shutdown();
    }
    exit
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
