//! `flowrun sync`: push the local history (finished runs, test runs, evaluations) to a server
//! in batches and pull its deployment history. Each batch is recorded locally only after the
//! server committed it, so an interrupted sync resumes where it stopped and a repeated one
//! sends nothing; prompts, inputs and outputs go only with `sync: { content: true }`.

use std::path::Path;

use flowrun_client::{Client, SyncRecord};
use flowrun_local::store::PulledDeployment;
use flowrun_local::{LocalProject, Store};
use serde_json::json;

use super::remote::{connect, fail};
use crate::cli::SyncArgs;
use crate::exit::Exit;

/// Deployment history entries per page.
const PAGE: u32 = 500;

pub fn sync(start: &Path, args: &SyncArgs) -> Exit {
    match try_sync(start, args) {
        Ok(e) | Err(e) => e,
    }
}

fn try_sync(start: &Path, args: &SyncArgs) -> Result<Exit, Exit> {
    let local: LocalProject = super::load_project(start)?;
    let (target, client) = connect(start, args.remote.remote.as_deref())?;
    let store = super::open_store(&local)?;
    let content = local.project.config.sync.content;
    let pending = store.unsynced(&target.label, content).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Failure
    })?;
    let runtime = super::runtime(0)?;
    let mut pushed = 0u64;
    let mut stored = 0u64;
    for batch in pending.chunks(args.batch as usize) {
        let records: Vec<SyncRecord> = batch
            .iter()
            .map(|r| SyncRecord {
                kind: r.kind.to_string(),
                id: r.id.clone(),
                record: r.record.clone(),
            })
            .collect();
        let answer = runtime.block_on(client.push_records(&records)).map_err(|e| {
            if pushed > 0 {
                eprintln!(
                    "pushed {pushed} of {} records before the error; `flowrun sync` again resumes",
                    pending.len()
                );
            }
            fail(&e)
        })?;
        store.mark_synced(&target.label, batch).map_err(|e| {
            super::error(&e.to_string(), None);
            Exit::Failure
        })?;
        pushed += batch.len() as u64;
        stored += answer.stored;
    }
    let pulled = runtime.block_on(pull(&client, &store, &target.label))?;
    if args.json {
        super::print_json(&json!({
            "remote": target.label,
            "pushed": pushed,
            "stored": stored,
            "content": content,
            "deployments_pulled": pulled,
        }));
    } else {
        let withheld = if content {
            ""
        } else {
            " (without prompts, inputs and outputs: `sync: { content: true }` sends them)"
        };
        println!(
            "pushed {pushed} records to {}{withheld}; pulled {pulled} deployments",
            target.label
        );
    }
    Ok(Exit::Success)
}

/// Pulls the deployment history after the stored cursor, page by page; returns how many
/// entries came.
async fn pull(client: &Client, store: &Store, remote: &str) -> Result<usize, Exit> {
    let mut after = store.sync_cursor(remote, "deployments").map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Failure
    })?;
    let mut pulled = 0;
    loop {
        let page = client
            .deployments(after, PAGE)
            .await
            .map_err(|e| fail(&e))?;
        let rows: Vec<PulledDeployment> = page
            .deployments
            .into_iter()
            .map(|d| PulledDeployment {
                seq: d.seq,
                env: d.env,
                bundle_id: d.bundle_id,
                action: d.action,
                rolled_back: d.rolled_back,
                created_at: d.created_at,
            })
            .collect();
        pulled += rows.len();
        store
            .save_deployments(remote, &rows, page.next_after)
            .map_err(|e| {
                super::error(&e.to_string(), None);
                Exit::Failure
            })?;
        if page.next_after == after {
            return Ok(pulled);
        }
        after = page.next_after;
    }
}
