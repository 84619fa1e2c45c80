//! Named servers (`flowrun remote add NAME URL --token-env VAR`), kept per clone in
//! `.flowrun/remotes.json` like git keeps its remotes in `.git/config`. A remote holds the
//! server's URL and the *name* of the environment variable with its API key, never the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::project_dir::STATE_DIR;

/// The file, inside the project's state directory.
pub const REMOTES_FILE: &str = "remotes.json";

/// Where a token comes from when a remote names no variable, or a URL is given directly.
pub const DEFAULT_TOKEN_ENV: &str = "FLOWRUN_TOKEN";

/// One named server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    pub url: String,
    /// The environment variable holding the API key.
    pub token_env: String,
}

/// The remotes of a project, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remotes {
    pub remotes: BTreeMap<String, Remote>,
}

/// A remote could not be read, written or resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid: {message} (fix or delete the file, then `flowrun remote add` again)"
    )]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid remote name `{0}`: use letters, digits, `-` and `_` (at most 64)")]
    BadName(String),
    #[error("invalid remote URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid variable name `{0}`: use letters, digits and `_`, not starting with a digit")]
    BadEnvName(String),
    #[error("a remote named `{0}` exists already (remove it first: `flowrun remote remove {0}`)")]
    Exists(String),
    #[error("no remote named `{name}`{known}")]
    Unknown { name: String, known: String },
    #[error("no remote given and {0}")]
    NoneGiven(String),
}

/// A server to talk to, resolved from `--remote NAME|URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The remote's name, or the URL when given directly.
    pub label: String,
    pub url: String,
    pub token_env: String,
}

fn path_in(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join(REMOTES_FILE)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `url` with any `user:password@` taken out, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &url[..start + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Checks a server URL: `http://` or `https://`, a host, no credentials, query or fragment.
pub fn check_url(url: &str) -> Result<String, RemoteError> {
    let bad = |reason: &str| RemoteError::BadUrl {
        url: redacted(url),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("it must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials do not belong in the URL; give the API key's variable with --token-env",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it must not have a query or a fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Remotes {
    /// The remotes of the project at `root` (none when the file does not exist).
    pub fn load(root: &Path) -> Result<Remotes, RemoteError> {
        let path = path_in(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Remotes::default()),
            Err(source) => return Err(RemoteError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| RemoteError::Invalid {
            path,
            message: e.to_string(),
        })
    }

    /// Writes the file atomically (a temporary file renamed over it).
    pub fn save(&self, root: &Path) -> Result<(), RemoteError> {
        let path = path_in(root);
        let write = |source| RemoteError::Write {
            path: path.clone(),
            source,
        };
        let dir = root.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(write)?;
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        let tmp = dir.join(format!("{REMOTES_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)
    }

    /// Adds a remote after checking its name, URL and variable name.
    pub fn add(&mut self, name: &str, url: &str, token_env: &str) -> Result<(), RemoteError> {
        if !valid_name(name) {
            return Err(RemoteError::BadName(name.to_string()));
        }
        if !valid_env_name(token_env) {
            return Err(RemoteError::BadEnvName(token_env.to_string()));
        }
        let url = check_url(url)?;
        if self.remotes.contains_key(name) {
            return Err(RemoteError::Exists(name.to_string()));
        }
        self.remotes.insert(
            name.to_string(),
            Remote {
                url,
                token_env: token_env.to_string(),
            },
        );
        Ok(())
    }

    /// Removes a remote; false when there was none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        self.remotes.remove(name).is_some()
    }

    fn known(&self) -> String {
        if self.remotes.is_empty() {
            " (no remotes yet: `flowrun remote add NAME URL`)".to_string()
        } else {
            let names: Vec<&str> = self.remotes.keys().map(String::as_str).collect();
            format!(" (known: {})", names.join(", "))
        }
    }

    /// Resolves `--remote`: a remote's name, or a URL (its key from `FLOWRUN_TOKEN`). Given
    /// nothing, the only remote there is.
    pub fn resolve(&self, given: Option<&str>) -> Result<Target, RemoteError> {
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            let mut all = self.remotes.iter();
            return match (all.next(), all.next()) {
                (Some((name, r)), None) => Ok(target(name, r)),
                (None, _) => Err(RemoteError::NoneGiven(
                    "no remote is set up: add one with `flowrun remote add NAME URL --token-env VAR`, or pass `--remote URL`"
                        .to_string(),
                )),
                (Some(_), Some(_)) => Err(RemoteError::NoneGiven(format!(
                    "there are several; pass `--remote NAME`{}",
                    self.known()
                ))),
            };
        };
        if given.contains("://") {
            return Ok(Target {
                label: given.to_string(),
                url: check_url(given)?,
                token_env: DEFAULT_TOKEN_ENV.to_string(),
            });
        }
        match self.remotes.get(given) {
            Some(r) => Ok(target(given, r)),
            None => Err(RemoteError::Unknown {
                name: given.to_string(),
                known: self.known(),
            }),
        }
    }
}

fn target(name: &str, r: &Remote) -> Target {
    Target {
        label: name.to_string(),
        url: r.url.clone(),
        token_env: r.token_env.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_and_resolve_by_name_or_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Remotes::load(dir.path()).unwrap(), Remotes::default());
        let mut r = Remotes::default();
        r.add("prod", "https://flows.example.com/", "PROD_TOKEN")
            .unwrap();
        r.save(dir.path()).unwrap();
        let back = Remotes::load(dir.path()).unwrap();
        assert_eq!(back, r);
        let only = back.resolve(None).unwrap();
        assert_eq!(only.url, "https://flows.example.com");
        assert_eq!(only.token_env, "PROD_TOKEN");
        assert_eq!(back.resolve(Some("prod")).unwrap(), only);
    }

    #[test]
    fn a_url_is_its_own_remote_with_the_default_variable() {
        let t = Remotes::default()
            .resolve(Some("http://127.0.0.1:8080"))
            .unwrap();
        assert_eq!(t.url, "http://127.0.0.1:8080");
        assert_eq!(t.token_env, DEFAULT_TOKEN_ENV);
    }

    #[test]
    fn bad_names_urls_and_duplicates_are_refused() {
        let mut r = Remotes::default();
        assert!(matches!(
            r.add("a b", "http://x", "T"),
            Err(RemoteError::BadName(_))
        ));
        assert!(matches!(
            r.add("a", "ftp://x", "T"),
            Err(RemoteError::BadUrl { .. })
        ));
        let creds = r.add("a", "https://user:secret@x", "T").unwrap_err();
        assert!(!creds.to_string().contains("secret@"), "{creds}");
        assert!(matches!(
            r.add("a", "http://x", "1T"),
            Err(RemoteError::BadEnvName(_))
        ));
        r.add("a", "http://x", "T").unwrap();
        assert!(matches!(
            r.add("a", "http://y", "T"),
            Err(RemoteError::Exists(_))
        ));
    }

    #[test]
    fn unknown_or_ambiguous_remotes_say_what_exists() {
        let mut r = Remotes::default();
        let none = r.resolve(None).unwrap_err().to_string();
        assert!(none.contains("flowrun remote add"), "{none}");
        r.add("dev", "http://d", "T").unwrap();
        r.add("prod", "http://p", "T").unwrap();
        let several = r.resolve(None).unwrap_err().to_string();
        assert!(several.contains("dev, prod"), "{several}");
        let unknown = r.resolve(Some("stage")).unwrap_err().to_string();
        assert!(unknown.contains("known: dev, prod"), "{unknown}");
    }

    #[test]
    fn a_broken_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(path_in(dir.path()), "{ nope").unwrap();
        let e = Remotes::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("remotes.json"), "{e}");
    }
}
