//! Test files (`tests/<name>.test.yaml`): a target, cases (inline or from a dataset) with
//! inputs, tags and assertions, and defaults applied to every case.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One test file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the cases run: `name`, `prompt/name` or `flow/name`.
    pub target: String,
    /// A dataset of cases, relative to the project root: `.jsonl`, `.csv`, `.yaml`/`.yml`.
    /// Each row is a case (`input`, `name`, `tags`, `vars`, `assert` keys) or, without an
    /// `input` key, the input itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Applied to every case of the file.
    #[serde(default)]
    pub defaults: CaseDefaults,
    /// Inline cases.
    #[serde(default)]
    pub cases: Vec<CaseSpec>,
}

/// What every case of a file gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseDefaults {
    /// Assertions added to every case.
    #[serde(default, rename = "assert")]
    #[schemars(with = "Vec<crate::assert::AssertionSchema>")]
    pub assertions: Vec<Value>,
    /// Tags added to every case.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Weighted score a case needs to pass (0..1); default 1: every assertion passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Input values every case starts from.
    #[serde(default)]
    pub input: Map<String, Value>,
}

/// One case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The target's input values.
    #[serde(default)]
    pub input: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra values assertions can use as `{{ vars.<name> }}` (e.g. an expected answer).
    #[serde(default)]
    pub vars: IndexMap<String, Value>,
    #[serde(default, rename = "assert")]
    #[schemars(with = "Vec<crate::assert::AssertionSchema>")]
    pub assertions: Vec<Value>,
    /// Weighted score this case needs to pass (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}
