//! The loop of `flowrun dev`: terminal input, a tick and background messages go in, each
//! becomes an [`Action`] for [`app::update`], and the [`Effect`]s that come out are
//! performed here: case runs on tokio tasks (a bounded pool per side, a cancellation token
//! per case), baseline loads, saves and the detail view's run reads on blocking threads,
//! reloads on the watcher's thread.
//! The loop itself never awaits the network or the disk; it draws only when something
//! changed, or on a tick while anything is running.
//!
//! The terminal is restored on quit, on error and on panic (a panic hook restores it before
//! the message is printed).

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream};
use flowrun_core::assert::Hooks;
use flowrun_core::cost::Cost;
use flowrun_core::eval::EvalReport;
use flowrun_core::event::{RunStatus, now_ms};
use flowrun_core::provider::Usage;
use flowrun_core::testing::runner::run_case;
use flowrun_core::testing::{CaseResult, TestCase};
use flowrun_core::{EventSink, Executor};
use flowrun_local::baseline::{BaselineRef, load_baseline};
use flowrun_local::executors::{CacheSetup, SharedHttp, build_executor_sharing};
use flowrun_local::testing::Selection;
use flowrun_local::{LocalProject, Store};
use futures::{FutureExt, Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::app::{self, Action, App, CaseId, CaseRow, Effect, Side};
use crate::event::{Input, input_of};
use crate::reload::{self, Change, Draft};

/// How often spinners advance while something runs.
pub const TICK: Duration = Duration::from_millis(100);

/// What `flowrun dev` works on. The caller loads the project and its cases first, so that
/// problems print as usual before the screen is taken over.
pub struct DevOptions {
    pub local: LocalProject,
    /// The cases `selection` chose in `local`.
    pub cases: Vec<TestCase>,
    /// Which cases to show, applied again on every reload.
    pub selection: Selection,
    /// The history (runs, response cache, evaluations), shared with `flowrun test` and `eval`.
    pub store: Arc<Store>,
    /// Baselines `b` cycles through (`git:<ref>`, `git:`, `dir:<path>`); the first is loaded at
    /// start. Never empty.
    pub baselines: Vec<String>,
    /// Cases run at once, per side.
    pub jobs: usize,
    /// A testing hook: return right after the first frame is drawn (to time start-up).
    pub exit_after_first_frame: bool,
    /// Also receives every run's events (the OpenTelemetry export), when given.
    pub observer: Option<Arc<dyn EventSink>>,
}

/// Why `flowrun dev` stopped other than by quitting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
    #[error("cannot draw: {0}")]
    Draw(String),
}

/// What background work sends to the loop.
pub enum Msg {
    /// The first draft's executors are built: its runs can start.
    DraftReady(Arc<Draft>),
    /// A case run ended (dropped if a newer run of the same case started since).
    Finished {
        id: CaseId,
        baseline: bool,
        generation: u64,
        result: Box<CaseResult>,
    },
    /// The project changed and loaded cleanly.
    Reloaded {
        draft: Arc<Draft>,
        rows: Vec<CaseRow>,
        change: Change,
    },
    /// A baseline finished loading (dropped if another was asked for since).
    BaselineLoaded {
        request: u64,
        label: String,
        executor: Arc<Executor>,
        runs: Arc<Store>,
    },
    BaselineFailed {
        request: u64,
        message: String,
    },
    /// Anything else, as the action it is.
    Action(Action),
}

/// Runs `flowrun dev` on this process's terminal until the user quits.
pub async fn run(options: DevOptions) -> Result<(), DevError> {
    let mut guard = TerminalGuard::enter()?;
    let result = match Terminal::new(CrosstermBackend::new(io::stdout())) {
        Ok(mut terminal) => run_on(&mut terminal, EventStream::new(), options).await,
        Err(e) => Err(DevError::Terminal(e)),
    };
    guard.restore();
    result
}

/// The loop, on any backend and input stream (tests use `TestBackend` and a channel).
pub async fn run_on<B, S>(
    terminal: &mut Terminal<B>,
    mut input: S,
    options: DevOptions,
) -> Result<(), DevError>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let exit_after_first_frame = options.exit_after_first_frame;
    let mut session = Session::start(options);
    loop {
        session.draw(terminal)?;
        if session.app.quit || exit_after_first_frame {
            return Ok(());
        }
        session.step(&mut input).await?;
    }
}

/// The state of a running `flowrun dev`: the app, the loaded draft and baseline, and the
/// runs in flight.
pub struct Session {
    pub app: App,
    /// The project as last loaded cleanly (baselines are loaded relative to it).
    local: Arc<LocalProject>,
    /// The cases and executors of the draft, once built (off the UI thread).
    draft: Option<Arc<Draft>>,
    baseline: Option<Arc<Executor>>,
    /// The loaded baseline's runs, for the detail view: in memory, one per baseline, so
    /// they stay out of the project's history (as in `flowrun eval`).
    baseline_runs: Option<Arc<Store>>,
    store: Arc<Store>,
    /// One HTTP client for the draft's, the judge's and the baselines' executors.
    http: SharedHttp,
    /// Every executor's runs also go there (the OpenTelemetry export).
    observer: Option<Arc<dyn EventSink>>,
    tx: UnboundedSender<Msg>,
    rx: UnboundedReceiver<Msg>,
    tick: tokio::time::Interval,
    draft_slots: Arc<Semaphore>,
    baseline_slots: Arc<Semaphore>,
    /// Runs in flight by case and side (`true`: baseline): their generation and token.
    running: HashMap<(CaseId, bool), (u64, CancellationToken)>,
    generation: u64,
    /// The latest baseline load asked for, and whether it is still loading.
    baseline_request: u64,
    loading_baseline: bool,
    /// Something changed since the last frame.
    dirty: bool,
    started_ms: i64,
    started: Instant,
}

impl Session {
    /// Shows the cases at once; builds the draft's executors (then runs every case) and loads
    /// the first baseline in the background, and starts watching the project.
    pub fn start(options: DevOptions) -> Session {
        let first = options.baselines.first().cloned().unwrap_or_default();
        let app = App::new(
            reload::rows_of(&options.cases),
            options.baselines,
            format!("{first} (loading)"),
        );
        let local = Arc::new(options.local);
        let (tx, rx) = unbounded_channel();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let jobs = options.jobs.max(1);
        let mut session = Session {
            app,
            local: local.clone(),
            draft: None,
            baseline: None,
            baseline_runs: None,
            store: options.store,
            http: SharedHttp::default(),
            observer: options.observer,
            tx,
            rx,
            tick,
            draft_slots: Arc::new(Semaphore::new(jobs)),
            baseline_slots: Arc::new(Semaphore::new(jobs)),
            running: HashMap::new(),
            generation: 0,
            baseline_request: 0,
            loading_baseline: false,
            dirty: true,
            started_ms: now_ms(),
            started: Instant::now(),
        };
        let reloads = reload::spawn(
            local,
            options.cases,
            options.selection,
            session.store.clone(),
            session.http.clone(),
            session.observer.clone(),
            session.tx.clone(),
        );
        if let Err(e) = reloads {
            session.dispatch(Action::Failed(format!(
                "cannot start the reload thread: {e}"
            )));
        }
        session.perform(Effect::LoadBaseline(first));
        session
    }

    /// Draws a frame if anything changed since the last one.
    pub fn draw<B: Backend>(&mut self, terminal: &mut Terminal<B>) -> Result<(), DevError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        terminal
            .draw(|frame| crate::ui::render(&self.app, frame))
            .map(|_| ())
            .map_err(|e| DevError::Draw(e.to_string()))
    }

    /// Waits for the next input, message or tick and applies it.
    pub async fn step<S>(&mut self, input: &mut S) -> Result<(), DevError>
    where
        S: Stream<Item = io::Result<Event>> + Unpin,
    {
        tokio::select! {
            event = input.next() => match event {
                Some(Ok(event)) => match input_of(&self.app, &event) {
                    Input::Action(action) => self.dispatch(action),
                    Input::Redraw => self.dirty = true,
                    Input::Ignore => {}
                },
                Some(Err(e)) => return Err(DevError::Terminal(e)),
                // No more input (the terminal went away): leave as if asked to.
                None => self.dispatch(Action::Quit),
            },
            Some(msg) = self.rx.recv() => self.receive(msg),
            _ = self.tick.tick() => {
                if self.busy() {
                    self.dispatch(Action::Tick);
                }
            }
        }
        Ok(())
    }

    /// Anything is running or loading (spinners need ticks).
    pub fn busy(&self) -> bool {
        !self.running.is_empty() || self.loading_baseline
    }

    /// Applies an action and performs its effects.
    pub fn dispatch(&mut self, action: Action) {
        self.dirty = true;
        for effect in app::update(&mut self.app, action) {
            self.perform(effect);
        }
    }

    fn receive(&mut self, msg: Msg) {
        match msg {
            Msg::Finished {
                id,
                baseline,
                generation,
                result,
            } => {
                let key = (id, baseline);
                if self
                    .running
                    .get(&key)
                    .is_some_and(|(g, _)| *g == generation)
                {
                    self.running.remove(&key);
                    let (id, baseline) = key;
                    self.dispatch(Action::Finished {
                        id,
                        baseline,
                        result,
                    });
                }
            }
            Msg::DraftReady(draft) => {
                self.local = draft.local.clone();
                self.draft = Some(draft);
                let all = self.app.all_ids();
                self.perform(Effect::RunDraft(all));
                // The baseline may have loaded first.
                let waiting = self.baseline_waiting();
                self.perform(Effect::RunBaseline(waiting));
            }
            Msg::Reloaded {
                draft,
                rows,
                change,
            } => {
                let gone: Vec<(CaseId, bool)> = self
                    .running
                    .keys()
                    .filter(|(id, _)| draft.case(id).is_none())
                    .cloned()
                    .collect();
                for key in gone {
                    self.cancel(&key);
                }
                self.local = draft.local.clone();
                self.draft = Some(draft);
                self.dispatch(Action::Reloaded {
                    rows,
                    affected: change.affected,
                });
                // The baseline's results of a case that changed are stale too.
                if !change.changed.is_empty() {
                    self.perform(Effect::RunBaseline(change.changed));
                }
            }
            Msg::BaselineLoaded {
                request,
                label,
                executor,
                runs,
            } => {
                if request != self.baseline_request {
                    return;
                }
                self.loading_baseline = false;
                let old: Vec<(CaseId, bool)> =
                    self.running.keys().filter(|k| k.1).cloned().collect();
                for key in old {
                    self.cancel(&key);
                }
                self.baseline = Some(executor);
                self.baseline_runs = Some(runs);
                self.dispatch(Action::BaselineLoaded {
                    label,
                    rows: Vec::new(),
                });
            }
            Msg::BaselineFailed { request, message } => {
                if request == self.baseline_request {
                    self.loading_baseline = false;
                    self.dispatch(Action::Failed(message));
                }
            }
            Msg::Action(action) => self.dispatch(action),
        }
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::RunDraft(ids) => self.run_cases(ids, false),
            Effect::RunBaseline(ids) => self.run_cases(ids, true),
            Effect::LoadBaseline(reference) => self.load_baseline(reference),
            Effect::Save => self.save(),
            Effect::LoadDetail { side, run_id } => self.load_detail(side, run_id),
            Effect::Quit => {
                let all: Vec<(CaseId, bool)> = self.running.keys().cloned().collect();
                for key in all {
                    self.cancel(&key);
                }
            }
        }
    }

    /// Cases whose baseline has not run.
    fn baseline_waiting(&self) -> Vec<CaseId> {
        self.app
            .rows
            .iter()
            .filter(|r| r.baseline == app::Slot::Pending)
            .map(|r| r.id.clone())
            .collect()
    }

    fn cancel(&mut self, key: &(CaseId, bool)) {
        if let Some((_, token)) = self.running.remove(key) {
            token.cancel();
        }
    }

    /// Runs `ids` on one side, each on its own task, cancelling runs of the same cases in
    /// flight. Nothing runs before the draft is built; baseline runs wait for the baseline.
    fn run_cases(&mut self, ids: Vec<CaseId>, baseline: bool) {
        let Some(draft) = self.draft.clone() else {
            return;
        };
        let executor = if baseline {
            match &self.baseline {
                Some(e) => e.clone(),
                None => return,
            }
        } else {
            draft.executor.clone()
        };
        let slots = if baseline {
            &self.baseline_slots
        } else {
            &self.draft_slots
        };
        let slots = slots.clone();
        for id in ids {
            let Some(case) = draft.case(&id).cloned() else {
                continue;
            };
            let key = (id, baseline);
            self.cancel(&key);
            self.generation += 1;
            let generation = self.generation;
            let token = CancellationToken::new();
            self.running
                .insert(key.clone(), (generation, token.clone()));
            let (id, _) = key;
            self.dispatch(Action::Started {
                id: id.clone(),
                baseline,
            });
            let job = Job {
                executor: executor.clone(),
                draft: draft.clone(),
                slots: slots.clone(),
                token,
                tx: self.tx.clone(),
            };
            tokio::spawn(job.run(case, id, baseline, generation));
        }
    }

    /// Loads a baseline on a blocking thread; its runs start when it arrives.
    fn load_baseline(&mut self, reference: String) {
        self.baseline_request += 1;
        self.loading_baseline = true;
        let request = self.baseline_request;
        let local = self.local.clone();
        let store = self.store.clone();
        let http = self.http.clone();
        let observer = self.observer.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                baseline_executor(&local, &reference, &store, &http, observer)
            }));
            let msg = match loaded {
                Ok(Ok((label, executor, runs))) => Msg::BaselineLoaded {
                    request,
                    label,
                    executor: Arc::new(executor),
                    runs,
                },
                Ok(Err(message)) => Msg::BaselineFailed { request, message },
                Err(panic) => Msg::BaselineFailed {
                    request,
                    message: format!("loading {reference} failed: {}", panic_text(&*panic)),
                },
            };
            let _ = tx.send(msg);
        });
    }

    /// Reads a side's run for the detail view on a blocking thread: the draft's from the
    /// history, the baseline's from its in-memory store.
    fn load_detail(&mut self, side: Side, run_id: String) {
        let store = match side {
            Side::Draft => Some(self.store.clone()),
            Side::Baseline => self.baseline_runs.clone(),
        };
        let Some(store) = store else {
            self.dispatch(Action::DetailLoaded {
                side,
                run_id,
                detail: Err("the baseline has not loaded yet".into()),
            });
            return;
        };
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let detail = store
                .run(&run_id)
                .map(Box::new)
                .map_err(|e| format!("cannot read run {run_id}: {e}"));
            let _ = tx.send(Msg::Action(Action::DetailLoaded {
                side,
                run_id,
                detail,
            }));
        });
    }

    /// Stores the current results as an evaluation, on a blocking thread.
    fn save(&mut self) {
        let draft: Vec<CaseResult> = self
            .app
            .rows
            .iter()
            .filter_map(|r| r.draft.result().cloned())
            .collect();
        if draft.is_empty() {
            self.dispatch(Action::Failed(
                "nothing to save yet: no draft has finished".into(),
            ));
            return;
        }
        let baseline: Vec<CaseResult> = self
            .app
            .rows
            .iter()
            .filter_map(|r| r.baseline.result().cloned())
            .collect();
        let report = EvalReport::new(
            self.started_ms,
            self.started.elapsed().as_millis() as u64,
            self.app.baseline_label.clone(),
            draft,
            baseline,
            &|_, _| None,
        );
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let action = match store.save_eval(&report) {
                Ok(id) => Action::Saved(id),
                Err(e) => Action::Failed(format!("the evaluation was not saved: {e}")),
            };
            let _ = tx.send(Msg::Action(action));
        });
    }
}

/// One case run on its own task.
struct Job {
    executor: Arc<Executor>,
    /// For the judge and the command runner.
    draft: Arc<Draft>,
    slots: Arc<Semaphore>,
    token: CancellationToken,
    tx: UnboundedSender<Msg>,
}

impl Job {
    async fn run(self, case: TestCase, id: CaseId, baseline: bool, generation: u64) {
        let permit = tokio::select! {
            biased;
            () = self.token.cancelled() => return,
            permit = self.slots.clone().acquire_owned() => permit,
        };
        let Ok(_permit) = permit else {
            return;
        };
        let hooks = Hooks {
            judge: Some(self.draft.judge.as_ref()),
            command: Some(self.draft.commands.as_ref()),
        };
        let outcome = AssertUnwindSafe(run_case(&self.executor, &case, 1, hooks, &self.token))
            .catch_unwind()
            .await;
        if self.token.is_cancelled() {
            return;
        }
        let result = outcome.unwrap_or_else(|panic| crashed(&case, panic.as_ref()));
        let _ = self.tx.send(Msg::Finished {
            id,
            baseline,
            generation,
            result: Box::new(result),
        });
    }
}

/// Loads `reference` and wires an executor for it on the store's cache, its runs recorded
/// in a store of their own in memory (not in the history). Errors as one line for the
/// status bar.
fn baseline_executor(
    local: &LocalProject,
    reference: &str,
    store: &Arc<Store>,
    http: &SharedHttp,
    observer: Option<Arc<dyn EventSink>>,
) -> Result<(String, Executor, Arc<Store>), String> {
    let one_line = |text: String| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parsed = BaselineRef::parse(reference).map_err(|e| one_line(e.to_string()))?;
    let baseline = load_baseline(local, &parsed).map_err(|e| one_line(e.to_string()))?;
    let cache = CacheSetup::store(store);
    let runs = Store::in_memory()
        .map(Arc::new)
        .map_err(|e| one_line(format!("baseline {}: {e}", baseline.label)))?;
    let executor = build_executor_sharing(
        local,
        baseline.project,
        &cache,
        Some(runs.clone()),
        http,
        observer,
    )
    .map_err(|e| one_line(format!("baseline {}: {e}", baseline.label)))?;
    Ok((baseline.label, executor, runs))
}

/// The result of a case whose run panicked.
fn crashed(case: &TestCase, panic: &(dyn Any + Send)) -> CaseResult {
    CaseResult {
        file: case.file.clone(),
        case: case.name.clone(),
        index: case.index,
        repeat: 1,
        target: case.target.clone(),
        tags: case.tags.clone(),
        input: serde_json::Value::Object(case.input.clone()),
        run_id: None,
        status: RunStatus::Failed,
        output: None,
        output_text: String::new(),
        error: Some(format!(
            "internal error: the run panicked: {}",
            panic_text(panic)
        )),
        assertions: Vec::new(),
        score: 0.0,
        pass: false,
        latency_ms: 0,
        usage: Usage::default(),
        cost: Cost::default(),
        cached: false,
    }
}

/// The message of a panic payload.
pub(crate) fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

// ---------------------------------------------------------------------------------------
// The terminal

type PanicHook = dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static;

/// Raw mode and the alternate screen while alive; restores them on drop, and on a panic of
/// the UI thread before its message prints. Panics of other threads (a run's task) are held
/// and printed after the restore instead of over the screen.
struct TerminalGuard {
    previous: Option<Arc<PanicHook>>,
    held: Arc<Mutex<Vec<String>>>,
    /// The terminal is in raw mode on the alternate screen: restored exactly once, by
    /// whichever comes first (leaving the alternate screen twice would move the cursor back
    /// over what was printed in between, such as the panic message).
    taken: Arc<AtomicBool>,
}

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        let previous: Arc<PanicHook> = Arc::from(std::panic::take_hook());
        let held = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::new(AtomicBool::new(true));
        let ui = std::thread::current().id();
        let (chained, keep, hook_taken) = (previous.clone(), held.clone(), taken.clone());
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == ui {
                restore_terminal(&hook_taken);
                chained(info);
            } else {
                keep.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(info.to_string());
            }
        }));
        let mut guard = TerminalGuard {
            previous: Some(previous),
            held,
            taken,
        };
        let entered = crossterm::terminal::enable_raw_mode().and_then(|()| {
            crossterm::execute!(
                io::stdout(),
                crossterm::terminal::EnterAlternateScreen,
                crossterm::cursor::Hide
            )
        });
        if let Err(e) = entered {
            guard.restore();
            return Err(e);
        }
        Ok(guard)
    }

    /// Restores the terminal and the panic hook (once), then prints held panics.
    fn restore(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        restore_terminal(&self.taken);
        // Hooks cannot be changed while panicking; ours stays then, and only hands over to
        // the previous one (the terminal is restored already).
        if !std::thread::panicking() {
            let _ = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        for message in held {
            eprintln!("{message}");
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor, if `taken` says the
/// terminal has not been restored yet.
fn restore_terminal(taken: &AtomicBool) {
    if !taken.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use futures::channel::mpsc::{UnboundedSender as KeySender, unbounded};
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::app::{RunLoad, Slot, View};

    type Keys = futures::channel::mpsc::UnboundedReceiver<io::Result<Event>>;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A project on the mock provider (it echoes the user message): prompt `a` says `word`.
    fn project(dir: &Path, word: &str) {
        write(
            dir,
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n",
        );
        write(dir, "prompts/a.yaml", &prompt(word));
        write(
            dir,
            "tests/a.test.yaml",
            "target: a\ncases:\n  - { name: first, input: { q: x }, assert: [{ contains: new }] }\n  - { name: second, input: { q: y }, assert: [{ contains: new }] }\n",
        );
    }

    fn prompt(word: &str) -> String {
        format!("input: {{q: string}}\nmessages: [{{user: \"{word} {{{{ q }}}}\"}}]\n")
    }

    fn options(dir: &Path, baseline: &Path) -> DevOptions {
        let local = LocalProject::open(dir).unwrap();
        let cases = flowrun_local::testing::load_cases(&local, &Selection::default()).unwrap();
        let store = Arc::new(Store::open(&local.db_path()).unwrap());
        DevOptions {
            local,
            cases,
            selection: Selection::default(),
            store,
            baselines: vec![format!("dir:{}", baseline.display()), "git:".into()],
            jobs: 8,
            exit_after_first_frame: false,
            observer: None,
        }
    }

    fn press(keys: &KeySender<io::Result<Event>>, code: KeyCode) {
        let event = Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
        keys.unbounded_send(Ok(event)).unwrap();
    }

    /// Steps the session until `done` holds (at most ten seconds).
    async fn until(
        session: &mut Session,
        keys: &mut Keys,
        what: &str,
        done: impl Fn(&App) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&session.app) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {}",
                session.app.status
            );
            let _ = tokio::time::timeout(TICK * 2, session.step(keys)).await;
        }
    }

    fn output(slot: &Slot) -> Option<&str> {
        slot.result().map(|r| r.output_text.as_str())
    }

    fn all_done(app: &App) -> bool {
        app.rows
            .iter()
            .all(|r| r.draft.result().is_some() && r.baseline.result().is_some())
    }

    fn screen(terminal: &Terminal<TestBackend>) -> String {
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_both_sides_reloads_on_edits_and_saves() {
        let dir = tempfile::tempdir().unwrap();
        let old = tempfile::tempdir().unwrap();
        project(dir.path(), "new");
        project(old.path(), "old");
        let (keys_tx, mut keys) = unbounded();
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        let mut session = Session::start(options(dir.path(), old.path()));
        session.draw(&mut terminal).unwrap();
        assert!(screen(&terminal).contains("first"), "{}", screen(&terminal));

        until(&mut session, &mut keys, "both sides", all_done).await;
        let row = &session.app.rows[0];
        assert_eq!(output(&row.draft), Some("echo: new x"));
        assert_eq!(output(&row.baseline), Some("echo: old x"));
        assert!(
            session
                .app
                .baseline_label
                .contains(&old.path().display().to_string())
        );
        assert_eq!(session.app.totals.verdict, "no significant change");
        assert_eq!(session.app.totals.draft_wins, 2);
        session.draw(&mut terminal).unwrap();
        assert!(
            screen(&terminal).contains("echo: new x"),
            "{}",
            screen(&terminal)
        );

        press(&keys_tx, KeyCode::Char('j'));
        press(&keys_tx, KeyCode::Enter);
        until(&mut session, &mut keys, "the detail view", |a| {
            a.view == View::Detail && a.selected == 1
        })
        .await;
        // Both sides' runs load: the draft's from the history, the baseline's from memory.
        until(&mut session, &mut keys, "both runs", |a| {
            matches!(a.detail.draft, RunLoad::Loaded(_))
                && matches!(a.detail.baseline, RunLoad::Loaded(_))
        })
        .await;
        let RunLoad::Loaded(draft) = &session.app.detail.draft else {
            unreachable!()
        };
        assert_eq!(
            draft.steps[0].messages,
            serde_json::json!([{"role": "user", "content": "new y"}])
        );
        let RunLoad::Loaded(baseline) = &session.app.detail.baseline else {
            unreachable!()
        };
        assert_eq!(
            baseline.steps[0].output_text.as_deref(),
            Some("echo: old y")
        );
        assert!(
            session.store.run(&baseline.run.id).is_err(),
            "baseline runs stay out of the history"
        );
        session.draw(&mut terminal).unwrap();
        let text = screen(&terminal);
        assert!(text.contains("  user      old y"), "{text}");
        press(&keys_tx, KeyCode::Esc);
        until(&mut session, &mut keys, "the list", |a| {
            a.view == View::List
        })
        .await;

        // An edit re-runs the drafts; the baseline's results stay.
        let baseline_before = session.app.rows[0].baseline.clone();
        write(dir.path(), "prompts/a.yaml", &prompt("newer"));
        until(&mut session, &mut keys, "the edited draft", |a| {
            output(&a.rows[0].draft) == Some("echo: newer x")
                && output(&a.rows[1].draft) == Some("echo: newer y")
        })
        .await;
        assert_eq!(session.app.rows[0].baseline, baseline_before);

        // A broken file shows its problems; fixing it clears them.
        write(dir.path(), "prompts/a.yaml", "messages: [unclosed\n");
        until(&mut session, &mut keys, "the error", |a| {
            !a.errors.is_empty()
        })
        .await;
        assert_eq!(output(&session.app.rows[0].draft), Some("echo: newer x"));
        write(dir.path(), "prompts/a.yaml", &prompt("newest"));
        until(&mut session, &mut keys, "the fix", |a| {
            a.errors.is_empty() && output(&a.rows[0].draft) == Some("echo: newest x")
        })
        .await;

        press(&keys_tx, KeyCode::Char('s'));
        until(&mut session, &mut keys, "the save", |a| {
            a.status.starts_with("saved as evaluation")
        })
        .await;
        assert_eq!(session.store.evals(10).unwrap().len(), 1);

        press(&keys_tx, KeyCode::Char('q'));
        until(&mut session, &mut keys, "quit", |a| a.quit).await;
        assert!(!session.busy());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_quits_on_q_and_a_bad_baseline_shows_in_the_status() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), "new");
        let mut opts = options(dir.path(), &dir.path().join("missing"));
        opts.baselines = vec!["dir:/no/such/baseline".into()];
        let (keys_tx, keys) = unbounded();
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let task = tokio::spawn(async move {
            let result = run_on(&mut terminal, keys, opts).await;
            (terminal, result)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        press(&keys_tx, KeyCode::Char('q'));
        let (terminal, result) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop ends")
            .unwrap();
        result.unwrap();
        let text = screen(&terminal);
        assert!(text.contains("not a flowrun project"), "{text}");
    }

    #[tokio::test]
    async fn exit_after_first_frame_draws_once() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), "new");
        let mut opts = options(dir.path(), dir.path());
        opts.exit_after_first_frame = true;
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let (_keys_tx, keys) = unbounded();
        run_on(&mut terminal, keys, opts).await.unwrap();
        assert!(screen(&terminal).contains("second"));
    }
}
