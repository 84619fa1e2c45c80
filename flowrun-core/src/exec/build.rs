//! Wiring an [`Executor`]: providers from the project config (or injected) behind their rate
//! limits, the price table, the event sink, the response cache and where API keys come from.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::Executor;
use crate::agent::ProcessHost;
use crate::cache::ResponseCache;
use crate::cost::PriceTable;
use crate::event::{EventSink, NoSink};
use crate::project::Project;
use crate::provider::anthropic::AnthropicProvider;
use crate::provider::limit::{RateLimit, RateLimited};
use crate::provider::mock::MockProvider;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{ChatRequest, ChatResponse, DeltaFn, Provider, ProviderError};
use crate::render::Renderer;
use crate::spec::{ProviderKind, ProviderSpec};
use crate::spend::SpendLedger;

/// Looks up an environment variable (API keys). Injected so tests and apps control it.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The executor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("the project's templates do not compile: {0}")]
    Templates(crate::diag::Diagnostics),
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
}

/// The HTTP client an executor makes for its providers when not given one: rustls, with the
/// system's roots read on its first HTTPS handshake ([`super::tls`]). Executors built together
/// can share one through [`ExecutorBuilder::http_client`].
pub fn http_client() -> Result<reqwest::Client, BuildError> {
    let tls = super::tls::client_config().map_err(|e| BuildError::Http(e.to_string()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

/// Builds an [`Executor`].
pub struct ExecutorBuilder {
    project: Arc<Project>,
    sink: Arc<dyn EventSink>,
    overrides: HashMap<String, Arc<dyn Provider>>,
    env: Arc<EnvLookup>,
    prices: Option<PriceTable>,
    http: Option<reqwest::Client>,
    cache: Option<Arc<dyn ResponseCache>>,
    replay_only: bool,
    ledger: Option<Arc<dyn SpendLedger>>,
    processes: Option<Arc<dyn ProcessHost>>,
}

impl ExecutorBuilder {
    pub(super) fn new(project: Arc<Project>) -> Self {
        ExecutorBuilder {
            project,
            sink: Arc::new(NoSink),
            overrides: HashMap::new(),
            env: Arc::new(|name| std::env::var(name).ok()),
            prices: None,
            http: None,
            cache: None,
            replay_only: false,
            ledger: None,
            processes: None,
        }
    }

    /// Where run events go (default: nowhere).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Uses `provider` for the provider named `name` in `flowrun.yaml`, instead of building
    /// one from its spec.
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn Provider>) -> Self {
        self.overrides.insert(name.into(), provider);
        self
    }

    /// Where API keys are read from (default: the process environment).
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Arc::new(lookup);
        self
    }

    /// The price table (default: the shipped one with the project's overrides).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// The HTTP client shared by the providers (default: a new one).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Answers calls from `cache` when it has the reply (the provider is not called, the
    /// attempt is recorded as `cached` and costs nothing) and stores every reply a provider
    /// gives in it (default: no cache).
    pub fn cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// With `true`, a call the cache cannot answer fails with a non-retryable error instead of
    /// calling the provider (a fallback model is still looked up in the cache): replaying a
    /// cassette in CI, where there are no keys (default: false).
    pub fn replay_only(mut self, replay_only: bool) -> Self {
        self.replay_only = replay_only;
        self
    }

    /// Where today's spend is read from for `max_cost_per_day` limits (default: nowhere, so
    /// only the run itself counts). A [`crate::RunRequest`] may bring its own.
    pub fn ledger(mut self, ledger: Arc<dyn SpendLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Lets command tools and stdio MCP servers start local programs through `host`
    /// (default: none, and both are refused, as on the server).
    pub fn processes(mut self, host: Arc<dyn ProcessHost>) -> Self {
        self.processes = Some(host);
        self
    }

    pub fn build(self) -> Result<Executor, BuildError> {
        let (renderer, diags) = Renderer::new(&self.project);
        if !diags.is_empty() {
            return Err(BuildError::Templates(crate::diag::Diagnostics(diags)));
        }
        let needs_http = self
            .project
            .config
            .providers
            .iter()
            .any(|(n, s)| s.kind != ProviderKind::Mock && !self.overrides.contains_key(n));
        let tool_http = std::sync::OnceLock::new();
        if let Some(client) = &self.http {
            let _ = tool_http.set(client.clone());
        }
        let http = match (self.http, needs_http) {
            (Some(c), _) => Some(c),
            (None, true) => Some(http_client()?),
            (None, false) => None,
        };
        let mut providers = HashMap::new();
        let mut provider_ids = HashMap::new();
        for (name, spec) in &self.project.config.providers {
            provider_ids.insert(name.clone(), provider_id(name, spec));
            let mut provider = match self.overrides.get(name) {
                Some(p) => p.clone(),
                None => build_provider(name, spec, http.as_ref(), &*self.env),
            };
            // One limiter per provider, so every call to it (concurrent runs too) shares it.
            if let Some(per_minute) = spec.rate_limit {
                provider = Arc::new(RateLimited::new(
                    provider,
                    RateLimit::per_minute(per_minute),
                ));
            }
            providers.insert(name.clone(), (spec.kind, provider));
        }
        let config = &self.project.config;
        let prices = self
            .prices
            .unwrap_or_else(PriceTable::shipped)
            .with_overrides(&config.pricing);
        let mcp = crate::agent::McpServers::new(&self.project.config);
        Ok(Executor {
            provider_ids,
            project: self.project,
            renderer,
            providers,
            prices,
            sink: self.sink,
            cache: self.cache,
            replay_only: self.replay_only,
            env: self.env,
            tool_http,
            ledger: self.ledger,
            processes: self.processes,
            mcp,
        })
    }
}

/// `name@<hash of kind, configured base_url and mock rules>`: what identifies a provider's
/// answers in caches and cassettes (keys and rate limits are left out on purpose).
fn provider_id(name: &str, spec: &ProviderSpec) -> String {
    let identity =
        serde_json::json!({ "kind": spec.kind, "base_url": spec.base_url, "rules": spec.rules });
    format!(
        "{name}@{}",
        crate::project::short_hash(&identity.to_string())
    )
}

/// The endpoint: `base_url_env`'s variable when set, else `base_url`.
fn endpoint(spec: &ProviderSpec, env: &EnvLookup) -> Option<String> {
    spec.base_url_env
        .as_deref()
        .and_then(env)
        .filter(|u| !u.is_empty())
        .or_else(|| spec.base_url.clone())
}

fn build_provider(
    name: &str,
    spec: &ProviderSpec,
    http: Option<&reqwest::Client>,
    env: &EnvLookup,
) -> Arc<dyn Provider> {
    let key = match &spec.api_key_env {
        Some(var) => match env(var) {
            Some(k) if !k.is_empty() => Some(k),
            _ => {
                let message = format!(
                    "environment variable `{var}` is not set; export it (or put it in `.env`) to use provider `{name}`"
                );
                return Arc::new(Unavailable(message));
            }
        },
        None => None,
    };
    let Some(http) = http.cloned() else {
        return Arc::new(MockProvider::new(spec.rules.clone()));
    };
    match spec.kind {
        ProviderKind::Mock => Arc::new(MockProvider::new(spec.rules.clone())),
        ProviderKind::Openai => {
            let base = endpoint(spec, env).unwrap_or_else(|| "https://api.openai.com/v1".into());
            Arc::new(OpenAiProvider::new(http, base, key))
        }
        ProviderKind::Anthropic => {
            let base = endpoint(spec, env).unwrap_or_else(|| "https://api.anthropic.com".into());
            Arc::new(AnthropicProvider::new(http, base, key))
        }
    }
}

/// A provider that cannot be used, saying why on every call.
struct Unavailable(String);

#[async_trait]
impl Provider for Unavailable {
    async fn chat(
        &self,
        _: &ChatRequest,
        _: Option<&DeltaFn>,
    ) -> Result<ChatResponse, ProviderError> {
        Err(ProviderError::Config(self.0.clone()))
    }
}
