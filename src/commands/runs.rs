//! `flowrun runs`: the most recent runs from the local history, or with `--remote` from a
//! server.

use std::path::Path;

use flowrun_client::RunFilter;

use super::{format_cost, format_ms, format_time};
use crate::cli::RunsArgs;
use crate::exit::Exit;

pub fn runs(start: &Path, args: &RunsArgs) -> Exit {
    if args.remote.is_some() {
        return remote_runs(start, args);
    }
    let (local, store) =
        match super::load_project(start).and_then(|l| super::open_store(&l).map(|s| (l, s))) {
            Ok(v) => v,
            Err(e) => return e,
        };
    drop(local);
    let rows = match store.runs(args.limit) {
        Ok(r) => r,
        Err(e) => {
            super::error(&e.to_string(), None);
            return Exit::Failure;
        }
    };
    if args.json {
        super::print_json(&rows);
        return Exit::Success;
    }
    if rows.is_empty() {
        eprintln!("no runs yet: `flowrun run <prompt or flow>` starts one");
        return Exit::Success;
    }
    println!(
        "{:<36}  {:<24}  {:<9}  {:>8}  {:>10}  {:>8}  STARTED",
        "ID", "TARGET", "STATUS", "TOKENS", "COST", "LATENCY"
    );
    for r in rows {
        println!(
            "{:<36}  {:<24}  {:<9}  {:>8}  {:>10}  {:>8}  {}",
            r.id,
            format!("{}/{}", r.target_kind, r.target),
            r.status,
            r.input_tokens + r.output_tokens,
            format_cost(r.cost_usd, &r.cost_unknown),
            r.latency_ms.map(format_ms).unwrap_or_else(|| "-".into()),
            format_time(r.started_at),
        );
    }
    Exit::Success
}

fn remote_runs(start: &Path, args: &RunsArgs) -> Exit {
    let (_, client) = match super::remote::connect(start, args.remote.as_deref()) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let status = args
        .status
        .as_deref()
        .and_then(|s| serde_json::from_value(serde_json::Value::String(s.into())).ok());
    let filter = RunFilter {
        env: args.env.clone(),
        flow: args.flow.clone(),
        status,
        limit: Some(u32::try_from(args.limit).unwrap_or(u32::MAX)),
    };
    let rows = match super::remote::block_on(client.runs(&filter)) {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    if args.json {
        let rows: Vec<serde_json::Value> = rows.iter().map(remote_json).collect();
        super::print_json(&rows);
        return Exit::Success;
    }
    if rows.is_empty() {
        eprintln!("no runs on the server match");
        return Exit::Success;
    }
    println!(
        "{:<36}  {:<8}  {:<24}  {:<9}  {:>8}  {:>10}  CREATED",
        "ID", "ENV", "FLOW", "STATUS", "TOKENS", "COST"
    );
    for r in rows {
        let tokens = ["input_tokens", "output_tokens"]
            .iter()
            .filter_map(|k| r.usage.as_ref()?.get(k)?.as_u64())
            .sum::<u64>();
        let usd = r
            .cost
            .as_ref()
            .and_then(|c| c.get("usd"))
            .and_then(|v| v.as_f64());
        let unknown: Vec<String> = r
            .cost
            .as_ref()
            .and_then(|c| c.get("unknown_models"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        println!(
            "{:<36}  {:<8}  {:<24}  {:<9}  {:>8}  {:>10}  {}",
            r.id,
            r.env,
            r.flow,
            status_text(r.status),
            tokens,
            format_cost(usd, &unknown),
            format_time(r.created_at),
        );
    }
    Exit::Success
}

fn status_text(s: flowrun_client::RunStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn remote_json(r: &flowrun_client::Run) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "env": r.env,
        "flow": r.flow,
        "bundle_id": r.bundle_id,
        "status": status_text(r.status),
        "output": r.output,
        "error": r.error,
        "usage": r.usage,
        "cost": r.cost,
        "attempts": r.attempts,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
    })
}
