//! `flowrun deploy`, `promote`, `rollback`, `versions`: the project's versions on a server,
//! through flowrun-client. The API key comes from `FLOWRUN_TOKEN`.

use std::path::Path;

use flowrun_client::{BundleFile, Client, ClientError};

use crate::cli::{DeployArgs, PromoteArgs, RemoteArgs, RollbackArgs};
use crate::exit::Exit;

fn client(remote: &RemoteArgs) -> Result<Client, Exit> {
    let token = std::env::var("FLOWRUN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        super::error(
            "`FLOWRUN_TOKEN` is not set",
            Some("create a key with `flowrun serve keys create --env ENV --role deploy`"),
        );
        return Err(Exit::Usage);
    }
    Client::new(remote.remote.clone(), token).map_err(|e| fail(&e))
}

fn fail(e: &ClientError) -> Exit {
    super::error(&e.to_string(), None);
    Exit::Failure
}

fn block_on<T>(f: impl Future<Output = Result<T, ClientError>>) -> Result<T, Exit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            super::error(&format!("cannot start the async runtime: {e}"), None);
            Exit::Failure
        })?;
    rt.block_on(f).map_err(|e| fail(&e))
}

fn report(result: Result<flowrun_client::EnvInfo, Exit>, verb: &str) -> Exit {
    match result {
        Ok(env) => {
            println!("{verb}: `{}` now runs {}", env.name, env.bundle_id);
            Exit::Success
        }
        Err(exit) => exit,
    }
}

/// Checks the project like `flowrun check`, uploads its files and deploys them.
pub fn deploy(start: &Path, args: &DeployArgs) -> Exit {
    let local = match super::load_project(start) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let files = match flowrun_local::project_dir::read_sources(&local.root) {
        Ok(f) => f,
        Err(e) => {
            super::error(&e.to_string(), None);
            return Exit::Usage;
        }
    };
    let files: Vec<BundleFile> = files
        .into_iter()
        .map(|f| BundleFile {
            path: f.path,
            text: f.text,
        })
        .collect();
    let client = match client(&args.remote) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let env = args.env.clone();
    report(
        block_on(async move {
            let up = client.upload_bundle(&files).await?;
            client.deploy(&env, &up.id).await
        }),
        "deployed",
    )
}

pub fn promote(args: &PromoteArgs) -> Exit {
    let client = match client(&args.remote) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    report(block_on(client.promote(&args.from, &args.to)), "promoted")
}

pub fn rollback(args: &RollbackArgs) -> Exit {
    let client = match client(&args.remote) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    report(block_on(client.rollback(&args.env)), "rolled back")
}

pub fn versions(args: &RemoteArgs) -> Exit {
    let client = match client(args) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let (bundles, envs) =
        match block_on(async { Ok((client.bundles().await?, client.envs().await?)) }) {
            Ok(v) => v,
            Err(exit) => return exit,
        };
    for b in &bundles {
        let live: Vec<&str> = envs
            .iter()
            .filter(|e| e.bundle_id == b.id)
            .map(|e| e.name.as_str())
            .collect();
        let live = if live.is_empty() {
            String::new()
        } else {
            format!("  ← {}", live.join(", "))
        };
        println!(
            "{}  {}  {} files{live}",
            &b.id[..b.id.len().min(12)],
            super::format_time(b.created_at),
            b.files
        );
    }
    Exit::Success
}
