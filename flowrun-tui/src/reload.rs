//! The draft side of `flowrun dev` and its live reload: the loaded project with its cases and
//! executors ([`Draft`]), a file watcher on the project root, and which cases a change
//! affects.
//!
//! Reloads happen on a thread of their own, never on the UI's: the watcher's events arrive
//! there and are debounced, the project is read and checked, the draft executor rebuilt, and the
//! outcome is sent to the loop as a message (problems as [`Action::LoadFailed`], never a
//! crash).

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use flowrun_core::Diagnostic;
use flowrun_core::EventSink;
use flowrun_core::Executor;
use flowrun_core::exec::BuildError;
use flowrun_core::testing::TestCase;
use flowrun_core::testing::judge::{ExecutorJudge, judge_source};
use flowrun_local::executors::{
    CacheSetup, SetupError, SharedHttp, build_executor_sharing, support_project,
};
use flowrun_local::project_dir::STATE_DIR;
use flowrun_local::testing::{ProcessRunner, Selection, load_cases};
use flowrun_local::{LoadError, LocalProject, Store};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use crate::app::{Action, CaseId, CaseRow};
use crate::runtime::{Msg, panic_text};

/// How long the watcher waits for a burst of writes (an editor's save) to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long a `command` assertion may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One loaded version of the working tree: what draft runs use.
pub struct Draft {
    pub local: Arc<LocalProject>,
    /// The selected cases, in order.
    pub cases: Vec<TestCase>,
    /// Runs the draft: cached and recorded in the store, like `flowrun test`.
    pub executor: Arc<Executor>,
    /// Grades `llm_judge` assertions of both sides.
    pub judge: Arc<ExecutorJudge>,
    /// Runs `command` assertions in the project root.
    pub commands: Arc<ProcessRunner>,
}

impl Draft {
    /// Wires the executors of `local` on the store's cache (and the draft's runs into the
    /// store), as `flowrun test` and `flowrun eval` do, on the session's HTTP client; every
    /// run's events also go to `observer` (the OpenTelemetry export) when given.
    pub fn build(
        local: Arc<LocalProject>,
        cases: Vec<TestCase>,
        store: &Arc<Store>,
        http: &SharedHttp,
        observer: Option<&Arc<dyn EventSink>>,
    ) -> Result<Draft, SetupError> {
        let cache = CacheSetup::store(store);
        let draft = local.project.clone();
        let executor = build_executor_sharing(
            &local,
            draft,
            &cache,
            Some(store.clone()),
            http,
            observer.cloned(),
        )?;
        let judge = support_project(&local, judge_source());
        let judge = build_executor_sharing(&local, judge, &cache, None, http, observer.cloned())?;
        let commands = ProcessRunner {
            dir: local.root.clone(),
            timeout: COMMAND_TIMEOUT,
        };
        Ok(Draft {
            local,
            cases,
            executor: Arc::new(executor),
            judge: Arc::new(ExecutorJudge::new(judge)),
            commands: Arc::new(commands),
        })
    }

    /// The case with this id.
    pub fn case(&self, id: &CaseId) -> Option<&TestCase> {
        self.cases
            .iter()
            .find(|c| c.index == id.index && c.file == id.file)
    }

    /// A row per case, nothing run yet.
    pub fn rows(&self) -> Vec<CaseRow> {
        rows_of(&self.cases)
    }

    /// The content hash of `target` and everything it uses, `None` when it does not resolve.
    fn version(&self, target: &str) -> Option<String> {
        let (kind, name) = self.executor.project().resolve_target(target).ok()?;
        Some(self.executor.version_of(kind, &name))
    }
}

/// A row per case, nothing run yet.
pub fn rows_of(cases: &[TestCase]) -> Vec<CaseRow> {
    cases
        .iter()
        .map(|c| {
            let mut row = CaseRow::new(id_of(c), c.name.clone(), c.target.clone());
            row.tags = c.tags.clone();
            row
        })
        .collect()
}

/// A case's id.
pub fn id_of(case: &TestCase) -> CaseId {
    CaseId {
        file: case.file.clone(),
        index: case.index,
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Drafts to run again: new cases, changed cases, and cases whose target changed.
    pub affected: Vec<CaseId>,
    /// Cases that changed themselves (input, assertions, target): the baseline's results of
    /// the old case no longer apply either.
    pub changed: Vec<CaseId>,
}

/// Which cases of `new` the change from `old` affects. A case is affected when it is new,
/// when it changed (its input, assertions or target), or when the content hash of its target
/// differs ([`Executor::version_of`]). Partials are not part of that hash, so a change to
/// one affects every case.
pub fn compare(old: &Draft, new: &Draft) -> Change {
    let before: HashMap<CaseId, &TestCase> = old.cases.iter().map(|c| (id_of(c), c)).collect();
    let partials_changed = old.local.project.partials != new.local.project.partials;
    let mut versions: HashMap<&str, (Option<String>, Option<String>)> = HashMap::new();
    let mut change = Change::default();
    for case in &new.cases {
        let id = id_of(case);
        let Some(previous) = before.get(&id) else {
            change.affected.push(id);
            continue;
        };
        let (was, is) = versions
            .entry(case.target.as_str())
            .or_insert_with(|| (old.version(&case.target), new.version(&case.target)));
        let case_changed = *previous != case;
        if case_changed || was != is || partials_changed {
            change.affected.push(id.clone());
        }
        if case_changed {
            change.changed.push(id);
        }
    }
    change
}

/// Reads the project at `root` again, with its cases and executors; every problem as
/// diagnostics.
pub fn reload(
    root: &Path,
    selection: &Selection,
    store: &Arc<Store>,
    http: &SharedHttp,
    observer: Option<&Arc<dyn EventSink>>,
) -> Result<Draft, Vec<Diagnostic>> {
    let local = LocalProject::open(root).map_err(|e| match e {
        LoadError::Invalid(diags) => diags.0,
        other => vec![Diagnostic::error(
            flowrun_core::project::CONFIG_FILE,
            other.to_string(),
        )],
    })?;
    let cases = load_cases(&local, selection)?;
    Draft::build(Arc::new(local), cases, store, http, observer).map_err(setup_diagnostics)
}

/// A setup error as diagnostics for the error panel.
fn setup_diagnostics(e: SetupError) -> Vec<Diagnostic> {
    match e {
        SetupError::Build(BuildError::Templates(diags)) => diags.0,
        other => vec![Diagnostic::error(
            flowrun_core::project::CONFIG_FILE,
            other.to_string(),
        )],
    }
}

/// Whether a change to `path` may change the project: not flowrun's own state (`.flowrun/`,
/// where every run is recorded), not git's, and not an editor's temp or backup file.
pub fn relevant(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let in_ignored_dir = rel.components().any(|c| match c {
        Component::Normal(name) => name == STATE_DIR || name == ".git",
        _ => false,
    });
    if in_ignored_dir {
        return false;
    }
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    let temp = name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || [".swp", ".swo", ".swx", ".tmp", ".bak"]
            .iter()
            .any(|ext| name.ends_with(ext))
        // vim probes whether it may write a directory with a file of this name.
        || name == "4913";
    !temp
}

/// Whether a watcher event is a change: reads (opening a file, closing it unwritten) are
/// not, and the reload reads every project file.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// How often the reload thread checks that the loop is still there.
const ALIVE_CHECK: Duration = Duration::from_secs(1);

/// Starts the reload thread: it builds the first [`Draft`] of `local` (sent as
/// [`Msg::DraftReady`]), then watches the project root and reloads after every burst of
/// relevant changes (once [`DEBOUNCE`] passed without another), until the loop is gone.
/// Builds and reloads all happen there, one at a time, never on the UI's thread.
pub fn spawn(
    local: Arc<LocalProject>,
    cases: Vec<TestCase>,
    selection: Selection,
    store: Arc<Store>,
    http: SharedHttp,
    observer: Option<Arc<dyn EventSink>>,
    tx: UnboundedSender<Msg>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("flowrun-dev-reload".into())
        .spawn(move || {
            reloader(
                local,
                cases,
                &selection,
                &store,
                &http,
                observer.as_ref(),
                &tx,
            )
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn reloader(
    local: Arc<LocalProject>,
    cases: Vec<TestCase>,
    selection: &Selection,
    store: &Arc<Store>,
    http: &SharedHttp,
    observer: Option<&Arc<dyn EventSink>>,
    tx: &UnboundedSender<Msg>,
) {
    let root = local.root.clone();
    let (events_tx, events) = mpsc::channel::<notify::Result<notify::Event>>();
    // Watching starts before the first build, so an edit made meanwhile is not missed.
    let watcher = notify::recommended_watcher(events_tx).and_then(|mut w| {
        w.watch(&root, RecursiveMode::Recursive)?;
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            let message = format!("not watching for changes: {e} (press R to re-run)");
            let _ = tx.send(Msg::Action(Action::Failed(message)));
            None
        }
    };
    let first =
        guarded(|| Draft::build(local, cases, store, http, observer).map_err(setup_diagnostics));
    let mut current = match first {
        Ok(draft) => {
            let draft = Arc::new(draft);
            let _ = tx.send(Msg::DraftReady(draft.clone()));
            Some(draft)
        }
        Err(msg) => {
            let _ = tx.send(msg);
            None
        }
    };
    if watcher.is_none() {
        return;
    }
    // Whether an event is a change that matters; watcher errors go to the status line.
    let matters = |event: &notify::Result<notify::Event>| match event {
        Ok(e) => is_change(&e.kind) && e.paths.iter().any(|p| relevant(&root, p)),
        Err(e) => {
            let _ = tx.send(Msg::Action(Action::Failed(format!("file watching: {e}"))));
            false
        }
    };
    loop {
        match events.recv_timeout(ALIVE_CHECK) {
            Ok(event) if matters(&event) => {}
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) if tx.is_closed() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut quiet_from = Instant::now() + DEBOUNCE;
        loop {
            let wait = quiet_from.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(event) if matters(&event) => quiet_from = Instant::now() + DEBOUNCE,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let msg = match guarded(|| reload(&root, selection, store, http, observer)) {
            Ok(new) => {
                let change = match &current {
                    Some(old) => compare(old, &new),
                    // Nothing ran yet: everything is affected.
                    None => Change {
                        affected: new.cases.iter().map(id_of).collect(),
                        changed: Vec::new(),
                    },
                };
                let new = Arc::new(new);
                current = Some(new.clone());
                Msg::Reloaded {
                    rows: new.rows(),
                    draft: new,
                    change,
                }
            }
            Err(msg) => msg,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Runs a build; its problems (or a panic) as the message that reports them.
fn guarded(build: impl FnOnce() -> Result<Draft, Vec<Diagnostic>>) -> Result<Draft, Msg> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
        Ok(Ok(draft)) => Ok(draft),
        Ok(Err(diags)) => Err(Msg::Action(Action::LoadFailed(diags))),
        Err(panic) => Err(Msg::Action(Action::Failed(format!(
            "loading the project failed: {}",
            panic_text(panic.as_ref())
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const TESTS: &str = "target: a\ncases:\n  - { name: one, input: { q: x }, assert: [{ contains: x }] }\n  - { name: two, input: { q: y }, assert: [{ contains: y }] }\n";
    const B_TESTS: &str =
        "target: b\ncases:\n  - { name: three, input: { q: z }, assert: [{ contains: z }] }\n";

    fn project(dir: &Path) {
        write(
            dir,
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n",
        );
        write(
            dir,
            "prompts/a.yaml",
            "input: {q: string}\nmessages: [{user: \"a {{ q }}\"}]\n",
        );
        write(
            dir,
            "prompts/b.yaml",
            "input: {q: string}\nmessages: [{user: \"b {{ q }}\"}]\n",
        );
        write(dir, "tests/a.test.yaml", TESTS);
        write(dir, "tests/b.test.yaml", B_TESTS);
    }

    fn load(dir: &Path, store: &Arc<Store>) -> Draft {
        reload(
            dir,
            &Selection::default(),
            store,
            &SharedHttp::default(),
            None,
        )
        .unwrap()
    }

    fn ids(change: &[CaseId]) -> Vec<(String, usize)> {
        change.iter().map(|c| (c.file.clone(), c.index)).collect()
    }

    #[test]
    fn only_cases_whose_target_or_case_changed_are_affected() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path());
        let store = Arc::new(Store::open(&dir.path().join(".flowrun/flowrun.db")).unwrap());
        let old = load(dir.path(), &store);
        assert_eq!(old.rows().len(), 3);

        // Nothing changed.
        assert_eq!(compare(&old, &load(dir.path(), &store)), Change::default());

        // A prompt: its cases only.
        write(
            dir.path(),
            "prompts/a.yaml",
            "input: {q: string}\nmessages: [{user: \"A {{ q }}\"}]\n",
        );
        let new = load(dir.path(), &store);
        let change = compare(&old, &new);
        let a = "tests/a.test.yaml".to_string();
        assert_eq!(ids(&change.affected), [(a.clone(), 0), (a.clone(), 1)]);
        assert!(change.changed.is_empty());

        // One case's input: that case, on both sides.
        write(
            dir.path(),
            "tests/a.test.yaml",
            &TESTS.replace("q: y", "q: w"),
        );
        let newer = load(dir.path(), &store);
        let change = compare(&new, &newer);
        assert_eq!(ids(&change.affected), [(a.clone(), 1)]);
        assert_eq!(ids(&change.changed), [(a.clone(), 1)]);

        // The config: every case; a new case: that case.
        write(
            dir.path(),
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/y}\n",
        );
        write(
            dir.path(),
            "tests/b.test.yaml",
            &format!("{B_TESTS}  - {{ name: four, input: {{ q: v }} }}\n"),
        );
        let last = load(dir.path(), &store);
        let change = compare(&newer, &last);
        assert_eq!(change.affected.len(), 4);
        assert_eq!(ids(&change.changed), Vec::<(String, usize)>::new());
    }

    #[test]
    fn problems_come_back_as_diagnostics() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path());
        let store = Arc::new(Store::open(&dir.path().join(".flowrun/flowrun.db")).unwrap());
        write(dir.path(), "prompts/a.yaml", "messages: [unclosed\n");
        let diags = reload(
            dir.path(),
            &Selection::default(),
            &store,
            &SharedHttp::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(
            diags.iter().any(|d| d.file == "prompts/a.yaml"),
            "{diags:?}"
        );
        std::fs::remove_file(dir.path().join("flowrun.yaml")).unwrap();
        let diags = reload(
            dir.path(),
            &Selection::default(),
            &store,
            &SharedHttp::default(),
            None,
        )
        .err()
        .unwrap();
        assert_eq!(diags.len(), 1);
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn state_git_and_editor_files_are_not_changes() {
        let root = Path::new("/p");
        for path in [
            "/p/.flowrun/flowrun.db-wal",
            "/p/.git/index.lock",
            "/p/prompts/a.yaml~",
            "/p/prompts/.a.yaml.swp",
            "/p/prompts/.#a.yaml",
            "/p/prompts/#a.yaml#",
            "/p/prompts/4913",
        ] {
            assert!(!relevant(root, Path::new(path)), "{path}");
        }
        for path in [
            "/p/prompts/a.yaml",
            "/p/flowrun.yaml",
            "/p/data/rows.csv",
            "/p/.env",
            "/p/prompts",
        ] {
            assert!(relevant(root, Path::new(path)), "{path}");
        }
    }
}
