//! `flowrun deploy`, `promote`, `rollback`, `versions`: the project's versions on a server,
//! through flowrun-client. The server and its API key come from `--remote` (see `remote`).

use std::path::Path;

use flowrun_client::BundleFile;

use super::remote::{block_on, connect};
use crate::cli::{DeployArgs, PromoteArgs, RemoteArgs, RollbackArgs};
use crate::exit::Exit;

fn report(result: Result<flowrun_client::EnvInfo, Exit>, verb: &str, server: &str) -> Exit {
    match result {
        Ok(env) => {
            println!(
                "{verb}: `{}` on {server} now runs {}",
                env.name, env.bundle_id
            );
            Exit::Success
        }
        Err(exit) => exit,
    }
}

/// Checks the project like `flowrun check` (with `--require-tests`, runs its tests too),
/// uploads its files and deploys them.
pub fn deploy(start: &Path, args: &DeployArgs) -> Exit {
    let local = match super::load_project(start) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let (target, client) = match connect(start, args.remote.remote.as_deref()) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    if args.require_tests {
        match super::test::run_default_suite(start, args.replay.clone()) {
            Exit::Success => eprintln!("tests passed; deploying"),
            Exit::Failure => {
                super::error(
                    &format!("not deployed to `{}`: a test failed", args.env),
                    Some("fix the failing cases (above), or deploy without `--require-tests`"),
                );
                return Exit::Failure;
            }
            other => return other,
        }
    }
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
    let env = args.env.clone();
    report(
        block_on(async move {
            let up = client.upload_bundle(&files).await?;
            client.deploy(&env, &up.id).await
        }),
        "deployed",
        &target.label,
    )
}

pub fn promote(start: &Path, args: &PromoteArgs) -> Exit {
    let (target, client) = match connect(start, args.remote.remote.as_deref()) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    report(
        block_on(client.promote(&args.from, &args.to)),
        "promoted",
        &target.label,
    )
}

pub fn rollback(start: &Path, args: &RollbackArgs) -> Exit {
    let (target, client) = match connect(start, args.remote.remote.as_deref()) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    report(
        block_on(client.rollback(&args.env)),
        "rolled back",
        &target.label,
    )
}

pub fn versions(start: &Path, args: &RemoteArgs) -> Exit {
    let (_, client) = match connect(start, args.remote.as_deref()) {
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
