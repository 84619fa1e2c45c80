//! The version of a flow project an environment runs, for Rust apps that execute flows
//! in-process: fetched from the server, cached on disk, refreshed in the background, and
//! still served from the cache when the server cannot be reached.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowrun_client::ClientError> {
//! use std::sync::Arc;
//! let client = flowrun_client::Client::new("http://127.0.0.1:8080", Some("frk_…".into()))?;
//! let deployed = Arc::new(
//!     flowrun_client::Deployed::open(client, "prod", ".cache/prod-bundle.json").await?,
//! );
//! let _refresher = deployed.clone().refresh_every(std::time::Duration::from_secs(30));
//! let bundle = deployed.current(); // files for `flowrun_core::Project::load`
//! # let _ = bundle; Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BundleFile, Client, ClientError};

/// One deployed version: its id (content hash) and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub id: String,
    pub env: String,
    pub files: Vec<BundleFile>,
}

/// An environment's current bundle, kept fresh. Cheap to read from any thread.
pub struct Deployed {
    client: Client,
    env: String,
    path: PathBuf,
    current: Mutex<Arc<Bundle>>,
    /// The last refresh's error, cleared by a successful one.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Deployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployed")
            .field("env", &self.env)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Deployed {
    /// Fetches `env`'s bundle and caches it at `cache`; when the server cannot be reached (or
    /// answers an error), starts from the cached copy instead. Fails only when neither works.
    pub async fn open(
        client: Client,
        env: &str,
        cache: impl AsRef<Path>,
    ) -> Result<Deployed, ClientError> {
        let path = cache.as_ref().to_path_buf();
        let (bundle, error) = match fetch(&client, env).await {
            Ok(b) => {
                save(&path, &b).await;
                (b, None)
            }
            Err(e) => match load(&path, env).await {
                Some(b) => (b, Some(e.to_string())),
                None => return Err(e),
            },
        };
        Ok(Deployed {
            client,
            env: env.to_string(),
            path,
            current: Mutex::new(Arc::new(bundle)),
            last_error: Mutex::new(error),
        })
    }

    /// The bundle to run now: the newest fetched, or the cached one during an outage.
    pub fn current(&self) -> Arc<Bundle> {
        lock(&self.current).clone()
    }

    /// Why the last refresh failed, when it did (the current bundle is then the last good one).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Fetches the environment's bundle now; returns whether it changed. On error the current
    /// bundle stays.
    pub async fn refresh(&self) -> Result<bool, ClientError> {
        match fetch(&self.client, &self.env).await {
            Ok(b) => {
                *lock(&self.last_error) = None;
                if b == *self.current() {
                    return Ok(false);
                }
                save(&self.path, &b).await;
                *lock(&self.current) = Arc::new(b);
                Ok(true)
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Refreshes every `period` on a Tokio task until the returned handle is aborted or
    /// dropped with the runtime; errors are kept in [`Deployed::last_error`].
    pub fn refresh_every(self: Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = self.refresh().await;
            }
        })
    }
}

async fn fetch(client: &Client, env: &str) -> Result<Bundle, ClientError> {
    let b = client.env_bundle(env).await?;
    Ok(Bundle {
        id: b.id,
        env: b.env,
        files: b.files,
    })
}

/// The cached bundle of `env`, if the file holds one.
async fn load(path: &Path, env: &str) -> Option<Bundle> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let bundle: Bundle = serde_json::from_str(&text).ok()?;
    (bundle.env == env).then_some(bundle)
}

/// Writes the cache atomically (a temporary file renamed over it); a failure only costs the
/// cache, never the fetched bundle.
async fn save(path: &Path, bundle: &Bundle) {
    let Ok(text) = serde_json::to_string(bundle) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    if tokio::fs::write(&tmp, text).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, path).await;
    }
}
