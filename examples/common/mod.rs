//! What the gate benchmarks (`bench_memory`, `bench_intercept`, `bench_identify`) share:
//! reading a numeric setting from the environment, a free loopback port, starting the release
//! gate as a child process on a configuration of theirs (ready once its `/readyz` answers
//! 200), a loopback upstream, and the closed-loop load with the gate's CPU per request.

// Each example compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use transfer_gate::testing::poll::poll_until;

/// The environment variable `name` as a number, `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running gate process, killed on drop.
pub struct Gate {
    /// The process.
    pub child: Child,
    /// Its proxy listener.
    pub proxy: SocketAddr,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` in `dir` on a `gate.toml` of a `[gate]` section (free proxy and admin ports,
/// data and audit log in `dir/data`) followed by `rest`, with an empty approval register, and
/// waits (30 s at most) until it is ready. Its log goes to `dir/gate.log`.
pub async fn start_gate(bin: &Path, dir: &Path, rest: &str) -> Result<Gate> {
    start_gate_with(bin, dir, "", rest).await
}

/// [`start_gate`] with `gate_extra` (lines such as `mode = "observe"`) added to `[gate]`.
pub async fn start_gate_with(bin: &Path, dir: &Path, gate_extra: &str, rest: &str) -> Result<Gate> {
    let (proxy, admin) = (free_port()?, free_port()?);
    let cfg = format!(
        r#"[gate]
proxy_listen = "127.0.0.1:{proxy}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "data"
approvals_file = "approvals.toml"
audit_log = "data/audit.jsonl"
{gate_extra}
{rest}"#
    );
    std::fs::write(dir.join("gate.toml"), cfg)?;
    std::fs::write(dir.join("approvals.toml"), "")?;
    let log = std::fs::File::create(dir.join("gate.log"))?;
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(dir.join("gate.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let gate = Gate {
        child,
        proxy: SocketAddr::from(([127, 0, 0, 1], proxy)),
    };
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let ready = poll_until(Duration::from_secs(30), || async {
        let r = client.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    if ready.is_none() {
        bail!(
            "gate not ready; log:\n{}",
            std::fs::read_to_string(dir.join("gate.log")).unwrap_or_default()
        );
    }
    Ok(gate)
}

/// A loopback upstream answering `200 ok` to everything, plain or with `tls`.
pub async fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    // Read the whole body, as a real upstream would.
                    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let b = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(cfg) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// CPU time (user + system) the gate process has used so far, from `/proc` (USER_HZ = 100).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub struct Outcome {
    /// Requests answered 200.
    pub requests: u64,
    /// Gate CPU seconds spent during the timed run.
    pub gate_cpu: f64,
    /// Requests that failed or were not 200.
    pub errors: u64,
    /// The run's length.
    pub secs: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
}

/// `conns` tasks sending POSTs with `client` to `url` for `duration`.
pub async fn load(
    gate_pid: u32,
    client: reqwest::Client,
    url: &str,
    conns: u64,
    duration: Duration,
) -> Outcome {
    let body = Bytes::from(body_1k());
    // Warm-up: connections, TLS sessions and minted leaves exist before timing starts.
    for _ in 0..conns {
        let _ = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
    }
    let cpu_before = cpu_secs(gate_pid);
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16 * 1024);
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let gate_cpu = cpu_secs(gate_pid) - cpu_before;
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        gate_cpu,
        requests: all.len() as u64,
        errors,
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// ~1 KB of JSON with a few records (bench data, not real people).
pub fn body_1k() -> Vec<u8> {
    let mut s = String::from("{\"batch\":[");
    for i in 0..6 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"user_id\":{},\"name\":\"Customer {i}\",\"phone\":\"1380013{:04}\",\"email\":\"c{i}@example.com\",\"note\":\"order placed via the mobile application\"}}",
            100_000 + i,
            i
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A Markdown table row: req/s, relative to `base` req/s, gate CPU per request, latency.
pub fn row(name: &str, o: &Outcome, base: Option<f64>) -> String {
    let rps = o.requests as f64 / o.secs;
    let rel = base.map_or("1.00".to_owned(), |b| format!("{:.2}", rps / b));
    let cpu_us = o.gate_cpu * 1e6 / (o.requests.max(1) as f64);
    format!(
        "| {name} | {rps:.0} | {rel} | {cpu_us:.0} µs | {:.2} ms | {:.2} ms | {} |",
        o.p50_us as f64 / 1000.0,
        o.p99_us as f64 / 1000.0,
        o.errors
    )
}
