//! The dev UI's state and its pure `update`: every key and every background result is an
//! [`Action`]; `update` changes the [`App`] and returns the [`Effect`]s the runtime performs.

use flowrun_core::Diagnostic;
use flowrun_core::eval::{EvalReport, Preference};
use flowrun_core::testing::{CaseResult, Summary};
use flowrun_local::store::RunDetail;

/// A case's identity across reloads: its test file and position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId {
    pub file: String,
    pub index: usize,
}

/// What one side of a case shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Not run yet.
    Pending,
    /// Running now (a spinner shows).
    Running,
    Done(Box<CaseResult>),
}

impl Slot {
    pub fn result(&self) -> Option<&CaseResult> {
        match self {
            Slot::Done(r) => Some(r),
            _ => None,
        }
    }
}

/// One test case row.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    pub id: CaseId,
    pub name: String,
    pub target: String,
    pub tags: Vec<String>,
    pub draft: Slot,
    pub baseline: Slot,
}

impl CaseRow {
    pub fn new(id: CaseId, name: impl Into<String>, target: impl Into<String>) -> Self {
        CaseRow {
            id,
            name: name.into(),
            target: target.into(),
            tags: Vec::new(),
            draft: Slot::Pending,
            baseline: Slot::Pending,
        }
    }

    /// The draft and baseline disagree on pass/fail, or their scores differ.
    pub fn changed(&self) -> bool {
        match (self.draft.result(), self.baseline.result()) {
            (Some(d), Some(b)) => d.pass != b.pass || (d.score - b.score).abs() > 1e-6,
            _ => false,
        }
    }

    pub fn failing(&self) -> bool {
        self.draft.result().is_some_and(|r| !r.pass)
            || self.baseline.result().is_some_and(|r| !r.pass)
    }
}

/// One side of a case: the draft (the working tree) or the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Draft,
    Baseline,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Baseline, Side::Draft];

    /// This side's slot of `row`.
    pub fn slot(self, row: &CaseRow) -> &Slot {
        match self {
            Side::Draft => &row.draft,
            Side::Baseline => &row.baseline,
        }
    }
}

/// The recorded run of one side of the case the detail view shows: its steps, rendered
/// messages and call attempts, loaded from the history off the UI thread.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RunLoad {
    /// Nothing to load: the side has not finished, or never got as far as a run.
    #[default]
    None,
    Loading(String),
    Loaded(Box<RunDetail>),
    Failed {
        run_id: String,
        message: String,
    },
}

impl RunLoad {
    /// The run this is (or will be) about.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            RunLoad::None => None,
            RunLoad::Loading(id) | RunLoad::Failed { run_id: id, .. } => Some(id),
            RunLoad::Loaded(d) => Some(&d.run.id),
        }
    }
}

/// Both sides' runs for the detail view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetailRuns {
    pub draft: RunLoad,
    pub baseline: RunLoad,
}

impl DetailRuns {
    pub fn get(&self, side: Side) -> &RunLoad {
        match side {
            Side::Draft => &self.draft,
            Side::Baseline => &self.baseline,
        }
    }

    fn get_mut(&mut self, side: Side) -> &mut RunLoad {
        match side {
            Side::Draft => &mut self.draft,
            Side::Baseline => &mut self.baseline,
        }
    }
}

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    List,
    Detail,
    Help,
}

/// Header totals, recomputed when results land (never while drawing).
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub draft: Summary,
    pub baseline: Summary,
    /// `better`, `worse`, `no significant change`, or empty until both sides have results.
    pub verdict: String,
    pub draft_wins: usize,
    pub baseline_wins: usize,
}

/// Everything the UI shows.
#[derive(Debug, Clone)]
pub struct App {
    pub rows: Vec<CaseRow>,
    /// Index into [`App::visible`].
    pub selected: usize,
    pub filter: String,
    /// The filter line is being typed.
    pub editing_filter: bool,
    /// Show only failing cases or cases whose verdict changed.
    pub only_interesting: bool,
    pub show_diff: bool,
    pub view: View,
    /// Scroll offset of the detail view.
    pub detail_scroll: u16,
    /// The runs behind the results the detail view shows (kept while it is closed: opening
    /// the same case again loads nothing).
    pub detail: DetailRuns,
    /// Problems in the project files: shown instead of stale results being trusted.
    pub errors: Vec<Diagnostic>,
    /// Baselines `b` cycles through (e.g. `git:main`, a directory); the first is active.
    pub baselines: Vec<String>,
    /// Label of the loaded baseline (e.g. `git:main (3f2a1b9c)`).
    pub baseline_label: String,
    /// The last thing that happened, for the status line.
    pub status: String,
    pub totals: Totals,
    /// Advances on every tick, for spinners.
    pub tick: usize,
    pub quit: bool,
}

/// Everything that can happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Open the detail view of the selected case.
    Open,
    /// Close the detail view, help, or the filter line.
    Back,
    ScrollDown,
    ScrollUp,
    /// Re-run the selected case's draft.
    Rerun,
    /// Re-run every draft.
    RerunAll,
    NextBaseline,
    StartFilter,
    FilterInput(char),
    FilterBackspace,
    ToggleInteresting,
    ToggleDiff,
    Save,
    Help,
    Quit,
    Tick,
    /// A side of a case started running.
    Started {
        id: CaseId,
        baseline: bool,
    },
    /// A side of a case finished.
    Finished {
        id: CaseId,
        baseline: bool,
        result: Box<CaseResult>,
    },
    /// The project was reloaded after a file change: the new case list, and which cases the
    /// change affects (their drafts must run again).
    Reloaded {
        rows: Vec<CaseRow>,
        affected: Vec<CaseId>,
    },
    /// The project has errors; the last good results stay visible under the error panel.
    LoadFailed(Vec<Diagnostic>),
    /// A new baseline was loaded (its results will follow).
    BaselineLoaded {
        label: String,
        rows: Vec<CaseRow>,
    },
    /// The current results were saved as an evaluation.
    Saved(String),
    /// A side's run was read from the history for the detail view (dropped unless it is
    /// the run the view is waiting for).
    DetailLoaded {
        side: Side,
        run_id: String,
        detail: Result<Box<RunDetail>, String>,
    },
    /// Something went wrong in the background.
    Failed(String),
}

/// What the runtime must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run these drafts (cancelling in-flight runs of the same cases).
    RunDraft(Vec<CaseId>),
    /// Run these cases on the baseline.
    RunBaseline(Vec<CaseId>),
    /// Load another baseline.
    LoadBaseline(String),
    /// Save the current results as an evaluation record.
    Save,
    /// Read a side's run (steps, messages, raw responses) for the detail view; answered by
    /// [`Action::DetailLoaded`].
    LoadDetail {
        side: Side,
        run_id: String,
    },
    Quit,
}

impl App {
    pub fn new(rows: Vec<CaseRow>, baselines: Vec<String>, baseline_label: String) -> Self {
        let mut app = App {
            rows,
            selected: 0,
            filter: String::new(),
            editing_filter: false,
            only_interesting: false,
            show_diff: true,
            view: View::List,
            detail_scroll: 0,
            detail: DetailRuns::default(),
            errors: Vec::new(),
            baselines,
            baseline_label,
            status: String::new(),
            totals: Totals {
                draft: Summary::of(&[]),
                baseline: Summary::of(&[]),
                verdict: String::new(),
                draft_wins: 0,
                baseline_wins: 0,
            },
            tick: 0,
            quit: false,
        };
        app.recompute();
        app
    }

    /// Indices into `rows` of the rows the list shows, in order.
    pub fn visible(&self) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                needle.is_empty()
                    || r.name.to_lowercase().contains(&needle)
                    || r.id.file.to_lowercase().contains(&needle)
                    || r.tags.iter().any(|t| t.to_lowercase().contains(&needle))
            })
            .filter(|(_, r)| !self.only_interesting || r.failing() || r.changed())
            .map(|(i, _)| i)
            .collect()
    }

    /// The selected row, if any is visible.
    pub fn current(&self) -> Option<&CaseRow> {
        self.visible().get(self.selected).map(|&i| &self.rows[i])
    }

    fn clamp_selection(&mut self) {
        let n = self.visible().len();
        self.selected = if n == 0 { 0 } else { self.selected.min(n - 1) };
    }

    fn row_mut(&mut self, id: &CaseId) -> Option<&mut CaseRow> {
        self.rows.iter_mut().find(|r| &r.id == id)
    }

    /// Recomputes the header totals and verdict from the finished results.
    pub fn recompute(&mut self) {
        let draft: Vec<CaseResult> = self
            .rows
            .iter()
            .filter_map(|r| r.draft.result().cloned())
            .collect();
        let baseline: Vec<CaseResult> = self
            .rows
            .iter()
            .filter_map(|r| r.baseline.result().cloned())
            .collect();
        let both_done = !draft.is_empty()
            && draft.len() == self.rows.len()
            && baseline.len() == self.rows.len();
        let report = EvalReport::new(
            0,
            0,
            self.baseline_label.clone(),
            draft.clone(),
            baseline.clone(),
            &|_, _| None,
        );
        self.totals = Totals {
            draft: Summary::of(&draft),
            baseline: Summary::of(&baseline),
            verdict: if both_done {
                report.verdict.as_str().to_string()
            } else {
                String::new()
            },
            draft_wins: report
                .cases
                .iter()
                .filter(|c| c.preference == Preference::Draft)
                .count(),
            baseline_wins: report
                .cases
                .iter()
                .filter(|c| c.preference == Preference::Baseline)
                .count(),
        };
    }

    /// Every case id, in order.
    pub fn all_ids(&self) -> Vec<CaseId> {
        self.rows.iter().map(|r| r.id.clone()).collect()
    }
}

/// Applies `action` to `app`; returns what the runtime must do.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    let mut effects = apply(app, action);
    effects.extend(sync_detail(app));
    effects
}

/// While the detail view is open, asks for the runs behind the selected case's results
/// whenever they are not the ones loaded (the view opened, a result landed, a reload or a
/// new baseline replaced it).
fn sync_detail(app: &mut App) -> Vec<Effect> {
    if app.view != View::Detail {
        return Vec::new();
    }
    let wanted: Vec<(Side, Option<String>)> = Side::BOTH
        .iter()
        .map(|&side| {
            let run_id = app
                .current()
                .and_then(|row| side.slot(row).result())
                .and_then(|r| r.run_id.clone());
            (side, run_id)
        })
        .collect();
    let mut effects = Vec::new();
    for (side, run_id) in wanted {
        let load = app.detail.get_mut(side);
        if load.run_id() == run_id.as_deref() {
            continue;
        }
        *load = match run_id {
            Some(run_id) => {
                effects.push(Effect::LoadDetail {
                    side,
                    run_id: run_id.clone(),
                });
                RunLoad::Loading(run_id)
            }
            None => RunLoad::None,
        };
    }
    effects
}

/// [`update`] but for the detail view's loads.
fn apply(app: &mut App, action: Action) -> Vec<Effect> {
    if app.editing_filter {
        match action {
            Action::FilterInput(c) => {
                app.filter.push(c);
                app.selected = 0;
                return Vec::new();
            }
            Action::FilterBackspace => {
                app.filter.pop();
                app.selected = 0;
                return Vec::new();
            }
            Action::Open | Action::Back => {
                app.editing_filter = false;
                app.clamp_selection();
                return Vec::new();
            }
            _ => {}
        }
    }
    let page = 10;
    match action {
        Action::Up if app.view == View::Detail => {
            app.detail_scroll = app.detail_scroll.saturating_sub(1)
        }
        Action::Down if app.view == View::Detail => {
            app.detail_scroll = app.detail_scroll.saturating_add(1)
        }
        Action::ScrollUp => app.detail_scroll = app.detail_scroll.saturating_sub(page),
        Action::ScrollDown => app.detail_scroll = app.detail_scroll.saturating_add(page),
        Action::Up => app.selected = app.selected.saturating_sub(1),
        Action::Down => {
            app.selected += 1;
            app.clamp_selection();
        }
        Action::PageUp => app.selected = app.selected.saturating_sub(page as usize),
        Action::PageDown => {
            app.selected += page as usize;
            app.clamp_selection();
        }
        Action::Top => app.selected = 0,
        Action::Bottom => app.selected = app.visible().len().saturating_sub(1),
        Action::Open if app.view == View::List && app.current().is_some() => {
            app.view = View::Detail;
            app.detail_scroll = 0;
            // A load that failed is tried again.
            for side in Side::BOTH {
                let load = app.detail.get_mut(side);
                if matches!(load, RunLoad::Failed { .. }) {
                    *load = RunLoad::None;
                }
            }
        }
        Action::Open => {}
        Action::Back => {
            if app.view == View::List {
                app.filter.clear();
                app.clamp_selection();
            }
            app.view = View::List;
        }
        Action::Help => {
            app.view = if app.view == View::Help {
                View::List
            } else {
                View::Help
            }
        }
        Action::Rerun => {
            if let Some(row) = app.current() {
                return vec![Effect::RunDraft(vec![row.id.clone()])];
            }
        }
        Action::RerunAll => return vec![Effect::RunDraft(app.all_ids())],
        Action::NextBaseline => {
            if app.baselines.len() > 1 {
                app.baselines.rotate_left(1);
                app.status = format!("loading baseline {}", app.baselines[0]);
                return vec![Effect::LoadBaseline(app.baselines[0].clone())];
            }
            app.status = "only one baseline: start with `--baseline` to add another".into();
        }
        Action::StartFilter => {
            app.editing_filter = true;
            app.view = View::List;
        }
        Action::FilterInput(_) | Action::FilterBackspace => {}
        Action::ToggleInteresting => {
            app.only_interesting = !app.only_interesting;
            app.clamp_selection();
        }
        Action::ToggleDiff => app.show_diff = !app.show_diff,
        Action::Save => return vec![Effect::Save],
        Action::Quit => {
            app.quit = true;
            return vec![Effect::Quit];
        }
        Action::Tick => app.tick = app.tick.wrapping_add(1),
        Action::Started { id, baseline } => {
            if let Some(row) = app.row_mut(&id) {
                *(if baseline {
                    &mut row.baseline
                } else {
                    &mut row.draft
                }) = Slot::Running;
            }
        }
        Action::Finished {
            id,
            baseline,
            result,
        } => {
            if let Some(row) = app.row_mut(&id) {
                *(if baseline {
                    &mut row.baseline
                } else {
                    &mut row.draft
                }) = Slot::Done(result);
                app.recompute();
            }
        }
        Action::Reloaded { rows, affected } => {
            app.errors.clear();
            let old = std::mem::take(&mut app.rows);
            app.rows = rows
                .into_iter()
                .map(|mut row| {
                    if let Some(prev) = old.iter().find(|o| o.id == row.id) {
                        row.baseline = prev.baseline.clone();
                        if !affected.contains(&row.id) {
                            row.draft = prev.draft.clone();
                        }
                    }
                    row
                })
                .collect();
            app.clamp_selection();
            app.recompute();
            app.status = format!("files changed: re-running {} case(s)", affected.len());
            let missing_baseline: Vec<CaseId> = app
                .rows
                .iter()
                .filter(|r| r.baseline == Slot::Pending)
                .map(|r| r.id.clone())
                .collect();
            let mut effects = vec![Effect::RunDraft(affected)];
            if !missing_baseline.is_empty() {
                effects.push(Effect::RunBaseline(missing_baseline));
            }
            return effects;
        }
        Action::LoadFailed(diags) => {
            app.status = format!("{} problem(s) in the project files", diags.len());
            app.errors = diags;
        }
        Action::BaselineLoaded { label, rows } => {
            app.baseline_label = label.clone();
            for row in &mut app.rows {
                row.baseline = Slot::Pending;
            }
            let _ = rows;
            app.recompute();
            app.status = format!("baseline {label}");
            return vec![Effect::RunBaseline(app.all_ids())];
        }
        Action::Saved(id) => app.status = format!("saved as evaluation {id}"),
        Action::DetailLoaded {
            side,
            run_id,
            detail,
        } => {
            let load = app.detail.get_mut(side);
            if matches!(load, RunLoad::Loading(waiting) if *waiting == run_id) {
                *load = match detail {
                    Ok(detail) => RunLoad::Loaded(detail),
                    Err(message) => RunLoad::Failed { run_id, message },
                };
            }
        }
        Action::Failed(message) => app.status = message,
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_core::cost::Cost;
    use flowrun_core::event::RunStatus;
    use flowrun_core::provider::Usage;

    fn id(i: usize) -> CaseId {
        CaseId {
            file: "tests/a.test.yaml".into(),
            index: i,
        }
    }

    fn app(n: usize) -> App {
        let rows = (0..n)
            .map(|i| CaseRow::new(id(i), format!("case {i}"), "flow/f"))
            .collect();
        App::new(
            rows,
            vec!["git:main".into(), "../prod".into()],
            "git:main (abc)".into(),
        )
    }

    fn result(i: usize, pass: bool) -> Box<CaseResult> {
        Box::new(CaseResult {
            file: "tests/a.test.yaml".into(),
            case: format!("case {i}"),
            index: i,
            repeat: 1,
            target: "flow/f".into(),
            tags: Vec::new(),
            input: serde_json::json!({}),
            run_id: None,
            status: RunStatus::Succeeded,
            output: Some(serde_json::json!("out")),
            output_text: "out".into(),
            error: None,
            assertions: Vec::new(),
            score: if pass { 1.0 } else { 0.0 },
            pass,
            latency_ms: 5,
            usage: Usage::default(),
            cost: Cost::known(0.0),
            cached: false,
        })
    }

    #[test]
    fn navigation_stays_in_bounds() {
        let mut a = app(3);
        update(&mut a, Action::Up);
        assert_eq!(a.selected, 0);
        for _ in 0..5 {
            update(&mut a, Action::Down);
        }
        assert_eq!(a.selected, 2);
        update(&mut a, Action::Top);
        assert_eq!(a.selected, 0);
        update(&mut a, Action::Bottom);
        assert_eq!(a.selected, 2);
    }

    #[test]
    fn filter_narrows_and_escape_clears() {
        let mut a = app(12);
        update(&mut a, Action::StartFilter);
        for c in "case 1".chars() {
            update(&mut a, Action::FilterInput(c));
        }
        assert_eq!(a.visible().len(), 3, "case 1, case 10, case 11");
        update(&mut a, Action::Open);
        assert!(!a.editing_filter);
        update(&mut a, Action::Back);
        assert_eq!(a.visible().len(), 12);
    }

    #[test]
    fn results_update_totals_and_verdict() {
        let mut a = app(2);
        update(
            &mut a,
            Action::Started {
                id: id(0),
                baseline: false,
            },
        );
        assert_eq!(a.rows[0].draft, Slot::Running);
        for i in 0..2 {
            update(
                &mut a,
                Action::Finished {
                    id: id(i),
                    baseline: false,
                    result: result(i, true),
                },
            );
            update(
                &mut a,
                Action::Finished {
                    id: id(i),
                    baseline: true,
                    result: result(i, i == 0),
                },
            );
        }
        assert_eq!(a.totals.draft.passed, 2);
        assert_eq!(a.totals.baseline.passed, 1);
        assert_eq!(a.totals.draft_wins, 1);
        assert_eq!(a.totals.verdict, "no significant change");
        update(&mut a, Action::ToggleInteresting);
        assert_eq!(a.visible(), vec![1], "only the changed case");
    }

    #[test]
    fn keys_ask_for_effects() {
        let mut a = app(3);
        update(&mut a, Action::Down);
        assert_eq!(
            update(&mut a, Action::Rerun),
            vec![Effect::RunDraft(vec![id(1)])]
        );
        assert_eq!(
            update(&mut a, Action::RerunAll),
            vec![Effect::RunDraft(vec![id(0), id(1), id(2)])]
        );
        assert_eq!(
            update(&mut a, Action::NextBaseline),
            vec![Effect::LoadBaseline("../prod".into())]
        );
        assert_eq!(update(&mut a, Action::Save), vec![Effect::Save]);
        assert_eq!(update(&mut a, Action::Quit), vec![Effect::Quit]);
        assert!(a.quit);
    }

    #[test]
    fn reload_keeps_unaffected_results_and_reruns_affected() {
        let mut a = app(2);
        for i in 0..2 {
            update(
                &mut a,
                Action::Finished {
                    id: id(i),
                    baseline: false,
                    result: result(i, true),
                },
            );
            update(
                &mut a,
                Action::Finished {
                    id: id(i),
                    baseline: true,
                    result: result(i, true),
                },
            );
        }
        let rows = (0..3)
            .map(|i| CaseRow::new(id(i), format!("case {i}"), "flow/f"))
            .collect();
        let effects = update(
            &mut a,
            Action::Reloaded {
                rows,
                affected: vec![id(1), id(2)],
            },
        );
        assert!(matches!(a.rows[0].draft, Slot::Done(_)));
        assert_eq!(a.rows[1].draft, Slot::Pending);
        assert_eq!(
            effects,
            vec![
                Effect::RunDraft(vec![id(1), id(2)]),
                Effect::RunBaseline(vec![id(2)])
            ]
        );
    }

    #[test]
    fn load_errors_show_and_clear_on_reload() {
        let mut a = app(1);
        update(
            &mut a,
            Action::LoadFailed(vec![Diagnostic::error("prompts/a.yaml", "bad")]),
        );
        assert_eq!(a.errors.len(), 1);
        let rows = vec![CaseRow::new(id(0), "case 0", "flow/f")];
        update(
            &mut a,
            Action::Reloaded {
                rows,
                affected: vec![],
            },
        );
        assert!(a.errors.is_empty());
    }

    fn with_run(i: usize, run_id: &str) -> Box<CaseResult> {
        let mut r = result(i, true);
        r.run_id = Some(run_id.into());
        r
    }

    fn finish(a: &mut App, i: usize, baseline: bool, run_id: &str) -> Vec<Effect> {
        update(
            a,
            Action::Finished {
                id: id(i),
                baseline,
                result: with_run(i, run_id),
            },
        )
    }

    fn detail(run_id: &str) -> Box<RunDetail> {
        use flowrun_local::store::RunRow;
        Box::new(RunDetail {
            run: RunRow {
                id: run_id.into(),
                target_kind: "flow".into(),
                target: "f".into(),
                version: "v1".into(),
                status: "succeeded".into(),
                input: serde_json::json!({}),
                output: None,
                error: None,
                input_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                reasoning_tokens: 0,
                cost_usd: Some(0.0),
                cost_unknown: Vec::new(),
                latency_ms: Some(1),
                started_at: 0,
                finished_at: Some(1),
            },
            steps: Vec::new(),
            calls: Vec::new(),
            turns: Vec::new(),
        })
    }

    fn loaded(side: Side, run_id: &str, detail: Result<Box<RunDetail>, String>) -> Action {
        Action::DetailLoaded {
            side,
            run_id: run_id.into(),
            detail,
        }
    }

    fn load(side: Side, run_id: &str) -> Effect {
        Effect::LoadDetail {
            side,
            run_id: run_id.into(),
        }
    }

    #[test]
    fn opening_details_loads_both_runs_once() {
        let mut a = app(2);
        assert!(
            finish(&mut a, 0, false, "d0").is_empty(),
            "no loads in the list"
        );
        finish(&mut a, 0, true, "b0");
        assert_eq!(
            update(&mut a, Action::Open),
            vec![load(Side::Baseline, "b0"), load(Side::Draft, "d0")]
        );
        assert_eq!(a.detail.draft, RunLoad::Loading("d0".into()));

        // An answer for a run the view no longer waits for is dropped.
        update(&mut a, loaded(Side::Draft, "d-old", Ok(detail("d-old"))));
        assert_eq!(a.detail.draft, RunLoad::Loading("d0".into()));
        update(&mut a, loaded(Side::Draft, "d0", Ok(detail("d0"))));
        assert_eq!(a.detail.draft, RunLoad::Loaded(detail("d0")));
        update(&mut a, loaded(Side::Baseline, "b0", Err("gone".into())));
        assert_eq!(
            a.detail.baseline,
            RunLoad::Failed {
                run_id: "b0".into(),
                message: "gone".into()
            }
        );
        // A late duplicate does not replace what loaded.
        update(&mut a, loaded(Side::Draft, "d0", Err("late".into())));
        assert_eq!(a.detail.draft, RunLoad::Loaded(detail("d0")));

        // Opening the same case again loads only what failed.
        update(&mut a, Action::Back);
        assert_eq!(
            update(&mut a, Action::Open),
            vec![load(Side::Baseline, "b0")]
        );
        assert_eq!(a.detail.draft, RunLoad::Loaded(detail("d0")));
    }

    #[test]
    fn a_new_result_of_the_open_case_is_loaded() {
        let mut a = app(2);
        finish(&mut a, 0, false, "d0");
        update(&mut a, Action::Open);
        update(&mut a, loaded(Side::Draft, "d0", Ok(detail("d0"))));

        // A re-run: nothing to show while it runs, its run once it lands.
        let effects = update(
            &mut a,
            Action::Started {
                id: id(0),
                baseline: false,
            },
        );
        assert!(effects.is_empty());
        assert_eq!(a.detail.draft, RunLoad::None);
        assert_eq!(
            finish(&mut a, 0, false, "d1"),
            vec![load(Side::Draft, "d1")]
        );
        // The answer for the old run arrives late: ignored.
        update(&mut a, loaded(Side::Draft, "d0", Ok(detail("d0"))));
        assert_eq!(a.detail.draft, RunLoad::Loading("d1".into()));

        // Another case's result changes nothing here.
        assert!(finish(&mut a, 1, false, "d9").is_empty());
        // A baseline landing for the open case is loaded.
        assert_eq!(
            finish(&mut a, 0, true, "b1"),
            vec![load(Side::Baseline, "b1")]
        );
        // A new baseline resets its results: nothing to show on that side.
        let effects = update(
            &mut a,
            Action::BaselineLoaded {
                label: "../prod".into(),
                rows: Vec::new(),
            },
        );
        assert_eq!(effects, vec![Effect::RunBaseline(vec![id(0), id(1)])]);
        assert_eq!(a.detail.baseline, RunLoad::None);
    }

    #[test]
    fn a_case_without_a_run_loads_nothing() {
        let mut a = app(1);
        update(
            &mut a,
            Action::Finished {
                id: id(0),
                baseline: false,
                result: result(0, false),
            },
        );
        assert!(update(&mut a, Action::Open).is_empty());
        assert_eq!(a.detail, DetailRuns::default());
    }
}
