//! Load generator for TLS interception (`scripts/bench-intercept` runs it): starts the release
//! gate as a child process on a temporary config with two destinations — `plain.bench.test`
//! (plain HTTP upstream) and `api.bench.test` (`tls = "intercept"`, HTTPS upstream with its own
//! CA) — and loads both through the proxy listener with keep-alive clients, ~1 KB JSON POSTs:
//!
//! - plain HTTP/1.1 through the gate (absolute-form), the baseline;
//! - intercepted HTTPS, HTTP/1.1 inside the tunnel (one CONNECT + TLS per client connection);
//! - intercepted HTTPS, h2 inside the tunnel (one connection, multiplexed);
//! - intercepted HTTPS without keep-alive (CONNECT + TLS handshake with a cached leaf per request).
//!
//! Also times leaf minting in-process. Prints a Markdown table. Environment: `DURATION`
//! (seconds per scenario, default 10), `CONNS` (concurrent requests, default 32), `GATE_BIN`
//! (default `target/release/transfer-gate`).

mod common;

use anyhow::Result;
use bytes::Bytes;
use common::{env_u64, Gate};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use transfer_gate::tls::ca::{self, InterceptCa};
use transfer_gate::tls::mint::Minter;

const PLAIN_HOST: &str = "plain.bench.test";
const TLS_HOST: &str = "api.bench.test";

/// A loopback upstream answering `200 ok` to everything, plain or with `tls`.
async fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Result<SocketAddr> {
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

/// Serves one fixed certificate.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

async fn start_gate(bin: &Path, dir: &Path, plain: SocketAddr, tls: SocketAddr) -> Result<Gate> {
    let rest = format!(
        r#"[entity]
name = "Bench Co"
regime = "cac-2024"

[ledger]
hash_key_file = "secrets/subject-hash.key"

[inspection.subjects]
fields = ["user_id"]
detectors = ["cn_resident_id", "cn_mobile", "email", "bank_card"]

[[destination]]
name = "plain"
recipient = "Bench Recipient"
country = "DE"
hosts = ["{PLAIN_HOST}"]
connect_to = "{plain}"

[[destination]]
name = "tls"
recipient = "Bench Recipient"
country = "DE"
hosts = ["{TLS_HOST}"]
tls = "intercept"
connect_to = "{tls}"

[tls]
ca_cert = "secrets/ca.pem"
ca_key = "secrets/ca.key"
upstream_ca_file = "upstream-ca.pem"
"#
    );
    common::start_gate(bin, dir, &rest).await
}

/// CPU time (user + system) the gate process has used so far, from `/proc` (USER_HZ = 100).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Outcome {
    requests: u64,
    /// Gate CPU seconds spent during the timed run.
    gate_cpu: f64,
    errors: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

/// `conns` tasks sending POSTs with `client` to `url` for `duration`.
async fn load(
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
fn body_1k() -> Vec<u8> {
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

fn row(name: &str, o: &Outcome, base: Option<f64>) -> String {
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

#[tokio::main]
async fn main() -> Result<()> {
    let duration = Duration::from_secs(env_u64("DURATION", 10));
    let conns = env_u64("CONNS", 32);
    let bin = PathBuf::from(
        std::env::var("GATE_BIN").unwrap_or_else(|_| "target/release/transfer-gate".into()),
    );
    let dir = tempfile::tempdir()?;

    // The upstream's own CA and its certificate for api.bench.test.
    let (up_ca, up_pem) = InterceptCa::generate("bench upstream CA")?;
    std::fs::write(dir.path().join("upstream-ca.pem"), up_pem.cert)?;
    let leaf = Minter::new(up_ca).certified_key(TLS_HOST)?;
    let mut up_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Fixed(leaf)));
    up_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let plain = upstream(None).await?;
    let tls = upstream(Some(Arc::new(up_cfg))).await?;

    // The gate's interception CA, as an operator makes it.
    let files = ca::init(&dir.path().join("secrets"), ca::DEFAULT_CA_NAME, false)?;
    let gate_ca = reqwest::Certificate::from_pem(&std::fs::read(&files.cert)?)?;
    let gate = start_gate(&bin, dir.path(), plain, tls).await?;
    let proxy = reqwest::Proxy::all(format!("http://{}", gate.proxy))?;
    let base = || {
        reqwest::Client::builder()
            .proxy(proxy.clone())
            .add_root_certificate(gate_ca.clone())
            .timeout(Duration::from_secs(30))
    };

    let plain_url = format!("http://{PLAIN_HOST}/ingest");
    let tls_url = format!("https://{TLS_HOST}/ingest");
    let pid = gate.child.id();
    let p = load(
        pid,
        base().http1_only().build()?,
        &plain_url,
        conns,
        duration,
    )
    .await;
    let h1 = load(pid, base().http1_only().build()?, &tls_url, conns, duration).await;
    let h2 = load(pid, base().build()?, &tls_url, conns, duration).await;
    let fresh = load(
        pid,
        base().http1_only().pool_max_idle_per_host(0).build()?,
        &tls_url,
        conns,
        duration,
    )
    .await;
    drop(gate);

    // Leaf minting, in-process (a cache miss: one new name per handshake).
    let (ca, _) = InterceptCa::generate("mint bench CA")?;
    let minter = Minter::with_limits(ca, transfer_gate::tls::mint::LEAF_VALIDITY, 100_000);
    let n = 500u32;
    let t = Instant::now();
    for i in 0..n {
        minter.certified_key(&format!("h{i}.bench.test"))?;
    }
    let mint_us = t.elapsed().as_micros() as f64 / f64::from(n);
    let t = Instant::now();
    for i in 0..n {
        minter.certified_key(&format!("h{i}.bench.test"))?;
    }
    let hit_us = t.elapsed().as_micros() as f64 / f64::from(n);

    let base_rps = p.requests as f64 / p.secs;
    println!("| scenario | req/s | vs plain | gate CPU per request | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "{}",
        row("plain HTTP/1.1 through the gate (baseline)", &p, None)
    );
    println!(
        "{}",
        row(
            "intercepted HTTPS, HTTP/1.1 inside, keep-alive",
            &h1,
            Some(base_rps)
        )
    );
    println!(
        "{}",
        row(
            "intercepted HTTPS, h2 inside (one connection)",
            &h2,
            Some(base_rps)
        )
    );
    println!(
        "{}",
        row(
            "intercepted HTTPS, new CONNECT + TLS handshake per request",
            &fresh,
            Some(base_rps)
        )
    );
    println!();
    println!("Leaf minting (ECDSA P-256 key + signature, in-process): {mint_us:.0} µs per new name; cache hit {hit_us:.1} µs.");
    Ok(())
}
