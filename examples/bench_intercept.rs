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
use common::{env_u64, load, row, upstream, Gate};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transfer_gate::tls::ca::{self, InterceptCa};
use transfer_gate::tls::mint::Minter;

const PLAIN_HOST: &str = "plain.bench.test";
const TLS_HOST: &str = "api.bench.test";

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
