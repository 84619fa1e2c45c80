//! `flowrun schema`: write the JSON Schema of each file kind, for editors.

use std::path::{Path, PathBuf};

use crate::cli::SchemaArgs;
use crate::exit::Exit;

/// The folder, relative to a project root, where schemas are written.
pub const SCHEMA_DIR: &str = "schemas";

pub fn schema(start: &Path, args: &SchemaArgs) -> Exit {
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| match flowrun_local::find_root(start) {
            Some(root) => root.join(SCHEMA_DIR),
            None => start.join(SCHEMA_DIR),
        });
    match write_schemas(&dir) {
        Ok(paths) => {
            for p in paths {
                eprintln!("wrote {}", p.display());
            }
            Exit::Success
        }
        Err(e) => {
            super::error(
                &format!("cannot write schemas to {}: {e}", dir.display()),
                None,
            );
            Exit::Failure
        }
    }
}

/// Writes every schema into `dir`, returning the paths written.
pub fn write_schemas(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, schema) in flowrun_core::spec::schemas() {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&schema).map_err(std::io::Error::other)? + "\n";
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}
