//! Bundles: a project's files as uploaded, in canonical form (sorted by path, as JSON), named by
//! the SHA-256 of that JSON. Only source files are accepted; secrets never travel in a bundle.

use flowrun_core::project::{CONFIG_FILE, SourceFile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    pub path: String,
    pub text: String,
}

/// The body of `PUT /v1/bundles`: file texts and nothing else.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleBody {
    pub files: Vec<BundleFile>,
}

/// The stored form of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canonical {
    pub files: Vec<BundleFile>,
}

const SOURCE_DIRS: &[&str] = &["prompts", "flows", "partials", "tests"];

/// Whether a bundle may hold `path`: `flowrun.yaml` or a plain relative path under a source
/// directory (no `..`, no hidden components such as `.env`).
fn allowed_path(path: &str) -> bool {
    if path == CONFIG_FILE {
        return true;
    }
    let Some((top, rest)) = path.split_once('/') else {
        return false;
    };
    SOURCE_DIRS.contains(&top)
        && !rest
            .split('/')
            .any(|c| c.is_empty() || c.starts_with('.') || c.contains('\\'))
}

impl Canonical {
    /// Checks the paths and sorts the files.
    pub fn new(mut files: Vec<BundleFile>) -> Result<Canonical, AppError> {
        for (i, f) in files.iter().enumerate() {
            if !allowed_path(&f.path) {
                return Err(AppError::bad_field(
                    "invalid_bundle",
                    format!("files[{i}].path"),
                    format!(
                        "`{}` is not a project source file (flowrun.yaml, prompts/, flows/, partials/, tests/)",
                        f.path
                    ),
                ));
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(AppError::bad_field(
                "invalid_bundle",
                "files",
                format!("`{}` appears twice", w[0].path),
            ));
        }
        Ok(Canonical { files })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The content address: SHA-256 of the canonical JSON, hex.
    pub fn id(&self) -> String {
        format!("{:x}", Sha256::digest(self.to_json().as_bytes()))
    }

    pub fn sources(&self) -> Vec<SourceFile> {
        self.files
            .iter()
            .map(|f| SourceFile::new(f.path.clone(), f.text.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> BundleFile {
        BundleFile {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_id_does_not_depend_on_file_order() {
        let a = Canonical::new(vec![file("flowrun.yaml", "a"), file("prompts/x.yaml", "b")]);
        let b = Canonical::new(vec![file("prompts/x.yaml", "b"), file("flowrun.yaml", "a")]);
        assert_eq!(a.map(|c| c.id()).ok(), b.map(|c| c.id()).ok());
    }

    #[test]
    fn secrets_and_escapes_are_refused() {
        for bad in [
            ".env",
            "prompts/../x",
            "prompts/.env",
            "/etc/passwd",
            "src/x.rs",
        ] {
            assert!(Canonical::new(vec![file(bad, "")]).is_err(), "{bad}");
        }
    }
}
