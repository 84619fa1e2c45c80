//! `flowrun serve`: the HTTP server with its workers, until ctrl-c or SIGTERM (runs in flight
//! get a grace period, the rest go back to the queue); `flowrun serve keys create`.

use std::sync::Arc;

use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{ServerStore, SqliteStore};
use flowrun_server::{Server, ServerConfig};

use crate::cli::{KeyCreateArgs, KeyRole, KeysSub, ServeArgs, ServeCmd, ServeSub};
use crate::exit::Exit;

pub fn serve(cmd: ServeCmd) -> Exit {
    match cmd.sub {
        Some(ServeSub::Keys(keys)) => match keys.sub {
            KeysSub::Create(args) => keys_create(&args),
        },
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

fn open(db: &std::path::Path) -> Result<Arc<SqliteStore>, Exit> {
    SqliteStore::open(db).map(Arc::new).map_err(|e| {
        super::error(&e.to_string(), Some("give a writable path with `--db`"));
        Exit::Failure
    })
}

fn keys_create(args: &KeyCreateArgs) -> Exit {
    let role = match args.role {
        KeyRole::Run => Role::Run,
        KeyRole::Deploy => Role::Deploy,
        KeyRole::Admin => Role::Admin,
    };
    let (rt, store) = match runtime().and_then(|rt| open(&args.db).map(|s| (rt, s))) {
        Ok(v) => v,
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

fn run_server(args: &ServeArgs) -> Exit {
    let (rt, store) = match runtime().and_then(|rt| open(&args.db).map(|s| (rt, s))) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let config = ServerConfig {
        workers: args.workers as usize,
        lease: args.lease,
        max_attempts: args.max_attempts,
        ..ServerConfig::default()
    };
    rt.block_on(async move {
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
        let store: Arc<dyn ServerStore> = store;
        let server = match Server::start(listener, store, config).await {
            Ok(s) => s,
            Err(e) => {
                super::error(&format!("cannot start the server: {e}"), None);
                return Exit::Failure;
            }
        };
        println!("listening on http://{}", server.addr());
        eprintln!(
            "flowrun serve: {} worker(s), database {}",
            args.workers,
            args.db.display()
        );
        shutdown_signal().await;
        eprintln!("flowrun serve: shutting down; runs in flight get a grace period");
        server.shutdown().await;
        Exit::Success
    })
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
