//! Model references: an alias from `flowrun.yaml` or `provider/model`, resolved to the concrete
//! provider and model, with the fallback chain to try when it keeps failing.

use crate::diag::did_you_mean;
use crate::provider::Params;
use crate::spec::ProjectConfig;

/// A concrete model on a concrete provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTarget {
    /// The provider's name in `flowrun.yaml`.
    pub provider: String,
    /// The model as the provider names it.
    pub model: String,
    /// Parameters set on the alias, if any.
    pub params: Option<Params>,
}

impl ModelTarget {
    /// `provider/model`, as shown to users and stored in records.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// Resolves one reference (no fallbacks).
pub fn resolve_one(config: &ProjectConfig, reference: &str) -> Result<ModelTarget, String> {
    if let Some(alias) = config.models.get(reference) {
        if !config.providers.contains_key(&alias.provider) {
            return Err(unknown_provider(config, &alias.provider));
        }
        return Ok(ModelTarget {
            provider: alias.provider.clone(),
            model: alias.model.clone(),
            params: alias.params.clone(),
        });
    }
    if let Some((provider, model)) = reference.split_once('/') {
        if !config.providers.contains_key(provider) {
            return Err(unknown_provider(config, provider));
        }
        return Ok(ModelTarget {
            provider: provider.to_string(),
            model: model.to_string(),
            params: None,
        });
    }
    let hint = did_you_mean(reference, config.models.keys().map(String::as_str))
        .unwrap_or_else(|| "define it under `models:` in flowrun.yaml".into());
    Err(format!(
        "unknown model `{reference}`; {hint} (or write `provider/model`)"
    ))
}

fn unknown_provider(config: &ProjectConfig, name: &str) -> String {
    let hint = did_you_mean(name, config.providers.keys().map(String::as_str))
        .unwrap_or_else(|| "define it under `providers:` in flowrun.yaml".into());
    format!("unknown provider `{name}`; {hint}")
}

/// Resolves a reference and its fallback chain, in the order to try them. Fallbacks of
/// fallbacks are followed; a model appears once.
pub fn resolve_chain(config: &ProjectConfig, reference: &str) -> Result<Vec<ModelTarget>, String> {
    let mut chain: Vec<ModelTarget> = Vec::new();
    let mut pending = vec![reference.to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(r) = pending.pop() {
        if !seen.insert(r.clone()) {
            continue;
        }
        let target = resolve_one(config, &r)?;
        if !chain.contains(&target) {
            chain.push(target);
        }
        if let Some(alias) = config.models.get(&r) {
            pending.extend(alias.fallback.iter().rev().cloned());
        }
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProjectConfig {
        crate::yaml::from_str(
            "flowrun.yaml",
            "providers:\n  a: {kind: mock}\n  b: {kind: openai}\nmodels:\n  fast: {provider: a, model: m1, fallback: [slow, b/m3]}\n  slow: {provider: b, model: m2}\n",
        )
        .unwrap()
    }

    #[test]
    fn follows_fallbacks_in_order() {
        let chain = resolve_chain(&config(), "fast").unwrap();
        let labels: Vec<String> = chain.iter().map(ModelTarget::label).collect();
        assert_eq!(labels, ["a/m1", "b/m2", "b/m3"]);
    }

    #[test]
    fn explains_unknown_names() {
        assert_eq!(
            resolve_one(&config(), "fsat").unwrap_err(),
            "unknown model `fsat`; did you mean `fast`? (or write `provider/model`)"
        );
        assert_eq!(
            resolve_one(&config(), "c/x").unwrap_err(),
            "unknown provider `c`; expected one of `a`, `b`"
        );
    }
}
