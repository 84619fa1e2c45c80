//! Cost of calls: a price table in LiteLLM's `model_prices_and_context_window.json` format
//! (shipped with flowrun, replaceable by a newer file), overridable per model in
//! `flowrun.yaml`. A model without a price makes the cost unknown, never a silent zero.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::provider::Usage;
use crate::spec::{PriceSpec, ProviderKind};

/// The price table flowrun ships: LiteLLM's data file, unmodified.
pub const SHIPPED_PRICES: &str = include_str!("../data/model_prices_and_context_window.json");

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Price of cached input tokens; `input` when the table has none.
    pub cached_input: f64,
}

impl Price {
    pub const FREE: Price = Price {
        input: 0.0,
        output: 0.0,
        cached_input: 0.0,
    };

    /// The USD cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        (usage.input_tokens - cached) as f64 * self.input
            + cached as f64 * self.cached_input
            + usage.output_tokens as f64 * self.output
    }
}

impl From<&PriceSpec> for Price {
    fn from(p: &PriceSpec) -> Self {
        Price {
            input: p.input_per_mtok / 1e6,
            output: p.output_per_mtok / 1e6,
            cached_input: p.cached_input_per_mtok.unwrap_or(p.input_per_mtok) / 1e6,
        }
    }
}

#[derive(Deserialize)]
struct LiteLlmEntry {
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
}

/// Model prices by name.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

/// A price file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid price table: {0}")]
pub struct PriceTableError(#[from] serde_json::Error);

impl PriceTable {
    /// Reads a table in LiteLLM's format; entries without both token prices are skipped.
    pub fn from_litellm_json(text: &str) -> Result<Self, PriceTableError> {
        let raw: HashMap<String, serde_json::Value> = serde_json::from_str(text)?;
        let prices = raw
            .into_iter()
            .filter_map(|(name, v)| {
                let e: LiteLlmEntry = serde_json::from_value(v).ok()?;
                let (input, output) = (e.input_cost_per_token?, e.output_cost_per_token?);
                Some((
                    name,
                    Price {
                        input,
                        output,
                        cached_input: e.cache_read_input_token_cost.unwrap_or(input),
                    },
                ))
            })
            .collect();
        Ok(PriceTable { prices })
    }

    /// The table flowrun ships.
    pub fn shipped() -> Self {
        // Read once per process (it is big: every executor built would take milliseconds),
        // then copied.
        static SHIPPED: std::sync::LazyLock<PriceTable> = std::sync::LazyLock::new(|| {
            // The shipped file is checked by a test; an unreadable one would be a build defect.
            PriceTable::from_litellm_json(SHIPPED_PRICES).unwrap_or_default()
        });
        SHIPPED.clone()
    }

    /// Applies `flowrun.yaml`'s `pricing:` overrides.
    pub fn with_overrides<'a>(
        mut self,
        overrides: impl IntoIterator<Item = (&'a String, &'a PriceSpec)>,
    ) -> Self {
        for (model, spec) in overrides {
            self.prices.insert(model.clone(), spec.into());
        }
        self
    }

    /// The price of `model` on a provider of `kind`: tried as written, as `<kind>/<model>`,
    /// then without a routing prefix (`openai/gpt-4o` on OpenRouter).
    pub fn lookup(&self, kind: ProviderKind, model: &str) -> Option<Price> {
        if kind == ProviderKind::Mock {
            return Some(Price::FREE);
        }
        self.prices
            .get(model)
            .or_else(|| self.prices.get(&format!("{}/{model}", kind.as_str())))
            .or_else(|| model.rsplit_once('/').and_then(|(_, m)| self.prices.get(m)))
            .copied()
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

/// A cost that may be partly unknown: the known part, and the models that had no price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub usd: f64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unknown_models: BTreeSet<String>,
}

impl Cost {
    pub fn known(usd: f64) -> Self {
        Cost {
            usd,
            unknown_models: BTreeSet::new(),
        }
    }

    pub fn unknown(model: impl Into<String>) -> Self {
        Cost {
            usd: 0.0,
            unknown_models: BTreeSet::from([model.into()]),
        }
    }

    /// The cost of `usage` for `model`, known only if the table has its price.
    pub fn of(price: Option<Price>, model: &str, usage: &Usage) -> Self {
        match price {
            Some(p) => Cost::known(p.cost(usage)),
            None => Cost::unknown(model),
        }
    }

    pub fn is_known(&self) -> bool {
        self.unknown_models.is_empty()
    }

    /// The total in USD when every part is known.
    pub fn usd_if_known(&self) -> Option<f64> {
        self.is_known().then_some(self.usd)
    }

    pub fn add(&mut self, other: &Cost) {
        self.usd += other.usd;
        self.unknown_models
            .extend(other.unknown_models.iter().cloned());
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            return write!(f, "${}", format_usd(self.usd));
        }
        let models: Vec<&str> = self.unknown_models.iter().map(String::as_str).collect();
        write!(f, "unknown (no price for {})", models.join(", "))
    }
}

/// `0.000123` → `0.000123`, `1.5` → `1.5000`: enough digits to see small costs.
pub fn format_usd(usd: f64) -> String {
    if usd == 0.0 {
        "0".into()
    } else if usd < 0.01 {
        format!("{usd:.6}")
    } else {
        format!("{usd:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_has_common_models() {
        let t = PriceTable::shipped();
        assert!(t.len() > 100, "only {} prices", t.len());
        let p = t
            .lookup(ProviderKind::Openai, "gpt-4o-mini")
            .expect("gpt-4o-mini priced");
        assert!(p.input > 0.0 && p.output > p.input);
        assert!(
            t.lookup(ProviderKind::Openai, "openai/gpt-4o-mini")
                .is_some(),
            "prefix stripped"
        );
    }

    #[test]
    fn cost_uses_cached_price_and_overrides() {
        let spec = PriceSpec {
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
            cached_input_per_mtok: Some(0.5),
        };
        let t = PriceTable::default().with_overrides([(&"m".to_string(), &spec)]);
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_tokens: 200_000,
            reasoning_tokens: 0,
        };
        let c = Cost::of(t.lookup(ProviderKind::Openai, "m"), "m", &usage);
        assert!(
            (c.usd - (0.8 * 2.0 + 0.2 * 0.5 + 0.5 * 8.0)).abs() < 1e-9,
            "{}",
            c.usd
        );
    }

    #[test]
    fn unknown_price_stays_unknown_when_summed() {
        let mut total = Cost::known(0.5);
        total.add(&Cost::of(None, "mystery", &Usage::default()));
        assert_eq!(total.usd_if_known(), None);
        assert_eq!(total.to_string(), "unknown (no price for mystery)");
    }
}
