//! Executors for a local project: its providers, prices and secrets, a response cache and the
//! history sink wired together. `flowrun test`, `flowrun eval` and `flowrun dev` build theirs
//! here, so all of them cache and record the same way.

use std::sync::{Arc, OnceLock};

use flowrun_core::cache::ResponseCache;
use flowrun_core::cassette::Cassette;
use flowrun_core::event::{EventSink, FanOut};
use flowrun_core::exec::BuildError;
use flowrun_core::project::CONFIG_FILE;
use flowrun_core::spec::ProviderKind;
use flowrun_core::{Executor, Project, SourceFile};

use crate::{LoadError, LocalProject, Store};

/// Where model answers come from and go to.
#[derive(Clone, Default)]
pub struct CacheSetup {
    /// Looked up before every model call, and given every answer.
    pub cache: Option<Arc<dyn ResponseCache>>,
    /// A cache miss fails the call instead of calling the provider.
    pub replay_only: bool,
    /// The cassette being recorded (it is also inside `cache`), to write out at the end.
    pub recording: Option<Arc<Cassette>>,
}

impl CacheSetup {
    /// Reads and writes the project's SQLite response cache.
    pub fn store(store: &Arc<Store>) -> Self {
        CacheSetup {
            cache: Some(store.clone() as Arc<dyn ResponseCache>),
            ..CacheSetup::default()
        }
    }
}

impl std::fmt::Debug for CacheSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSetup")
            .field("cache", &self.cache.is_some())
            .field("replay_only", &self.replay_only)
            .field("recording", &self.recording.is_some())
            .finish()
    }
}

/// Why an executor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The project's price table could not be read.
    #[error(transparent)]
    Prices(#[from] LoadError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// An executor of `project` (the local project itself, a baseline version of it, or a
/// [`support_project`]) with `local`'s prices and secrets, `setup`'s cache, and runs recorded
/// to `sink` when given.
pub fn build_executor(
    local: &LocalProject,
    project: Project,
    setup: &CacheSetup,
    sink: Option<Arc<Store>>,
) -> Result<Executor, SetupError> {
    build_executor_sharing(local, project, setup, sink, &SharedHttp::default(), None)
}

/// One HTTP client for every executor built with it, made the first time a project with a
/// provider over HTTP needs it. Executors built together (a draft, its judge, a baseline) or
/// again and again (`flowrun dev` on every edit) share its connections and the system's TLS
/// roots it reads once, on its first HTTPS handshake. Clones share the client.
#[derive(Debug, Clone, Default)]
pub struct SharedHttp(Arc<OnceLock<Option<reqwest::Client>>>);

impl SharedHttp {
    /// Makes the client now if `project` needs one, e.g. on another thread while other work
    /// goes on, so that building the executors later does not wait for it.
    pub fn prepare(&self, project: &Project) {
        let _ = self.for_project(project);
    }

    /// The client for `project`'s providers, `None` when it needs none (only mock providers)
    /// or when it cannot be made (the executor then makes its own and reports why).
    fn for_project(&self, project: &Project) -> Option<reqwest::Client> {
        let over_http = project
            .config
            .providers
            .values()
            .any(|p| p.kind != ProviderKind::Mock);
        if !over_http {
            return None;
        }
        self.0
            .get_or_init(|| flowrun_core::exec::http_client().ok())
            .clone()
    }
}

/// [`build_executor`] with the providers on `http`'s client, and every run event also sent
/// to `observer` when given (the OpenTelemetry export).
pub fn build_executor_sharing(
    local: &LocalProject,
    project: Project,
    setup: &CacheSetup,
    sink: Option<Arc<Store>>,
    http: &SharedHttp,
    observer: Option<Arc<dyn EventSink>>,
) -> Result<Executor, SetupError> {
    let prices = local.prices()?;
    let client = http.for_project(&project);
    let mut builder = Executor::builder(Arc::new(project))
        .env(local.env_lookup())
        .prices(prices)
        .replay_only(setup.replay_only)
        .processes(crate::LocalProcesses::new(&local.root));
    if let Some(client) = client {
        builder = builder.http_client(client);
    }
    if let Some(cache) = &setup.cache {
        builder = builder.cache(cache.clone());
    }
    match (sink, observer) {
        (Some(store), Some(observer)) => {
            let both: Vec<Arc<dyn EventSink>> = vec![store.clone(), observer];
            builder = builder.sink(Arc::new(FanOut(both))).ledger(store);
        }
        (Some(store), None) => builder = builder.sink(store.clone()).ledger(store),
        (None, Some(observer)) => builder = builder.sink(observer),
        (None, None) => {}
    }
    Ok(builder.build()?)
}

/// A project of one of flowrun's own prompts (the judges) on the user's providers and models.
pub fn support_project(local: &LocalProject, prompt: SourceFile) -> Project {
    let config = local
        .project
        .config_doc
        .as_ref()
        .map(|d| d.text.to_string())
        .unwrap_or_default();
    let sources = vec![SourceFile::new(CONFIG_FILE, config), prompt];
    Project::parse(sources).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(config: &str) -> Project {
        Project::load(vec![SourceFile::new(CONFIG_FILE, config)]).expect("valid")
    }

    #[test]
    fn the_shared_client_is_made_only_for_providers_over_http() {
        let http = SharedHttp::default();
        let mock = project("providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n");
        assert!(http.for_project(&mock).is_none());
        assert!(http.0.get().is_none(), "not made for a mock-only project");
        let remote = project(
            "providers: {o: {kind: openai, base_url: \"http://127.0.0.1:9/v1\"}}\ndefaults: {model: o/x}\n",
        );
        assert!(http.for_project(&remote).is_some());
        assert!(http.clone().0.get().is_some(), "clones share the client");
    }
}
