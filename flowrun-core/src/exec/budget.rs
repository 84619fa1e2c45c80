//! `budget:` limits, checked right before each model call: the run's spend so far, today's
//! spend (from the injected [`SpendLedger`]) and the call's worst case must stay within them.
//!
//! The worst case of a call is cheap to compute and errs high: the rendered request's
//! characters / 4 as input tokens (about right for English with GPT-style tokenizers; the
//! first call then tells the real count) plus the reply's cap (`max_tokens`, else
//! `max_tokens_per_call`, else [`ASSUMED_MAX_OUTPUT`]) at the model's price. Concurrent runs
//! each check against what was recorded when they asked, so together they may overshoot
//! a daily limit by the calls in flight.

use std::sync::Arc;

use crate::cost::{Price, format_usd};
use crate::provider::{ChatRequest, ResponseFormat};
use crate::spec::BudgetSpec;
use crate::spend::{SpendLedger, SpendQuery, day_start};

/// The reply length assumed for a call with no `max_tokens` and no `max_tokens_per_call`.
pub const ASSUMED_MAX_OUTPUT: u32 = 4096;

/// The limits that apply to one run, and where today's spend comes from.
#[derive(Clone, Default)]
pub(super) struct Budget {
    project: BudgetSpec,
    /// The run's flow (top level) and its own limits.
    flow: Option<(String, BudgetSpec)>,
    ledger: Option<Arc<dyn SpendLedger>>,
}

/// What a call would be, as far as limits care.
pub(super) struct CallEstimate<'a> {
    /// `provider/model`.
    pub label: String,
    pub model: &'a str,
    pub price: Option<Price>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Budget {
    pub fn new(
        project: Option<&BudgetSpec>,
        flow: Option<(&str, Option<&BudgetSpec>)>,
        ledger: Option<Arc<dyn SpendLedger>>,
    ) -> Self {
        Budget {
            project: project.cloned().unwrap_or_default(),
            flow: flow.and_then(|(name, spec)| Some((name.to_string(), spec?.clone()))),
            ledger,
        }
    }

    /// The limits with where each comes from: `flowrun.yaml`, or `flow <name>`.
    fn specs(&self) -> impl Iterator<Item = (String, &BudgetSpec)> {
        let project = std::iter::once(("flowrun.yaml".to_string(), &self.project));
        let flow = self
            .flow
            .iter()
            .map(|(name, spec)| (format!("flow `{name}`"), spec));
        project.chain(flow)
    }

    /// The strictest `max_tokens_per_call`.
    pub fn max_tokens_per_call(&self) -> Option<u32> {
        self.specs()
            .filter_map(|(_, s)| s.max_tokens_per_call.map(|n| n.get()))
            .min()
    }

    /// Whether any limit applies.
    pub fn is_empty(&self) -> bool {
        self.specs().all(|(_, s)| {
            s.max_cost_per_run.is_none()
                && s.max_cost_per_day.is_none()
                && s.max_tokens_per_call.is_none()
        })
    }

    /// Refuses the call (with a message naming the limit) if it could cross one.
    /// `run_spent` is what the run spent so far (known part).
    pub async fn check(
        &self,
        run_id: &str,
        run_spent: f64,
        call: &CallEstimate<'_>,
        now_ms: i64,
    ) -> Result<(), String> {
        for (source, spec) in self.specs() {
            if let Some(limit) = spec.max_tokens_per_call
                && call.input_tokens > u64::from(limit.get())
            {
                return Err(format!(
                    "budget limit `max_tokens_per_call` ({limit}, {source}) would be exceeded: the prompt for {} is about {} tokens",
                    call.label, call.input_tokens
                ));
            }
        }
        let cost_limited = self
            .specs()
            .any(|(_, s)| s.max_cost_per_run.is_some() || s.max_cost_per_day.is_some());
        if !cost_limited {
            return Ok(());
        }
        let Some(price) = call.price else {
            let (source, name) = self
                .specs()
                .find_map(|(src, s)| {
                    let name = if s.max_cost_per_run.is_some() {
                        "max_cost_per_run"
                    } else if s.max_cost_per_day.is_some() {
                        "max_cost_per_day"
                    } else {
                        return None;
                    };
                    Some((src, name))
                })
                .unwrap_or_default();
            return Err(format!(
                "budget limit `{name}` ({source}) cannot be checked: no price for model `{}`; add one under `pricing:` in flowrun.yaml",
                call.model
            ));
        };
        let worst =
            call.input_tokens as f64 * price.input + call.output_tokens as f64 * price.output;
        let next = format!(
            "the next call to {} may cost up to ${}",
            call.label,
            format_usd(worst)
        );
        for (source, spec) in self.specs() {
            if let Some(limit) = spec.max_cost_per_run
                && run_spent + worst > limit
            {
                return Err(format!(
                    "budget limit `max_cost_per_run` (${}, {source}) would be exceeded: this run spent ${} and {next}",
                    format_usd(limit),
                    format_usd(run_spent)
                ));
            }
        }
        for (source, spec) in self.specs() {
            let Some(limit) = spec.max_cost_per_day else {
                continue;
            };
            let flow = self
                .flow
                .as_ref()
                .filter(|_| source != "flowrun.yaml")
                .map(|(name, _)| name.as_str());
            let earlier = match &self.ledger {
                Some(ledger) => {
                    let query = SpendQuery {
                        flow,
                        since_ms: day_start(now_ms),
                        exclude_run: run_id,
                    };
                    ledger.spent(&query).await.map_err(|e| {
                        format!("budget limit `max_cost_per_day` ({source}) cannot be checked: {e}")
                    })?
                }
                None => 0.0,
            };
            let today = earlier + run_spent;
            if today + worst > limit {
                return Err(format!(
                    "budget limit `max_cost_per_day` (${}, {source}) would be exceeded: ${} was spent today (UTC) and {next}",
                    format_usd(limit),
                    format_usd(today)
                ));
            }
        }
        Ok(())
    }
}

/// The request's input tokens, estimated as characters / 4 (rounded up): the messages, the
/// tool calls they carry, the tool definitions and a JSON answer's schema.
pub(super) fn estimate_input_tokens(request: &ChatRequest) -> u64 {
    let mut chars: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content.chars().count()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.to_string().chars().count())
                    .sum::<usize>()
        })
        .sum();
    chars += request
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.chars().count() + t.parameters.to_string().len())
        .sum::<usize>();
    if let ResponseFormat::Json {
        schema: Some(schema),
    } = &request.response_format
    {
        chars += schema.to_string().chars().count();
    }
    (chars as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::provider::{Message, Role};

    fn estimate(input: u64, output: u64, price: Option<Price>) -> CallEstimate<'static> {
        CallEstimate {
            label: "p/m".into(),
            model: "m",
            price,
            input_tokens: input,
            output_tokens: output,
        }
    }

    const PRICE: Price = Price {
        input: 1e-6,
        output: 2e-6,
        cached_input: 1e-6,
    };

    #[test]
    fn estimate_is_chars_over_four() {
        let mut request = ChatRequest::new(
            "m",
            vec![Message::new(Role::User, "abcdefghi")],
            Default::default(),
            ResponseFormat::Text,
        );
        assert_eq!(estimate_input_tokens(&request), 3);
        // Tool definitions and the calls in the conversation count too.
        request.tools.push(crate::provider::ToolDef {
            name: "abc".into(),
            description: "defg".into(),
            parameters: serde_json::json!({}),
        });
        assert_eq!(estimate_input_tokens(&request), 5);
    }

    #[tokio::test]
    async fn run_limit_counts_the_worst_case_of_the_next_call() {
        let spec = BudgetSpec {
            max_cost_per_run: Some(0.001),
            ..Default::default()
        };
        let budget = Budget::new(Some(&spec), None, None);
        // 100 in + 200 out = 0.0001 + 0.0004 = 0.0005.
        let call = estimate(100, 200, Some(PRICE));
        assert!(budget.check("r", 0.0005, &call, 0).await.is_ok());
        let err = budget.check("r", 0.00051, &call, 0).await.unwrap_err();
        assert!(
            err.contains("`max_cost_per_run` ($0.001000, flowrun.yaml)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_stricter_flow_limit_applies_and_is_named() {
        let project = BudgetSpec {
            max_tokens_per_call: NonZeroU32::new(1000),
            ..Default::default()
        };
        let flow = BudgetSpec {
            max_tokens_per_call: NonZeroU32::new(50),
            ..Default::default()
        };
        let budget = Budget::new(Some(&project), Some(("f", Some(&flow))), None);
        assert_eq!(budget.max_tokens_per_call(), Some(50));
        let err = budget
            .check("r", 0.0, &estimate(60, 10, None), 0)
            .await
            .unwrap_err();
        assert!(
            err.contains("`max_tokens_per_call` (50, flow `f`)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unpriced_model_cannot_pass_a_cost_limit() {
        let spec = BudgetSpec {
            max_cost_per_day: Some(1.0),
            ..Default::default()
        };
        let budget = Budget::new(Some(&spec), None, None);
        let err = budget
            .check("r", 0.0, &estimate(1, 1, None), 0)
            .await
            .unwrap_err();
        assert!(err.contains("no price for model `m`"), "{err}");
    }

    struct Fixed(f64);

    #[async_trait::async_trait]
    impl SpendLedger for Fixed {
        async fn spent(&self, _: &SpendQuery<'_>) -> Result<f64, String> {
            Ok(self.0)
        }
    }

    #[tokio::test]
    async fn day_limit_adds_the_ledger_and_the_run() {
        let spec = BudgetSpec {
            max_cost_per_day: Some(0.01),
            ..Default::default()
        };
        let budget = Budget::new(Some(&spec), None, Some(Arc::new(Fixed(0.009))));
        let call = estimate(100, 200, Some(PRICE));
        assert!(budget.check("r", 0.0, &call, 0).await.is_ok());
        let err = budget.check("r", 0.0006, &call, 0).await.unwrap_err();
        assert!(err.contains("$0.009600 was spent today"), "{err}");
    }
}
