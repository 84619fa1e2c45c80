//! What has been spent already, for `budget:` limits per day: the [`SpendLedger`] trait the
//! caller implements over its history (flowrun-local over SQLite, the server over its store).
//! The executor asks it before each model call while a `max_cost_per_day` applies.

use async_trait::async_trait;

/// Which spending to sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendQuery<'a> {
    /// Only runs of this flow; `None`: every run in the ledger's scope (the project, an
    /// environment).
    pub flow: Option<&'a str>,
    /// Only calls made at or after this time (ms since the epoch).
    pub since_ms: i64,
    /// Leaves this run out: the executor counts the run in progress itself.
    pub exclude_run: &'a str,
}

/// The known USD spent on model calls; unpriced calls count as nothing here (a limit cannot
/// be enforced on what has no price).
#[async_trait]
pub trait SpendLedger: Send + Sync {
    /// The USD spent by the runs `query` selects. An error refuses the call (a limit that
    /// cannot be checked is not ignored).
    async fn spent(&self, query: &SpendQuery<'_>) -> Result<f64, String>;
}

/// One UTC day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The start of the UTC day holding `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_start_is_utc_midnight() {
        // 2026-11-01T13:45:00Z
        let t = 1_793_540_700_000;
        assert_eq!(day_start(t), 1_793_491_200_000);
        assert_eq!(day_start(day_start(t)), day_start(t));
    }
}
