//! `flowrun runs`: the most recent runs from the local history.

use std::path::Path;

use super::{format_cost, format_ms, format_time};
use crate::cli::RunsArgs;
use crate::exit::Exit;

pub fn runs(start: &Path, args: &RunsArgs) -> Exit {
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
