//! `/metrics`: Prometheus metrics in the OpenMetrics text format, from a [`Registry`] the
//! server owns (no global recorder). Run counts by status and the queue depth are read from
//! the database at each scrape, so every replica reports the same numbers; latencies, tokens,
//! cost and webhook outcomes are what this process saw.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use flowrun_core::event::CallRecord;

use crate::store::{RunState, ServerStore, StoreError};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabel {
    env: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_buckets() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

fn call_buckets() -> Histogram {
    // 10 ms to about 2.7 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Every metric of the server, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    runs: Family<StatusLabel, Gauge>,
    queue_depth: Gauge,
    run_duration: HistogramFamily<StatusLabel>,
    call_duration: HistogramFamily<CallLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabel, Counter<f64, AtomicU64>>,
    webhooks: Family<OutcomeLabel, Counter>,
    budget_refusals: Family<EnvLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flowrun");
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register("runs", "Runs in the database by status", runs.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs waiting for a worker (status queued)",
            queue_depth.clone(),
        );
        let run_duration: HistogramFamily<StatusLabel> =
            Family::new_with_constructor(run_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "run_duration",
            "From submission to end, of runs this process finished",
            Unit::Seconds,
            run_duration.clone(),
        );
        let call_duration: HistogramFamily<CallLabels> =
            Family::new_with_constructor(call_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "llm_call_duration",
            "Model call attempts (not cached), by model and outcome",
            Unit::Seconds,
            call_duration.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "llm_tokens",
            "Tokens of model calls (not cached), by model and direction (input, output)",
            tokens.clone(),
        );
        let cost = Family::<ModelLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "llm_cost_usd",
            "Known cost of model calls in US dollars, by model",
            cost.clone(),
        );
        let webhooks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            webhooks.clone(),
        );
        let budget_refusals = Family::<EnvLabel, Counter>::default();
        registry.register(
            "budget_refusals",
            "Runs stopped before a model call that could have crossed a budget limit, by environment",
            budget_refusals.clone(),
        );
        Metrics {
            registry,
            budget_refusals,
            runs,
            queue_depth,
            run_duration,
            call_duration,
            tokens,
            cost,
            webhooks,
        }
    }

    /// A run this process ended, `seconds` after it was submitted.
    pub fn run_ended(&self, status: RunState, seconds: f64) {
        self.run_duration
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .observe(seconds.max(0.0));
    }

    /// A model call attempt; cached answers cost nothing and took no call, so they are left out.
    pub fn call(&self, record: &CallRecord) {
        if record.cached {
            return;
        }
        let model = format!("{}/{}", record.provider, record.model);
        let outcome = if record.error.is_none() {
            "ok"
        } else {
            "error"
        };
        self.call_duration
            .get_or_create(&CallLabels {
                model: model.clone(),
                outcome,
            })
            .observe(record.latency_ms as f64 / 1000.0);
        for (direction, n) in [
            ("input", record.usage.input_tokens),
            ("output", record.usage.output_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.clone(),
                    direction,
                })
                .inc_by(n);
        }
        if record.cost.usd > 0.0 {
            self.cost
                .get_or_create(&ModelLabel { model })
                .inc_by(record.cost.usd);
        }
    }

    /// A run of `env` was stopped by a budget limit.
    pub fn budget_refused(&self, env: &str) {
        self.budget_refusals
            .get_or_create(&EnvLabel { env: env.into() })
            .inc();
    }

    /// A webhook attempt ended: `delivered`, `retry` or `failed`.
    pub fn webhook_outcome(&self, outcome: &'static str) {
        self.webhooks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Reads the run counts from `store` and renders every metric.
    pub async fn render(&self, store: &dyn ServerStore) -> Result<String, StoreError> {
        let counts = store.run_counts().await?;
        let count = |s: RunState| {
            counts
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| *n)
        };
        for s in [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ] {
            let n = i64::try_from(count(s)).unwrap_or(i64::MAX);
            self.runs
                .get_or_create(&StatusLabel { status: s.as_str() })
                .set(n);
        }
        self.queue_depth
            .set(i64::try_from(count(RunState::Queued)).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        Ok(text)
    }
}
