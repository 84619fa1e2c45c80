//! A project in memory: the parsed config, prompts, flows and partials, by name.
//!
//! Core does no file IO: callers hand in [`SourceFile`]s (flowrun-local reads them from disk,
//! an app may embed them). [`Project::load`] parses every file and checks the whole project,
//! returning all problems at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::check;
use crate::diag::{Diagnostic, Diagnostics};
use crate::spec::{FlowSpec, ProjectConfig, PromptSpec, TestFileSpec};
use crate::yaml::Document;

/// The project file's name, found at the project root.
pub const CONFIG_FILE: &str = "flowrun.yaml";

/// One file of a project: its path relative to the root (with `/`), and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// A parsed prompt file.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    pub spec: PromptSpec,
    pub doc: Document,
    /// Content hash of the file (first 12 hex digits of SHA-256).
    pub hash: String,
}

/// A parsed flow file.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub spec: FlowSpec,
    pub doc: Document,
    pub hash: String,
}

/// A parsed test file (`tests/<name>.test.yaml`).
#[derive(Debug, Clone)]
pub struct TestFile {
    /// Path relative to the project root.
    pub path: String,
    pub spec: TestFileSpec,
    pub doc: Document,
}

/// What `flowrun run` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Prompt,
    Flow,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Prompt => "prompt",
            TargetKind::Flow => "flow",
        }
    }
}

/// A whole project.
#[derive(Debug, Clone, Default)]
pub struct Project {
    pub config: ProjectConfig,
    pub config_doc: Option<Document>,
    pub prompts: BTreeMap<String, Prompt>,
    pub flows: BTreeMap<String, Flow>,
    /// Test files by path.
    pub tests: BTreeMap<String, TestFile>,
    /// Templates that prompts can `{% include %}`, by path under `partials/`.
    pub partials: BTreeMap<String, Arc<str>>,
    /// Hash of every file, for versioning whole-project snapshots.
    pub hash: String,
}

impl Project {
    /// Parses and checks every file; any error fails the load with all diagnostics.
    pub fn load(sources: Vec<SourceFile>) -> Result<Project, Diagnostics> {
        let (project, mut diags) = Project::parse(sources);
        diags.extend(check::check(&project));
        if diags.iter().any(Diagnostic::is_error) {
            Err(Diagnostics(diags))
        } else {
            Ok(project)
        }
    }

    /// Parses every file without cross-file checks. Files that fail to parse are left out.
    pub fn parse(mut sources: Vec<SourceFile>) -> (Project, Vec<Diagnostic>) {
        sources.sort_by(|a, b| a.path.cmp(&b.path));
        let mut project = Project::default();
        let mut diags = Vec::new();
        let mut all = Sha256::new();
        let mut saw_config = false;
        for src in sources {
            all.update(src.path.as_bytes());
            all.update([0]);
            all.update(src.text.as_bytes());
            all.update([0]);
            let hash = short_hash(&src.text);
            if src.path == CONFIG_FILE {
                saw_config = true;
                match parse_doc::<ProjectConfig>(&src) {
                    Ok((config, doc)) => {
                        project.config = config;
                        project.config_doc = Some(doc);
                    }
                    Err(d) => diags.push(d),
                }
            } else if let Some(name) = spec_name(&src.path, "prompts/") {
                match parse_doc::<PromptSpec>(&src) {
                    Ok((spec, doc)) => {
                        project.prompts.insert(
                            name.clone(),
                            Prompt {
                                name,
                                spec,
                                doc,
                                hash,
                            },
                        );
                    }
                    Err(d) => diags.push(d),
                }
            } else if let Some(name) = spec_name(&src.path, "flows/") {
                match parse_doc::<FlowSpec>(&src) {
                    Ok((spec, doc)) => {
                        project.flows.insert(
                            name.clone(),
                            Flow {
                                name,
                                spec,
                                doc,
                                hash,
                            },
                        );
                    }
                    Err(d) => diags.push(d),
                }
            } else if is_test_file(&src.path) {
                match parse_doc::<TestFileSpec>(&src) {
                    Ok((spec, doc)) => {
                        project.tests.insert(
                            src.path.clone(),
                            TestFile {
                                path: src.path.clone(),
                                spec,
                                doc,
                            },
                        );
                    }
                    Err(d) => diags.push(d),
                }
            } else if let Some(name) = src.path.strip_prefix("partials/") {
                project.partials.insert(name.to_string(), src.text.into());
            }
        }
        if !saw_config {
            diags.push(
                Diagnostic::error(CONFIG_FILE, "no `flowrun.yaml` in the project")
                    .with_help("run `flowrun init` to create a project"),
            );
        }
        project.hash = format!("{:x}", all.finalize())[..12].to_string();
        (project, diags)
    }

    /// Finds what a user means by `name`: `prompt/x`, `flow/x`, or a bare name (a flow wins
    /// only when no prompt has the same name; both existing is ambiguous).
    pub fn resolve_target(&self, name: &str) -> Result<(TargetKind, String), String> {
        let name = name.trim_end_matches(".yaml").trim_end_matches(".yml");
        if let Some(n) = name
            .strip_prefix("prompt/")
            .or_else(|| name.strip_prefix("prompts/"))
        {
            return self
                .prompts
                .contains_key(n)
                .then(|| (TargetKind::Prompt, n.to_string()))
                .ok_or_else(|| self.unknown(n));
        }
        if let Some(n) = name
            .strip_prefix("flow/")
            .or_else(|| name.strip_prefix("flows/"))
        {
            return self
                .flows
                .contains_key(n)
                .then(|| (TargetKind::Flow, n.to_string()))
                .ok_or_else(|| self.unknown(n));
        }
        match (
            self.flows.contains_key(name),
            self.prompts.contains_key(name),
        ) {
            (true, true) => Err(format!(
                "both a flow and a prompt are named `{name}`; write `flow/{name}` or `prompt/{name}`"
            )),
            (true, false) => Ok((TargetKind::Flow, name.to_string())),
            (false, true) => Ok((TargetKind::Prompt, name.to_string())),
            (false, false) => Err(self.unknown(name)),
        }
    }

    fn unknown(&self, name: &str) -> String {
        let names: Vec<&str> = self
            .flows
            .keys()
            .chain(self.prompts.keys())
            .map(String::as_str)
            .collect();
        match crate::diag::did_you_mean(name, names.iter().copied()) {
            Some(hint) => format!("no prompt or flow named `{name}`; {hint}"),
            None => format!("no prompt or flow named `{name}`; the project has none yet"),
        }
    }
}

fn parse_doc<T: serde::de::DeserializeOwned>(
    src: &SourceFile,
) -> Result<(T, Document), Diagnostic> {
    let doc = Document::parse(src.path.clone(), src.text.as_str())?;
    let spec = doc.deserialize::<T>()?;
    Ok((spec, doc))
}

/// Whether `path` is a test file: `tests/**/*.test.yaml` (or `.test.yml`).
pub fn is_test_file(path: &str) -> bool {
    path.starts_with("tests/") && (path.ends_with(".test.yaml") || path.ends_with(".test.yml"))
}

/// `prompts/support/classify.yaml` → `support/classify`.
fn spec_name(path: &str, dir: &str) -> Option<String> {
    let rest = path.strip_prefix(dir)?;
    let stem = rest
        .strip_suffix(".yaml")
        .or_else(|| rest.strip_suffix(".yml"))?;
    Some(stem.to_string())
}

/// First 12 hex digits of the SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))[..12].to_string()
}
