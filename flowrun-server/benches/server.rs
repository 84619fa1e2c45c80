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
//!    `--commit-seconds`, with the store's own durability settings; printed beside the
//!    completions as a ratio (the target, a third, is checked against one connection's rate).
//!    SQLite: on a new file beside the server's, tuned by [`SqliteStore::tune`]. PostgreSQL: in
//!    the bench's database, on one connection and then on as many as the store's pool holds
//!    (what pgbench does with a one-`INSERT` script).
//!
//! Every run must succeed with the right output, or the bench fails instead of reporting.
//!
//! ```text
//! cargo bench -p flowrun-server --bench server
//! cargo bench -p flowrun-server --bench server -- --rate 100 --seconds 10 --runs 5000 \
//!     --workers 64 --steps 1 --sqlite-synchronous full --database-url sqlite:/tmp/bench.db
//! cargo bench -p flowrun-server --bench server -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! `--database-url`: `sqlite:PATH` or a path (default: a file in a new temp dir), or a
//! PostgreSQL server (`postgres://…`) whose user may create databases: the bench makes a
//! database of its own there and drops it at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun_client::{BundleFile, Client, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm};
use flowrun_server::auth::{Role, create_key};
use flowrun_server::store::{Durability, PostgresStore, ServerStore, SqliteStore};
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
    durability: Durability,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        database_url: None,
        rate: 100.0,
        seconds: 10.0,
        runs: 5000,
        workers: flowrun_server::DEFAULT_WORKERS,
        steps: 1,
        commit_seconds: 3.0,
        durability: Durability::default(),
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
            "--sqlite-synchronous" => {
                o.durability = match value()?.to_ascii_lowercase().as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    v => return Err(format!("`{a} {v}`: use `full` or `normal`")),
                }
            }
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
    Sqlite(PathBuf, Durability),
    /// A database made for this bench (dropped with it), and the store's pool size.
    Postgres {
        db: common::TestDb,
        connections: usize,
    },
}

impl Db {
    async fn parse(
        url: Option<&str>,
        tmp: &Path,
        connections: usize,
        durability: Durability,
    ) -> Result<Db, String> {
        match url {
            None => Ok(Db::Sqlite(tmp.join("server.db"), durability)),
            Some(u) if flowrun_server::store::is_postgres_url(u) => Ok(Db::Postgres {
                db: common::TestDb::postgres_on(u).await,
                connections,
            }),
            Some(u) => {
                let path = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .unwrap_or(u);
                Ok(Db::Sqlite(PathBuf::from(path), durability))
            }
        }
    }

    async fn open(&self) -> Arc<dyn ServerStore> {
        match self {
            Db::Sqlite(path, durability) => {
                Arc::new(SqliteStore::open_with(path, *durability).expect("open the store"))
            }
            Db::Postgres { db, connections } => Arc::new(
                PostgresStore::connect(pg_url(db), *connections)
                    .await
                    .expect("open the store"),
            ),
        }
    }

    async fn describe(&self) -> String {
        match self {
            Db::Sqlite(path, durability) => format!(
                "SQLite {} (WAL, synchronous={})",
                path.display(),
                durability.pragma()
            ),
            Db::Postgres { db, connections } => {
                let c = pg_connect(pg_url(db)).await;
                let mut settings = Vec::new();
                for name in [
                    "server_version",
                    "synchronous_commit",
                    "fsync",
                    "commit_delay",
                ] {
                    let row = c.query_one(&format!("SHOW {name}"), &[]).await;
                    let value: String = row.expect("show").get(0);
                    settings.push(format!("{name}={value}"));
                }
                format!(
                    "PostgreSQL, a new database on {} ({}); a pool of {connections} connections",
                    flowrun_server::store::redact_url(pg_url(db)),
                    settings.join(", ")
                )
            }
        }
    }

    /// Single-row INSERT transactions per second with the store's settings: on SQLite on one
    /// connection (one writer is all SQLite has), on PostgreSQL on one and on as many
    /// connections as the store's pool.
    async fn commits_per_second(&self, seconds: f64) -> Vec<(usize, f64)> {
        match self {
            Db::Sqlite(path, durability) => {
                vec![(1, sqlite_commits_per_second(path, *durability, seconds))]
            }
            Db::Postgres { db, connections } => {
                let url = pg_url(db);
                pg_connect(url)
                    .await
                    .batch_execute(
                        "CREATE TABLE commit_probe \
                         (id TEXT PRIMARY KEY, body TEXT NOT NULL, at BIGINT NOT NULL)",
                    )
                    .await
                    .expect("create");
                let mut out = Vec::new();
                for n in [1, *connections] {
                    out.push((n, pg_commits_per_second(url, n, seconds).await));
                }
                out
            }
        }
    }
}

fn pg_url(db: &common::TestDb) -> &str {
    db.postgres_url().expect("a PostgreSQL database")
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// `INSERT`s of one row, each its own transaction (autocommit), from `connections` connections
/// at once for `seconds`; commits per second in all.
async fn pg_commits_per_second(url: &str, connections: usize, seconds: f64) -> f64 {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(pg_connect(url).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let insert = c
                    .prepare("INSERT INTO commit_probe (id, body, at) VALUES ($1, $2, $3)")
                    .await
                    .expect("prepare");
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < seconds {
                    c.execute(
                        &insert,
                        &[&flowrun_core::new_id(), &"{\"n\":\"12345\"}", &(n as i64)],
                    )
                    .await
                    .expect("insert");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Single-row INSERT transactions per second on a new file beside the store's, tuned like it.
fn sqlite_commits_per_second(path: &Path, durability: Durability, seconds: f64) -> f64 {
    let probe = path.with_extension("commit-probe.db");
    let _ = std::fs::remove_file(&probe);
    let mut conn = rusqlite::Connection::open(&probe).expect("open probe");
    SqliteStore::tune(&conn, durability).expect("tune");
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

/// Submissions of 5 ms or more, grouped into runs of neighbours sent one after another: a
/// stall of the whole machine (or of the disk under the database) shows as one group whose
/// latencies fall by the sending period from one submission to the next.
fn print_stalls(latencies: &[Duration], rate: f64) {
    let slow = |l: &Duration| *l >= Duration::from_millis(5);
    let mut groups: Vec<(usize, usize, Duration)> = Vec::new();
    for (i, l) in latencies.iter().enumerate().filter(|(_, l)| slow(l)) {
        match groups.last_mut() {
            Some((_, end, worst)) if *end + 1 == i => {
                *end = i;
                *worst = (*worst).max(*l);
            }
            _ => groups.push((i, i, *l)),
        }
    }
    if groups.is_empty() {
        return;
    }
    let shown: Vec<String> = groups
        .iter()
        .filter(|(start, end, _)| end > start)
        .take(12)
        .map(|(start, end, worst)| {
            format!(
                "{:.2} s: {} submissions, worst {}",
                *start as f64 / rate,
                end - start + 1,
                ms(*worst)
            )
        })
        .collect();
    let alone = groups.iter().filter(|(start, end, _)| end == start).count();
    println!(
        "slow submissions (5 ms or more): {} alone; in runs of neighbours (stalls): {}",
        alone,
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join("; ")
        }
    );
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
    // As `flowrun serve` sizes its pool.
    let connections = flowrun_server::default_pool_size(o.workers);
    let db = match Db::parse(
        o.database_url.as_deref(),
        tmp.path(),
        connections,
        o.durability,
    )
    .await
    {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let store = db.open().await;
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
        db.describe().await,
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
    print_stalls(&latencies, o.rate);
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

    drop(client);

    // 3. The database alone. The target is against the single-row commit rate of one
    // connection, one transaction after another (pgbench's default of one client): a run is
    // about three such commits (submit, claim, end). Many connections at once share WAL flushes
    // (PostgreSQL's group commit); that rate is printed too, for context.
    let rates = db.commits_per_second(o.commit_seconds).await;
    for (connections, commits) in rates {
        let ratio = completions / commits;
        let target = if connections != 1 {
            "; context: concurrent commits share flushes"
        } else if ratio >= 1.0 / 3.0 {
            "; target at least 1/3: met"
        } else {
            "; target at least 1/3: MISSED"
        };
        println!(
            "database alone, {connections} connection(s): {commits:.0} single-row commits/s; \
             completions / commits = {ratio:.3} (1/{:.1}{target})",
            1.0 / ratio
        );
    }
    drop(db);
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
