//! The baseline of `flowrun eval --baseline REF`: another version of the project (a git commit
//! or a directory), loaded into memory without touching the working tree, the index or HEAD.
//!
//! Git baselines are read with plumbing only: `rev-parse` to find the repository and the
//! commit, `ls-tree` to list the project's files at that commit and one `cat-file --batch`
//! process to read them all.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flowrun_core::Project;
use flowrun_core::diag::Diagnostics;
use flowrun_core::project::{CONFIG_FILE, SourceFile};

use crate::project_dir::{LoadError, LocalProject, is_source_path, read_sources};

/// Which version of the project to compare against, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineRef {
    /// `git:<ref>`: a branch, tag, commit or any revision git understands. Empty (`git:`
    /// alone) means the default branch: `main`, else `master`, else `origin/HEAD`'s target.
    Git(String),
    /// `dir:<path>` or any other text: a directory holding the project, relative to the
    /// current directory.
    Dir(PathBuf),
    /// `env:<name>`: the version deployed to an environment of a server. The caller fetches
    /// its files (see [`Baseline::from_files`]); [`load_baseline`] cannot.
    Env(String),
}

impl BaselineRef {
    /// Parses `git:<ref>`, `git:`, `dir:<path>` or a bare path.
    pub fn parse(text: &str) -> Result<Self, BaselineError> {
        let invalid = |reason: &str| BaselineError::InvalidRef {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(reference) = text.strip_prefix("git:") {
            if reference.starts_with('-') {
                return Err(invalid("a git ref cannot start with `-`"));
            }
            if reference.chars().any(char::is_control) {
                return Err(invalid("a git ref cannot contain control characters"));
            }
            return Ok(BaselineRef::Git(reference.to_string()));
        }
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err(invalid("name the environment: `env:prod`"));
            }
            return Ok(BaselineRef::Env(name.to_string()));
        }
        let path = text.strip_prefix("dir:").unwrap_or(text);
        if path.is_empty() {
            return Err(invalid(
                "expected `git:<ref>`, `git:` (the default branch) or `dir:<path>`",
            ));
        }
        Ok(BaselineRef::Dir(PathBuf::from(path)))
    }
}

impl std::str::FromStr for BaselineRef {
    type Err = BaselineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaselineRef::parse(s)
    }
}

/// Why the baseline could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    #[error("invalid baseline `{text}`: {reason}")]
    InvalidRef { text: String, reason: String },
    #[error("`env:{0}` baselines are read from a server: pass `--remote NAME` to `flowrun eval`")]
    EnvNeedsRemote(String),
    #[error(
        "git is not installed (or not on PATH), and `git:` baselines need it; use `--baseline dir:<path>` to compare against a copy of the project in a directory"
    )]
    GitMissing,
    #[error(
        "{path} is not in a git repository ({detail}); use `--baseline dir:<path>` to compare against a copy of the project in a directory"
    )]
    NotARepo { path: PathBuf, detail: String },
    #[error(
        "unknown git ref `{reference}`: {detail} (see `git branch -a`, `git tag` or `git log --oneline`)"
    )]
    UnknownRef { reference: String, detail: String },
    #[error(
        "`git:` alone means the default branch, but this repository has no `main`, `master` or `origin/HEAD`; name one: `--baseline git:<branch>`"
    )]
    NoDefaultBranch,
    #[error(
        "the project is not in the baseline {label}: {path} had no `flowrun.yaml` at that commit"
    )]
    ProjectMissing { label: String, path: String },
    #[error("the baseline {0} is not a flowrun project: it has no `flowrun.yaml`")]
    NotAProject(PathBuf),
    #[error("`{command}` failed: {detail}")]
    Git { command: String, detail: String },
    #[error("cannot read the baseline: {0}")]
    Read(LoadError),
    #[error(
        "the baseline {label} is not a valid project (the problem is in the baseline, not in your working tree):\n{diagnostics}"
    )]
    Invalid {
        label: String,
        diagnostics: Diagnostics,
    },
}

/// A loaded baseline version of the project.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// What it is, for reports: `git:main (3f2a1b9c)`, or the directory.
    pub label: String,
    pub project: Project,
    /// The baseline's files by path relative to the project root. For git: every text file
    /// of the project at that commit. For a directory: the sources plus the datasets the
    /// tests use and the pricing file (others are read on demand by [`Baseline::read_text`]).
    files: BTreeMap<String, String>,
    /// For a directory baseline, its root, to read other files on demand.
    dir: Option<PathBuf>,
}

impl Baseline {
    /// The text of a baseline file (path relative to the project root, `/`-separated;
    /// `./` and `..` inside the project are understood).
    pub fn read(&self, rel_path: &str) -> Option<&str> {
        self.files.get(&normalize(rel_path)?).map(String::as_str)
    }

    /// Like [`Baseline::read`], also reading from disk for a directory baseline, with an error
    /// text for [`crate::testing::load_cases_with`].
    pub fn read_text(&self, rel_path: &str) -> Result<String, String> {
        if let Some(text) = self.read(rel_path) {
            return Ok(text.to_string());
        }
        match &self.dir {
            Some(dir) => std::fs::read_to_string(dir.join(rel_path)).map_err(|e| e.to_string()),
            None => Err(format!(
                "`{rel_path}` is not in the baseline {}",
                self.label
            )),
        }
    }

    /// Paths of the files held in memory, relative to the project root.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

/// Loads the baseline version of `local`'s project, leaving the working tree alone.
pub fn load_baseline(
    local: &LocalProject,
    reference: &BaselineRef,
) -> Result<Baseline, BaselineError> {
    match reference {
        BaselineRef::Git(reference) => load_git(&local.root, reference),
        BaselineRef::Dir(path) => load_dir(path),
        BaselineRef::Env(name) => Err(BaselineError::EnvNeedsRemote(name.clone())),
    }
}

impl Baseline {
    /// A baseline from files fetched elsewhere (a server's deployed bundle), labelled for
    /// reports, e.g. `env:prod (3f2a1b9c)`.
    pub fn from_files(label: String, sources: Vec<SourceFile>) -> Result<Baseline, BaselineError> {
        let files = sources
            .iter()
            .map(|s| (s.path.clone(), s.text.clone()))
            .collect();
        let project = build(&label, sources)?;
        Ok(Baseline {
            label,
            project,
            files,
            dir: None,
        })
    }
}

fn load_dir(given: &Path) -> Result<Baseline, BaselineError> {
    let root = std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf());
    if !root.join(CONFIG_FILE).is_file() {
        return Err(BaselineError::NotAProject(given.to_path_buf()));
    }
    let label = given.display().to_string();
    let sources = read_sources(&root).map_err(BaselineError::Read)?;
    let mut files: BTreeMap<String, String> = sources
        .iter()
        .map(|s| (s.path.clone(), s.text.clone()))
        .collect();
    let project = build(&label, sources)?;
    let wanted = project
        .tests
        .values()
        .filter_map(|t| t.spec.dataset.as_deref())
        .chain(project.config.pricing_file.as_deref());
    for rel in wanted {
        if let Some(key) = normalize(rel)
            && let Ok(text) = std::fs::read_to_string(root.join(&key))
        {
            files.insert(key, text);
        }
    }
    Ok(Baseline {
        label,
        project,
        files,
        dir: Some(root),
    })
}

fn load_git(root: &Path, reference: &str) -> Result<Baseline, BaselineError> {
    if reference.starts_with('-') {
        return Err(BaselineError::InvalidRef {
            text: format!("git:{reference}"),
            reason: "a git ref cannot start with `-`".into(),
        });
    }
    let out = git(root, &["rev-parse", "--show-toplevel", "--show-prefix"])?;
    if !out.status.success() {
        return Err(BaselineError::NotARepo {
            path: root.to_path_buf(),
            detail: first_line(&out.stderr),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.split('\n');
    let top = PathBuf::from(lines.next().unwrap_or_default());
    let prefix = lines.next().unwrap_or_default().to_string();

    let name = if reference.is_empty() {
        default_branch(&top)?
    } else {
        reference.to_string()
    };
    let spec = format!("{name}^{{commit}}");
    let out = git(&top, &["rev-parse", "--verify", &spec])?;
    if !out.status.success() {
        return Err(BaselineError::UnknownRef {
            reference: name,
            detail: first_line(&out.stderr),
        });
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let label = format!("git:{name} ({})", commit.get(..8).unwrap_or(&commit));

    let mut args = vec!["ls-tree", "-r", "-z", commit.as_str()];
    if !prefix.is_empty() {
        args.extend(["--", prefix.as_str()]);
    }
    let out = git(&top, &args)?;
    if !out.status.success() {
        return Err(BaselineError::Git {
            command: format!("git {}", args.join(" ")),
            detail: first_line(&out.stderr),
        });
    }
    let blobs = list_blobs(&out.stdout, &prefix);
    let files = cat_blobs(&top, &blobs)?;
    if !files.contains_key(CONFIG_FILE) {
        let path = if prefix.is_empty() {
            "the repository root".to_string()
        } else {
            format!("`{}`", prefix.trim_end_matches('/'))
        };
        return Err(BaselineError::ProjectMissing { label, path });
    }
    let sources = files
        .iter()
        .filter(|(path, _)| is_source_path(path))
        .map(|(path, text)| SourceFile::new(path.clone(), text.clone()))
        .collect();
    let project = build(&label, sources)?;
    Ok(Baseline {
        label,
        project,
        files,
        dir: None,
    })
}

fn build(label: &str, sources: Vec<SourceFile>) -> Result<Project, BaselineError> {
    Project::load(sources).map_err(|diagnostics| BaselineError::Invalid {
        label: label.to_string(),
        diagnostics,
    })
}

/// `main` if it exists, else `master`, else what `origin/HEAD` points at.
fn default_branch(top: &Path) -> Result<String, BaselineError> {
    for name in ["main", "master"] {
        let spec = format!("refs/heads/{name}^{{commit}}");
        if git(top, &["rev-parse", "--verify", "--quiet", &spec])?
            .status
            .success()
        {
            return Ok(name.to_string());
        }
    }
    let out = git(
        top,
        &[
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    )?;
    let target = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !target.is_empty() {
        Ok(target)
    } else {
        Err(BaselineError::NoDefaultBranch)
    }
}

/// One file to read: its object id and its path relative to the project root.
struct Blob {
    oid: String,
    rel: String,
}

/// Parses `ls-tree -r -z` output (`<mode> <type> <oid>\t<path>\0`): regular files only
/// (no symlinks or submodules), with paths made relative to the project.
fn list_blobs(out: &[u8], prefix: &str) -> Vec<Blob> {
    out.split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (meta, path) = entry.split_once('\t')?;
            let mut meta = meta.split(' ');
            let (mode, kind, oid) = (meta.next()?, meta.next()?, meta.next()?);
            if kind != "blob" || mode == "120000" {
                return None;
            }
            let rel = path.strip_prefix(prefix)?;
            Some(Blob {
                oid: oid.to_string(),
                rel: rel.to_string(),
            })
        })
        .collect()
}

/// Reads every blob with one `git cat-file --batch`; files that are not UTF-8 are left out.
fn cat_blobs(top: &Path, blobs: &[Blob]) -> Result<BTreeMap<String, String>, BaselineError> {
    let mut files = BTreeMap::new();
    if blobs.is_empty() {
        return Ok(files);
    }
    let command = "git cat-file --batch";
    let failed = |detail: String| BaselineError::Git {
        command: command.into(),
        detail,
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut input = String::new();
    for blob in blobs {
        input.push_str(&blob.oid);
        input.push('\n');
    }
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| failed("no stdin".into()))?;
    // Written from another thread so a full output pipe cannot block the input.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("no stdout".into()))?;
    let read = read_batch(BufReader::new(stdout), blobs, &mut files);
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("writer thread panicked")));
    if !out.status.success() {
        return Err(failed(first_line(&out.stderr)));
    }
    read.map_err(|e| failed(e.to_string()))?;
    written.map_err(|e| failed(e.to_string()))?;
    Ok(files)
}

/// Reads `<oid> <type> <size>\n<content>\n` (or `<oid> missing\n`) for each blob in order.
fn read_batch(
    mut reader: impl BufRead,
    blobs: &[Blob],
    files: &mut BTreeMap<String, String>,
) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    for blob in blobs {
        let mut header = Vec::new();
        if reader.read_until(b'\n', &mut header)? == 0 {
            return Err(bad("output ended early"));
        }
        let header = String::from_utf8_lossy(&header);
        let fields: Vec<&str> = header.trim_end().split(' ').collect();
        let [_, _, size] = fields[..] else {
            // `<oid> missing`: nothing to read.
            continue;
        };
        let size: u64 = size.parse().map_err(|_| bad("bad size in header"))?;
        let mut content = Vec::new();
        (&mut reader).take(size).read_to_end(&mut content)?;
        if content.len() as u64 != size {
            return Err(bad("output ended early"));
        }
        let mut newline = [0u8; 1];
        reader.read_exact(&mut newline)?;
        if let Ok(text) = String::from_utf8(content) {
            files.insert(blob.rel.clone(), text);
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<Output, BaselineError> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error)
}

fn spawn_error(e: std::io::Error) -> BaselineError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BaselineError::GitMissing
    } else {
        BaselineError::Git {
            command: "git".into(),
            detail: e.to_string(),
        }
    }
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or("git gave no details").to_string()
}

/// `./data/../data/x.csv` → `data/x.csv`; `None` for paths that leave the project or are
/// absolute.
fn normalize(rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Selection, load_cases_with};

    const CONFIG: &str = "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n";
    const TEST_FILE: &str =
        "target: p\ndataset: ./data/rows.csv\ncases:\n  - name: inline\n    input: {text: hi}\n";

    fn prompt(text: &str) -> String {
        format!("input: {{text: string}}\nmessages: [{{user: \"{text} {{{{ text }}}}\"}}]\n")
    }

    fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn write_project(root: &Path, prompt_text: &str, rows: &str) {
        write(root, "flowrun.yaml", CONFIG);
        write(root, "prompts/p.yaml", prompt(prompt_text));
        write(root, "tests/p.test.yaml", TEST_FILE);
        write(root, "data/rows.csv", rows);
    }

    /// Whether git can be run; prints a loud line when it cannot.
    fn have_git() -> bool {
        let ok = Command::new("git")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPED: git is not installed; the git baseline test did not run");
        }
        ok
    }

    /// Runs git in `dir`, isolated from the user's configuration.
    fn run(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", dir.join(".no-global-gitconfig"))
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new repository whose first branch is `branch`.
    fn init(dir: &Path, branch: &str) {
        run(dir, &["init", "-q"]);
        run(
            dir,
            &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
        );
    }

    fn commit_all(dir: &Path, message: &str) {
        run(dir, &["add", "-A"]);
        run(dir, &["commit", "-q", "-m", message]);
    }

    fn snapshot(dir: &Path) -> (String, Vec<(PathBuf, Vec<u8>)>) {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".git") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    out.push((path, bytes));
                }
            }
        }
        let mut files = Vec::new();
        walk(dir, &mut files);
        files.sort();
        (run(dir, &["status", "--porcelain"]), files)
    }

    fn user_text(project: &Project, name: &str) -> String {
        format!("{:?}", project.prompts[name].spec.messages)
    }

    #[test]
    fn parses_references() {
        assert_eq!(
            BaselineRef::parse("git:main").unwrap(),
            BaselineRef::Git("main".into())
        );
        assert_eq!(
            BaselineRef::parse("git:HEAD~1").unwrap(),
            BaselineRef::Git("HEAD~1".into())
        );
        assert_eq!(
            BaselineRef::parse("git:").unwrap(),
            BaselineRef::Git(String::new())
        );
        assert_eq!(
            BaselineRef::parse("dir:../old").unwrap(),
            BaselineRef::Dir("../old".into())
        );
        assert_eq!(
            "../old".parse::<BaselineRef>().unwrap(),
            BaselineRef::Dir("../old".into())
        );
        assert_eq!(
            BaselineRef::parse("env:prod").unwrap(),
            BaselineRef::Env("prod".into())
        );
        assert!(BaselineRef::parse("env:").is_err());
        assert!(BaselineRef::parse("").is_err());
        assert!(BaselineRef::parse("dir:").is_err());
        assert!(BaselineRef::parse("git:--output=x").is_err());
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(
            normalize("./data/../data/x.csv").as_deref(),
            Some("data/x.csv")
        );
        assert_eq!(normalize("../x.csv"), None);
        assert_eq!(normalize("/etc/passwd"), None);
    }

    #[test]
    fn git_baseline_has_the_committed_files_and_leaves_the_working_tree_alone() {
        if !have_git() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        init(root, "main");
        write_project(root, "committed", "name,text\nfirst,one\n");
        write(root, "data/blob.bin", [0xff_u8, 0xfe, 0x00, 0x01]);
        commit_all(root, "first");
        // The draft: a changed prompt and dataset, an uncommitted prompt, a staged change.
        write(root, "prompts/p.yaml", prompt("draft"));
        write(root, "data/rows.csv", "name,text\nchanged,two\n");
        write(root, "prompts/new.yaml", prompt("new"));
        write(root, "flows/.keep", "");
        run(root, &["add", "prompts/new.yaml"]);
        let before = snapshot(root);
        let local = LocalProject::open(root).unwrap();
        assert!(user_text(&local.project, "p").contains("draft"));

        let baseline = load_baseline(&local, &BaselineRef::Git("HEAD".into())).unwrap();
        assert!(
            baseline.label.starts_with("git:HEAD ("),
            "{}",
            baseline.label
        );
        assert_eq!(baseline.label.len(), "git:HEAD (12345678)".len());
        assert_eq!(
            baseline.project.prompts.keys().collect::<Vec<_>>(),
            ["p"],
            "the uncommitted prompt is not in the baseline"
        );
        assert!(user_text(&baseline.project, "p").contains("committed"));
        assert_eq!(
            baseline.read("prompts/p.yaml").unwrap(),
            prompt("committed")
        );
        assert_eq!(baseline.read("prompts/new.yaml"), None);
        assert_eq!(
            baseline.read("data/blob.bin"),
            None,
            "binary files are skipped"
        );
        assert_eq!(
            baseline.read("./data/rows.csv"),
            Some("name,text\nfirst,one\n")
        );
        let read = |rel: &str| baseline.read_text(rel);
        let cases = load_cases_with(&baseline.project, &Selection::default(), &read).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["inline", "first"]);

        assert_eq!(
            snapshot(root),
            before,
            "the working tree and index are untouched"
        );
        let draft = LocalProject::open(root).unwrap();
        assert_eq!(draft.project.hash, local.project.hash);
    }

    #[test]
    fn git_alone_picks_main_for_a_project_in_a_subdirectory() {
        if !have_git() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        init(repo, "main");
        let root = repo.join("apps/my project");
        write_project(&root, "on main", "name,text\nfirst,one\n");
        // Another project elsewhere in the repository stays out.
        write(repo, "other/flowrun.yaml", CONFIG);
        write(repo, "other/prompts/x.yaml", prompt("other"));
        write(repo, "apps/my project-2/prompts/y.yaml", prompt("sibling"));
        commit_all(repo, "main");
        run(repo, &["checkout", "-q", "-b", "feature"]);
        write(&root, "prompts/p.yaml", prompt("on feature"));
        commit_all(repo, "feature");
        write(&root, "prompts/p.yaml", prompt("draft"));

        let local = LocalProject::open(&root).unwrap();
        let baseline = load_baseline(&local, &BaselineRef::parse("git:").unwrap()).unwrap();
        assert!(
            baseline.label.starts_with("git:main ("),
            "{}",
            baseline.label
        );
        assert!(user_text(&baseline.project, "p").contains("on main"));
        assert_eq!(
            baseline.paths().collect::<Vec<_>>(),
            [
                "data/rows.csv",
                "flowrun.yaml",
                "prompts/p.yaml",
                "tests/p.test.yaml"
            ]
        );
        assert_eq!(
            baseline.read("data/rows.csv"),
            Some("name,text\nfirst,one\n")
        );

        let feature = load_baseline(&local, &BaselineRef::Git("feature".into())).unwrap();
        assert!(user_text(&feature.project, "p").contains("on feature"));
        let previous = load_baseline(&local, &BaselineRef::Git("HEAD~1".into())).unwrap();
        assert!(user_text(&previous.project, "p").contains("on main"));
    }

    #[test]
    fn git_alone_falls_back_to_master_and_fails_without_a_branch() {
        if !have_git() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        init(root, "master");
        write_project(root, "on master", "name,text\nfirst,one\n");
        let local = LocalProject::open(root).unwrap();
        let err = load_baseline(&local, &BaselineRef::Git(String::new())).unwrap_err();
        assert!(matches!(err, BaselineError::NoDefaultBranch), "{err}");
        commit_all(root, "first");
        let baseline = load_baseline(&local, &BaselineRef::Git(String::new())).unwrap();
        assert!(
            baseline.label.starts_with("git:master ("),
            "{}",
            baseline.label
        );
    }

    #[test]
    fn unknown_refs_and_missing_projects_are_clear_errors() {
        if !have_git() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        init(repo, "main");
        write(repo, "README.md", "before the project\n");
        commit_all(repo, "readme");
        let root = repo.join("proj");
        write_project(&root, "p", "name,text\nfirst,one\n");
        commit_all(repo, "project");
        let local = LocalProject::open(&root).unwrap();

        let err = load_baseline(&local, &BaselineRef::Git("no-such-branch".into())).unwrap_err();
        assert!(matches!(err, BaselineError::UnknownRef { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("`no-such-branch`"), "{text}");
        assert!(!text.contains('\n'), "only git's first line: {text}");

        let err = load_baseline(&local, &BaselineRef::Git("HEAD~1".into())).unwrap_err();
        assert!(matches!(err, BaselineError::ProjectMissing { .. }), "{err}");
        assert!(err.to_string().contains("`proj`"), "{err}");
    }

    #[test]
    fn outside_a_repository_suggests_dir() {
        if !have_git() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let inside = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "--git-dir"])
            .output()
            .unwrap();
        if inside.status.success() {
            eprintln!("SKIPPED: the temp directory is inside a git repository");
            return;
        }
        write_project(root, "p", "name,text\nfirst,one\n");
        let local = LocalProject::open(root).unwrap();
        let err = load_baseline(&local, &BaselineRef::Git("main".into())).unwrap_err();
        assert!(matches!(err, BaselineError::NotARepo { .. }), "{err}");
        assert!(err.to_string().contains("dir:"), "{err}");
    }

    #[test]
    fn dir_baseline_reads_the_other_directory() {
        let draft = tempfile::tempdir().unwrap();
        let old = tempfile::tempdir().unwrap();
        write_project(draft.path(), "draft", "name,text\nchanged,two\n");
        write_project(old.path(), "old", "name,text\nfirst,one\n");
        write(old.path(), "data/extra.csv", "name,text\nx,y\n");
        let local = LocalProject::open(draft.path()).unwrap();
        let baseline = load_baseline(&local, &BaselineRef::Dir(old.path().to_path_buf())).unwrap();
        assert_eq!(baseline.label, old.path().display().to_string());
        assert!(user_text(&baseline.project, "p").contains("old"));
        assert_eq!(
            baseline.read("data/rows.csv"),
            Some("name,text\nfirst,one\n")
        );
        assert_eq!(
            baseline.read_text("data/extra.csv").unwrap(),
            "name,text\nx,y\n"
        );
        assert!(baseline.read_text("data/none.csv").is_err());
        let read = |rel: &str| baseline.read_text(rel);
        let cases = load_cases_with(&baseline.project, &Selection::default(), &read).unwrap();
        assert_eq!(cases[1].name, "first");

        let empty = tempfile::tempdir().unwrap();
        let err = load_baseline(&local, &BaselineRef::Dir(empty.path().to_path_buf()));
        assert!(matches!(err, Err(BaselineError::NotAProject(_))));
    }

    #[test]
    fn a_broken_baseline_says_the_problem_is_in_the_baseline() {
        let draft = tempfile::tempdir().unwrap();
        let old = tempfile::tempdir().unwrap();
        write_project(draft.path(), "draft", "name,text\nfirst,one\n");
        write_project(old.path(), "old", "name,text\nfirst,one\n");
        write(old.path(), "prompts/p.yaml", "messages: [unclosed\n");
        let local = LocalProject::open(draft.path()).unwrap();
        let err = load_baseline(&local, &BaselineRef::Dir(old.path().to_path_buf())).unwrap_err();
        let BaselineError::Invalid { diagnostics, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(diagnostics.0[0].file, "prompts/p.yaml");
        assert!(err.to_string().contains("in the baseline"), "{err}");
    }
}
