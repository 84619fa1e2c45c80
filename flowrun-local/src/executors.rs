//! Executors for a local project: its providers, prices and secrets, a response cache and the
//! history sink wired together. `flowrun test`, `flowrun eval` and `flowrun dev` build theirs
//! here, so all of them cache and record the same way.

use std::sync::Arc;

use flowrun_core::cache::ResponseCache;
use flowrun_core::cassette::Cassette;
use flowrun_core::exec::BuildError;
use flowrun_core::project::CONFIG_FILE;
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
    let prices = local.prices()?;
    let mut builder = Executor::builder(Arc::new(project))
        .env(local.env_lookup())
        .prices(prices)
        .replay_only(setup.replay_only);
    if let Some(cache) = &setup.cache {
        builder = builder.cache(cache.clone());
    }
    if let Some(store) = sink {
        builder = builder.sink(store);
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
