//! Draft versus baseline: the same cases run on both versions, paired case by case, with
//! totals, deltas, an optional pairwise judge, and a verdict (better, worse, or no
//! significant change) from a sign test over the paired cases.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::RunStatus;
use crate::exec::{Executor, RunRequest};
use crate::project::SourceFile;
use crate::testing::{CaseResult, Summary};

/// The pairwise judge prompt flowrun ships (`prompts/pairwise.yaml` in the repository).
pub const PAIRWISE_PROMPT: &str = include_str!("../../prompts/pairwise.yaml");

/// The pairwise prompt as a project file.
pub fn pairwise_source() -> SourceFile {
    SourceFile::new("prompts/pairwise.yaml", PAIRWISE_PROMPT)
}

/// Which side a comparison favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    Draft,
    Baseline,
    Tie,
}

/// The pairwise judge's view of one case, after asking in both orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pairwise {
    pub preference: Preference,
    /// Whether both orders agreed (disagreement is a tie: position bias).
    pub consistent: bool,
    pub reason: String,
}

/// One case on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCase {
    pub file: String,
    pub case: String,
    pub draft: CaseResult,
    pub baseline: CaseResult,
    pub pairwise: Option<Pairwise>,
    /// Which side this case favours: score first, then the pairwise judge.
    pub preference: Preference,
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    NoSignificantChange,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoSignificantChange => "no significant change",
        }
    }
}

/// Differences draft minus baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    pub pass_rate: f64,
    pub mean_score: f64,
    /// `None` when either side's cost is unknown.
    pub cost_usd: Option<f64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_p50_ms: i64,
}

/// A whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub id: Option<String>,
    pub started_at_ms: i64,
    pub wall_ms: u64,
    /// What the baseline was, e.g. `git:main (3f2a1b9c)`.
    pub baseline: String,
    pub cases: Vec<EvalCase>,
    pub draft: Summary,
    pub baseline_summary: Summary,
    pub deltas: Deltas,
    /// Cases favouring each side.
    pub draft_wins: usize,
    pub baseline_wins: usize,
    pub ties: usize,
    /// Two-sided sign-test p-value over the cases that favour a side.
    pub p_value: f64,
    pub verdict: Verdict,
}

/// Score differences smaller than this are ties.
const SCORE_EPSILON: f64 = 1e-6;
/// Significance level of the sign test.
const ALPHA: f64 = 0.05;

fn preference_of(
    draft: &CaseResult,
    baseline: &CaseResult,
    pairwise: Option<&Pairwise>,
) -> Preference {
    let diff = draft.score - baseline.score;
    if diff > SCORE_EPSILON {
        Preference::Draft
    } else if diff < -SCORE_EPSILON {
        Preference::Baseline
    } else {
        pairwise.map_or(Preference::Tie, |p| p.preference)
    }
}

/// Two-sided exact sign test: the chance of a split at least this uneven if both sides were
/// equally good.
pub fn sign_test(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    let k = wins.min(losses);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space to stay exact for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

impl EvalReport {
    /// Pairs draft and baseline results by (file, case index, repeat) and decides.
    pub fn new(
        started_at_ms: i64,
        wall_ms: u64,
        baseline_label: String,
        draft: Vec<CaseResult>,
        baseline: Vec<CaseResult>,
        pairwise: &dyn Fn(&CaseResult, &CaseResult) -> Option<Pairwise>,
    ) -> Self {
        let mut draft = draft;
        draft.sort_by(|a, b| (&a.file, a.index, a.repeat).cmp(&(&b.file, b.index, b.repeat)));
        let mut cases = Vec::new();
        for d in &draft {
            let Some(b) = baseline
                .iter()
                .find(|b| b.file == d.file && b.index == d.index && b.repeat == d.repeat)
            else {
                continue;
            };
            let pw = pairwise(d, b);
            let preference = preference_of(d, b, pw.as_ref());
            cases.push(EvalCase {
                file: d.file.clone(),
                case: d.case.clone(),
                draft: d.clone(),
                baseline: b.clone(),
                pairwise: pw,
                preference,
            });
        }
        let draft_summary = Summary::of(&cases.iter().map(|c| c.draft.clone()).collect::<Vec<_>>());
        let baseline_summary =
            Summary::of(&cases.iter().map(|c| c.baseline.clone()).collect::<Vec<_>>());
        let count = |p: Preference| cases.iter().filter(|c| c.preference == p).count();
        let (draft_wins, baseline_wins, ties) = (
            count(Preference::Draft),
            count(Preference::Baseline),
            count(Preference::Tie),
        );
        let p_value = sign_test(draft_wins, baseline_wins);
        let verdict = if p_value < ALPHA && draft_wins > baseline_wins {
            Verdict::Better
        } else if p_value < ALPHA && baseline_wins > draft_wins {
            Verdict::Worse
        } else {
            Verdict::NoSignificantChange
        };
        let deltas = deltas(&draft_summary, &baseline_summary);
        EvalReport {
            id: None,
            started_at_ms,
            wall_ms,
            baseline: baseline_label,
            cases,
            draft: draft_summary,
            baseline_summary,
            deltas,
            draft_wins,
            baseline_wins,
            ties,
            p_value,
            verdict,
        }
    }
}

fn deltas(d: &Summary, b: &Summary) -> Deltas {
    Deltas {
        pass_rate: d.pass_rate - b.pass_rate,
        mean_score: d.mean_score - b.mean_score,
        cost_usd: d
            .cost
            .usd_if_known()
            .zip(b.cost.usd_if_known())
            .map(|(x, y)| x - y),
        input_tokens: d.usage.input_tokens as i64 - b.usage.input_tokens as i64,
        output_tokens: d.usage.output_tokens as i64 - b.usage.output_tokens as i64,
        latency_p50_ms: d.latency_p50_ms as i64 - b.latency_p50_ms as i64,
    }
}

/// Compares two outputs of the same input.
#[async_trait]
pub trait PairwiseJudge: Send + Sync {
    /// Which of `first` and `second` is better: `Preference::Draft` means `first`.
    async fn prefer(
        &self,
        rubric: &str,
        input: &Value,
        first: &str,
        second: &str,
    ) -> Result<(Preference, String), String>;
}

/// Asks in both orders to cancel position bias: agreement wins, disagreement is a tie.
pub async fn compare(
    judge: &dyn PairwiseJudge,
    rubric: &str,
    input: &Value,
    draft: &str,
    baseline: &str,
) -> Result<Pairwise, String> {
    let (first, second) = futures::join!(
        judge.prefer(rubric, input, draft, baseline),
        judge.prefer(rubric, input, baseline, draft)
    );
    let (a, reason_a) = first?;
    let (b, reason_b) = second?;
    // In the second order, "first" is the baseline.
    let b = match b {
        Preference::Draft => Preference::Baseline,
        Preference::Baseline => Preference::Draft,
        Preference::Tie => Preference::Tie,
    };
    let consistent = a == b;
    let preference = if consistent { a } else { Preference::Tie };
    let reason = if consistent {
        reason_a
    } else {
        format!("the judge changed its mind with the order: {reason_a} / {reason_b}")
    };
    Ok(Pairwise {
        preference,
        consistent,
        reason,
    })
}

/// The pairwise judge over an executor whose project holds [`pairwise_source`].
pub struct ExecutorPairwise {
    executor: Executor,
    model: Option<String>,
}

impl ExecutorPairwise {
    pub fn new(executor: Executor, model: Option<String>) -> Self {
        ExecutorPairwise { executor, model }
    }
}

#[async_trait]
impl PairwiseJudge for ExecutorPairwise {
    async fn prefer(
        &self,
        rubric: &str,
        input: &Value,
        first: &str,
        second: &str,
    ) -> Result<(Preference, String), String> {
        let mut request = RunRequest::new(
            "prompt/pairwise",
            json!({ "rubric": rubric, "input": input.to_string(), "output_a": first, "output_b": second }),
        );
        request.model = self.model.clone();
        let outcome = self
            .executor
            .run(request)
            .await
            .map_err(|e| e.to_string())?;
        if outcome.status != RunStatus::Succeeded {
            return Err(outcome
                .error
                .unwrap_or_else(|| "the pairwise judge failed".into()));
        }
        let value = outcome.output.unwrap_or(Value::Null);
        let reason = value
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let preference = match value.get("winner").and_then(Value::as_str) {
            Some("A") => Preference::Draft,
            Some("B") => Preference::Baseline,
            Some("tie") => Preference::Tie,
            _ => return Err("the pairwise judge named no winner (`A`, `B` or `tie`)".into()),
        };
        Ok((preference, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_the_binomial() {
        assert_eq!(sign_test(0, 0), 1.0);
        assert!((sign_test(5, 0) - 0.0625).abs() < 1e-12);
        assert!((sign_test(6, 0) - 0.03125).abs() < 1e-12);
        assert!((sign_test(3, 3) - 1.0).abs() < 1e-12);
        assert!(sign_test(900, 100) < 1e-100);
    }

    struct Fixed(Preference, Preference);

    #[async_trait]
    impl PairwiseJudge for Fixed {
        async fn prefer(
            &self,
            _: &str,
            _: &Value,
            first: &str,
            _: &str,
        ) -> Result<(Preference, String), String> {
            Ok((
                if first == "draft" { self.0 } else { self.1 },
                "because".into(),
            ))
        }
    }

    #[tokio::test]
    async fn both_orders_must_agree() {
        let agree = compare(
            &Fixed(Preference::Draft, Preference::Baseline),
            "r",
            &Value::Null,
            "draft",
            "base",
        )
        .await
        .unwrap();
        assert_eq!(
            (agree.preference, agree.consistent),
            (Preference::Draft, true)
        );
        let biased = compare(
            &Fixed(Preference::Draft, Preference::Draft),
            "r",
            &Value::Null,
            "draft",
            "base",
        )
        .await
        .unwrap();
        assert_eq!(
            (biased.preference, biased.consistent),
            (Preference::Tie, false)
        );
    }
}
