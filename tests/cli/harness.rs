//! The test harness: temp projects from txtar-like fixtures, a `flowrun` command builder, and
//! insta filters for what varies between runs.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A project in a fresh temp directory.
pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    /// An empty directory.
    pub fn empty() -> Self {
        TestProject {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes the files of a txtar-like text: `-- path --` lines start each file.
    pub fn from_txtar(text: &str) -> Self {
        let p = Self::empty();
        for (path, body) in parse_txtar(text) {
            p.write(&path, &body);
        }
        p
    }

    /// A copy of a project directory of the repository (e.g. `examples/quickstart`).
    pub fn copy_of(rel: &str) -> Self {
        let p = Self::empty();
        copy_dir(&repo_root().join(rel), p.path());
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// `flowrun` started in the project directory, with no colour and no ambient keys.
    pub fn flowrun(&self) -> Command {
        let mut cmd = Command::cargo_bin("flowrun").expect("flowrun binary");
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("RUST_LOG")
            .env_remove("FLOWRUN_LOG_FORMAT")
            .env_remove("FLOWRUN_WEBHOOK_SECRET");
        cmd
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == ".flowrun" {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Splits `-- name --` sections into (name, body).
pub fn parse_txtar(text: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ").and_then(|l| l.strip_suffix(" --")) {
            files.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    files
}

/// Runs `f` with insta filters for run ids, durations and temp paths.
pub fn with_filters(dir: &Path, f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&dir.display().to_string()), "[PROJECT]");
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[RUN_ID]",
    );
    settings.add_filter(r"\d+(\.\d+)? (ms|s)\b", "[TIME]");
    settings.add_filter(r"version [0-9a-f]{12}", "version [HASH]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[DATE]");
    settings.bind(f);
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// Output of a finished command: exit code, stdout and stderr.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Outcome {
    let out = cmd.output().expect("flowrun runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
