//! `flowrun cost` and `flowrun stats`: usage reports (flowrun-core's `usage`) over the local
//! history or, with `--remote`, a server's `GET /v1/usage`. `cost` shows tokens and cost with
//! a bar chart of cost per day; `stats` shows calls, error rates and latency percentiles.

use std::path::Path;

use flowrun_client::UsageQuery;
use flowrun_core::cost::{Cost, format_usd};
use flowrun_core::usage::{self, Dimension, UsageGroup, UsageReport};

use super::format_ms;
use crate::cli::UsageArgs;
use crate::exit::Exit;

/// Which columns to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Cost,
    Stats,
}

/// The widest bar of the chart, in characters.
const BAR_WIDTH: usize = 30;

pub fn report(start: &Path, args: &UsageArgs, view: View) -> Exit {
    let by = match Dimension::parse_list(&args.by) {
        Ok(by) => by,
        Err(e) => {
            super::error(&format!("invalid `--by`: {e}"), None);
            return Exit::Usage;
        }
    };
    let now = flowrun_core::event::now_ms();
    let since_ms = match args.since.as_deref().map(|s| usage::parse_since(s, now)) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            super::error(&e, None);
            return Exit::Usage;
        }
    };
    let report = if args.remote.is_some() {
        remote_report(start, args, &by)
    } else {
        local_report(start, &by, since_ms)
    };
    let report = match report {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    if args.json {
        super::print_json(&report);
        return Exit::Success;
    }
    if report.total.calls == 0 {
        eprintln!("no model calls recorded in that period");
        return Exit::Success;
    }
    print!("{}", render(&report, view));
    Exit::Success
}

fn local_report(
    start: &Path,
    by: &[Dimension],
    since_ms: Option<i64>,
) -> Result<UsageReport, Exit> {
    let local = super::load_project(start)?;
    let store = super::open_store(&local)?;
    let rows = store.usage_rows(since_ms).map_err(|e| {
        super::error(&e.to_string(), None);
        Exit::Failure
    })?;
    Ok(usage::aggregate(&rows, by, since_ms))
}

fn remote_report(start: &Path, args: &UsageArgs, by: &[Dimension]) -> Result<UsageReport, Exit> {
    let (_, client) = super::remote::connect(start, args.remote.as_deref())?;
    let query = UsageQuery {
        env: args.env.clone(),
        since: args.since.clone(),
        by: by.iter().map(|d| d.as_str().to_string()).collect(),
    };
    let report = super::remote::block_on(client.usage(&query))?;
    // The API's report has the same shape as flowrun-core's.
    serde_json::to_value(report)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            super::error(
                &format!("unexpected usage report from the server: {e}"),
                None,
            );
            Exit::Failure
        })
}

/// The report as text: a table of groups with a total, then (for `cost`) the daily chart and
/// the models without a price.
pub fn render(report: &UsageReport, view: View) -> String {
    let mut header: Vec<String> = report
        .by
        .iter()
        .map(|d| d.as_str().to_uppercase())
        .collect();
    let numeric: &[&str] = match view {
        View::Cost => &["CALLS", "INPUT", "OUTPUT", "CACHED", "COST"],
        View::Stats => &["CALLS", "ERRORS", "ERROR %", "P50", "P95", "P99"],
    };
    let keys = header.len();
    header.extend(numeric.iter().map(|s| s.to_string()));
    let mut rows: Vec<Vec<String>> = vec![header];
    for g in &report.groups {
        let mut row: Vec<String> = g.key.values().cloned().collect();
        row.extend(numbers(g, view));
        rows.push(row);
    }
    let mut total = vec![String::new(); keys.max(1)];
    total[0] = "total".into();
    total.extend(numbers(&report.total, view));
    rows.push(total);
    let keys = keys.max(1);
    let widths: Vec<usize> = (0..rows[0].len().max(rows[rows.len() - 1].len()))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < keys && row.len() > numeric.len() {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if view == View::Cost {
        out.push_str(&chart(report));
        if !report.total.cost.is_known() {
            let models: Vec<&str> = report
                .total
                .cost
                .unknown_models
                .iter()
                .map(String::as_str)
                .collect();
            out.push_str(&format!(
                "\nunknown cost: no price for {}; the totals above count only the priced calls\nhint: add prices under `pricing:` in flowrun.yaml\n",
                models.join(", ")
            ));
        }
    }
    out
}

fn numbers(g: &UsageGroup, view: View) -> Vec<String> {
    match view {
        View::Cost => vec![
            g.calls.to_string(),
            g.input_tokens.to_string(),
            g.output_tokens.to_string(),
            g.cached_tokens.to_string(),
            cost_text(&g.cost),
        ],
        View::Stats => {
            let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), format_ms);
            vec![
                g.calls.to_string(),
                g.errors.to_string(),
                format!("{:.1}", g.error_rate * 100.0),
                ms(g.latency_ms.p50),
                ms(g.latency_ms.p95),
                ms(g.latency_ms.p99),
            ]
        }
    }
}

/// `$0.0012`, or `$0.0012 + unknown` when some calls had no price.
fn cost_text(c: &Cost) -> String {
    if c.is_known() {
        format!("${}", format_usd(c.usd))
    } else if c.usd > 0.0 {
        format!("${} + unknown", format_usd(c.usd))
    } else {
        "unknown".into()
    }
}

/// One bar per day, scaled to the most expensive day.
fn chart(report: &UsageReport) -> String {
    let max = report
        .cost_per_day
        .iter()
        .map(|d| d.cost.usd)
        .fold(0.0_f64, f64::max);
    let mut out = String::from("\ncost per day (UTC)\n");
    for d in &report.cost_per_day {
        let len = if max > 0.0 {
            ((d.cost.usd / max) * BAR_WIDTH as f64).round() as usize
        } else {
            0
        };
        let bar = "█".repeat(len.max(usize::from(d.cost.usd > 0.0)));
        out.push_str(&format!(
            "{}  {:<w$}  {}\n",
            d.day,
            bar,
            cost_text(&d.cost),
            w = BAR_WIDTH
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use flowrun_core::usage::{UsageRow, aggregate};

    use super::*;

    fn row(model: &str, day: i64, cost: Cost, errors: u64) -> UsageRow {
        UsageRow {
            flow: None,
            prompt: "p".into(),
            version: "v".into(),
            provider: "openai".into(),
            model: model.into(),
            environment: "local".into(),
            at_ms: 1_793_491_200_000 + day * 86_400_000,
            calls: 1,
            errors,
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 0,
            cost,
            latency_ms: 120,
        }
    }

    #[test]
    fn renders_cost_with_chart_and_unknown_models() {
        let rows = [
            row("a", 0, Cost::known(0.5), 0),
            row("a", 1, Cost::known(0.25), 0),
            row("mystery", 1, Cost::unknown("mystery"), 1),
        ];
        let report = aggregate(&rows, &[Dimension::Model], None);
        insta::assert_snapshot!(render(&report, View::Cost));
        insta::assert_snapshot!(render(&report, View::Stats));
    }
}
