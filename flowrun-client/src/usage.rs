//! The answer of `GET /v1/usage`: cost and usage of deployed runs, grouped.

use serde::{Deserialize, Serialize};

/// Which usage to report.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Only this environment (default: the key's; every one for a `*` key).
    pub env: Option<String>,
    /// A duration back from now (`7d`) or a UTC date (`2026-11-01`).
    pub since: Option<String>,
    /// Dimensions to group by: `flow`, `prompt`, `version`, `model`, `provider`,
    /// `environment`, `day`.
    pub by: Vec<String>,
}

/// A cost that may be partly unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageCost {
    /// The known part, in USD.
    pub usd: f64,
    /// Models without a price: when not empty, the total is unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_models: Vec<String>,
}

/// Latency percentiles in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

/// The totals of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageGroup {
    /// Dimension → value, in the order grouped by.
    pub key: serde_json::Map<String, serde_json::Value>,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost: UsageCost,
    pub latency_ms: Percentiles,
}

/// The cost of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCost {
    pub day: String,
    pub cost: UsageCost,
}

/// A cost and usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub since_ms: Option<i64>,
    pub by: Vec<String>,
    pub groups: Vec<UsageGroup>,
    pub total: UsageGroup,
    pub cost_per_day: Vec<DayCost>,
}
