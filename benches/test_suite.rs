//! End-to-end benchmark of `flowrun test`: the release `flowrun` binary runs a suite of N
//! dataset cases at concurrency C against an in-process fake OpenAI server that answers every
//! request after a fixed latency L. The ideal wall time is `N × L / C`; the target is to finish
//! within 1.15× of it plus start-up, with a peak RSS under 100 MB.
//!
//! Each measurement writes a fresh temporary project (an `openai` provider pointing at the
//! fake, a one-message prompt, a test file whose JSONL dataset holds N cases with distinct
//! inputs and two cheap assertions each), runs `flowrun test -j C --no-cache --format json`
//! as a child process, and checks that the JSON report says N passed with none cached, that
//! the fake saw exactly N requests, and that the exit status is 0. The wall time covers the
//! whole process (start-up, loading the project and the dataset, the runs, storing the test
//! run, the report). The peak RSS is the child's `ru_maxrss`, read with
//! `getrusage(RUSAGE_CHILDREN)` in a small intermediate process (this binary re-run with
//! `--measure-child`) whose only child is that one `flowrun`, so each measurement gets its own
//! figure.
//!
//! For reference, each scenario also times the same requests sent by a bare `reqwest` client
//! at the same concurrency from this process (the "floor": what any client gets from this fake
//! on this machine), so the runner's own overhead can be told from the fake's timer and HTTP.
//!
//! `--no-cache` is how the target is stated. With `--cache` the response cache is on instead:
//! all misses on the fresh store, so every case also looks its answer up and writes it to the
//! cache (the pessimistic case).
//!
//! ```text
//! cargo bench --bench test_suite                       # (1000, -j 50) and (10000, -j 200), 50 ms
//! cargo bench --bench test_suite -- --cases 2000 --concurrency 100 --latency-ms 20 --runs 5
//! FLOWRUN_BENCH_CASES=2000 FLOWRUN_BENCH_CONCURRENCY=100 cargo bench --bench test_suite
//! cargo bench --bench test_suite -- --cache
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowrun_fakellm::{FakeConfig, FakeLlm};
use futures::StreamExt;
use serde_json::{Value, json};

const KEY_VAR: &str = "FLOWRUN_BENCH_OPENAI_KEY";
const FLOWRUN: &str = env!("CARGO_BIN_EXE_flowrun");
const MEASURE_CHILD: &str = "--measure-child";

/// Command-line and environment options.
struct Opts {
    /// `(cases, concurrency)` pairs to measure.
    scenarios: Vec<(usize, usize)>,
    latency: Duration,
    /// Measurements of each scenario.
    runs: usize,
    /// Leave the response cache on (no `--no-cache`).
    cache: bool,
}

fn opts() -> Opts {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut cases = env("FLOWRUN_BENCH_CASES");
    let mut concurrency = env("FLOWRUN_BENCH_CONCURRENCY");
    let mut latency_ms = env("FLOWRUN_BENCH_LATENCY_MS").unwrap_or(50);
    let mut runs = env("FLOWRUN_BENCH_RUNS").unwrap_or(3);
    let mut cache = std::env::var_os("FLOWRUN_BENCH_CACHE").is_some();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("`{what}` needs a number"))
        };
        match arg.as_str() {
            "--cases" | "-n" => cases = Some(number(&arg)),
            "--concurrency" | "-j" => concurrency = Some(number(&arg)),
            "--latency-ms" => latency_ms = number(&arg),
            "--runs" => runs = number(&arg),
            "--cache" => cache = true,
            // `cargo bench` passes `--bench`; ignore it and other harness flags.
            _ => {}
        }
    }
    let scenarios = match (cases, concurrency) {
        (None, None) => vec![(1_000, 50), (10_000, 200)],
        (n, c) => vec![(n.unwrap_or(1_000), c.unwrap_or(50))],
    };
    assert!(
        scenarios.iter().all(|&(n, c)| n > 0 && c > 0) && runs > 0,
        "cases, concurrency and runs must be positive"
    );
    Opts {
        scenarios,
        latency: Duration::from_millis(latency_ms as u64),
        runs,
        cache,
    }
}

/// Writes the project: provider, prompt, test file and an `n`-row JSONL dataset.
fn write_project(dir: &Path, base_url: &str, n: usize) {
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create a directory");
        std::fs::write(path, text).expect("write a project file");
    };
    write(
        "flowrun.yaml",
        &format!(
            "providers:
  openai: {{ kind: openai, base_url: \"{base_url}\", api_key_env: {KEY_VAR} }}
defaults: {{ model: openai/gpt-4o-mini, timeout: 30s }}
"
        ),
    );
    write(
        "prompts/ask.yaml",
        "input: { question: string }\nmessages:\n  - user: \"{{ question }}\"\n",
    );
    write(
        "tests/ask.test.yaml",
        "target: ask\ndataset: data/cases.jsonl\n",
    );
    let mut rows = String::with_capacity(n * 120);
    for i in 0..n {
        // The fake echoes `echo: <question>`.
        rows.push_str(&format!(
            "{{\"name\": \"case {i}\", \"input\": {{\"question\": \"question {i}\"}}, \
             \"assert\": [{{\"starts_with\": \"echo: \"}}, {{\"contains\": \"question {i}\"}}]}}\n"
        ));
    }
    write("data/cases.jsonl", &rows);
}

/// What one child run measured.
struct Measured {
    wall: Duration,
    max_rss_kb: u64,
    success: bool,
}

/// Runs `cmd` with stdout and stderr to files, waits, and measures it (in this process).
fn measure(mut cmd: Command, stdout: &Path, stderr: &Path) -> Measured {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).expect("stdout file"))
        .stderr(std::fs::File::create(stderr).expect("stderr file"));
    let started = Instant::now();
    let status = cmd.status().expect("start the child");
    let wall = started.elapsed();
    Measured {
        wall,
        max_rss_kb: children_max_rss_kb(),
        success: status.success(),
    }
}

/// The largest peak RSS of any child this process has waited for, in KiB.
#[cfg(unix)]
fn children_max_rss_kb() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    // On Linux `ru_maxrss` is in KiB.
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| u.max_rss().max(0) as u64)
}

#[cfg(not(unix))]
fn children_max_rss_kb() -> u64 {
    0
}

/// `--measure-child STDOUT STDERR PROGRAM ARGS...`: runs the program, then prints
/// `WALL_NS MAX_RSS_KB SUCCESS` on stdout. Run in its own process so that `RUSAGE_CHILDREN`
/// covers that one child only.
fn measure_child(mut args: impl Iterator<Item = String>) {
    let mut next = |what: &str| args.next().unwrap_or_else(|| panic!("{what} missing"));
    let stdout = next("stdout path");
    let stderr = next("stderr path");
    let program = next("program");
    let mut cmd = Command::new(program);
    cmd.args(args);
    let m = measure(cmd, Path::new(&stdout), Path::new(&stderr));
    println!("{} {} {}", m.wall.as_nanos(), m.max_rss_kb, m.success);
}

/// Runs `flowrun ARGS` in `dir` through a `--measure-child` process.
fn run_flowrun(dir: &Path, args: &[String]) -> (Measured, String, String) {
    let stdout = dir.join("bench-stdout.txt");
    let stderr = dir.join("bench-stderr.txt");
    let out = Command::new(std::env::current_exe().expect("this bench's path"))
        .arg(MEASURE_CHILD)
        .arg(&stdout)
        .arg(&stderr)
        .arg(FLOWRUN)
        .args(args)
        .current_dir(dir)
        .env(KEY_VAR, "sk-bench")
        .env_remove("GITHUB_ACTIONS")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the measuring process");
    assert!(out.status.success(), "the measuring process failed");
    let line = String::from_utf8(out.stdout).expect("UTF-8");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [wall_ns, rss, success] = fields[..] else {
        panic!("unexpected measurement line: {line:?}");
    };
    let measured = Measured {
        wall: Duration::from_nanos(wall_ns.parse().expect("wall time")),
        max_rss_kb: rss.parse().expect("max RSS"),
        success: success == "true",
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (measured, read(&stdout), read(&stderr))
}

/// Median wall time of `flowrun --version` over a few runs.
fn startup(dir: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..21)
        .map(|_| run_flowrun(dir, &["--version".to_string()]).0.wall)
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// The wall time of `n` chat requests, `c` at a time, from a bare `reqwest` client on a
/// two-worker runtime (as `flowrun test` has), to the fake at `base_url`.
fn floor(base_url: &str, n: usize, c: usize) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = format!("{base_url}/chat/completions");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let started = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| {
                let request = client.post(&url).bearer_auth("sk-bench").json(&json!({
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": format!("floor {i}")}],
                }));
                tokio::spawn(async move {
                    let response = request.send().await?.error_for_status()?;
                    response.text().await
                })
            })
            .buffer_unordered(c)
            .for_each(|r| {
                r.expect("a floor request task panicked")
                    .expect("a floor request failed");
                async {}
            })
            .await;
        started.elapsed()
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(MEASURE_CHILD) {
        measure_child(args);
        return;
    }
    let opts = opts();
    // The fake gets its own runtime and worker thread; this thread only starts and waits for
    // processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fake = runtime
        .block_on(FakeLlm::start(
            FakeConfig::default().with_latency(opts.latency),
        ))
        .expect("fake LLM server");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let startup = startup(tmp.path());
    println!(
        "flowrun test end to end: fake latency {} ms, response cache {}, {} measurement(s) each, {} CPUs",
        opts.latency.as_millis(),
        if opts.cache { "on" } else { "off" },
        opts.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "start-up (`flowrun --version`, median of 21): {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    let mut all_met = true;
    for &(n, c) in &opts.scenarios {
        let ideal = opts.latency.mul_f64(n.div_ceil(c) as f64);
        let budget = ideal.mul_f64(1.15) + startup;
        println!(
            "\n{n} cases, -j {c}: ideal {:.3} s, target ≤ 1.15 × ideal + start-up = {:.3} s and peak RSS < 100 MB",
            ideal.as_secs_f64(),
            budget.as_secs_f64(),
        );
        fake.clear_requests();
        let bare = floor(&fake.openai_base_url(), n, c);
        assert_eq!(fake.request_count(), n, "requests of the floor client");
        println!(
            "  floor (bare reqwest client, same requests): {:.3} s = {:.3} × ideal",
            bare.as_secs_f64(),
            bare.as_secs_f64() / ideal.as_secs_f64(),
        );
        for run in 1..=opts.runs {
            let dir = tempfile::tempdir_in(tmp.path()).expect("project dir");
            write_project(dir.path(), &fake.openai_base_url(), n);
            fake.clear_requests();
            let load = load_average();
            let mut args = vec![
                "test".to_string(),
                "-j".to_string(),
                c.to_string(),
                "--format".to_string(),
                "json".to_string(),
            ];
            if !opts.cache {
                args.push("--no-cache".to_string());
            }
            let (m, stdout, stderr) = run_flowrun(dir.path(), &args);
            let requests = fake.request_count();
            assert!(m.success, "flowrun test failed:\n{stderr}");
            let report: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{stderr}"));
            let summary = &report["summary"];
            assert_eq!(summary["runs"], n, "runs in the report");
            assert_eq!(summary["passed"], n, "passed cases in the report");
            assert_eq!(summary["cached"], 0, "cached cases in the report");
            assert_eq!(
                report["results"].as_array().map(Vec::len),
                Some(n),
                "results in the report"
            );
            assert_eq!(requests, n, "requests the fake server saw");
            // The report's own wall time: from the first case started to the last one done.
            let cases_wall = report["wall_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
            let met = m.wall <= budget && m.max_rss_kb < 100 * 1024;
            all_met &= met;
            println!(
                "  run {run}: wall {:.3} s  ratio {:.3} × ideal  ({:.3} without start-up)  cases {:.3} s  peak RSS {:.1} MB  load {load}  {}",
                m.wall.as_secs_f64(),
                m.wall.as_secs_f64() / ideal.as_secs_f64(),
                (m.wall.saturating_sub(startup)).as_secs_f64() / ideal.as_secs_f64(),
                cases_wall,
                mb(m.max_rss_kb),
                if met { "met" } else { "NOT MET" },
            );
        }
    }
    println!(
        "\nall measurements within target: {}",
        if all_met { "yes" } else { "no" }
    );
    runtime.block_on(fake.shutdown());
}
