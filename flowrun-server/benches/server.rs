//! Benchmark of `flowrun serve` in-process over real HTTP on loopback, against the fake LLM
//! (zero latency) on the same runtime and cores:
//!
//! 1. **Accept latency at a fixed rate**: one submission every `1/rate` s (open loop: a late
//!    answer does not delay the next submission) for `--seconds`; p50/p99/max from sending
//!    the request to its `202`, while the workers execute the runs.
//! 2. **Submit throughput and completions**: `--runs` submissions as fast as 32 connections go,
//!    then every run awaited; submitted/s, and completed runs/s from the first submission to
//!    the last run's `finished_at`.
//! 3. **The database alone**: single-row `INSERT` transactions in a loop for
//!    `--commit-seconds`, on a new file beside the server's with the store's own settings
//!    ([`SqliteStore::tune`]); printed beside the completions as a ratio.
//!
//! Every run must succeed with the right output, or the bench fails instead of reporting.
//!
//! ```text
//! cargo bench -p flowrun-server --bench server
//! cargo bench -p flowrun-server --bench server -- --rate 100 --seconds 10 --runs 5000 \
//!     --workers 8 --steps 1 --database-url sqlite:/tmp/bench.db
//! ```
//!
//! `--database-url`: `sqlite:PATH` or a path (default: a file in a new temp dir).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun_client::{BundleFile, Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{ServerStore, SqliteStore};
use flowrun_server::{Server, ServerConfig};
use futures::StreamExt;
use serde_json::json;

struct Opts {
    database_url: Option<String>,
    rate: f64,
    seconds: f64,
    runs: usize,
    workers: usize,
    steps: usize,
    commit_seconds: f64,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        database_url: None,
        rate: 100.0,
        seconds: 10.0,
        runs: 5000,
        workers: 8,
        steps: 1,
        commit_seconds: 3.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" {
            continue;
        }
        let mut value = || args.next().ok_or_else(|| format!("`{a}` needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("`{a} {v}`: {e}"));
        match a.as_str() {
            "--database-url" => o.database_url = Some(value()?),
            "--rate" => o.rate = num(value()?)?,
            "--seconds" => o.seconds = num(value()?)?,
            "--runs" => o.runs = num(value()?)? as usize,
            "--workers" => o.workers = num(value()?)? as usize,
            "--steps" => o.steps = num(value()?)? as usize,
            "--commit-seconds" => o.commit_seconds = num(value()?)?,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if o.rate <= 0.0 || o.runs == 0 || o.steps == 0 || o.workers == 0 {
        return Err("`--rate`, `--runs`, `--steps` and `--workers` must be above 0".into());
    }
    Ok(o)
}

/// The database under test.
enum Db {
    Sqlite(PathBuf),
}

impl Db {
    fn parse(url: Option<&str>, tmp: &Path) -> Result<Db, String> {
        match url {
            None => Ok(Db::Sqlite(tmp.join("server.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Err("this bench does not drive PostgreSQL yet".into())
            }
            Some(u) => {
                let path = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .unwrap_or(u);
                Ok(Db::Sqlite(PathBuf::from(path)))
            }
        }
    }

    fn open(&self) -> Arc<dyn ServerStore> {
        match self {
            Db::Sqlite(path) => Arc::new(SqliteStore::open(path).expect("open the store")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("SQLite {} (WAL, synchronous=NORMAL)", path.display()),
        }
    }

    /// Single-row INSERT transactions per second, with the store's settings, on a fresh
    /// database beside the store's.
    fn commits_per_second(&self, seconds: f64) -> f64 {
        match self {
            Db::Sqlite(path) => {
                let probe = path.with_extension("commit-probe.db");
                let _ = std::fs::remove_file(&probe);
                let mut conn = rusqlite::Connection::open(&probe).expect("open probe");
                SqliteStore::tune(&conn).expect("tune");
                conn.execute_batch(
                    "CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT NOT NULL, at INTEGER NOT NULL)",
                )
                .expect("create");
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < seconds {
                    let tx = conn
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .expect("begin");
                    tx.execute(
                        "INSERT INTO t (id, body, at) VALUES (?1, ?2, ?3)",
                        rusqlite::params![flowrun_core::new_id(), "{\"n\":\"12345\"}", n as i64],
                    )
                    .expect("insert");
                    tx.commit().expect("commit");
                    n += 1;
                }
                let rate = n as f64 / started.elapsed().as_secs_f64();
                drop(conn);
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", probe.display()));
                }
                rate
            }
        }
    }
}

fn bundle(fake: &FakeLlm, steps: usize) -> Vec<BundleFile> {
    let file = |path: &str, text: String| BundleFile {
        path: path.into(),
        text,
    };
    let mut flow = String::from("input: { n: string }\nsteps:\n");
    for i in 0..steps {
        let text = if i == 0 {
            "{{ input.n }}".to_string()
        } else {
            format!("{{{{ steps.s{}.output }}}}", i - 1)
        };
        flow.push_str(&format!(
            "  - id: s{i}\n    prompt: p\n    with: {{ text: \"{text}\" }}\n"
        ));
    }
    flow.push_str(&format!(
        "output: \"{{{{ steps.s{}.output }}}}\"\n",
        steps - 1
    ));
    vec![
        file(
            "flowrun.yaml",
            format!(
                "providers:\n  fake: {{ kind: openai, base_url: \"{}\" }}\ndefaults: {{ model: fake/m1, retries: 0 }}\n",
                fake.openai_base_url()
            ),
        ),
        file(
            "prompts/p.yaml",
            "input: { text: string }\nmessages:\n  - user: \"{{ text }}\"\n".into(),
        ),
        file("flows/bench.yaml", flow),
    ]
}

fn expected(n: usize, steps: usize) -> String {
    format!("{}{n}", "echo: ".repeat(steps))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Waits for every run and checks its output; returns the latest `finished_at`.
async fn await_all(client: &Client, ids: Vec<(usize, String)>, steps: usize) -> i64 {
    let done: Vec<i64> = futures::stream::iter(ids)
        .map(|(n, id)| {
            let client = client.clone();
            async move {
                let run = client.wait_run(&id).await.expect("wait");
                assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
                assert_eq!(run.output, Some(json!(expected(n, steps))), "{run:?}");
                run.finished_at.expect("finished_at")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    done.into_iter().max().unwrap_or(0)
}

async fn bench(o: Opts) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = match Db::parse(o.database_url.as_deref(), tmp.path()) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let store = db.open();
    let (_, token) = create_key(&*store, "*", Role::Admin).await.expect("key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig {
        workers: o.workers,
        ..ServerConfig::default()
    };
    let server = Server::start(listener, store, config).await.expect("start");
    let client = Client::new(format!("http://{}", server.addr()), Some(token)).expect("client");
    let up = client
        .upload_bundle(&bundle(&fake, o.steps))
        .await
        .expect("upload");
    client.deploy("prod", &up.id).await.expect("deploy");
    println!(
        "database: {}; {} worker(s); {}-step flow; fake LLM at zero latency",
        db.describe(),
        o.workers,
        o.steps
    );

    // Warm-up: connections, the bundle's executor, the database pages.
    let warm: Vec<_> = futures::stream::iter(0..200)
        .map(|n| {
            let client = client.clone();
            async move {
                let s = client
                    .submit("prod", "bench", &json!({ "n": n.to_string() }), None)
                    .await
                    .expect("submit");
                (n, s.id)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    await_all(&client, warm, o.steps).await;

    // 1. Accept latency at a fixed rate.
    let total = (o.rate * o.seconds).round().max(1.0) as usize;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(started + period.mul_f64(i as f64)).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let n = 1_000_000 + i;
            let sent = Instant::now();
            let s = client
                .submit("prod", "bench", &json!({ "n": n.to_string() }), None)
                .await
                .expect("submit");
            (sent.elapsed(), (n, s.id))
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut ids = Vec::with_capacity(total);
    for t in tasks {
        let (lat, id) = t.await.expect("join");
        latencies.push(lat);
        ids.push(id);
    }
    let offered = started.elapsed().as_secs_f64();
    await_all(&client, ids, o.steps).await;
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    println!(
        "accept latency at {:.0} runs/s ({total} runs in {offered:.1} s): p50 {}, p99 {}, max {} \
         (target p99 < 5 ms: {})",
        o.rate,
        ms(percentile(&latencies, 0.5)),
        ms(p99),
        ms(*latencies.last().expect("latencies")),
        if p99 < Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        }
    );

    // 2. Submit throughput, then sustained completions.
    let first_ms = flowrun_core::event::now_ms();
    let started = Instant::now();
    let ids: Vec<(usize, String)> = futures::stream::iter(0..o.runs)
        .map(|i| {
            let client = client.clone();
            async move {
                let n = 2_000_000 + i;
                let s = client
                    .submit("prod", "bench", &json!({ "n": n.to_string() }), None)
                    .await
                    .expect("submit");
                (n, s.id)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let submit_secs = started.elapsed().as_secs_f64();
    let last_ms = await_all(&client, ids, o.steps).await;
    let completions = o.runs as f64 / ((last_ms - first_ms).max(1) as f64 / 1000.0);
    println!(
        "submit throughput: {} runs in {submit_secs:.2} s = {:.0} runs/s (32 connections)",
        o.runs,
        o.runs as f64 / submit_secs
    );
    println!(
        "completed: {} runs in {:.2} s = {completions:.0} runs/s",
        o.runs,
        (last_ms - first_ms) as f64 / 1000.0
    );
    server.shutdown().await;
    fake.shutdown().await;

    // 3. The database alone.
    let commits = db.commits_per_second(o.commit_seconds);
    let ratio = completions / commits;
    println!(
        "database alone: {commits:.0} single-row commits/s; completions / commits = {ratio:.3} \
         (1/{:.1}; target at least 1/3: {})",
        1.0 / ratio,
        if ratio >= 1.0 / 3.0 { "met" } else { "MISSED" }
    );
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(o));
}
