//! Cost and usage reports over plain rows: grouping by any of flow, prompt, version, model,
//! provider, environment and day, with totals, error rates and latency percentiles. The
//! local history and the server each select their rows with SQL (the filtering) and share
//! this aggregation, so `flowrun cost` reads the same locally and with `--remote`.
//!
//! Costs stay [`Cost`]s: a group with an unpriced call shows the known part and the models
//! without a price, never a total that silently counts them as zero.

use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::cost::Cost;

/// What rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Flow,
    Prompt,
    Version,
    Model,
    Provider,
    Environment,
    Day,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Flow,
        Dimension::Prompt,
        Dimension::Version,
        Dimension::Model,
        Dimension::Provider,
        Dimension::Environment,
        Dimension::Day,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Flow => "flow",
            Dimension::Prompt => "prompt",
            Dimension::Version => "version",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
            Dimension::Environment => "environment",
            Dimension::Day => "day",
        }
    }

    /// `model,day` → the dimensions, in order, each once.
    pub fn parse_list(text: &str) -> Result<Vec<Dimension>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(d) = Dimension::ALL.into_iter().find(|d| d.as_str() == part) else {
                let names: Vec<&str> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
                return Err(format!(
                    "unknown grouping `{part}`; use any of {}",
                    names.join(", ")
                ));
            };
            if !out.contains(&d) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Model calls with the same attributes: one call attempt (local history) or one step's
/// attempts (server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The run's flow; `None` for a run of a prompt alone.
    pub flow: Option<String>,
    pub prompt: String,
    /// The run's version (content hash locally, bundle id on the server).
    pub version: String,
    pub provider: String,
    pub model: String,
    pub environment: String,
    /// When the calls started (ms since the epoch).
    pub at_ms: i64,
    pub calls: u64,
    /// Calls among `calls` that failed.
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost: Cost,
    pub latency_ms: u64,
}

/// Latency percentiles (nearest rank), in ms; `None` without calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

impl Percentiles {
    /// Nearest rank: the smallest value with at least p% of the values at or below it.
    pub fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        let rank = |p: f64| -> Option<u64> {
            if values.is_empty() {
                return None;
            }
            let k = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values.get(k.clamp(1, values.len()) - 1).copied()
        };
        Percentiles {
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
        }
    }
}

/// Totals of one group (or of everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageGroup {
    /// The group's value of each dimension grouped by (empty for the total).
    pub key: IndexMap<String, String>,
    pub calls: u64,
    pub errors: u64,
    /// `errors / calls` (0 without calls).
    pub error_rate: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// The known USD, and the models without a price (then the total is unknown).
    pub cost: Cost,
    pub latency_ms: Percentiles,
}

/// The cost of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCost {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub cost: Cost,
}

/// A cost and usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Only calls from this time on (ms since the epoch), when limited.
    pub since_ms: Option<i64>,
    pub by: Vec<Dimension>,
    /// One per distinct key, sorted by key.
    pub groups: Vec<UsageGroup>,
    pub total: UsageGroup,
    /// Every day with calls, oldest first.
    pub cost_per_day: Vec<DayCost>,
}

/// Aggregates `rows` (already filtered) into groups by `by`.
pub fn aggregate(rows: &[UsageRow], by: &[Dimension], since_ms: Option<i64>) -> UsageReport {
    let mut groups: BTreeMap<Vec<String>, (UsageGroup, Vec<u64>)> = BTreeMap::new();
    let mut total = (UsageGroup::default(), Vec::new());
    let mut days: BTreeMap<String, Cost> = BTreeMap::new();
    for row in rows {
        let key: Vec<String> = by.iter().map(|d| value_of(row, *d)).collect();
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            let key = by.iter().map(|d| d.as_str().to_string()).zip(key).collect();
            (
                UsageGroup {
                    key,
                    ..Default::default()
                },
                Vec::new(),
            )
        });
        add(entry, row);
        add(&mut total, row);
        days.entry(utc_day(row.at_ms)).or_default().add(&row.cost);
    }
    UsageReport {
        since_ms,
        by: by.to_vec(),
        groups: groups.into_values().map(finish).collect(),
        total: finish(total),
        cost_per_day: days
            .into_iter()
            .map(|(day, cost)| DayCost { day, cost })
            .collect(),
    }
}

fn add((group, latencies): &mut (UsageGroup, Vec<u64>), row: &UsageRow) {
    group.calls += row.calls;
    group.errors += row.errors;
    group.input_tokens += row.input_tokens;
    group.output_tokens += row.output_tokens;
    group.cached_tokens += row.cached_tokens;
    group.cost.add(&row.cost);
    if row.calls > 0 {
        latencies.push(row.latency_ms);
    }
}

fn finish((mut group, latencies): (UsageGroup, Vec<u64>)) -> UsageGroup {
    group.error_rate = if group.calls == 0 {
        0.0
    } else {
        group.errors as f64 / group.calls as f64
    };
    group.latency_ms = Percentiles::of(latencies);
    group
}

fn value_of(row: &UsageRow, d: Dimension) -> String {
    match d {
        Dimension::Flow => row.flow.clone().unwrap_or_else(|| "-".into()),
        Dimension::Prompt => row.prompt.clone(),
        Dimension::Version => row.version.clone(),
        Dimension::Model => row.model.clone(),
        Dimension::Provider => row.provider.clone(),
        Dimension::Environment => row.environment.clone(),
        Dimension::Day => utc_day(row.at_ms),
    }
}

/// `YYYY-MM-DD` of the UTC day holding `ms`.
pub fn utc_day(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(crate::spend::DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Reads `--since`: a duration back from `now_ms` (`7d`, `12h`) or a UTC date (`2026-11-01`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(ms) = parse_date(text) {
        return Ok(ms);
    }
    match humantime::parse_duration(text) {
        Ok(d) => Ok(now_ms - d.as_millis().min(i64::MAX as u128) as i64),
        Err(_) => Err(format!(
            "invalid `--since` value `{text}`: give a duration such as `7d` or `12h`, or a date such as `2026-11-01`"
        )),
    }
}

/// `YYYY-MM-DD` → ms at its UTC midnight.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if text.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days * crate::spend::DAY_MS)
}

// Howard Hinnant's algorithms (proleptic Gregorian calendar, days since 1970-01-01).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY1: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    fn row(model: &str, at_ms: i64, latency_ms: u64, cost: Cost, errors: u64) -> UsageRow {
        UsageRow {
            flow: Some("f".into()),
            prompt: "p".into(),
            version: "v1".into(),
            provider: "openai".into(),
            model: model.into(),
            environment: "local".into(),
            at_ms,
            calls: 1,
            errors,
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            cost,
            latency_ms,
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc_day(DAY1 + 3_600_000), "2026-11-01");
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(parse_since("2026-11-01", 0), Ok(DAY1));
        assert_eq!(parse_since("7d", DAY1), Ok(DAY1 - 7 * 86_400_000));
        assert!(parse_since("2026-02-30", 0).is_err());
        assert!(
            parse_since("yesterday", 0)
                .unwrap_err()
                .contains("`--since`")
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().collect());
        assert_eq!((p.p50, p.p95, p.p99), (Some(50), Some(95), Some(99)));
        let p = Percentiles::of(vec![7, 3]);
        assert_eq!((p.p50, p.p95, p.p99), (Some(3), Some(7), Some(7)));
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
    }

    #[test]
    fn groups_by_model_and_day_with_unknown_costs_kept_apart() {
        let rows = [
            row("a", DAY1 + 1, 100, Cost::known(0.25), 0),
            row("a", DAY1 + 2, 300, Cost::known(0.5), 1),
            row("b", DAY1 + 86_400_000, 200, Cost::unknown("b"), 0),
        ];
        let by = Dimension::parse_list("model, day,model").unwrap();
        assert_eq!(by, [Dimension::Model, Dimension::Day]);
        let report = aggregate(&rows, &by, None);
        assert_eq!(report.groups.len(), 2);
        let a = &report.groups[0];
        assert_eq!(a.key["model"], "a");
        assert_eq!(a.key["day"], "2026-11-01");
        assert_eq!((a.calls, a.errors, a.error_rate), (2, 1, 0.5));
        assert_eq!(a.cost, Cost::known(0.75));
        assert_eq!(a.latency_ms.p50, Some(100));
        assert_eq!(report.total.calls, 3);
        assert_eq!(report.total.input_tokens, 30);
        assert_eq!(report.total.cost.usd_if_known(), None);
        assert_eq!(report.total.cost.usd, 0.75);
        let days: Vec<&str> = report.cost_per_day.iter().map(|d| d.day.as_str()).collect();
        assert_eq!(days, ["2026-11-01", "2026-11-02"]);
        assert!(!report.cost_per_day[1].cost.is_known());
    }

    #[test]
    fn unknown_dimension_is_named() {
        let err = Dimension::parse_list("model,colour").unwrap_err();
        assert!(
            err.contains("`colour`") && err.contains("environment"),
            "{err}"
        );
    }
}
