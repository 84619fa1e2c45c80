//! Integration test of the `flowrun-fakellm` binary: the `listening on` line,
//! the flags, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::openai_body;
use serde_json::Value;

struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-fakellm"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix("listening on "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let port: u16 = base_url
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    Server { child, base_url }
}

#[tokio::test]
async fn binary_serves_fixed_reply_and_stops_on_sigterm() {
    let mut server = spawn(&[
        "--port",
        "0",
        "--reply",
        "fixed answer",
        "--latency-ms",
        "1",
        "--seed",
        "9",
    ]);
    let body: Value = common::client()
        .post(format!("{}/v1/chat/completions", server.base_url))
        .json(&openai_body("gpt-test", "ignored"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "fixed answer");

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_fault_flags() {
    let server = spawn(&["--fail-429", "1", "--retry-after", "4"]);
    let r = common::client()
        .post(format!("{}/v1/chat/completions", server.base_url))
        .json(&openai_body("gpt-test", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "4");

    let out = Command::new(env!("CARGO_BIN_EXE_flowrun-fakellm"))
        .args(["--fail-500", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probability"));
}
