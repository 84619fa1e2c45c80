//! Assertions: what a test case checks about an output, each giving a score in 0..1 and a
//! reason.
//!
//! An assertion is written as a mapping with one check key and optional modifiers:
//! `{ contains: [refund, sorry], all: true, weight: 2, required: true }`. [`parse`] reads one
//! from a test file with located diagnostics; `evaluate` scores outputs against them.

mod evaluate;
mod parse;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use evaluate::{Hooks, Observed, case_score, evaluate};
pub use parse::{AssertionSchema, CHECK_KEYS, parse};

/// One assertion of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionSpec {
    pub check: Check,
    /// Relative weight in the case's score (default 1).
    pub weight: f64,
    /// Score this assertion needs to pass (default 0.5: binary checks score 0 or 1).
    pub threshold: f64,
    /// A failed required assertion fails the case whatever its score.
    pub required: bool,
}

/// Whether a check is inverted (`not_contains` …).
pub type Negate = bool;

/// What an assertion checks. String values may be templates over `input` and `vars`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Check {
    /// The output (text, or JSON value) equals this value.
    Equals(Value, Negate),
    /// The output text contains one (or, with `all`, every) of these strings.
    Contains {
        values: Vec<String>,
        all: bool,
        ignore_case: bool,
        negate: Negate,
    },
    Regex(String, Negate),
    StartsWith(String, Negate),
    /// The output is (or, negated, is not) valid JSON.
    IsJson(Negate),
    /// The output is JSON matching this schema.
    JsonSchema(Value),
    /// A JSONPath (RFC 9535) query into the JSON output.
    JsonPath {
        path: String,
        op: JsonPathOp,
    },
    /// Length of the output text in characters.
    Length {
        min: Option<usize>,
        max: Option<usize>,
    },
    LatencyMax(Duration),
    /// Maximum cost in USD; an unknown cost fails it.
    CostMax(f64),
    /// A rubric graded by a judge model (default: `defaults.judge` in flowrun.yaml).
    LlmJudge {
        rubric: String,
        model: Option<String>,
    },
    /// An external program gets the output on stdin; exit 0 passes, or it prints
    /// `{"score": 0.8, "reason": "..."}`.
    Command(String),
    /// An agent step of the run called (or, negated, never called) this tool; with `args`,
    /// a call whose arguments contain these values.
    ToolCalled {
        name: String,
        args: Option<Value>,
        negate: Negate,
    },
    /// How many turns the run's agent steps took.
    Turns {
        min: Option<u32>,
        max: Option<u32>,
    },
}

/// What a `json_path` assertion checks about the values its query selects.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonPathOp {
    /// The first selected value equals this.
    Equals(Value),
    /// A selected value (or an element of a selected array, or a substring of a selected
    /// string) contains this.
    Contains(Value),
    /// The query selects something (`true`) or nothing (`false`).
    Exists(bool),
}

impl Check {
    /// The assertion's name as written in files (`not_contains`, `json_path` …).
    pub fn name(&self) -> &'static str {
        match self {
            Check::Equals(_, false) => "equals",
            Check::Equals(_, true) => "not_equals",
            Check::Contains {
                ignore_case: false,
                negate: false,
                ..
            } => "contains",
            Check::Contains {
                ignore_case: true,
                negate: false,
                ..
            } => "icontains",
            Check::Contains {
                ignore_case: false,
                negate: true,
                ..
            } => "not_contains",
            Check::Contains {
                ignore_case: true,
                negate: true,
                ..
            } => "not_icontains",
            Check::Regex(_, false) => "regex",
            Check::Regex(_, true) => "not_regex",
            Check::StartsWith(_, false) => "starts_with",
            Check::StartsWith(_, true) => "not_starts_with",
            Check::IsJson(_) => "is_json",
            Check::JsonSchema(_) => "json_schema",
            Check::JsonPath { .. } => "json_path",
            Check::Length { .. } => "length",
            Check::LatencyMax(_) => "latency_max",
            Check::CostMax(_) => "cost_max",
            Check::LlmJudge { .. } => "llm_judge",
            Check::Command(_) => "command",
            Check::ToolCalled { negate: false, .. } => "tool_called",
            Check::ToolCalled { negate: true, .. } => "tool_not_called",
            Check::Turns { .. } => "turns",
        }
    }
}

/// The result of one assertion on one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssertionResult {
    /// The assertion's name (`contains`, `llm_judge` …).
    pub name: String,
    /// 0..1.
    pub score: f64,
    pub pass: bool,
    /// Why, in words: what was expected and what was found.
    pub reason: String,
    pub weight: f64,
    pub required: bool,
}

/// A judge's verdict on one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub score: f64,
    pub reason: String,
}

/// Grades an output against a rubric with a model. Implemented over the executor.
#[async_trait]
pub trait Judge: Send + Sync {
    async fn grade(
        &self,
        rubric: &str,
        output: &str,
        input: &Value,
        model: Option<&str>,
    ) -> Result<Grade, String>;
}

/// What an external check program did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs an external check program (core does no process IO; flowrun-local implements this).
#[async_trait]
pub trait CommandRunner: Send + Sync {
    async fn run(&self, command: &str, stdin: &str) -> Result<CommandOutput, String>;
}
