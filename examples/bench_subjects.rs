//! Memory per counted subject in the gate process (SPEC §10 "≤ 64 bytes of memory per counted
//! subject", measured on the binary; `scripts/bench-subjects` runs it): starts the release gate
//! as a child process in observe mode (everything forwarded and counted, no ceiling stops the
//! count) with the durable local ledger, and a loopback upstream. Sends `SUBJECTS` new subjects
//! in JSON bodies of `BATCH` records (`{"user_id":"<n>"}`, one subject each, counted in the
//! entity's and the destination's scope), one request at a time, and reads the process's
//! resident memory after `IDLE` seconds without traffic, before and after. Prints a Markdown
//! table. Environment: `SUBJECTS` (default 10,000,000), `BATCH` (default 20,000), `IDLE`
//! (default 3), `GATE_BIN` (default `target/release/transfer-gate`).

mod common;

use anyhow::{bail, Result};
use common::{env_u64, start_gate_with, Gate};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HOST: &str = "subjects.bench.test";

async fn start_gate(bin: &Path, dir: &Path, up: SocketAddr) -> Result<Gate> {
    let rest = format!(
        r#"[entity]
name = "Bench Co"
regime = "cac-2024"

[ledger]
hash_key_file = "secrets/subject-hash.key"

[inspection.subjects]
fields = ["user_id"]

[[destination]]
name = "subjects"
recipient = "Bench Recipient"
country = "DE"
hosts = ["{HOST}"]
connect_to = "{up}"
"#
    );
    start_gate_with(bin, dir, "mode = \"observe\"\n", &rest).await
}

/// A `/proc/<pid>/status` field in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A JSON array of `n` records with the user ids `from..from + n`.
fn body(from: u64, n: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(n as usize * 24 + 2);
    b.push(b'[');
    for i in from..from + n {
        if i != from {
            b.push(b',');
        }
        b.extend_from_slice(format!("{{\"user_id\":\"u{i}\"}}").as_bytes());
    }
    b.push(b']');
    b
}

async fn send(c: &reqwest::Client, from: u64, n: u64) -> Result<()> {
    let r = c
        .post(format!("http://{HOST}/v1/batch"))
        .header("content-type", "application/json")
        .body(body(from, n))
        .send()
        .await?;
    if r.status() != 200 {
        bail!("status {} at subject {from}", r.status());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let subjects = env_u64("SUBJECTS", 10_000_000);
    let batch = env_u64("BATCH", 20_000).max(1);
    let idle = Duration::from_secs(env_u64("IDLE", 3));
    let bin = PathBuf::from(
        std::env::var("GATE_BIN").unwrap_or_else(|_| "target/release/transfer-gate".into()),
    );
    let dir = std::env::temp_dir().join(format!("tg-bench-subjects-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up = common::upstream(None).await?;
    let gate = start_gate(&bin, &dir, up).await?;
    let pid = gate.child.id();
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", gate.proxy))?)
        .build()?;
    // Warm-up: one batch of other subjects, so buffers, pools and the first table sizes exist
    // before the baseline is read.
    send(&c, u64::MAX / 2, batch).await?;
    tokio::time::sleep(idle).await;
    let rss0 = status_bytes(pid, "VmRSS:");
    let started = Instant::now();
    let mut sent = 0;
    while sent < subjects {
        let n = batch.min(subjects - sent);
        send(&c, sent, n).await?;
        sent += n;
    }
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(idle).await;
    let rss1 = status_bytes(pid, "VmRSS:");
    let hwm = status_bytes(pid, "VmHWM:");
    let per = |b: u64| b as f64 / subjects as f64;
    println!(
        "| subjects | batch | fill | RSS before | RSS after | peak (VmHWM) | growth per subject |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {subjects} | {batch} | {secs:.1} s ({:.0} k subjects/s) | {:.1} MB | {:.1} MB | {:.1} MB | **{:.1} B** |",
        subjects as f64 / secs / 1e3,
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        hwm as f64 / 1e6,
        per(rss1.saturating_sub(rss0)),
    );
    drop(gate);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
