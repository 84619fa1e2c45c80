//! Frame time of the dev UI: one frame of an app with 1,000 finished cases (outputs of a few
//! hundred characters, several assertions each) drawn into a 120x40 `TestBackend`, repeated,
//! with the selection moving so every frame diffs another case. Prints mean, p50, p99 and max
//! per scenario; the target is under 5 ms per frame.
//!
//! Run with `cargo bench -p flowrun-tui --bench frame`.

use std::time::{Duration, Instant};

use flowrun_core::assert::AssertionResult;
use flowrun_core::cost::Cost;
use flowrun_core::event::RunStatus;
use flowrun_core::provider::Usage;
use flowrun_core::testing::CaseResult;
use flowrun_tui::app::{App, CaseId, CaseRow, Slot, View};
use flowrun_tui::ui::render;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const CASES: usize = 1_000;
const WARM_UP: usize = 200;
const FRAMES: usize = 2_000;

const WORDS: [&str; 24] = [
    "refund", "order", "customer", "policy", "credit", "shipping", "account", "sorry", "today",
    "within", "days", "issued", "card", "support", "ticket", "request", "we", "will", "your",
    "the", "a", "of", "can", "not",
];

/// A deterministic output of about `len` characters; `variant` changes a few words.
fn output(case: usize, variant: usize, len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let mut w = (case * 31 + i * 17) % WORDS.len();
        if variant > 0 && i % 9 == case % 9 {
            w = (w + variant) % WORDS.len();
        }
        out.push_str(WORDS[w]);
        out.push(if i % 14 == 13 { '\n' } else { ' ' });
        i += 1;
    }
    out
}

fn result(case: usize, file: &str, baseline: bool) -> Box<CaseResult> {
    let pass = !case.is_multiple_of(7) || baseline;
    let assertions = (0..4)
        .map(|a| AssertionResult {
            name: ["contains", "llm_judge", "length", "json_path"][a].into(),
            score: if pass || a > 0 { 1.0 } else { 0.0 },
            pass: pass || a > 0,
            reason: format!(
                "expected \"{}\" in the output; found it at char {}",
                WORDS[(case + a) % WORDS.len()],
                case * 3 + a
            ),
            weight: 1.0,
            required: a == 0,
        })
        .collect();
    let text = output(case, usize::from(!baseline), 300 + case % 200);
    Box::new(CaseResult {
        file: file.into(),
        case: format!(
            "case {case}: customer asks about {}",
            WORDS[case % WORDS.len()]
        ),
        index: case,
        repeat: 1,
        target: "flow/support".into(),
        tags: vec!["support".into()],
        input: serde_json::json!({ "message": output(case, 0, 80), "tier": "gold" }),
        run_id: Some(format!("01J{case:08}")),
        status: RunStatus::Succeeded,
        output: Some(serde_json::Value::String(text.clone())),
        output_text: text,
        error: None,
        assertions,
        score: if pass { 1.0 } else { 0.75 },
        pass,
        latency_ms: 400 + (case as u64 * 37) % 2000,
        usage: Usage {
            input_tokens: 420,
            output_tokens: 90,
            cached_tokens: 0,
            reasoning_tokens: 0,
        },
        cost: Cost::known(0.000_21),
        cached: case.is_multiple_of(5),
    })
}

fn app() -> App {
    let rows = (0..CASES)
        .map(|i| {
            let file = format!("tests/suite{}.test.yaml", i / 100);
            let mut row = CaseRow::new(
                CaseId {
                    file: file.clone(),
                    index: i % 100,
                },
                format!("case {i}"),
                "flow/support",
            );
            row.baseline = Slot::Done(result(i, &file, true));
            row.draft = Slot::Done(result(i, &file, false));
            row
        })
        .collect();
    let mut app = App::new(rows, vec!["git:main".into()], "git:main (3f2a1b9)".into());
    app.status = "files changed: re-running 1 case(s)".into();
    app
}

fn measure(
    name: &str,
    app: &mut App,
    terminal: &mut Terminal<TestBackend>,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = app.visible().len().max(1);
    let mut times = Vec::with_capacity(FRAMES);
    for i in 0..WARM_UP + FRAMES {
        app.selected = (i * 7) % n;
        app.tick = i;
        let start = Instant::now();
        terminal.draw(|frame| render(app, frame))?;
        if i >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len())?;
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<28} mean {:>8.3} ms   p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        ms(mean),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut app = app();
    let mut terminal = Terminal::new(TestBackend::new(120, 40))?;
    println!("{CASES} finished cases, 120x40, {FRAMES} frames after {WARM_UP} warm-up");
    measure("list + side-by-side (diff)", &mut app, &mut terminal)?;
    app.show_diff = false;
    measure("list + side-by-side (plain)", &mut app, &mut terminal)?;
    app.show_diff = true;
    app.filter = "case 1".into();
    app.only_interesting = true;
    measure("filtered, failing/changed", &mut app, &mut terminal)?;
    app.filter.clear();
    app.only_interesting = false;
    app.view = View::Detail;
    measure("detail view", &mut app, &mut terminal)?;
    Ok(())
}
