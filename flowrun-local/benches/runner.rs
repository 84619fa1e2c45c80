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
//!   traffic are not this process's, which keeps the bodies and decodes them once the runs
//!   are measured; `--receiver thread` keeps it on a thread of this one, decoding as requests
//!   come, and subtracts that thread's CPU): tracing on versus off is (e) versus (a);
//! - (f) (d) plus OpenTelemetry export: the sink's own cost per run, without the noise of HTTP
//!   and SQLite;
//! - (g) (b) plus OpenTelemetry export, and (h) (c) plus OpenTelemetry export: which of HTTP
//!   and the store the export interacts with.
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
//! cargo bench -p flowrun-local --bench runner -- a e --calls 100000 --interleave 1000
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// `--interleave CHUNK`: two variants in alternating chunks of CHUNK runs (see
    /// [`interleaved`]).
    interleave: Option<usize>,
    /// `--time-sink`: time the OpenTelemetry sink's `emit` and print it per run (which adds
    /// to what is measured, so it is off by default).
    time_sink: bool,
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
        interleave: None,
        time_sink: false,
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
            "--interleave" => opts.interleave = Some(number(&arg).max(1)),
            "--time-sink" => opts.time_sink = true,
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
    Variant {
        letter: "g",
        label: "(b) + OTLP export",
        target: "ask",
        store: false,
        otel: true,
    },
    Variant {
        letter: "h",
        label: "(c) + OTLP export",
        target: "ask-mock",
        store: true,
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

/// An OTLP/HTTP receiver on loopback that decodes every request and counts its spans. On a
/// thread of the bench (`deferred` false) it decodes each request as it comes; as a process of
/// its own (`deferred` true) it keeps the bodies and decodes them all when asked for the count
/// (`POST /count`, which answers it and starts again), so that its decoding does not compete
/// with the bench for the machine's two cores while runs are measured: a collector runs on
/// CPUs of its own.
async fn otlp_receiver(deferred: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    fn spans_in(body: axum::body::Bytes) -> usize {
        let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        req.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
    let spans = Arc::new(AtomicUsize::new(0));
    let bodies: Arc<std::sync::Mutex<Vec<axum::body::Bytes>>> = Arc::default();
    let (counter, kept) = (spans.clone(), bodies.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (counter, kept) = (counter.clone(), kept.clone());
            async move {
                if deferred {
                    kept.lock().expect("bodies").push(body);
                } else {
                    counter.fetch_add(spans_in(body), Ordering::SeqCst);
                }
                ""
            }
        }),
    );
    let app = if deferred {
        let counter = spans.clone();
        app.route(
            "/count",
            axum::routing::post(move || {
                let (counter, bodies) = (counter.clone(), bodies.clone());
                async move {
                    let kept = std::mem::take(&mut *bodies.lock().expect("bodies"));
                    let n: usize = kept.into_iter().map(spans_in).sum();
                    (counter.swap(0, Ordering::SeqCst) + n).to_string()
                }
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
    for (with, without) in [("e", "a"), ("f", "d"), ("g", "b"), ("h", "c")] {
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

/// One variant ready to run: its store, its exporter and its executor.
struct Setup {
    variant: &'static Variant,
    store: Option<Arc<Store>>,
    otel: Option<Arc<flowrun_otel::Exporter>>,
    exec: Arc<Executor>,
    /// Runs made so far (numbers the next questions).
    runs: usize,
    /// The OpenTelemetry sink, timed.
    timed: Option<Arc<Timed>>,
}

/// The OpenTelemetry sink, and the wall time spent in its `emit` (so waits on its locks
/// count too), by kind of event.
struct Timed {
    inner: flowrun_otel::OtelSink,
    nanos: [AtomicU64; EVENT_KINDS.len()],
}

/// The kinds of run event, in the order [`Timed`] counts them.
const EVENT_KINDS: [&str; 7] = [
    "run started",
    "step started",
    "call attempt",
    "agent turn",
    "step finished",
    "step reused",
    "run finished",
];

impl EventSink for Timed {
    fn emit(&self, event: &flowrun_core::RunEvent) {
        use flowrun_core::RunEvent as E;
        let kind = match event {
            E::RunStarted(_) => 0,
            E::StepStarted(_) => 1,
            E::CallAttempt(_) => 2,
            E::AgentTurn(_) => 3,
            E::StepFinished(_) => 4,
            E::StepReused(_) => 5,
            E::RunFinished(_) => 6,
        };
        let t = Instant::now();
        self.inner.emit(event);
        let spent = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos[kind].fetch_add(spent, Ordering::Relaxed);
    }
}

impl Timed {
    /// Nanoseconds spent so far, by kind of event.
    fn nanos(timed: &Option<Arc<Timed>>) -> [u64; EVENT_KINDS.len()] {
        let mut nanos = [0; EVENT_KINDS.len()];
        if let Some(t) = timed {
            for (n, atomic) in nanos.iter_mut().zip(&t.nanos) {
                *n = atomic.load(Ordering::Relaxed);
            }
        }
        nanos
    }
}

impl Setup {
    /// `store` is the variant's store (opened with [`open_store`]) when it has one.
    fn new(
        variant: &'static Variant,
        store: Option<Arc<Store>>,
        project: &Arc<Project>,
        receiver: &Receiver,
        time_sink: bool,
    ) -> Setup {
        let mut sinks: Vec<Arc<dyn EventSink>> = match &store {
            Some(s) => vec![s.clone()],
            None => vec![Arc::new(NoSink)],
        };
        let otel = variant.otel.then(|| {
            let config = flowrun_otel::OtelConfig {
                protocol: flowrun_otel::Protocol::HttpProtobuf,
                service_name: "flowrun-bench".into(),
                endpoint: Some(format!("http://{}/v1/traces", receiver.addr)),
            };
            Arc::new(flowrun_otel::Exporter::new(&config).expect("OTLP exporter"))
        });
        let options = || flowrun_otel::SinkOptions::from_config(&project.config);
        let mut timed = None;
        match &otel {
            // Timing costs two clock reads per event and a counter both workers write.
            Some(otel) if time_sink => {
                let sink = Arc::new(Timed {
                    inner: otel.sink(options()),
                    nanos: Default::default(),
                });
                sinks.push(sink.clone());
                timed = Some(sink);
            }
            Some(otel) => sinks.push(Arc::new(otel.sink(options()))),
            None => {}
        }
        let sink: Arc<dyn EventSink> = Arc::new(FanOut(sinks));
        let exec = Arc::new(
            Executor::builder(Arc::clone(project))
                .sink(sink)
                .env(|name| (name == KEY_VAR).then(|| "sk-bench".to_string()))
                .build()
                .expect("executor"),
        );
        Setup {
            variant,
            store,
            otel,
            exec,
            runs: 0,
            timed,
        }
    }

    /// Makes `count` runs; checks the fake server saw one request per run of an HTTP variant.
    async fn drive(
        &mut self,
        fake: &FakeLlm,
        count: usize,
        concurrency: usize,
    ) -> (Duration, Vec<Duration>) {
        fake.clear_requests();
        let done = drive(
            &self.exec,
            self.variant.target,
            self.runs,
            count,
            concurrency,
        )
        .await;
        self.runs += count;
        let expected = if self.variant.target == "ask" {
            count
        } else {
            0
        };
        assert_eq!(
            fake.request_count(),
            expected,
            "HTTP requests the fake server saw"
        );
        fake.clear_requests();
        done
    }

    /// Flushes the exporter and checks what the receiver got; returns the runs made, every
    /// handle on the store dropped, so that [`verify_store`] can check them.
    async fn finish(self, receiver: &Receiver) -> usize {
        if let Some(otel) = self.otel {
            tokio::task::spawn_blocking(move || otel.shutdown())
                .await
                .expect("flush");
            let got = receiver.take_spans().await;
            let expected = 3 * self.runs;
            println!(
                "    ({}) spans received: {got} of {expected}",
                self.variant.letter
            );
            assert!(got > 0, "no span was exported");
        }
        if let Some(store) = self.store {
            assert_eq!(store.take_sink_error(), None, "the store hit a write error");
        }
        self.runs
    }
}

/// The store of a variant that has one.
fn open_store(variant: &Variant, path: &Path) -> Option<Arc<Store>> {
    variant
        .store
        .then(|| Arc::new(Store::open(path).expect("open the store")))
}

/// What `getrusage` says of this process, to the microsecond (for the interleaved mode's
/// short chunks): CPU time in user space and in the kernel, page faults and context
/// switches; the difference of two tells where a variant's CPU goes.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    user: Duration,
    system: Duration,
    minor_faults: i64,
    voluntary_switches: i64,
    involuntary_switches: i64,
}

impl Usage {
    fn now() -> Usage {
        use nix::sys::resource::{UsageWho, getrusage};
        let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        Usage {
            user: micros(usage.user_time()),
            system: micros(usage.system_time()),
            minor_faults: usage.minor_page_faults(),
            voluntary_switches: usage.voluntary_context_switches(),
            involuntary_switches: usage.involuntary_context_switches(),
        }
    }

    /// What was used since `before`, added to `self`.
    fn add_since(&mut self, before: Usage, now: Usage) {
        self.user += now.user.saturating_sub(before.user);
        self.system += now.system.saturating_sub(before.system);
        self.minor_faults += now.minor_faults - before.minor_faults;
        self.voluntary_switches += now.voluntary_switches - before.voluntary_switches;
        self.involuntary_switches += now.involuntary_switches - before.involuntary_switches;
    }
}

/// `--interleave CHUNK`: the two chosen variants set up once, warmed up, then run in
/// alternating chunks of CHUNK runs (A B, B A, A B, …) until each made `--calls` runs, so that
/// a machine whose speed drifts from one minute to the next slows both alike. Prints CPU per
/// run of each over all chunks, and the per-pair ratios of B to A.
async fn interleaved(
    opts: &Opts,
    chunk: usize,
    pair: [&'static Variant; 2],
    fake: &FakeLlm,
    project: &Arc<Project>,
    receiver: &Receiver,
    db_dir: &Path,
) {
    // One store for both when both have one: what a store costs per run varies from one
    // database file to another by more than tracing costs (an `a a` pair of two stores shows
    // ±25%), so each of the two would measure its own file.
    let db_path = db_dir.join("interleaved.db");
    let shared = open_store(pair[0], &db_path);
    let mut setups = pair.map(|v| {
        let store = match (&shared, v.store) {
            (Some(shared), true) => Some(shared.clone()),
            _ => open_store(v, &db_dir.join(format!("interleaved-{}.db", v.letter))),
        };
        Setup::new(v, store, project, receiver, opts.time_sink)
    });
    for setup in &mut setups {
        setup.drive(fake, opts.warmup, opts.concurrency).await;
    }
    let pairs = opts.calls.div_ceil(chunk);
    let mut cpu = [Duration::ZERO; 2];
    let mut wall = [Duration::ZERO; 2];
    let mut usage = [Usage::default(); 2];
    let mut ratios = Vec::with_capacity(pairs);
    let sink_before = setups.each_ref().map(|s| Timed::nanos(&s.timed));
    for k in 0..pairs {
        let order = if k % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut this = [Duration::ZERO; 2];
        for i in order {
            let before = Usage::now();
            let (elapsed, _) = setups[i].drive(fake, chunk, opts.concurrency).await;
            let now = Usage::now();
            wall[i] += elapsed;
            this[i] = (now.user + now.system).saturating_sub(before.user + before.system);
            usage[i].add_since(before, now);
        }
        cpu[0] += this[0];
        cpu[1] += this[1];
        ratios.push(this[1].as_secs_f64() / this[0].as_secs_f64());
    }
    let runs = (pairs * chunk) as f64;
    let per_run = |d: Duration| d.as_secs_f64() * 1e6 / runs;
    let [a, b] = pair.map(|v| v.letter);
    println!(
        "interleaved, {pairs} pairs of {chunk} runs: ({a}) {:.1} µs of CPU per run, ({b}) {:.1} µs",
        per_run(cpu[0]),
        per_run(cpu[1]),
    );
    for ((v, u), w) in pair.iter().zip(&usage).zip(wall) {
        println!(
            "  ({}) {:.0} runs/s; per run: {:.1} µs user, {:.1} µs system, {:.2} page faults, {:.2} + {:.2} context switches (voluntary + not)",
            v.letter,
            runs / w.as_secs_f64(),
            per_run(u.user),
            per_run(u.system),
            u.minor_faults as f64 / runs,
            u.voluntary_switches as f64 / runs,
            u.involuntary_switches as f64 / runs,
        );
    }
    for (setup, before) in setups.iter().zip(sink_before) {
        if setup.timed.is_some() {
            let now = Timed::nanos(&setup.timed);
            let spent: Vec<f64> = now
                .iter()
                .zip(before)
                .map(|(now, before)| (now - before) as f64 / 1e3 / runs)
                .collect();
            let by_kind: Vec<String> = EVENT_KINDS
                .iter()
                .zip(&spent)
                .filter(|(_, us)| **us > 0.0)
                .map(|(kind, us)| format!("{kind} {us:.1}"))
                .collect();
            println!(
                "  ({}) time in the OpenTelemetry sink: {:.1} µs per run ({})",
                setup.variant.letter,
                spent.iter().sum::<f64>(),
                by_kind.join(", "),
            );
        }
    }
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ({b}) / ({a}): total CPU {:+.1}%; per pair: mean {:+.1}% ± {:.1} (standard error), median {:+.1}%",
        (cpu[1].as_secs_f64() / cpu[0].as_secs_f64() - 1.0) * 100.0,
        (mean - 1.0) * 100.0,
        sd / n.sqrt() * 100.0,
        (ratios[ratios.len() / 2] - 1.0) * 100.0,
    );
    println!(
        "  ({b}) / ({a}): throughput {:+.1}%",
        (wall[0].as_secs_f64() / wall[1].as_secs_f64() - 1.0) * 100.0,
    );
    let both_stored = pair.iter().all(|v| v.store);
    let mut runs = 0;
    for setup in setups {
        let v = setup.variant;
        let made = setup.finish(receiver).await;
        if v.store && !both_stored {
            verify_store(&db_dir.join(format!("interleaved-{}.db", v.letter)), made);
        }
        runs += made;
    }
    drop(shared);
    if both_stored {
        verify_store(&db_path, runs);
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
        let chosen: Vec<&'static Variant> = VARIANTS
            .iter()
            .filter(|v| opts.only.is_empty() || opts.only.iter().any(|o| o == v.letter))
            .collect();
        if let Some(chunk) = opts.interleave {
            // In the order given, the same one twice allowed (`a a` shows the mode's own bias).
            let given: Vec<&'static Variant> = opts
                .only
                .iter()
                .filter_map(|o| VARIANTS.iter().find(|v| v.letter == o))
                .collect();
            let [a, b] = given[..] else {
                panic!("`--interleave` takes exactly two variants, e.g. `a e`");
            };
            assert!(
                !opts.receiver_thread,
                "`--interleave` counts the whole process: keep the receiver in its own"
            );
            interleaved(&opts, chunk, [a, b], &fake, &project, &receiver, db_dir.path()).await;
            fake.shutdown().await;
            return;
        }
        // CPU per run of each round, by variant letter (the exporter's receiver excluded).
        let mut cpu_per_run: Vec<(usize, &'static str, f64)> = Vec::new();
        for round in 0..opts.rounds {
            let order: Vec<&'static Variant> = if round % 2 == 0 {
                chosen.clone()
            } else {
                chosen.iter().rev().copied().collect()
            };
            if opts.rounds > 1 {
                println!("round {}", round + 1);
            }
            for v in order {
                let db_path = db_dir.path().join(format!("{}-{round}.db", v.letter));
                let mut setup = Setup::new(
                    v,
                    open_store(v, &db_path),
                    &project,
                    &receiver,
                    opts.time_sink,
                );
                setup.drive(&fake, opts.warmup, opts.concurrency).await;
                let cpu_before = cpu_time();
                let receiver_before = receiver.cpu();
                let (wall, mut latencies) = setup.drive(&fake, opts.calls, opts.concurrency).await;
                let cpu = cpu_time()
                    .zip(cpu_before)
                    .map(|(after, before)| after.saturating_sub(before));
                let receiver_cpu = receiver
                    .cpu()
                    .zip(receiver_before)
                    .map(|(after, before)| after.saturating_sub(before));
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
                let runs = setup.finish(&receiver).await;
                if v.store {
                    verify_store(&db_path, runs);
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
