//! Benchmark of the runner's own overhead: how many one-call runs per second flowrun sustains
//! end to end (render the prompt, HTTP call to a zero-latency fake OpenAI server on loopback,
//! parse the reply, record run/step/call rows in the SQLite history on a real file).
//!
//! Variants, one line each:
//! - (a) `openai` over HTTP + SQLite file store: the product target (≥ 2,000 calls/s);
//! - (b) `openai` over HTTP, no store;
//! - (c) `mock` provider + SQLite file store (isolates the store's cost);
//! - (d) `mock` provider, no store (executor alone);
//! - (e) (a) plus OpenTelemetry export (OTLP HTTP/protobuf to a receiver that decodes every
//!   request: by default a process of its own, as a collector is, so its CPU and its memory
//!   traffic are not this process's; `--receiver thread` keeps it on a thread of this one and
//!   subtracts that thread's CPU): tracing on versus off is (e) versus (a);
//! - (f) (d) plus OpenTelemetry export: the sink's own cost per run, without the noise of HTTP
//!   and SQLite.
//!
//! Every run must succeed, and for the store variants the database must end up holding exactly
//! one succeeded run (with one step and one call) per run made, so the benchmark cannot
//! silently measure failures.
//!
//! ```text
//! cargo bench -p flowrun-local --bench runner
//! cargo bench -p flowrun-local --bench runner -- --calls 20000 --concurrency 64 --warmup 1000
//! FLOWRUN_BENCH_CALLS=20000 FLOWRUN_BENCH_CONCURRENCY=64 cargo bench -p flowrun-local --bench runner
//! cargo bench -p flowrun-local --bench runner -- a c   # only variants (a) and (c)
//! cargo bench -p flowrun-local --bench runner -- a e --calls 10000 --rounds 10   # a e, e a, …
//! cargo bench -p flowrun-local --bench runner -- a e --receiver thread   # receiver in-process
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowrun_core::event::{EventSink, FanOut, NoSink};
use flowrun_core::project::SourceFile;
use flowrun_core::{Executor, Project, RunRequest, RunStatus};
use flowrun_fakellm::{FakeConfig, FakeLlm};
use flowrun_local::Store;
use serde_json::json;

const KEY_VAR: &str = "FLOWRUN_BENCH_OPENAI_KEY";

/// Command-line and environment options.
struct Opts {
    calls: usize,
    concurrency: usize,
    warmup: usize,
    /// Variant letters to run (all when empty).
    only: Vec<String>,
    /// Times the chosen variants run, in alternating order (`a e`, then `e a`, …), so that
    /// neither gains from going first; with more than one, a summary of CPU per run follows.
    rounds: usize,
    /// Where the OTLP receiver of (e) and (f) runs: a process of its own (the default, as a
    /// collector would) or a thread of this one (`--receiver thread`).
    receiver_thread: bool,
}

fn opts() -> Opts {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut opts = Opts {
        calls: env("FLOWRUN_BENCH_CALLS", 5_000),
        concurrency: env("FLOWRUN_BENCH_CONCURRENCY", 32),
        warmup: env("FLOWRUN_BENCH_WARMUP", 500),
        only: Vec::new(),
        rounds: env("FLOWRUN_BENCH_ROUNDS", 1),
        receiver_thread: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("`{what}` needs a number"))
        };
        match arg.as_str() {
            "--calls" | "-n" => opts.calls = number(&arg),
            "--concurrency" | "-c" => opts.concurrency = number(&arg),
            "--warmup" => opts.warmup = number(&arg),
            "--rounds" => opts.rounds = number(&arg),
            "--receiver" => match args.next().as_deref() {
                Some("thread") => opts.receiver_thread = true,
                Some("process") => opts.receiver_thread = false,
                other => panic!("`--receiver` is `process` or `thread`, not {other:?}"),
            },
            // `cargo bench` passes `--bench`; ignore it and other harness flags.
            a if a.starts_with('-') => {}
            a => opts.only.push(a.to_ascii_lowercase()),
        }
    }
    assert!(
        opts.calls > 0 && opts.concurrency > 0 && opts.rounds > 0,
        "calls, concurrency and rounds must be positive"
    );
    opts
}

/// One prompt with one input, reachable over HTTP (`ask`) and offline (`ask-mock`).
fn project(openai_base_url: &str) -> Arc<Project> {
    let config = format!(
        "providers:
  openai: {{ kind: openai, base_url: \"{openai_base_url}\", api_key_env: {KEY_VAR} }}
  offline: {{ kind: mock }}
defaults: {{ model: openai/gpt-4o-mini, timeout: 30s }}
"
    );
    let prompt = "input: { question: string }\nmessages:\n  - user: \"{{ question }}\"\n";
    let files = vec![
        SourceFile::new("flowrun.yaml", config),
        SourceFile::new("prompts/ask.yaml", prompt),
        SourceFile::new(
            "prompts/ask-mock.yaml",
            format!("model: offline/echo\n{prompt}"),
        ),
    ];
    Arc::new(Project::load(files).expect("the bench project loads"))
}

struct Variant {
    letter: &'static str,
    label: &'static str,
    target: &'static str,
    store: bool,
    otel: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        letter: "a",
        label: "openai HTTP + SQLite file",
        target: "ask",
        store: true,
        otel: false,
    },
    Variant {
        letter: "b",
        label: "openai HTTP, no store",
        target: "ask",
        store: false,
        otel: false,
    },
    Variant {
        letter: "c",
        label: "mock + SQLite file",
        target: "ask-mock",
        store: true,
        otel: false,
    },
    Variant {
        letter: "d",
        label: "mock, no store",
        target: "ask-mock",
        store: false,
        otel: false,
    },
    Variant {
        letter: "e",
        label: "(a) + OTLP export",
        target: "ask",
        store: true,
        otel: true,
    },
    Variant {
        letter: "f",
        label: "(d) + OTLP export",
        target: "ask-mock",
        store: false,
        otel: true,
    },
];

/// Runs `count` one-call runs of `target`, `concurrency` at a time on tokio tasks; returns the
/// wall time and every run's latency. Questions are numbered from `first`, so no two runs of a
/// variant send the same request. Panics on the first run that does not succeed.
async fn drive(
    exec: &Arc<Executor>,
    target: &'static str,
    first: usize,
    count: usize,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(count))
        .map(|_| {
            let exec = Arc::clone(exec);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count / concurrency + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return latencies;
                    }
                    let question = format!("question {}", first + i);
                    let request = RunRequest::new(target, json!({ "question": question }));
                    let t = Instant::now();
                    let outcome = exec.run(request).await.expect("the run starts");
                    latencies.push(t.elapsed());
                    assert_eq!(
                        outcome.status,
                        RunStatus::Succeeded,
                        "run {i} failed: {:?}",
                        outcome.error
                    );
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for w in workers {
        latencies.extend(w.await.expect("a bench task panicked"));
    }
    (started.elapsed(), latencies)
}

/// CPU time this process used so far (user + system), from `/proc/self/stat` in clock ticks
/// of 10 ms (Linux's `USER_HZ`); `None` elsewhere. On a loaded machine CPU per run varies far
/// less than wall-clock throughput, so it is what compares two variants.
fn cpu_time() -> Option<Duration> {
    stat_cpu("/proc/self/stat")
}

/// The user + system time in a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Checks the database holds exactly `expected` succeeded runs, each with one succeeded step
/// and one successful call, and nothing else.
fn verify_store(path: &Path, expected: usize) {
    let conn = rusqlite::Connection::open(path).expect("open the bench database");
    let count = |sql: &str| -> usize {
        let n: i64 = conn.query_row(sql, [], |r| r.get(0)).expect(sql);
        n as usize
    };
    let checks = [
        ("runs", "SELECT count(*) FROM runs"),
        (
            "succeeded runs",
            "SELECT count(*) FROM runs WHERE status = 'succeeded' AND output IS NOT NULL",
        ),
        (
            "succeeded steps",
            "SELECT count(*) FROM steps WHERE status = 'succeeded'",
        ),
        (
            "successful calls",
            "SELECT count(*) FROM calls WHERE error_kind IS NULL AND raw_response IS NOT NULL",
        ),
        ("calls", "SELECT count(*) FROM calls"),
    ];
    for (what, sql) in checks {
        let n = count(sql);
        assert_eq!(
            n, expected,
            "the store holds {n} {what}, expected {expected}"
        );
    }
}

/// The OTLP receiver, in a process or on a thread of its own, so that its CPU time (a
/// collector's work, not flowrun's) can be told apart.
struct Receiver {
    addr: std::net::SocketAddr,
    /// Spans received, when it runs on a thread of this process.
    spans: Option<Arc<AtomicUsize>>,
    /// `/proc/self/task/<tid>/stat` of its thread, or `/proc/<pid>/stat` of its process.
    stat: Option<String>,
    /// Its process, when it has one; killed with it.
    child: Option<std::process::Child>,
}

impl Receiver {
    /// Whether its CPU time is part of this process's.
    fn in_process(&self) -> bool {
        self.child.is_none()
    }

    /// CPU time of the receiver, wherever it runs.
    fn cpu(&self) -> Option<Duration> {
        stat_cpu(self.stat.as_deref()?)
    }

    /// The spans received since the last call.
    async fn take_spans(&self) -> usize {
        if let Some(spans) = &self.spans {
            return spans.swap(0, Ordering::SeqCst);
        }
        let url = format!("http://{}/count", self.addr);
        let text = reqwest::Client::new()
            .post(url)
            .send()
            .await
            .expect("ask the receiver")
            .text()
            .await
            .expect("the receiver's count");
        text.trim().parse().expect("a count")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts this bench again as an OTLP receiver process (`--serve-otlp`) and reads its address.
fn spawn_receiver() -> Receiver {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .arg("--serve-otlp")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the receiver process");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the receiver's address");
    let addr = line.trim().parse().expect("an address");
    Receiver {
        addr,
        spans: None,
        stat: Some(format!("/proc/{}/stat", child.id())),
        child: Some(child),
    }
}

/// The receiver process: serves until killed; `POST /count` answers the spans received since
/// the last count.
fn serve_otlp() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("receiver runtime");
    runtime.block_on(async {
        let (addr, spans) = otlp_receiver(true).await;
        println!("{addr}");
        drop(spans);
        std::future::pending::<()>().await;
    });
}

/// Starts [`otlp_receiver`] on a one-thread runtime of its own.
fn start_receiver() -> Receiver {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`.
            let stat = std::fs::read_link("/proc/thread-self")
                .ok()
                .map(|p| format!("/proc/{}/stat", p.display()));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let (addr, spans) = otlp_receiver(false).await;
                tx.send(Receiver {
                    addr,
                    spans: Some(spans),
                    stat,
                    child: None,
                })
                .expect("send");
                std::future::pending::<()>().await;
            });
        })
        .expect("receiver thread");
    rx.recv().expect("the receiver starts")
}

/// An OTLP/HTTP receiver on loopback that decodes each request and counts its spans; with
/// `count_route`, `POST /count` answers the count and resets it.
async fn otlp_receiver(count_route: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans = Arc::new(AtomicUsize::new(0));
    let counter = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let n: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                counter.fetch_add(n, Ordering::SeqCst);
                ""
            }
        }),
    );
    let app = if count_route {
        let counter = spans.clone();
        app.route(
            "/count",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move { counter.swap(0, Ordering::SeqCst).to_string() }
            }),
        )
    } else {
        app
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

/// Mean CPU per run of each variant over the rounds and, for (e) against (a) and (f) against
/// (d), the mean and median of the per-round ratios.
fn summarize(cpu_per_run: &[(usize, &'static str, f64)], rounds: usize) {
    let of = |letter: &str, round: usize| {
        cpu_per_run
            .iter()
            .find(|(r, l, _)| *r == round && *l == letter)
            .map(|(_, _, c)| *c)
    };
    println!("summary over {rounds} rounds (CPU per run, the OTLP receiver's excluded):");
    for v in VARIANTS {
        let all: Vec<f64> = (0..rounds).filter_map(|r| of(v.letter, r)).collect();
        if !all.is_empty() {
            println!(
                "  ({}) mean {:.0} µs, min {:.0}, max {:.0}",
                v.letter,
                all.iter().sum::<f64>() / all.len() as f64,
                all.iter().copied().fold(f64::INFINITY, f64::min),
                all.iter().copied().fold(0.0, f64::max),
            );
        }
    }
    for (with, without) in [("e", "a"), ("f", "d")] {
        let mut ratios: Vec<f64> = (0..rounds)
            .filter_map(|r| Some(of(with, r)? / of(without, r)?))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        println!(
            "  ({with}) / ({without}): mean of the per-round ratios {:+.1}%, median {:+.1}%, range {:+.1}% to {:+.1}%",
            (mean - 1.0) * 100.0,
            (ratios[ratios.len() / 2] - 1.0) * 100.0,
            (ratios[0] - 1.0) * 100.0,
            (ratios[ratios.len() - 1] - 1.0) * 100.0,
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--serve-otlp") {
        serve_otlp();
        return;
    }
    let opts = opts();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workers = runtime.metrics().num_workers();
    let db_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    println!(
        "flowrun runner overhead: {} calls per variant after {} warm-up, concurrency {}, {} tokio workers, {} CPUs",
        opts.calls,
        opts.warmup,
        opts.concurrency,
        workers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    runtime.block_on(async {
        let fake = FakeLlm::start(FakeConfig::default())
            .await
            .expect("fake LLM server");
        let project = project(&fake.openai_base_url());
        let receiver = if opts.receiver_thread {
            start_receiver()
        } else {
            spawn_receiver()
        };
        let chosen: Vec<&Variant> = VARIANTS
            .iter()
            .filter(|v| opts.only.is_empty() || opts.only.iter().any(|o| o == v.letter))
            .collect();
        // CPU per run of each round, by variant letter (the exporter's receiver excluded).
        let mut cpu_per_run: Vec<(usize, &'static str, f64)> = Vec::new();
        for round in 0..opts.rounds {
        let order: Vec<&Variant> = if round % 2 == 0 {
            chosen.clone()
        } else {
            chosen.iter().rev().copied().collect()
        };
        if opts.rounds > 1 {
            println!("round {}", round + 1);
        }
        for v in order {
            let db_path = db_dir.path().join(format!("{}-{round}.db", v.letter));
            let store = v
                .store
                .then(|| Arc::new(Store::open(&db_path).expect("open the store")));
            let mut sinks: Vec<Arc<dyn EventSink>> = match &store {
                Some(s) => vec![s.clone()],
                None => vec![Arc::new(NoSink)],
            };
            let otel = v.otel.then(|| {
                let config = flowrun_otel::OtelConfig {
                    protocol: flowrun_otel::Protocol::HttpProtobuf,
                    service_name: "flowrun-bench".into(),
                    endpoint: Some(format!("http://{}/v1/traces", receiver.addr)),
                };
                Arc::new(flowrun_otel::Exporter::new(&config).expect("OTLP exporter"))
            });
            if let Some(otel) = &otel {
                sinks.push(Arc::new(otel.sink(flowrun_otel::SinkOptions::from_config(
                    &project.config,
                ))));
            }
            let sink: Arc<dyn EventSink> = Arc::new(FanOut(sinks));
            let exec = Arc::new(
                Executor::builder(Arc::clone(&project))
                    .sink(sink)
                    .env(|name| (name == KEY_VAR).then(|| "sk-bench".to_string()))
                    .build()
                    .expect("executor"),
            );
            drive(&exec, v.target, 0, opts.warmup, opts.concurrency).await;
            fake.clear_requests();
            let cpu_before = cpu_time();
            let receiver_before = receiver.cpu();
            let (wall, mut latencies) =
                drive(&exec, v.target, opts.warmup, opts.calls, opts.concurrency).await;
            let cpu = cpu_time()
                .zip(cpu_before)
                .map(|(after, before)| after.saturating_sub(before));
            let receiver_cpu = receiver
                .cpu()
                .zip(receiver_before)
                .map(|(after, before)| after.saturating_sub(before));
            let requests = fake.request_count();
            fake.clear_requests();
            latencies.sort_unstable();
            println!(
                "({}) {:<26} {:>8.0} calls/s   p50 {:>6.2} ms   p99 {:>6.2} ms   CPU {} per run   ({} runs in {:.2} s)",
                v.letter,
                v.label,
                opts.calls as f64 / wall.as_secs_f64(),
                ms(percentile(&latencies, 50)),
                ms(percentile(&latencies, 99)),
                cpu.map_or("?".to_string(), |c| format!(
                    "{:.0} µs",
                    c.as_secs_f64() * 1e6 / opts.calls as f64
                )),
                latencies.len(),
                wall.as_secs_f64(),
            );
            assert_eq!(latencies.len(), opts.calls);
            if let (true, Some(cpu), Some(r)) = (v.otel, cpu, receiver_cpu) {
                let per_run = |d: Duration| d.as_secs_f64() * 1e6 / opts.calls as f64;
                if receiver.in_process() {
                    println!(
                        "    CPU {:.0} µs per run without the OTLP receiver's ({:.0} µs)",
                        per_run(cpu.saturating_sub(r)),
                        per_run(r),
                    );
                } else {
                    println!(
                        "    the OTLP receiver process: {:.0} µs of CPU per run (not counted above)",
                        per_run(r),
                    );
                }
            }
            if let Some(otel) = otel {
                let flushed = {
                    let otel = otel.clone();
                    tokio::task::spawn_blocking(move || otel.shutdown())
                };
                flushed.await.expect("flush");
                let got = receiver.take_spans().await;
                let expected = 3 * (opts.warmup + opts.calls);
                println!(
                    "    spans received: {got} of {expected} (the batch processor drops spans when its queue is full)"
                );
                assert!(got > 0, "no span was exported");
            }
            let expected_requests = if v.target == "ask" { opts.calls } else { 0 };
            assert_eq!(requests, expected_requests, "HTTP requests the fake server saw");
            if let Some(store) = store {
                assert_eq!(store.take_sink_error(), None, "the store hit a write error");
                // Drop every handle so whatever the store buffers is written before checking.
                drop(exec);
                drop(store);
                verify_store(&db_path, opts.warmup + opts.calls);
            }
            if let Some(cpu) = cpu {
                let own = match (v.otel && receiver.in_process(), receiver_cpu) {
                    (true, Some(r)) => cpu.saturating_sub(r),
                    _ => cpu,
                };
                cpu_per_run.push((round, v.letter, own.as_secs_f64() * 1e6 / opts.calls as f64));
            }
        }
        }
        if opts.rounds > 1 {
            summarize(&cpu_per_run, opts.rounds);
        }
        fake.shutdown().await;
    });
}
