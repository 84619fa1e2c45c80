//! A project on disk: found by walking up from the working directory (like git), read into
//! [`SourceFile`]s, with secrets from the environment and an optional `.env`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flowrun_core::Project;
use flowrun_core::cost::PriceTable;
use flowrun_core::diag::Diagnostics;
use flowrun_core::project::{CONFIG_FILE, SourceFile};

/// Directory of local state inside a project (gitignored).
pub const STATE_DIR: &str = ".flowrun";

/// Folders whose files belong to the project.
const SOURCE_DIRS: [&str; 4] = ["prompts", "flows", "partials", "tests"];

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error(
        "no flowrun project here: no `flowrun.yaml` in {0} or any parent directory (run `flowrun init` to create one)"
    )]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The nearest directory at or above `start` that holds a `flowrun.yaml`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    let start = std::path::absolute(start).ok()?;
    start
        .ancestors()
        .find(|d| d.join(CONFIG_FILE).is_file())
        .map(Path::to_path_buf)
}

/// A loaded project and where it lives.
#[derive(Debug, Clone)]
pub struct LocalProject {
    pub root: PathBuf,
    pub project: Project,
}

impl LocalProject {
    /// Finds the project above `start` and loads and checks it.
    pub fn discover(start: &Path) -> Result<Self, LoadError> {
        let shown = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
        let root = find_root(start).ok_or(LoadError::NotFound(shown))?;
        Self::open(&root)
    }

    /// Loads and checks the project at `root`.
    pub fn open(root: &Path) -> Result<Self, LoadError> {
        let sources = read_sources(root)?;
        let project = Project::load(sources).map_err(LoadError::Invalid)?;
        Ok(LocalProject {
            root: root.to_path_buf(),
            project,
        })
    }

    /// The SQLite history file.
    pub fn db_path(&self) -> PathBuf {
        self.root.join(STATE_DIR).join("flowrun.db")
    }

    /// The price table: the project's `pricing_file` if it sets one, else the shipped one.
    pub fn prices(&self) -> Result<PriceTable, LoadError> {
        let Some(file) = &self.project.config.pricing_file else {
            return Ok(PriceTable::shipped());
        };
        let path = self.root.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        PriceTable::from_litellm_json(&text).map_err(|e| LoadError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Looks up secrets: the process environment first, then the project's `.env`.
    pub fn env_lookup(&self) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let dotenv: HashMap<String, String> = dotenvy::from_path_iter(self.root.join(".env"))
            .map(|iter| iter.filter_map(Result::ok).collect())
            .unwrap_or_default();
        move |name| {
            std::env::var(name)
                .ok()
                .or_else(|| dotenv.get(name).cloned())
        }
    }
}

/// Reads `flowrun.yaml` and every file under `prompts/`, `flows/` and `partials/`.
pub fn read_sources(root: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let mut files = Vec::new();
    let config = root.join(CONFIG_FILE);
    files.push(SourceFile::new(CONFIG_FILE, read(&config)?));
    for dir in SOURCE_DIRS {
        collect(root, &root.join(dir), &mut files)?;
    }
    Ok(files)
}

/// Whether `rel` (relative to the project root, `/`-separated) is a file [`read_sources`]
/// reads: `flowrun.yaml`, or a non-hidden file under `prompts/`, `flows/`, `partials/`, or a
/// test file under `tests/` (datasets are read on demand, not as sources).
pub fn is_source_path(rel: &str) -> bool {
    if rel == CONFIG_FILE {
        return true;
    }
    let Some((top, rest)) = rel.split_once('/') else {
        return false;
    };
    SOURCE_DIRS.contains(&top)
        && !rest.split('/').any(|c| c.is_empty() || c.starts_with('.'))
        && (top != "tests" || flowrun_core::project::is_test_file(rel))
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> Result<(), LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LoadError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            // Under tests/ only test files belong to the project; datasets are read on demand.
            if !is_source_path(&rel) {
                continue;
            }
            out.push(SourceFile::new(rel, read(&path)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn finds_root_from_a_subdirectory_and_loads_nested_prompts() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/echo}\n",
        );
        write(
            dir.path(),
            "prompts/support/hello.yaml",
            "messages: [{user: hi}]\n",
        );
        write(dir.path(), "prompts/.hidden.yaml", "not: [valid\n");
        let deep = dir.path().join("flows/deeper");
        std::fs::create_dir_all(&deep).unwrap();
        let local = LocalProject::discover(&deep).unwrap();
        assert_eq!(local.root, dir.path());
        assert_eq!(
            local.project.prompts.keys().collect::<Vec<_>>(),
            ["support/hello"]
        );
    }

    #[test]
    fn missing_project_says_how_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalProject::discover(dir.path()).unwrap_err();
        assert!(err.to_string().contains("flowrun init"), "{err}");
    }

    #[test]
    fn dotenv_fills_in_missing_variables() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "flowrun.yaml", "{}\n");
        write(dir.path(), ".env", "FLOWRUN_TEST_ONLY_KEY=from-dotenv\n");
        let local = LocalProject::open(dir.path()).unwrap();
        assert_eq!(
            local.env_lookup()("FLOWRUN_TEST_ONLY_KEY").as_deref(),
            Some("from-dotenv")
        );
    }
}
