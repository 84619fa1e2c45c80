//! The local side of `flowrun test`: choosing test files and cases, reading datasets from
//! disk, and running `command` assertions as processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use flowrun_core::Diagnostic;
use flowrun_core::assert::{CommandOutput, CommandRunner};
use flowrun_core::project::{Project, TestFile};
use flowrun_core::testing::{TestCase, cases_of, dataset};
use tokio::io::AsyncWriteExt;

use crate::LocalProject;

/// Which cases to run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Test files (`tests/x.test.yaml` or `x`) or targets (`flow/triage`, `triage`); empty
    /// means every test file.
    pub names: Vec<String>,
    /// Only cases whose name contains this text.
    pub filter: Option<String>,
    /// Only cases with one of these tags.
    pub tags: Vec<String>,
}

fn file_matches(project: &Project, file: &TestFile, name: &str) -> bool {
    let stem = file
        .path
        .trim_start_matches("tests/")
        .trim_end_matches(".test.yaml")
        .trim_end_matches(".test.yml");
    if file.path == name || stem == name {
        return true;
    }
    match (
        project.resolve_target(name),
        project.resolve_target(&file.spec.target),
    ) {
        (Ok(wanted), Ok(tested)) => wanted == tested,
        _ => false,
    }
}

/// Every selected case, with all problems (in test files and datasets) reported together.
/// Datasets are read from disk, relative to the project root.
pub fn load_cases(
    local: &LocalProject,
    selection: &Selection,
) -> Result<Vec<TestCase>, Vec<Diagnostic>> {
    let read = |rel: &str| std::fs::read_to_string(local.root.join(rel)).map_err(|e| e.to_string());
    load_cases_with(&local.project, selection, &read)
}

/// Like [`load_cases`], with datasets read by `read` (given the dataset path relative to the
/// project root; its error text is shown as "cannot read dataset: <error>"), e.g. from a
/// baseline version of the project.
pub fn load_cases_with(
    project: &Project,
    selection: &Selection,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<TestCase>, Vec<Diagnostic>> {
    let mut unknown = Vec::new();
    for name in &selection.names {
        if !project
            .tests
            .values()
            .any(|f| file_matches(project, f, name))
        {
            let mut d = Diagnostic::error(
                name.clone(),
                format!("no test file or tested target matches `{name}`"),
            );
            d.help = Some("test files live in `tests/` and end in `.test.yaml`".into());
            unknown.push(d);
        }
    }
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut cases = Vec::new();
    let mut diags = Vec::new();
    for file in project.tests.values() {
        if !selection.names.is_empty()
            && !selection
                .names
                .iter()
                .any(|n| file_matches(project, file, n))
        {
            continue;
        }
        let rows = match &file.spec.dataset {
            Some(path) => match read_dataset(read, path) {
                Ok(rows) => Some((path.as_str(), rows)),
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            },
            None => None,
        };
        match cases_of(project, file, rows) {
            Ok(c) => cases.extend(c),
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    cases.retain(|c| {
        selection
            .filter
            .as_ref()
            .is_none_or(|f| c.name.contains(f.as_str()))
            && (selection.tags.is_empty() || c.tags.iter().any(|t| selection.tags.contains(t)))
    });
    Ok(cases)
}

fn read_dataset(
    read: &dyn Fn(&str) -> Result<String, String>,
    rel: &str,
) -> Result<Vec<dataset::DatasetRow>, Diagnostic> {
    let text = read(rel).map_err(|e| {
        let mut d = Diagnostic::error(rel, format!("cannot read dataset: {e}"));
        d.help = Some("dataset paths are relative to the project root".into());
        d
    })?;
    dataset::parse(rel, &text)
}

/// Runs `command` assertions with `sh -c` in the project root.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    pub dir: PathBuf,
    pub timeout: Duration,
}

#[async_trait]
impl CommandRunner for ProcessRunner {
    async fn run(&self, command: &str, stdin: &str) -> Result<CommandOutput, String> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        if let Some(mut input) = child.stdin.take() {
            // A program that exits without reading its input is fine.
            let _ = input.write_all(stdin.as_bytes()).await;
        }
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("`{command}` did not finish within {:?}", self.timeout))?
            .map_err(|e| format!("`{command}` failed: {e}"))?;
        Ok(CommandOutput {
            exit_code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn project(dir: &std::path::Path) -> LocalProject {
        write(
            dir,
            "flowrun.yaml",
            "providers: {m: {kind: mock}}\ndefaults: {model: m/x}\n",
        );
        write(
            dir,
            "prompts/p.yaml",
            "input: {text: string, n: {type: integer, default: 1}}\nmessages: [{user: \"{{ text }}\"}]\n",
        );
        write(
            dir,
            "tests/p.test.yaml",
            "target: p\ndataset: data/rows.csv\ndefaults: {tags: [all]}\ncases:\n  - name: inline\n    input: {text: hi}\n    tags: [quick]\n    assert: [{contains: hi}]\n",
        );
        write(
            dir,
            "data/rows.csv",
            "name,text,n,tags\nfirst,one,2,\"x,y\"\nsecond,two,3,\n",
        );
        LocalProject::open(dir).unwrap()
    }

    #[test]
    fn loads_inline_and_dataset_cases_with_typed_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let local = project(dir.path());
        let cases = load_cases(&local, &Selection::default()).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["inline", "first", "second"]);
        assert_eq!(cases[1].input["n"], 2);
        assert_eq!(cases[1].tags, ["all", "x", "y"]);
        let tagged = load_cases(
            &local,
            &Selection {
                tags: vec!["quick".into()],
                ..Selection::default()
            },
        )
        .unwrap();
        assert_eq!(tagged.len(), 1);
        let filtered = load_cases(
            &local,
            &Selection {
                filter: Some("sec".into()),
                ..Selection::default()
            },
        )
        .unwrap();
        assert_eq!(filtered[0].name, "second");
        assert!(
            load_cases(
                &local,
                &Selection {
                    names: vec!["nope".into()],
                    ..Selection::default()
                }
            )
            .is_err()
        );
        assert_eq!(
            load_cases(
                &local,
                &Selection {
                    names: vec!["prompt/p".into()],
                    ..Selection::default()
                }
            )
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn dataset_problems_point_at_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let local = project(dir.path());
        write(dir.path(), "data/rows.csv", "text,n\nok,1\nbad,many\n");
        let local = LocalProject::open(&local.root).unwrap();
        let diags = load_cases(&local, &Selection::default()).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].file, "data/rows.csv");
        assert_eq!(diags[0].location.map(|l| l.line), Some(3));
        assert!(
            diags[0].message.contains("`many` is not a valid integer"),
            "{}",
            diags[0].message
        );
    }

    #[tokio::test]
    async fn commands_get_stdin_and_report_exit_codes() {
        let runner = ProcessRunner {
            dir: std::env::temp_dir(),
            timeout: Duration::from_secs(10),
        };
        let out = runner
            .run("grep -q refund && echo '{\"score\": 1}'", "a refund please")
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout.trim(), "{\"score\": 1}");
        let out = runner.run("exit 3", "").await.unwrap();
        assert_eq!(out.exit_code, Some(3));
    }
}
