//! The audit file under logrotate (SPEC §6): moved away under concurrent traffic, `SIGHUP`,
//! and the next lines land in a new file at the configured path; across the two files no line
//! is lost, duplicated or split.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::upstream::Upstream;
use crate::harness::{poll_until, require_tool, Dest, GateBuilder, GateProc};
use std::process::Command;

/// The request ids of a JSONL audit file; panics on a missing file and on a line that is not
/// a whole JSON object.
fn ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends inside a line",
        path.display()
    );
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not a whole JSON line ({e}): {l}", path.display()));
            v["request_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Waits (bounded) until `path` holds at least `n` lines.
async fn wait_lines(path: &Path, n: usize) {
    let have = || {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let enough = poll_until(Duration::from_secs(30), || async {
        (have() >= n).then_some(())
    })
    .await;
    assert!(
        enough.is_some(),
        "{} has {} of {n} lines after 30 s",
        path.display(),
        have()
    );
}

/// Requests with unique `X-Request-Id`s from 4 clients until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    answered: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(gate: &GateProc) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (client, stop, next, answered) =
                (gate.client(), stop.clone(), next.clone(), answered.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let id = format!("rot.{}", next.fetch_add(1, Ordering::Relaxed));
                    let r = client
                        .post("http://api.eu.test/v1/events")
                        .header("x-request-id", &id)
                        .header("content-type", "application/json")
                        .body(r#"{"event":"ping"}"#)
                        .send()
                        .await;
                    // The rotation must not cost a request: a transport error fails the
                    // test like a wrong status.
                    let r = r.unwrap_or_else(|e| panic!("{id}: request failed: {e:?}"));
                    assert_eq!(r.status(), 200, "{id}");
                    r.bytes()
                        .await
                        .unwrap_or_else(|e| panic!("{id}: body failed: {e:?}"));
                    answered.lock().unwrap().push(id);
                }
            }));
        }
        Traffic {
            stop,
            next,
            answered,
            tasks,
        }
    }

    /// Stops the clients, stops the gate (SIGTERM: the drain flushes every recorded line) and
    /// checks the two files: both hold lines, all whole; no id twice; every answered request
    /// is in one of them; nothing that was not sent.
    async fn finish(self, gate: &mut GateProc, old: &Path, new: &Path) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        gate.signal("TERM");
        assert_eq!(
            gate.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            gate.logs()
        );
        let (old, new) = (ids(old), ids(new));
        assert!(
            !old.is_empty() && !new.is_empty(),
            "{} old, {} new",
            old.len(),
            new.len()
        );
        let mut seen = HashSet::new();
        for id in old.iter().chain(&new) {
            assert!(seen.insert(id.clone()), "{id} written twice");
        }
        let answered: HashSet<String> = self.answered.lock().unwrap().iter().cloned().collect();
        let missing: Vec<&String> = answered.difference(&seen).collect();
        assert!(missing.is_empty(), "answered but not audited: {missing:?}");
        let sent = self.next.load(Ordering::Relaxed);
        assert!(seen.iter().all(|id| id
            .strip_prefix("rot.")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < sent)));
        assert!(
            gate.logs().contains("audit log reopened"),
            "{}",
            gate.logs()
        );
    }
}

async fn gate(up: &Upstream) -> GateProc {
    GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_file_moved_then_sighup_loses_and_splits_no_line() {
    let up = Upstream::http().await;
    let mut gate = gate(&up).await;
    let audit = gate.dir().join("data/audit.jsonl");
    let moved = gate.dir().join("data/audit.jsonl.1");
    let traffic = Traffic::start(&gate);
    // Lines reach the file (flushed at least every second), then logrotate's move + SIGHUP.
    wait_lines(&audit, 20).await;
    std::fs::rename(&audit, &moved).unwrap();
    gate.signal("HUP");
    // The gate opens a new file at the configured path and the traffic goes on into it.
    wait_lines(&audit, 20).await;
    traffic.finish(&mut gate, &moved, &audit).await;
}

/// The shipped logrotate file (its path and its `systemctl reload` pointed at the test's
/// gate) run by the real logrotate under traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_logrotate_file_rotates_without_loss() {
    require_tool("logrotate");
    let up = Upstream::http().await;
    let mut gate = gate(&up).await;
    let dir = gate.dir().join("data");
    let audit = dir.join("audit.jsonl");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/transfer-gate.logrotate"),
    )
    .unwrap();
    assert!(shipped.contains("/var/log/transfer-gate/audit.jsonl {"));
    assert!(shipped.contains("systemctl reload transfer-gate.service"));
    let conf = shipped
        .replace(
            "/var/log/transfer-gate/audit.jsonl",
            audit.to_str().unwrap(),
        )
        .replace(
            "systemctl reload transfer-gate.service",
            &format!("kill -HUP {}", gate.pid()),
        );
    let conf_path = gate.dir().join("logrotate.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let traffic = Traffic::start(&gate);
    wait_lines(&audit, 20).await;
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(gate.dir().join("logrotate.state"))
        .arg(&conf_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.jsonl-"))
        })
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    wait_lines(&audit, 20).await;
    traffic.finish(&mut gate, &rotated[0], &audit).await;
}
