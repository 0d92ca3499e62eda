//! Python test peers (the WebSocket and gRPC servers of `tests/it/*_peer.py`): started as a
//! child process that prints its port on its first line and logs one JSON object per line, and
//! their clients, which print one JSON report.

use super::require_tool;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `python3 <script> <args…>` and reads the port it prints first; `needs` names the
/// Python package the peer needs, for the message when it does not start.
pub fn start(script: &str, args: &[&std::ffi::OsStr], needs: &str) -> (Child, u16) {
    require_tool("python3");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("the test peer {script} did not start (python3 with `{needs}` is required; scripts/test installs it): {line:?}")
    });
    (child, port)
}

/// A peer's JSON-lines log, as written so far.
pub fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs a peer's client, `python3 <args…>`, off the async runtime with the proxy variables of
/// the environment removed (it goes where its arguments say), and parses the one-line JSON
/// report it prints.
pub async fn client_report(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("grpc_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "client printed no report: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
