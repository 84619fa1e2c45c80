//! Crash soak of `flowrun serve`: 1,000 runs of a three-step flow while the server process is
//! killed with SIGKILL several times (during submission and during execution) and restarted
//! on the same database. Every run must end exactly once, succeeded with the right output, and
//! the fake LLM must see no call of a step after that step was committed: only a call in
//! flight when the process died may be repeated.
//!
//! The same soak runs on SQLite and on PostgreSQL (`FLOWRUN_TEST_POSTGRES_URL`, a fresh
//! database per test): with one server process, and with two replicas on one database of which
//! one is killed again and again while the other keeps going.
//! `FLOWRUN_SOAK_RUNS` and `FLOWRUN_SOAK_KILLS` make it larger (see BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowrun_client::{Client, ClientError, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm, RecordedRequest};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

use crate::harness::TestProject;
use crate::pg::PgDb;

/// Runs executed at once by each server process.
const WORKERS: usize = 8;
/// The test gives up (and fails) after this long, plus 50 ms a run.
const DEADLINE: Duration = Duration::from_secs(120);

/// The database the server runs on.
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database made for the test.
    Postgres(PgDb),
}

/// How many `flowrun serve` processes share the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replicas {
    /// One, killed and restarted.
    One,
    /// One killed and restarted, and one that is never killed.
    OneSteady,
}

/// A step as committed in the database.
pub struct Committed {
    pub run_id: String,
    pub step_index: u32,
    /// When the server first committed it (ms since the Unix epoch, the server's wall clock;
    /// a re-commit keeps it, so a committed step run again shows as a call after this).
    pub committed_at_ms: i64,
}

impl Db {
    /// The `flowrun serve` (and `serve keys create`) arguments that select this database.
    fn args(&self) -> Vec<String> {
        match self {
            Db::Sqlite(path) => vec!["--db".into(), path.display().to_string()],
            Db::Postgres(db) => vec!["--database-url".into(), db.url.clone()],
        }
    }

    /// How many runs the database holds.
    async fn run_count(&self) -> usize {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open db");
                conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
                    .expect("count") as usize
            }
            Db::Postgres(db) => {
                let row = db
                    .connect()
                    .await
                    .query_one("SELECT COUNT(*) FROM runs", &[])
                    .await
                    .expect("count");
                row.get::<_, i64>(0) as usize
            }
        }
    }

    /// How many runs are held under a lease that has not expired (PostgreSQL only).
    async fn live_leases(&self) -> usize {
        let Db::Postgres(db) = self else {
            return 0;
        };
        let row = db
            .connect()
            .await
            .query_one(
                "SELECT COUNT(*) FROM runs WHERE status = 'running' AND lease_expires_at > $1",
                &[&now_ms()],
            )
            .await
            .expect("count");
        row.get::<_, i64>(0) as usize
    }

    /// Every committed step with its commit time.
    async fn committed_steps(&self) -> Vec<Committed> {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open db");
                let mut stmt = conn
                    .prepare("SELECT run_id, step_index, created_at FROM steps")
                    .expect("prepare");
                stmt.query_map([], |r| {
                    Ok(Committed {
                        run_id: r.get(0)?,
                        step_index: r.get(1)?,
                        committed_at_ms: r.get(2)?,
                    })
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
            }
            Db::Postgres(db) => db
                .connect()
                .await
                .query("SELECT run_id, step_index, created_at FROM steps", &[])
                .await
                .expect("steps")
                .iter()
                .map(|r| Committed {
                    run_id: r.get(0),
                    step_index: u32::try_from(r.get::<_, i64>(1)).expect("step index"),
                    committed_at_ms: r.get(2),
                })
                .collect(),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `a`, `b`, `c` each echo their text with a letter in front; `chain` runs them in turn, so
/// run `n` calls "A n", then "B echo: A n", then "C echo: B echo: A n".
fn project(fake: &FakeLlm) -> TestProject {
    let prompt = |letter: &str| {
        format!("input: {{ text: string }}\nmessages:\n  - user: \"{letter} {{{{ text }}}}\"\n")
    };
    TestProject::from_txtar(&format!(
        "-- flowrun.yaml --
providers:
  fake: {{ kind: openai, base_url: \"{}\" }}
defaults: {{ model: fake/m1, retries: 0, timeout: 30s }}
-- prompts/a.yaml --
{}-- prompts/b.yaml --
{}-- prompts/c.yaml --
{}-- flows/chain.yaml --
input: {{ n: string }}
steps:
  - id: a
    prompt: a
    with: {{ text: \"{{{{ input.n }}}}\" }}
  - id: b
    prompt: b
    with: {{ text: \"{{{{ steps.a.output }}}}\" }}
  - id: c
    prompt: c
    with: {{ text: \"{{{{ steps.b.output }}}}\" }}
output: \"{{{{ steps.c.output }}}}\"
",
        fake.openai_base_url(),
        prompt("A"),
        prompt("B"),
        prompt("C"),
    ))
}

fn expected_output(n: usize) -> String {
    format!("echo: C echo: B echo: A {n}")
}

/// Which run input and step a request to the fake LLM is for: `("17", 1)` for "B echo: A 17".
fn request_key(req: &RecordedRequest) -> Option<(String, u32)> {
    let messages = req.body.get("messages")?.as_array()?;
    let text = messages.last()?.get("content")?.as_str()?;
    let step = match text.split(' ').next()? {
        "A" => 0,
        "B" => 1,
        "C" => 2,
        _ => return None,
    };
    Some((text.rsplit(' ').next()?.to_string(), step))
}

/// One `flowrun serve` process; killed when dropped, even on a panic.
struct Serving {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Serving {
    /// Starts the server on a free loopback port and waits for its address.
    async fn start(db: &Db, lease: &str, log: &Path) -> Serving {
        let bin = assert_cmd::cargo::cargo_bin("flowrun");
        let log = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = Command::new(bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--lease", lease])
            .args(["--max-attempts", "50", "--workers", &WORKERS.to_string()])
            .args(db.args())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("serve");
        let stdout = child.stdout.take().expect("stdout");
        let (line, stdout) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).map(|_| (line, reader))
        })
        .await
        .expect("join")
        .expect("read the address");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("unexpected first line of `flowrun serve`: {line:?}");
        };
        Serving {
            url: url.to_string(),
            child,
            _stdout: stdout,
        }
    }

    /// SIGKILL: the process gets no chance to release its leases or finish anything.
    fn kill_9(mut self) {
        self.child.kill().expect("kill");
        let status = self.child.wait().expect("wait");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "{status:?}");
        }
        #[cfg(not(unix))]
        let _ = status;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether a failed request should be tried again (the server is down or restarting).
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Http(_) => true,
        ClientError::Api { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Submits run `n` with its idempotency key until the server accepts it, following the server
/// across restarts.
async fn submit(clients: &watch::Receiver<Client>, n: usize, deadline: Duration) -> String {
    let started = Instant::now();
    loop {
        let client = clients.borrow().clone();
        let key = format!("soak-{n}");
        match client
            .submit("prod", "chain", &json!({ "n": n.to_string() }), Some(&key))
            .await
        {
            Ok(sub) => return sub.id,
            Err(e) if transient(&e) && started.elapsed() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("submitting run {n}: {e}"),
        }
    }
}

/// Waits for run `id` to end, following the server across restarts.
async fn wait(
    clients: &watch::Receiver<Client>,
    id: &str,
    deadline: Duration,
) -> flowrun_client::Run {
    let started = Instant::now();
    loop {
        let client = clients.borrow().clone();
        match client.get_run(id, Some(Duration::from_secs(5))).await {
            Ok(run) if run.status.is_terminal() => return run,
            Ok(_) => {}
            Err(e) if transient(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("reading run {id}: {e}"),
        }
        assert!(started.elapsed() < deadline, "run {id} did not end");
    }
}

/// The soak on one database.
async fn soak(db: Db, replicas: Replicas, dir: &Path, fake: &FakeLlm, p: &TestProject) {
    let runs = env_usize("FLOWRUN_SOAK_RUNS", 1000);
    let kills = env_usize("FLOWRUN_SOAK_KILLS", 4).max(1);
    let deadline = DEADLINE + Duration::from_millis(50 * runs as u64);
    // LLM calls the restarted server makes before the next kill: the kills spread over the
    // first three quarters of the 3 × runs calls.
    let interval = (9 * runs / 4 / kills).max(1);
    let log = dir.join("serve.log");
    // A short lease rescues a killed process's runs quickly. Beside a live replica a lease
    // must also outlast the heartbeats a starved process misses on a loaded machine: when it
    // expires under a live worker, the other replica runs the same steps at the same time.
    let lease = match replicas {
        Replicas::One => "1s",
        Replicas::OneSteady => "3s",
    };

    let key = p
        .flowrun()
        .args(["serve", "keys", "create", "--env", "*", "--role", "admin"])
        .args(db.args())
        .output()
        .expect("keys create");
    assert!(key.status.success(), "{key:?}");
    let token = String::from_utf8(key.stdout)
        .expect("utf8")
        .trim()
        .to_string();

    let mut serving = Serving::start(&db, lease, &log).await;
    let steady = match replicas {
        Replicas::One => None,
        Replicas::OneSteady => Some(Serving::start(&db, lease, &dir.join("steady.log")).await),
    };
    let deploy = p
        .flowrun()
        .args(["deploy", "--env", "prod", "--remote", &serving.url])
        .env("FLOWRUN_TOKEN", &token)
        .output()
        .expect("deploy");
    assert!(deploy.status.success(), "{deploy:?}");

    let client_for = |url: &str| Client::new(url, Some(token.clone())).expect("client");
    let (clients_tx, clients) = watch::channel(client_for(&serving.url));
    // Runs are submitted to each replica in turn; the steady one's client never changes.
    let mut targets = vec![clients.clone()];
    targets.extend(
        steady
            .as_ref()
            .map(|s| watch::channel(client_for(&s.url)).1),
    );
    let submitted = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let submitted = submitted.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..runs)
                .map(|n| {
                    let clients = targets[n % targets.len()].clone();
                    let submitted = submitted.clone();
                    async move {
                        let id = submit(&clients, n, deadline).await;
                        submitted.fetch_add(1, Ordering::Relaxed);
                        (n, id)
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };

    // The first kill lands while runs are still being submitted, the others while they execute:
    // each after the restarted server made some progress of its own.
    let started = Instant::now();
    let mut calls_at_start = fake.request_count();
    let mut kill_log = Vec::new();
    for k in 0..kills {
        loop {
            let calls = fake.request_count();
            let due = if k == 0 {
                submitted.load(Ordering::Relaxed) >= runs / 4
            } else {
                // With a steady replica beside it, the one to kill must hold runs too: more
                // live leases than the steady one's workers can hold.
                calls >= calls_at_start + interval
                    && (steady.is_none() || db.live_leases().await > WORKERS)
            };
            if due {
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "no progress before kill {k}: {calls} calls; log in {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill_log.push((submitted.load(Ordering::Relaxed), fake.request_count()));
        serving.kill_9();
        serving = Serving::start(&db, lease, &log).await;
        calls_at_start = fake.request_count();
        clients_tx.send_replace(client_for(&serving.url));
    }
    eprintln!("kills at (submitted, LLM calls): {kill_log:?}");
    let ids: Vec<(usize, String)> = submitter.await.expect("submitter");
    assert!(
        kill_log[0].0 < runs,
        "the first kill came after every run was submitted: {kill_log:?}"
    );
    assert!(
        kill_log.iter().all(|&(_, calls)| calls < 3 * runs),
        "a kill came after every call was made: {kill_log:?}"
    );

    // Every run ends once, succeeded, with the output its input calls for.
    let finished: Vec<(usize, flowrun_client::Run)> = futures::stream::iter(ids)
        .map(|(n, id)| {
            let clients = clients.clone();
            async move { (n, wait(&clients, &id, deadline).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut by_input: HashMap<String, String> = HashMap::new();
    let mut reclaimed = 0;
    for (n, run) in &finished {
        assert_eq!(run.status, RunStatus::Succeeded, "run {n}: {run:?}");
        assert_eq!(run.output, Some(json!(expected_output(*n))), "run {n}");
        let outputs: Vec<_> = run.steps.iter().map(|s| s.output.clone()).collect();
        assert_eq!(
            outputs,
            vec![
                Some(json!(format!("echo: A {n}"))),
                Some(json!(format!("echo: B echo: A {n}"))),
                Some(json!(expected_output(*n))),
            ],
            "run {n}"
        );
        if run.attempts > 1 {
            reclaimed += 1;
        }
        assert!(
            by_input.insert(n.to_string(), run.id.clone()).is_none(),
            "input {n} has two runs"
        );
    }
    assert_eq!(by_input.len(), runs);
    // Resubmissions after a kill returned the committed run rather than a second one.
    assert_eq!(db.run_count().await, runs, "runs in the database");
    assert!(
        reclaimed > 0,
        "no run was interrupted by a kill, so the test proved nothing"
    );

    // No call of a step after its commit; only calls in flight at a kill repeat.
    let committed: HashMap<(String, u32), i64> = db
        .committed_steps()
        .await
        .into_iter()
        .map(|c| ((c.run_id, c.step_index), c.committed_at_ms))
        .collect();
    let mut calls: BTreeMap<(String, u32), Vec<i64>> = BTreeMap::new();
    for req in fake.requests() {
        let key = request_key(&req).unwrap_or_else(|| panic!("unexpected call: {:?}", req.body));
        calls.entry(key).or_default().push(req.received_at_ms);
    }
    let mut late = Vec::new();
    let mut repeated = 0;
    for (input, run_id) in &by_input {
        for step in 0..3 {
            let at = calls
                .get(&(input.clone(), step))
                .map_or(&[][..], Vec::as_slice);
            assert!(!at.is_empty(), "run {input} step {step} was never called");
            let done = committed
                .get(&(run_id.clone(), step))
                .unwrap_or_else(|| panic!("run {input} step {step} is not committed"));
            if at.len() > 1 {
                repeated += 1;
            }
            late.extend(
                at.iter().filter(|&&t| t > *done).map(|t| {
                    format!("run {input} step {step}: called at {t}, committed at {done}")
                }),
            );
        }
    }
    assert!(
        late.is_empty(),
        "{} call(s) of committed steps, e.g. {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    assert!(
        repeated <= kills * WORKERS,
        "{repeated} steps were called more than once, more than the {} in flight at {kills} kills",
        kills * WORKERS
    );
    eprintln!(
        "{replicas:?}: {runs} runs, {kills} kills: {reclaimed} runs resumed after a kill, \
         {repeated} in-flight calls repeated, {} LLM calls in all",
        fake.request_count()
    );
    drop((serving, steady));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kill_9_on_sqlite() {
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake);
    let dir = tempfile::tempdir().expect("tmp");
    soak(
        Db::Sqlite(dir.path().join("server.db")),
        Replicas::One,
        dir.path(),
        &fake,
        &p,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kill_9_on_postgres() {
    let Some(db) = PgDb::new("runs_survive_kill_9_on_postgres").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake);
    let dir = tempfile::tempdir().expect("tmp");
    soak(Db::Postgres(db), Replicas::One, dir.path(), &fake, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_kill_9_of_one_of_two_replicas_on_postgres() {
    let Some(db) = PgDb::new("runs_survive_kill_9_of_one_of_two_replicas_on_postgres").await else {
        return;
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let p = project(&fake);
    let dir = tempfile::tempdir().expect("tmp");
    soak(Db::Postgres(db), Replicas::OneSteady, dir.path(), &fake, &p).await;
}
