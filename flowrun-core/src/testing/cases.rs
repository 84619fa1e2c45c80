//! Resolving test files into runnable cases: defaults merged, inputs typed and validated
//! against the target's declarations, assertions parsed, every problem located.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::dataset::DatasetRow;
use crate::assert::{self, AssertionSpec};
use crate::diag::{Diagnostic, Location};
use crate::project::{Project, TargetKind, TestFile};
use crate::spec::InputSpec;
use crate::spec::input::resolve_inputs;
use crate::yaml::{Document, Path};

/// One runnable case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// The test file, relative to the project root.
    pub file: String,
    /// Position in the file: inline cases first, then dataset rows.
    pub index: usize,
    pub name: String,
    /// `prompt/name` or `flow/name`.
    pub target: String,
    pub input: Map<String, Value>,
    /// Extra values for templated assertions.
    pub vars: Value,
    pub tags: Vec<String>,
    pub assertions: Vec<AssertionSpec>,
    pub threshold: Option<f64>,
}

/// The dataset a test file names, already read: its path and rows.
pub type Dataset<'a> = (&'a str, Vec<DatasetRow>);

/// Every case of `file`: inline cases, then the dataset's rows.
pub fn cases_of(
    project: &Project,
    file: &TestFile,
    dataset: Option<Dataset<'_>>,
) -> Result<Vec<TestCase>, Vec<Diagnostic>> {
    let doc = &file.doc;
    let spec = &file.spec;
    let mut diags = Vec::new();
    let (kind, name) = project.resolve_target(&spec.target).map_err(|e| {
        vec![
            doc.error_at(&Path::root().key("target"), e)
                .with_help("name a prompt or flow of this project"),
        ]
    })?;
    let decl = match kind {
        TargetKind::Prompt => &project.prompts[&name].spec.input,
        TargetKind::Flow => &project.flows[&name].spec.input,
    };
    let target = format!("{}/{name}", kind.as_str());
    let defaults_path = Path::root().key("defaults").key("assert");
    let defaults = parse_all(doc, &defaults_path, &spec.defaults.assertions, &mut diags);
    let mut cases = Vec::new();
    for (i, case) in spec.cases.iter().enumerate() {
        let path = Path::root().key("cases").index(i);
        let mut input = spec.defaults.input.clone();
        input.extend(case.input.clone());
        let located = Located::Doc {
            doc,
            path: path.key("input"),
        };
        let ok_input = check_input(decl, &input, &located, &mut diags);
        let mut assertions = defaults.clone();
        assertions.extend(parse_all(
            doc,
            &path.key("assert"),
            &case.assertions,
            &mut diags,
        ));
        cases.push(TestCase {
            file: file.path.clone(),
            index: i,
            name: case
                .name
                .clone()
                .unwrap_or_else(|| format!("case {}", i + 1)),
            target: target.clone(),
            input: ok_input,
            vars: Value::Object(case.vars.clone().into_iter().collect()),
            tags: merged_tags(&spec.defaults.tags, &case.tags),
            assertions,
            threshold: case.threshold.or(spec.defaults.threshold),
        });
    }
    if let Some((data_path, rows)) = dataset {
        for (k, row) in rows.into_iter().enumerate() {
            let mut input = spec.defaults.input.clone();
            let located = match &row.doc {
                Some(d) => Located::Doc {
                    doc: d,
                    path: row.path.key("input"),
                },
                None => Located::Line {
                    file: data_path,
                    line: row.line,
                    text: row.text.clone(),
                },
            };
            let typed = if row.untyped {
                type_texts(decl, &row.case.input, &located, &mut diags)
            } else {
                row.case.input.clone()
            };
            input.extend(typed);
            let ok_input = check_input(decl, &input, &located, &mut diags);
            let mut assertions = defaults.clone();
            if let Some(d) = &row.doc {
                assertions.extend(parse_all(
                    d,
                    &row.path.key("assert"),
                    &row.case.assertions,
                    &mut diags,
                ));
            }
            cases.push(TestCase {
                file: file.path.clone(),
                index: spec.cases.len() + k,
                name: row
                    .case
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{data_path}:{}", row.line)),
                target: target.clone(),
                input: ok_input,
                vars: Value::Object(row.case.vars.clone().into_iter().collect()),
                tags: merged_tags(&spec.defaults.tags, &row.case.tags),
                assertions,
                threshold: row.case.threshold.or(spec.defaults.threshold),
            });
        }
    }
    if diags.is_empty() {
        Ok(cases)
    } else {
        Err(diags)
    }
}

/// Checks a test file's inline cases (datasets are checked when read).
pub fn check_file(project: &Project, file: &TestFile) -> Vec<Diagnostic> {
    cases_of(project, file, None).err().unwrap_or_default()
}

fn merged_tags(defaults: &[String], own: &[String]) -> Vec<String> {
    let mut tags = defaults.to_vec();
    for t in own {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

fn parse_all(
    doc: &Document,
    path: &Path,
    values: &[Value],
    diags: &mut Vec<Diagnostic>,
) -> Vec<AssertionSpec> {
    values
        .iter()
        .enumerate()
        .filter_map(|(j, v)| {
            assert::parse(doc, &path.index(j), v)
                .map_err(|d| diags.push(d))
                .ok()
        })
        .collect()
}

/// Where a case's input came from, for pointing at problems.
enum Located<'a> {
    Doc {
        doc: &'a Document,
        path: Path,
    },
    Line {
        file: &'a str,
        line: usize,
        text: std::sync::Arc<str>,
    },
}

impl Located<'_> {
    /// An error about input `field`: at its value (at its key with `at_key`, for a name that
    /// is itself the problem), else at the input mapping or the row.
    fn error_on(&self, field: &str, at_key: bool, message: String) -> Diagnostic {
        match self {
            Located::Doc { doc, path } => {
                let at = path.key(field);
                if doc.spans.get(&at).is_none() {
                    doc.error_at(path, message)
                } else if at_key {
                    doc.error_at_key(&at, message)
                } else {
                    doc.error_at(&at, message)
                }
            }
            Located::Line { file, line, text } => {
                let row_len = text.lines().nth(line.saturating_sub(1)).map_or(1, str::len);
                let loc = Location::at_line_col(text, *line, 1, row_len);
                Diagnostic::error(*file, message).with_location(text.clone(), loc)
            }
        }
    }

    fn error(&self, field: &str, message: String) -> Diagnostic {
        self.error_on(field, false, message)
    }
}

fn check_input(
    decl: &IndexMap<String, InputSpec>,
    input: &Map<String, Value>,
    at: &Located<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Map<String, Value> {
    match resolve_inputs(decl, input) {
        Ok(v) => v,
        Err(errors) => {
            diags.extend(errors.into_iter().map(|e| {
                // An undeclared name is the problem itself: point at it.
                let undeclared = !decl.contains_key(&e.field);
                at.error_on(
                    &e.field,
                    undeclared,
                    format!("input `{}`: {}", e.field, e.message),
                )
            }));
            Map::new()
        }
    }
}

fn type_texts(
    decl: &IndexMap<String, InputSpec>,
    input: &Map<String, Value>,
    at: &Located<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in input {
        match (decl.get(k), v) {
            (Some(spec), Value::String(text)) => match spec.ty().parse_text(text) {
                Ok(typed) => {
                    out.insert(k.clone(), typed);
                }
                Err(e) => diags.push(at.error(k, format!("input `{k}`: {e}"))),
            },
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}
