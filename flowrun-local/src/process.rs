//! Local programs for agents: [`LocalProcesses`] implements flowrun-core's `ProcessHost`,
//! running command tools and stdio MCP servers in the project root with `tokio::process`.
//!
//! Every child is started with `kill_on_drop`, so none outlives the executor that started
//! it, even when a run is cancelled or the executor is dropped without a shutdown.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowrun_core::agent::{ProcessHandle, ProcessHost, ProcessOutput, ProcessSpec, SpawnedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How much of a program's standard error is kept, in bytes.
const STDERR_TAIL: usize = 4096;

/// Runs programs in `dir` (the project root).
#[derive(Debug, Clone)]
pub struct LocalProcesses {
    pub dir: PathBuf,
}

impl LocalProcesses {
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(LocalProcesses { dir: dir.into() })
    }

    fn command(&self, spec: &ProcessSpec) -> Result<Command, String> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err("the command is empty".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }
}

/// Reads all of `from`, keeping the first `limit` bytes; says whether there was more.
async fn read_capped(mut from: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut more = false;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
    (kept, more)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[async_trait]
impl ProcessHost for LocalProcesses {
    async fn run(
        &self,
        spec: &ProcessSpec,
        stdin: Vec<u8>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ProcessOutput, String> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let mut child = self
            .command(spec)?
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let (Some(mut input), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("cannot talk to `{program}`"));
        };
        let work = async move {
            let write = async move {
                // A program that exits without reading its input is fine.
                let _ = input.write_all(&stdin).await;
                drop(input);
            };
            let ((), (out, truncated), (err, _), status) = tokio::join!(
                write,
                read_capped(stdout, max_output),
                read_capped(stderr, STDERR_TAIL),
                child.wait()
            );
            (out, truncated, err, status)
        };
        // On timeout the child is dropped with the future, which kills it.
        let (out, truncated, err, status) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("`{program}` did not finish within {timeout:?}; it was killed"))?;
        let status = status.map_err(|e| format!("`{program}` failed: {e}"))?;
        Ok(ProcessOutput {
            exit_code: status.code(),
            stdout: lossy(&out),
            stderr: lossy(&err),
            truncated,
        })
    }

    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, String> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let mut child = self
            .command(spec)?
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("cannot talk to `{program}`"));
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let keep = tail.clone();
        let reader = tokio::spawn(async move {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut t) = keep.lock() {
                    t.extend_from_slice(&buf[..n]);
                    let over = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..over);
                }
            }
        });
        Ok(SpawnedProcess {
            stdout: Box::new(stdout),
            stdin: Box::new(stdin),
            handle: Box::new(LocalChild {
                child,
                tail,
                reader: Some(reader),
            }),
        })
    }
}

/// A started program; killed when dropped.
struct LocalChild {
    child: Child,
    tail: Arc<Mutex<Vec<u8>>>,
    /// The task keeping the end of standard error (done once the program has ended).
    reader: Option<tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl ProcessHandle for LocalChild {
    async fn shutdown(&mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        // Its standard error is closed now, unless a grandchild holds it open.
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
    }

    fn stderr_tail(&self) -> String {
        self.tail.lock().map(|t| lossy(&t)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hello".into())],
        }
    }

    #[tokio::test]
    async fn runs_with_input_env_cap_and_timeout() {
        let host = LocalProcesses::new(std::env::temp_dir());
        let out = host
            .run(
                &spec(&["sh", "-c", "printf \"$GREETING \"; cat"]),
                b"{\"a\":1}".to_vec(),
                Duration::from_secs(20),
                1024,
            )
            .await
            .unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_str(), out.truncated),
            (Some(0), "hello {\"a\":1}", false)
        );
        let out = host
            .run(
                &spec(&["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x"]),
                Vec::new(),
                Duration::from_secs(20),
                100,
            )
            .await
            .unwrap();
        assert_eq!((out.stdout.len(), out.truncated), (100, true));
        let err = host
            .run(
                &spec(&["sleep", "30"]),
                Vec::new(),
                Duration::from_millis(200),
                100,
            )
            .await
            .unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        let err = host
            .run(
                &spec(&["no-such-program-flowrun"]),
                Vec::new(),
                Duration::from_secs(5),
                100,
            )
            .await
            .unwrap_err();
        assert!(
            err.starts_with("cannot start `no-such-program-flowrun`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_spawned_program_is_ended_by_shutdown() {
        let host = LocalProcesses::new(std::env::temp_dir());
        let mut p = host
            .spawn(&spec(&[
                "sh",
                "-c",
                "echo starting >&2; exec sleep 30 2>/dev/null",
            ]))
            .await
            .unwrap();
        let mut line = [0u8; 1];
        // Nothing on stdout: the read ends when the program is killed.
        let read = tokio::spawn(async move { p.stdout.read(&mut line).await });
        p.handle.shutdown(Duration::from_millis(50)).await;
        assert_eq!(read.await.unwrap().unwrap(), 0);
        assert_eq!(p.handle.stderr_tail(), "starting\n");
    }
}
