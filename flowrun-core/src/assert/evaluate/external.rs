//! Checks that call out: `llm_judge` through a [`Judge`], `command` through a
//! [`CommandRunner`]. Their failures become failed assertions, never panics.

use serde_json::Value;

use super::template::Templates;
use super::{Verdict, cut};
use crate::assert::{CommandOutput, CommandRunner, Judge};

/// `llm_judge`: the judge's score (clamped to 0..1, NaN as 0) and reason.
pub(super) async fn judge(
    judge: Option<&dyn Judge>,
    t: &Templates<'_>,
    rubric: &str,
    model: Option<&str>,
    text: &str,
    input: &Value,
) -> Verdict {
    let Some(judge) = judge else {
        return Verdict::error("no judge configured: set `defaults.judge` in flowrun.yaml");
    };
    let rubric = match t.render(rubric) {
        Ok(r) => r,
        Err(reason) => return Verdict::error(reason),
    };
    match judge.grade(&rubric, text, input, model).await {
        Err(message) => Verdict::error(format!("judge failed: {}", message.trim())),
        Ok(grade) => {
            let reason = grade.reason.trim();
            let mut reason = if reason.is_empty() {
                format!("the judge gave {} and no reason", grade.score)
            } else {
                reason.to_string()
            };
            if grade.score.is_nan() {
                reason.push_str(" (the judge's score was not a number)");
            }
            Verdict::scored(grade.score, reason)
        }
    }
}

/// `command`: the program's JSON verdict on stdout, else its exit code.
pub(super) async fn command(
    runner: Option<&dyn CommandRunner>,
    t: &Templates<'_>,
    command: &str,
    text: &str,
) -> Verdict {
    let Some(runner) = runner else {
        return Verdict::error("commands are not enabled here");
    };
    let command = match t.render(command) {
        Ok(c) => c,
        Err(reason) => return Verdict::error(reason),
    };
    let shown = cut(&command);
    match runner.run(&command, text).await {
        Err(message) => Verdict::error(format!(
            "command `{shown}` could not run: {}",
            message.trim()
        )),
        Ok(out) => json_verdict(&out.stdout, &shown).unwrap_or_else(|| exit_verdict(&out, &shown)),
    }
}

/// `{"score": 0.8, "reason": "…"}` or `{"pass": true, "reason": "…"}` printed on stdout.
fn json_verdict(stdout: &str, shown: &str) -> Option<Verdict> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stdout.trim()) else {
        return None;
    };
    let reason = map
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(score) = map.get("score").and_then(Value::as_f64) {
        let reason = reason.map_or_else(|| format!("`{shown}` scored {score}"), str::to_string);
        return Some(Verdict::scored(score, reason));
    }
    let pass = map.get("pass").and_then(Value::as_bool)?;
    let reason = reason.map_or_else(
        || {
            format!(
                "`{shown}` reported {}",
                if pass { "a pass" } else { "a failure" }
            )
        },
        str::to_string,
    );
    Some(if pass {
        Verdict::pass(reason)
    } else {
        Verdict::fail(reason)
    })
}

fn exit_verdict(out: &CommandOutput, shown: &str) -> Verdict {
    let said = first_line(&out.stderr)
        .or_else(|| first_line(&out.stdout))
        .map(|l| format!(": {}", cut(l)))
        .unwrap_or_default();
    match out.exit_code {
        Some(0) => Verdict::pass(format!("`{shown}` exited with code 0{said}")),
        Some(code) => Verdict::fail(format!("`{shown}` exited with code {code}{said}")),
        None => Verdict::fail(format!("`{shown}` was killed by a signal{said}")),
    }
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}
