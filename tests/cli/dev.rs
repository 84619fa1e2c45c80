//! `flowrun dev` end to end in a real terminal: tmux runs the binary in a project on the fake
//! LLM server, keys go in with `send-keys`, the screen comes back with `capture-pane`.
//!
//! The fake echoes the prompt's user message, so what each side shows follows from its prompt
//! text: the committed prompt (the baseline, `git:` = `main`) and the working tree's (the
//! draft). Every wait polls the screen with short sleeps under one deadline; nothing sleeps
//! for a fixed long time. Each test has its own tmux server (`tmux -L <unique>`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flowrun_fakellm::{FakeConfig, FakeLlm};

use crate::eval_cmd::{commit_all, git_init, have_git};
use crate::harness::{TestProject, run};

const KEY: &str = "sk-test-secret-0123456789";

/// How long any one wait for the screen may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// Whether tmux can be run; says so loudly when it cannot.
fn have_tmux() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: tmux not installed; the `flowrun dev` terminal test did not run");
    }
    ok
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Tmux {
            socket: format!("flowrun-dev-test-{}-{nanos}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Starts `command` (a shell command line) in a detached 120×40 session in `dir`.
    fn start(&self, dir: &Path, command: &str) {
        let dir = dir.display().to_string();
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            "dev",
            "-x",
            "120",
            "-y",
            "40",
            "-c",
            &dir,
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "dev"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}");
    }

    /// The screen, or `None` once the session is gone.
    fn screen(&self) -> Option<String> {
        let out = self.run(&["capture-pane", "-p", "-t", "dev"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "dev"]).status.success()
    }

    /// Presses `q` and waits (up to [`DEADLINE`]) for the session to end.
    fn quit(&self) {
        self.keys(&["q"]);
        let start = Instant::now();
        while self.alive() {
            assert!(
                start.elapsed() < DEADLINE,
                "the session did not end after `q`"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls the screen until `done` holds; panics with the last screen after [`DEADLINE`].
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < DEADLINE {
            match self.screen() {
                Some(screen) if done(&squeeze(&screen)) => return screen,
                Some(screen) => last = screen,
                None => panic!("the session ended while waiting for {what}:\n{last}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; the screen:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Runs of spaces as one, so checks do not depend on column widths.
fn squeeze(screen: &str) -> String {
    screen
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn answer_prompt(user: &str) -> String {
    format!(
        "input: {{ question: string }}\nmessages:\n  - system: You answer support questions.\n  - user: \"{user}\"\n"
    )
}

/// A project on the fake with two cases that pass when the answer mentions the refund
/// policy; its prompt committed on `main`.
fn project(fake: &FakeLlm) -> TestProject {
    let text = format!(
        "-- flowrun.yaml --
providers:
  openai: {{ kind: openai, base_url: \"{}\", api_key_env: FAKE_OPENAI_KEY }}
models:
  gpt: {{ provider: openai, model: gpt-4o-mini }}
defaults: {{ model: gpt, backoff: 10ms, timeout: 5s }}
-- .gitignore --
.flowrun/
-- tests/answer.test.yaml --
target: answer
cases:
  - {{ name: where is my order, input: {{ question: \"Where is my order?\" }}, assert: [{{ icontains: refund policy }}] }}
  - {{ name: how do i cancel, input: {{ question: \"How do I cancel?\" }}, assert: [{{ icontains: refund policy }}] }}
-- prompts/answer.yaml --
{}",
        fake.openai_base_url(),
        answer_prompt("{{ question }} Mention our refund policy.")
    );
    let project = TestProject::from_txtar(&text);
    git_init(project.path(), "main");
    commit_all(project.path(), "the baseline");
    project
}

/// `'path'` for a shell command line.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flowrun"))
}

#[test]
fn refuses_without_a_terminal() {
    let project = TestProject::from_txtar(
        "-- flowrun.yaml --\nproviders: { m: { kind: mock } }\ndefaults: { model: m/x }\n",
    );
    let out = run(project.flowrun().arg("dev"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("`flowrun dev` needs a terminal"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("flowrun test"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_both_sides_follows_edits_and_restores_the_terminal() {
    if !have_tmux() || !have_git() {
        return;
    }
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let project = project(&fake);
    let dir = project.path();
    // Outside the project: it is watched.
    let out = tempfile::tempdir().expect("temp dir");
    let (exit_file, stty_file, stderr_file) = (
        out.path().join("exit"),
        out.path().join("stty"),
        out.path().join("stderr"),
    );
    // After `flowrun dev` exits: its status, and the terminal's modes (raw mode left?).
    let command = format!(
        "FAKE_OPENAI_KEY={KEY} NO_COLOR=1 {} dev 2>{}; echo $? >{}; stty -a >{}",
        quoted(&bin()),
        quoted(&stderr_file),
        quoted(&exit_file),
        quoted(&stty_file),
    );
    let tmux = Tmux::new();
    tmux.start(dir, &command);
    let stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();

    // Both sides ran: the same prompt, so both pass, the baseline labelled with its commit.
    tmux.wait_for("both sides' results", |s| {
        s.contains("draft 2/2 passed") && s.contains("baseline 2/2 passed")
    });
    let screen = tmux.wait_for("the selected case's outputs", |s| {
        s.contains("echo: Where is my order?")
    });
    assert!(screen.contains("git:main ("), "{screen}");
    assert!(screen.contains("how do i cancel"), "{screen}");

    // The second case, its detail view with the steps of its run, and back.
    tmux.keys(&["j"]);
    tmux.wait_for("the second case", |s| s.contains("echo: How do I cancel?"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the detail view", |s| s.contains("esc back"));
    // The run behind the result loads: its rendered messages and the raw response.
    tmux.wait_for("the rendered messages", |s| {
        s.contains("system You answer support questions.")
            && s.contains("user How do I cancel? Mention our refund policy.")
            && s.contains("response {")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the list", |s| {
        !s.contains("esc back") && s.contains("q quit")
    });

    // An edit on disk re-runs the drafts (and only them): the new output shows, the cases
    // now fail on the draft side only.
    project.write(
        "prompts/answer.yaml",
        &answer_prompt("{{ question }} Be brief."),
    );
    tmux.wait_for("the edited draft", |s| {
        s.contains("echo: How do I cancel? Be brief.")
            && s.contains("draft 0/2 passed")
            && s.contains("baseline 2/2 passed")
    });
    let answers = fake.requests_for_model("gpt-4o-mini");
    let brief = answers
        .iter()
        .filter(|r| r.body.to_string().contains("Be brief."))
        .count();
    assert_eq!(brief, 2, "one request per draft case; {}", stderr());

    tmux.quit();
    let exit = std::fs::read_to_string(&exit_file).expect("the exit status was written");
    assert_eq!(exit.trim(), "0", "{}", stderr());
    assert!(!stderr().contains("panicked"), "{}", stderr());
    // Raw mode was left: line editing and echo are back on.
    let stty = std::fs::read_to_string(&stty_file).expect("stty ran");
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "icrnl", "opost"] {
        assert!(flags.contains(&flag), "{flag} is off after exit:\n{stty}");
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, every case run of both sides is exported as its
/// span tree (run → step → call), flushed when the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_each_run_over_otlp() {
    if !have_tmux() || !have_git() {
        return;
    }
    let fake = FakeLlm::start(FakeConfig::default()).await.expect("fake");
    let (addr, received) = crate::otel::http_receiver().await;
    let project = project(&fake);
    let out = tempfile::tempdir().expect("temp dir");
    let (exit_file, stderr_file) = (out.path().join("exit"), out.path().join("stderr"));
    let command = format!(
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://{addr} FAKE_OPENAI_KEY={KEY} NO_COLOR=1 {} dev 2>{}; echo $? >{}",
        quoted(&bin()),
        quoted(&stderr_file),
        quoted(&exit_file),
    );
    let tmux = Tmux::new();
    tmux.start(project.path(), &command);
    tmux.wait_for("both sides' results", |s| {
        s.contains("draft 2/2 passed") && s.contains("baseline 2/2 passed")
    });
    tmux.quit();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let exit = std::fs::read_to_string(&exit_file).expect("the exit status was written");
    assert_eq!(exit.trim(), "0", "{stderr}");
    let spans = received.spans();
    let runs: Vec<_> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(runs.len(), 4, "two cases on each side: {spans:#?}");
    for run in runs {
        assert_eq!(run.name, "prompt answer");
        assert_eq!(run.attr("flowrun.status"), "succeeded");
        let steps = crate::otel::children(&spans, run);
        assert_eq!(steps.len(), 1, "{steps:#?}");
        let calls = crate::otel::children(&spans, steps[0]);
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert_eq!(calls[0].attr("gen_ai.request.model"), "gpt-4o-mini");
    }
}
