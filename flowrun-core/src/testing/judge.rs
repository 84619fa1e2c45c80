//! The `llm_judge` grader: flowrun's own judge prompt, run through an executor on the
//! project's judge model.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::assert::{Grade, Judge};
use crate::event::RunStatus;
use crate::exec::{Executor, RunRequest};
use crate::project::SourceFile;

/// The judge prompt flowrun ships (`prompts/judge.yaml` in the repository).
pub const JUDGE_PROMPT: &str = include_str!("../../../prompts/judge.yaml");

/// The judge prompt as a project file, to add beside the user's `flowrun.yaml`.
pub fn judge_source() -> SourceFile {
    SourceFile::new("prompts/judge.yaml", JUDGE_PROMPT)
}

/// Which model grades: the assertion's own, else the `judge` alias, else the default model.
pub fn judge_model(config: &crate::spec::ProjectConfig, requested: Option<&str>) -> Option<String> {
    requested
        .map(str::to_string)
        .or_else(|| {
            config
                .models
                .contains_key("judge")
                .then(|| "judge".to_string())
        })
        .or_else(|| config.defaults.model.clone())
}

/// Grades with an executor whose project holds the judge prompt.
pub struct ExecutorJudge {
    executor: Executor,
}

impl ExecutorJudge {
    /// `executor` must have been built from a project that contains [`judge_source`].
    pub fn new(executor: Executor) -> Self {
        ExecutorJudge { executor }
    }
}

#[async_trait]
impl Judge for ExecutorJudge {
    async fn grade(
        &self,
        rubric: &str,
        output: &str,
        input: &Value,
        model: Option<&str>,
    ) -> Result<Grade, String> {
        let config = &self.executor.project().config;
        let model = judge_model(config, model)
            .ok_or("no judge model: add a `judge` alias under `models:` in flowrun.yaml")?;
        let shown_input = if input.as_object().is_some_and(|m| m.is_empty()) {
            String::new()
        } else {
            input.to_string()
        };
        let mut request = RunRequest::new(
            "prompt/judge",
            json!({ "rubric": rubric, "output": output, "input": shown_input }),
        );
        request.model = Some(model);
        let outcome = self
            .executor
            .run(request)
            .await
            .map_err(|e| e.to_string())?;
        if outcome.status != RunStatus::Succeeded {
            return Err(outcome
                .error
                .unwrap_or_else(|| "the judge call failed".into()));
        }
        let value = outcome.output.unwrap_or(Value::Null);
        let score = value
            .get("score")
            .and_then(Value::as_f64)
            .ok_or("the judge gave no numeric `score`")?;
        let reason = value
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Grade {
            score: if score.is_finite() {
                score.clamp(0.0, 1.0)
            } else {
                0.0
            },
            reason,
        })
    }
}
