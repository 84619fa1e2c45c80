//! Snapshots of whole frames drawn into a `TestBackend`, from apps built through `App::new`
//! and `update`, plus checks of the styled cells the text snapshots cannot show.

use flowrun_core::Diagnostic;
use flowrun_core::assert::AssertionResult;
use flowrun_core::cost::Cost;
use flowrun_core::diag::Location;
use flowrun_core::event::RunStatus;
use flowrun_core::provider::Usage;
use flowrun_core::testing::CaseResult;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Modifier;

use super::render;
use flowrun_local::store::{CallRow, RunDetail, RunRow, StepRow};
use serde_json::json;

use crate::app::{Action, App, CaseId, CaseRow, Effect, RunLoad, Side, update};

const REFUNDS: &str = "tests/refunds.test.yaml";
const TONE: &str = "tests/tone.test.yaml";

fn id(file: &str, index: usize) -> CaseId {
    CaseId {
        file: file.into(),
        index,
    }
}

fn check(name: &str, pass: bool, score: f64, reason: &str) -> AssertionResult {
    AssertionResult {
        name: name.into(),
        score,
        pass,
        reason: reason.into(),
        weight: 1.0,
        required: false,
    }
}

struct Run {
    pass: bool,
    score: f64,
    output: &'static str,
    assertions: Vec<AssertionResult>,
    latency_ms: u64,
    cached: bool,
    error: Option<&'static str>,
}

fn run(pass: bool, score: f64, output: &'static str) -> Run {
    Run {
        pass,
        score,
        output,
        assertions: Vec::new(),
        latency_ms: 840,
        cached: false,
        error: None,
    }
}

fn result(case: &CaseId, name: &str, baseline: bool, r: Run) -> Box<CaseResult> {
    Box::new(CaseResult {
        file: case.file.clone(),
        case: name.into(),
        index: case.index,
        repeat: 1,
        target: "flow/support".into(),
        tags: Vec::new(),
        input: serde_json::json!({ "message": format!("{name}: where is my money?"), "tier": "gold" }),
        run_id: Some(format!(
            "01J{}{:04}",
            if baseline { "B" } else { "D" },
            case.index
        )),
        status: if r.error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        output: Some(serde_json::json!(r.output)),
        output_text: r.output.into(),
        error: r.error.map(str::to_string),
        assertions: r.assertions,
        score: r.score,
        pass: r.pass,
        latency_ms: r.latency_ms,
        usage: Usage {
            input_tokens: 412,
            output_tokens: 38,
            cached_tokens: 0,
            reasoning_tokens: 0,
        },
        cost: Cost::known(0.000_184),
        cached: r.cached,
    })
}

fn finish(app: &mut App, case: &CaseId, baseline: bool, r: Run) {
    let name = app
        .rows
        .iter()
        .find(|row| &row.id == case)
        .map(|row| row.name.clone())
        .unwrap_or_default();
    let result = result(case, &name, baseline, r);
    update(
        app,
        Action::Finished {
            id: case.clone(),
            baseline,
            result,
        },
    );
}

/// Six cases in two files: unchanged, regressed (selected), improved, running, pending, and a
/// draft whose run failed.
fn mixed() -> App {
    let names = [
        (REFUNDS, "full refund"),
        (REFUNDS, "partial refund"),
        (REFUNDS, "angry customer"),
        (REFUNDS, "refund after 90 days"),
        (TONE, "greeting"),
        (TONE, "provider timeout"),
    ];
    let mut index = [0usize; 2];
    let rows: Vec<CaseRow> = names
        .iter()
        .map(|(file, name)| {
            let slot = usize::from(*file == TONE);
            let row = CaseRow::new(id(file, index[slot]), *name, "flow/support");
            index[slot] += 1;
            row
        })
        .collect();
    let ids: Vec<CaseId> = rows.iter().map(|r| r.id.clone()).collect();
    let mut app = App::new(
        rows,
        vec!["git:main".into(), "../prod".into()],
        "git:main (3f2a1b9)".into(),
    );

    let kind = "We are sorry for the trouble. A full refund of $40 has been issued to your card.";
    finish(
        &mut app,
        &ids[0],
        true,
        Run {
            assertions: vec![check("contains", true, 1.0, "found \"refund\"")],
            ..run(true, 1.0, kind)
        },
    );
    finish(
        &mut app,
        &ids[0],
        false,
        Run {
            assertions: vec![check("contains", true, 1.0, "found \"refund\"")],
            cached: true,
            ..run(true, 1.0, kind)
        },
    );

    let old = "We will refund the unused part of your plan, $12, within 5 days.";
    let new = "We cannot refund part of your plan, but we can offer a credit of $12.";
    let checks = |pass: bool| {
        vec![
            check(
                "contains",
                pass,
                if pass { 1.0 } else { 0.0 },
                if pass {
                    "found \"refund\""
                } else {
                    "\"will refund\" not found"
                },
            ),
            check(
                "llm_judge",
                pass,
                if pass { 0.9 } else { 0.3 },
                "offers what the policy allows",
            ),
            check("length", true, 1.0, "70 chars ≤ 400"),
        ]
    };
    finish(
        &mut app,
        &ids[1],
        true,
        Run {
            assertions: checks(true),
            ..run(true, 0.97, old)
        },
    );
    finish(
        &mut app,
        &ids[1],
        false,
        Run {
            assertions: checks(false),
            latency_ms: 1230,
            ..run(false, 0.43, new)
        },
    );

    finish(&mut app, &ids[2], true, run(false, 0.2, "Calm down."));
    finish(
        &mut app,
        &ids[2],
        false,
        run(
            true,
            0.9,
            "I understand how frustrating this is; let me fix it now.",
        ),
    );

    finish(
        &mut app,
        &ids[3],
        true,
        run(true, 1.0, "Refunds after 90 days are not possible."),
    );
    update(
        &mut app,
        Action::Started {
            id: ids[3].clone(),
            baseline: false,
        },
    );

    finish(&mut app, &ids[5], true, run(true, 1.0, "Hello!"));
    finish(
        &mut app,
        &ids[5],
        false,
        Run {
            error: Some("provider openai: timed out after 30s (3 attempts)"),
            ..run(false, 0.0, "")
        },
    );

    update(&mut app, Action::Tick);
    update(&mut app, Action::Tick);
    update(&mut app, Action::Down);
    app.status = "files changed: re-running 1 case(s)".into();
    app
}

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| render(app, frame)).unwrap();
    terminal
}

fn buffer(app: &App, width: u16, height: u16) -> Buffer {
    draw(app, width, height).backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let width = usize::from(buf.area.width);
    buf.content
        .chunks(width.max(1))
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The position of the first cell where `word` starts, searching from column `from_x`.
fn find(buf: &Buffer, word: &str, from_x: u16) -> Option<(u16, u16)> {
    for y in 0..buf.area.height {
        let row: Vec<&str> = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
        for x in from_x..buf.area.width {
            let rest: String = row[usize::from(x)..].concat();
            if rest.starts_with(word) {
                return Some((x, y));
            }
        }
    }
    None
}

#[test]
fn main_screen_80x24() {
    insta::assert_snapshot!(draw(&mixed(), 80, 24).backend());
}

#[test]
fn wide_120x40() {
    insta::assert_snapshot!(draw(&mixed(), 120, 40).backend());
}

#[test]
fn narrow_40x20() {
    insta::assert_snapshot!(draw(&mixed(), 40, 20).backend());
}

#[test]
fn detail_view() {
    let mut app = mixed();
    update(&mut app, Action::Open);
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
    // Scrolling past the end stops at the last page.
    for _ in 0..10 {
        update(&mut app, Action::ScrollDown);
    }
    insta::assert_snapshot!("detail_view_scrolled_to_end", draw(&app, 80, 24).backend());
}

fn step(index: u32, id: &str, messages: serde_json::Value, output: &str) -> StepRow {
    StepRow {
        step_index: index,
        step_id: id.into(),
        prompt: id.into(),
        version: "3f2a1b9c".into(),
        model: Some("openai/gpt-4o-mini".into()),
        messages,
        status: "succeeded".into(),
        output_text: Some(output.into()),
        output: Some(json!(output)),
        error: None,
        input_tokens: 206,
        output_tokens: 19,
        cached_tokens: 0,
        reasoning_tokens: 0,
        cost_usd: Some(0.000_092),
        cost_unknown: Vec::new(),
        latency_ms: Some(420),
        attempts: 1,
        agent_stop: None,
    }
}

fn call(step_index: u32, attempt: u32, raw: Option<serde_json::Value>) -> CallRow {
    CallRow {
        step_index,
        attempt,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        error_kind: raw.is_none().then(|| "rate_limited".into()),
        error: raw
            .is_none()
            .then(|| "429 Too Many Requests (retry after 1s)".into()),
        latency_ms: 420,
        input_tokens: if raw.is_some() { 206 } else { 0 },
        output_tokens: if raw.is_some() { 19 } else { 0 },
        cost_usd: Some(0.000_092),
        repair: false,
        cached: false,
        raw_response: raw,
    }
}

fn completion(id: &str, content: &str) -> serde_json::Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": 206, "completion_tokens": 19, "total_tokens": 225 }
    })
}

/// The run of the `support` flow behind `case`'s result on one side: a triage step (whose
/// first attempt was rate limited) and a reply step.
fn flow_run(case: &CaseId, baseline: bool) -> Box<RunDetail> {
    let run_id = format!("01J{}{:04}", if baseline { "B" } else { "D" }, case.index);
    let reply = if baseline {
        "We will refund the unused part of your plan, $12, within 5 days."
    } else {
        "We cannot refund part of your plan, but we can offer a credit of $12."
    };
    let ticket = "partial refund: where is my money?";
    Box::new(RunDetail {
        run: RunRow {
            id: run_id,
            target_kind: "flow".into(),
            target: "support".into(),
            version: "3f2a1b9c".into(),
            status: "succeeded".into(),
            input: json!({ "message": ticket, "tier": "gold" }),
            output: Some(json!(reply)),
            error: None,
            input_tokens: 412,
            output_tokens: 38,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cost_usd: Some(0.000_184),
            cost_unknown: Vec::new(),
            latency_ms: Some(840),
            started_at: 0,
            finished_at: Some(840),
        },
        steps: vec![
            StepRow {
                attempts: 2,
                ..step(
                    0,
                    "triage",
                    json!([
                        { "role": "system", "content": "Classify the ticket.\nAnswer with one word." },
                        { "role": "user", "content": ticket }
                    ]),
                    "billing",
                )
            },
            StepRow {
                prompt: "answer".into(),
                ..step(
                    1,
                    "reply",
                    json!([
                        { "role": "system", "content": "You answer gold customers about billing." },
                        { "role": "user", "content": ticket }
                    ]),
                    reply,
                )
            },
        ],
        calls: vec![
            call(0, 1, None),
            call(0, 2, Some(completion("chatcmpl-1", "billing"))),
            call(1, 1, Some(completion("chatcmpl-2", reply))),
        ],
        turns: Vec::new(),
    })
}

/// The mixed app with the selected case's detail view open and both runs loaded.
fn detail_loaded() -> App {
    let mut app = mixed();
    let effects = update(&mut app, Action::Open);
    let case = app.current().map(|r| r.id.clone()).unwrap();
    assert_eq!(effects.len(), 2, "{effects:?}");
    for effect in effects {
        let Effect::LoadDetail { side, run_id } = effect else {
            panic!("{effect:?}");
        };
        let detail = flow_run(&case, side == Side::Baseline);
        assert_eq!(detail.run.id, run_id);
        update(
            &mut app,
            Action::DetailLoaded {
                side,
                run_id,
                detail: Ok(detail),
            },
        );
    }
    assert!(matches!(app.detail.draft, RunLoad::Loaded(_)));
    app
}

/// The whole detail view as text, however long: drawn tall enough to hold it.
fn whole_detail(app: &App, width: u16) -> String {
    text(&buffer(app, width, 200))
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

#[test]
fn detail_view_with_steps() {
    let app = detail_loaded();
    let whole = whole_detail(&app, 80);
    insta::assert_snapshot!("detail_view_with_steps_whole", whole);
    // At 80x24, scrolled to the draft's steps.
    let lines: Vec<&str> = whole.lines().collect();
    let top = lines.iter().position(|l| l.starts_with('┌')).unwrap();
    let steps: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("│steps "))
        .collect();
    assert_eq!(steps.len(), 2, "a steps section per side");
    let mut scrolled = app.clone();
    scrolled.detail_scroll = u16::try_from(steps[1] - top - 1).unwrap();
    insta::assert_snapshot!(draw(&scrolled, 80, 24).backend());
}

#[test]
fn detail_view_with_steps_narrow() {
    let mut app = detail_loaded();
    app.detail_scroll = 20;
    insta::assert_snapshot!(draw(&app, 40, 20).backend());
}

#[test]
fn detail_view_loading_and_failed() {
    let mut app = mixed();
    update(&mut app, Action::Open);
    let screen = whole_detail(&app, 80);
    assert_eq!(screen.matches("│loading…").count(), 2, "{screen}");
    update(
        &mut app,
        Action::DetailLoaded {
            side: Side::Draft,
            run_id: "01JD0001".into(),
            detail: Err("cannot read run 01JD0001: no run with id `01JD0001`".into()),
        },
    );
    let screen = whole_detail(&app, 80);
    assert_eq!(screen.matches("│loading…").count(), 1, "{screen}");
    assert!(
        screen.contains("│✗ cannot read run 01JD0001: no run with id `01JD0001`"),
        "{screen}"
    );
}

#[test]
fn long_raw_responses_are_cut() {
    let mut app = mixed();
    let effects = update(&mut app, Action::Open);
    let case = app.current().map(|r| r.id.clone()).unwrap();
    let mut detail = flow_run(&case, false);
    let lines: Vec<String> = (0..100)
        .map(|i| format!("line {i} {}", "x".repeat(300)))
        .collect();
    detail.calls[2].raw_response = Some(json!({ "lines": lines }));
    let run_id = detail.run.id.clone();
    assert!(effects.contains(&Effect::LoadDetail {
        side: Side::Draft,
        run_id: run_id.clone()
    }));
    update(
        &mut app,
        Action::DetailLoaded {
            side: Side::Draft,
            run_id,
            detail: Ok(detail),
        },
    );
    let screen = text(&buffer(&app, 200, 400));
    assert!(screen.contains("line 27 xxx"), "{screen}");
    assert!(!screen.contains("line 28 "), "{screen}");
    assert!(screen.contains("… 74 more lines"), "{screen}");
    assert!(
        screen.contains("(all of it: flowrun show 01JD0001 --json)"),
        "{screen}"
    );
    assert!(!screen.contains(&"x".repeat(200)), "long lines are cut");
}

#[test]
fn help_overlay() {
    let mut app = mixed();
    update(&mut app, Action::Help);
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}

#[test]
fn error_panel() {
    let mut app = mixed();
    let source: std::sync::Arc<str> =
        "name: support\nsteps:\n  - prompt: triage\n    modle: fast\n".into();
    let at = Location::at_line_col(&source, 4, 5, 5);
    let diagnostics = vec![
        Diagnostic::error("flows/support.flow.yaml", "unknown key `modle`")
            .with_location(source, at)
            .with_help("did you mean `model`?"),
        Diagnostic::error(
            "prompts/triage.prompt.yaml",
            "template error: undefined variable `tier`",
        ),
    ];
    update(&mut app, Action::LoadFailed(diagnostics));
    let terminal = draw(&app, 80, 24);
    insta::assert_snapshot!(terminal.backend());
    let buf = terminal.backend().buffer();
    let (x, y) = find(buf, "flows/support.flow.yaml:4:5: unknown key `modle`", 0).unwrap();
    assert_eq!(
        buf[(x, y)].fg,
        ratatui::style::Color::Reset,
        "message text is not red, the border is"
    );
    let (x, y) = find(buf, "partial refund", 0).unwrap();
    assert!(
        buf[(x, y)].modifier.contains(Modifier::DIM),
        "stale results are dimmed"
    );
}

#[test]
fn filter_and_interesting_mode() {
    let mut app = mixed();
    update(&mut app, Action::ToggleInteresting);
    update(&mut app, Action::StartFilter);
    for c in "refund".chars() {
        update(&mut app, Action::FilterInput(c));
    }
    let mut terminal = draw(&app, 80, 24);
    insta::assert_snapshot!(terminal.backend());
    terminal.backend_mut().assert_cursor_position((8, 21));
}

#[test]
fn word_diff_is_styled_in_both_panes() {
    let app = mixed();
    let buf = buffer(&app, 120, 40);
    // The baseline pane is left of the draft pane; "will" was removed, "cannot" added.
    let (x, y) = find(&buf, "will", 48).unwrap();
    for dx in 0..4 {
        let cell = &buf[(x + dx, y)];
        assert!(
            cell.modifier.contains(Modifier::CROSSED_OUT),
            "removed word crossed out: {cell:?}"
        );
        assert_eq!(cell.fg, ratatui::style::Color::Red);
    }
    let (x, y) = find(&buf, "cannot", 48).unwrap();
    let cell = &buf[(x, y)];
    assert!(
        cell.modifier
            .contains(Modifier::BOLD | Modifier::UNDERLINED),
        "added word bold, underlined: {cell:?}"
    );
    assert_eq!(cell.fg, ratatui::style::Color::Green);
    // Words both sides share are plain.
    let (x, y) = find(&buf, "plan", 48).unwrap();
    assert!(buf[(x, y)].modifier.is_empty());

    let mut app = app;
    update(&mut app, Action::ToggleDiff);
    let buf = buffer(&app, 120, 40);
    let (x, y) = find(&buf, "cannot", 48).unwrap();
    assert!(
        buf[(x, y)].modifier.is_empty(),
        "no highlighting with the diff off"
    );
}

#[test]
fn selected_row_is_reversed() {
    let buf = buffer(&mixed(), 80, 24);
    let (x, y) = find(&buf, "›", 0).unwrap();
    assert!(buf[(x, y)].modifier.contains(Modifier::REVERSED));
    assert!(
        text(&buf)
            .lines()
            .nth(usize::from(y))
            .unwrap()
            .contains("partial refu")
    );
}

#[test]
fn list_is_virtualized_around_the_selection() {
    let rows: Vec<CaseRow> = (0..1000)
        .map(|i| CaseRow::new(id(REFUNDS, i), format!("case {i}"), "flow/f"))
        .collect();
    let mut app = App::new(rows, vec!["git:main".into()], "git:main".into());
    update(&mut app, Action::Bottom);
    let screen = text(&buffer(&app, 80, 24));
    assert!(screen.contains("case 999"), "{screen}");
    assert!(!screen.contains("case 0 "), "{screen}");
    for _ in 0..500 {
        update(&mut app, Action::Up);
    }
    let screen = text(&buffer(&app, 80, 24));
    assert!(screen.contains("›  case 499"), "{screen}");
}

#[test]
fn no_panic_at_any_size_or_state() {
    let mut apps = vec![
        mixed(),
        App::new(Vec::new(), Vec::new(), String::new()),
        detail_loaded(),
    ];
    let mut errors = mixed();
    update(
        &mut errors,
        Action::LoadFailed(vec![Diagnostic::error("a.yaml", "bad").with_help("fix it")]),
    );
    apps.push(errors);
    let mut empty_filter = mixed();
    update(&mut empty_filter, Action::StartFilter);
    update(&mut empty_filter, Action::FilterInput('z'));
    apps.push(empty_filter);
    // States no key leads to, but nothing forbids.
    let mut odd = mixed();
    odd.selected = usize::MAX;
    odd.tick = usize::MAX;
    odd.detail_scroll = u16::MAX;
    apps.push(odd);
    let mut wild = mixed();
    let nasty = "tab\there\r\n\u{1b}[31mred\u{1b}[0m 👨‍👩‍👧 wide 漢字 ".repeat(2000);
    finish(
        &mut wild,
        &id(REFUNDS, 0),
        false,
        Run {
            output: nasty.leak(),
            ..run(false, f64::NAN, "")
        },
    );
    wild.rows[0].name = "ñ".repeat(300);
    wild.selected = 0;
    apps.push(wild);
    let sizes = [
        (40_000, 3),
        (3, 40_000),
        (0, 0),
        (1, 1),
        (10, 3),
        (3, 10),
        (2, 2),
        (20, 5),
        (69, 12),
        (70, 6),
        (200, 2),
        (12, 60),
    ];
    for mut app in apps {
        for action in [None, Some(Action::Open), Some(Action::Help)] {
            if let Some(action) = action {
                update(&mut app, action);
            }
            for (w, h) in sizes {
                draw(&app, w, h);
            }
        }
    }
    insta::assert_snapshot!("tiny_10x3", draw(&mixed(), 10, 3).backend());
}

#[test]
fn verdict_and_wins_show_when_both_sides_are_done() {
    let rows = (0..2)
        .map(|i| CaseRow::new(id(REFUNDS, i), format!("case {i}"), "flow/f"))
        .collect();
    let mut app = App::new(rows, vec!["git:main".into()], "git:main (3f2a1b9)".into());
    for i in 0..2 {
        finish(
            &mut app,
            &id(REFUNDS, i),
            true,
            run(i == 0, if i == 0 { 1.0 } else { 0.0 }, "old"),
        );
        finish(&mut app, &id(REFUNDS, i), false, run(true, 1.0, "new"));
    }
    let screen = text(&buffer(&app, 100, 30));
    let header = screen.lines().next().unwrap();
    assert!(
        header.starts_with(
            "no significant change · baseline git:main (3f2a1b9) · draft wins 1 · baseline wins 0"
        ),
        "{header}"
    );
    assert!(screen.contains("draft    2/2 passed  100%"), "{screen}");
}

/// An agent turn of the draft's reply step: it looked the order up, then answered.
fn agent_turns(run_id: &str) -> Vec<flowrun_core::agent::AgentTurn> {
    use flowrun_core::agent::{AgentTurn, ToolResult};
    use flowrun_core::provider::{Message, ToolCall};
    let turn = |n: u32, assistant: Message, tool_results: Vec<ToolResult>| AgentTurn {
        run_id: run_id.into(),
        step_index: 1,
        turn: n,
        model: "openai/gpt-4o".into(),
        assistant,
        tool_results,
        feedback: Vec::new(),
        usage: Usage {
            input_tokens: 120,
            output_tokens: 14,
            ..Usage::default()
        },
        cost: Cost::default(),
        started_at_ms: 0,
        latency_ms: 310,
    };
    let call = ToolCall {
        id: "call_1".into(),
        name: "lookup_order".into(),
        arguments: json!({ "order_id": "A-17" }),
    };
    vec![
        turn(
            1,
            Message::assistant_calls("Looking it up.", vec![call]),
            vec![ToolResult {
                call_id: "call_1".into(),
                name: "lookup_order".into(),
                arguments: json!({ "order_id": "A-17" }),
                output: "Order A-17: two lamps, shipped Monday.".into(),
                is_error: false,
                latency_ms: 80,
                run_id: None,
                cost: None,
            }],
        ),
        turn(
            2,
            Message::assistant_calls("Your lamps shipped on Monday.", Vec::new()),
            Vec::new(),
        ),
    ]
}

#[test]
fn detail_view_with_an_agent_transcript() {
    let mut app = mixed();
    let effects = update(&mut app, Action::Open);
    let case = app.current().map(|r| r.id.clone()).unwrap();
    for effect in effects {
        let Effect::LoadDetail { side, run_id } = effect else {
            panic!("{effect:?}");
        };
        let mut detail = flow_run(&case, side == Side::Baseline);
        if side == Side::Draft {
            detail.turns = agent_turns(&run_id);
        }
        update(
            &mut app,
            Action::DetailLoaded {
                side,
                run_id,
                detail: Ok(detail),
            },
        );
    }
    let whole = whole_detail(&app, 80);
    for needle in [
        "turn 1 · openai/gpt-4o · 310ms · 120→14 tok",
        r#"lookup_order({"order_id":"A-17"})"#,
        "Order A-17: two lamps, shipped Monday.",
        "turn 2",
        "Your lamps shipped on Monday.",
    ] {
        assert!(whole.contains(needle), "`{needle}` missing:\n{whole}");
    }
    let lines: Vec<&str> = whole.lines().collect();
    let top = lines.iter().position(|l| l.starts_with('┌')).unwrap();
    let first_turn = lines.iter().position(|l| l.contains("turn 1")).unwrap();
    app.detail_scroll = u16::try_from(first_turn - top - 2).unwrap();
    insta::assert_snapshot!(draw(&app, 80, 24).backend());
}
