//! Memory under many large uploads (SPEC §10 "1,000 concurrent uploads of 100 MB each stay
//! under 512 MB resident"; `scripts/bench-memory` runs it): starts the release gate as a child
//! process, a loopback upstream that reads and discards every body, and `UPLOADS` concurrent
//! uploads of `SIZE_MB` each, half over HTTP/1.1 (one connection each) and half as h2c streams
//! (100 per connection). Bodies are NDJSON event records, one in eight carrying a `user_id` of
//! a thousand subjects, so the whole stream is inspected and gated record by record. Samples
//! the gate's resident memory every 100 ms and prints a Markdown table with the peak
//! (`VmHWM`). Environment: `UPLOADS` (default 1000), `SIZE_MB` (default 100), `GATE_BIN`
//! (default `target/release/transfer-gate`).

mod common;

use anyhow::Result;
use bytes::Bytes;
use common::{env_u64, Gate};
use futures_util::StreamExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const HOST: &str = "uploads.bench.test";
const CHUNK: usize = 64 * 1024;
const STREAMS_PER_H2_CONN: usize = 100;

/// A loopback upstream that reads every body to its end, counting bytes, and answers 200.
async fn upstream(received: Arc<AtomicU64>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let mut body = req.into_body();
                        while let Some(Ok(f)) = http_body_util::BodyExt::frame(&mut body).await {
                            if let Some(d) = f.data_ref() {
                                received.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                        }
                        Ok::<_, Infallible>(hyper::Response::new(
                            http_body_util::Empty::<Bytes>::new(),
                        ))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn start_gate(bin: &Path, dir: &Path, up: SocketAddr) -> Result<Gate> {
    let rest = format!(
        r#"[timeouts]
idle_seconds = 120

[entity]
name = "Bench Co"
regime = "cac-2024"

[ledger]
hash_key_file = "secrets/subject-hash.key"

[inspection]
max_body_bytes = 1073741824

[inspection.subjects]
fields = ["user_id"]
detectors = ["cn_resident_id", "cn_mobile", "email", "bank_card"]

[[destination]]
name = "uploads"
recipient = "Bench Recipient"
country = "DE"
hosts = ["{HOST}"]
connect_to = "{up}"
"#
    );
    common::start_gate(bin, dir, &rest).await
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

/// Sixteen 64 KiB chunks of whole NDJSON records; record `i` of chunk `k` is an event, one in
/// eight with `user_id` `(k * 64 + i) % 1000`.
fn chunks() -> Vec<Bytes> {
    (0..16)
        .map(|k| {
            let mut c = Vec::with_capacity(CHUNK);
            let mut i = 0;
            loop {
                let line = if i % 8 == 0 {
                    format!(
                        "{{\"user_id\":{},\"event\":\"upload\",\"seq\":{i},\"pad\":\"{}\"}}\n",
                        (k * 64 + i) % 1000,
                        "x".repeat(120)
                    )
                } else {
                    format!(
                        "{{\"event\":\"tick\",\"seq\":{i},\"pad\":\"{}\"}}\n",
                        "y".repeat(140)
                    )
                };
                if c.len() + line.len() > CHUNK {
                    break;
                }
                c.extend_from_slice(line.as_bytes());
                i += 1;
            }
            Bytes::from(c)
        })
        .collect()
}

/// One upload of about `size` bytes (whole chunks).
async fn upload(c: reqwest::Client, chunks: Arc<Vec<Bytes>>, size: u64) -> Result<u16> {
    let n = size.div_ceil(CHUNK as u64) as usize;
    let body = futures_util::stream::iter(0..n)
        .map(move |i| Ok::<_, std::io::Error>(chunks[i % chunks.len()].clone()));
    let r = c
        .post(format!("http://{HOST}/v1/upload"))
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

#[tokio::main]
async fn main() -> Result<()> {
    let uploads = env_u64("UPLOADS", 1000) as usize;
    let size = env_u64("SIZE_MB", 100) << 20;
    let bin = PathBuf::from(
        std::env::var("GATE_BIN").unwrap_or_else(|_| "target/release/transfer-gate".into()),
    );
    let dir = std::env::temp_dir().join(format!("tg-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let received = Arc::new(AtomicU64::new(0));
    let up = upstream(received.clone()).await?;
    let gate = start_gate(&bin, &dir, up).await?;
    let pid = gate.child.id();
    let idle_rss = status_bytes(pid, "VmRSS:");
    let proxy = reqwest::Proxy::http(format!("http://{}", gate.proxy))?;
    let h1 = reqwest::Client::builder()
        .proxy(proxy.clone())
        .http1_only()
        .pool_max_idle_per_host(uploads)
        .build()?;
    let h2_conns = (uploads / 2).div_ceil(STREAMS_PER_H2_CONN);
    let h2: Vec<reqwest::Client> = (0..h2_conns)
        .map(|_| {
            reqwest::Client::builder()
                .proxy(proxy.clone())
                .http2_prior_knowledge()
                .build()
        })
        .collect::<Result<_, _>>()?;
    let chunks = Arc::new(chunks());

    let sampling = Arc::new(AtomicU64::new(1));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, max_rss) = (sampling.clone(), max_rss.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) == 1 {
                max_rss.fetch_max(status_bytes(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..uploads)
        .map(|i| {
            let c = if i % 2 == 0 {
                h1.clone()
            } else {
                h2[(i / 2) / STREAMS_PER_H2_CONN].clone()
            };
            tokio::spawn(upload(c, chunks.clone(), size))
        })
        .collect();
    let (mut ok, mut failed) = (0u64, 0u64);
    for t in tasks {
        match t.await? {
            Ok(200) => ok += 1,
            Ok(s) => {
                failed += 1;
                eprintln!("upload answered {s}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("upload failed: {e:#}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sampling.store(0, Ordering::Relaxed);
    let _ = sampler.await;
    let peak = status_bytes(pid, "VmHWM:");
    let moved = received.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!("| uploads (h1 + h2c) | size each | completed 200 | failed | bytes upstream | time | throughput | idle RSS | peak RSS sampled | peak RSS (VmHWM) | goal |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} + {} | {} MiB | {ok} | {failed} | {:.1} GiB | {secs:.0} s | {:.0} MiB/s | {:.0} MiB | {:.0} MiB | {:.0} MiB | < 512 MiB: {} |",
        uploads.div_ceil(2),
        uploads / 2,
        size >> 20,
        mib(moved) / 1024.0,
        mib(moved) / secs,
        mib(idle_rss),
        mib(max_rss.load(Ordering::Relaxed)),
        mib(peak),
        if peak < 512 << 20 && failed == 0 { "met" } else { "NOT met" }
    );
    drop(gate);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
