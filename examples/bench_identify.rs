//! What identifying the sending service costs (`scripts/bench-identify` runs it): the release
//! gate with 100 declared clients, loaded through the proxy with keep-alive clients, ~1 KB
//! JSON POSTs to one destination, in alternating rounds of:
//!
//! - plain listener, no `[[client]]` (the baseline: every request `unidentified`);
//! - plain listener, 100 clients, a `Proxy-Authorization: Bearer` token on every request;
//! - plain listener, 100 clients, identified by source address (`cidrs`);
//! - TLS proxy listener without client certificates (the TLS baseline);
//! - TLS proxy listener, the client certificate identifying the client (URI SAN).
//!
//! Each scenario checks that the gate counted its requests under the expected client before
//! its figures are printed. Prints a Markdown table of the medians over `ROUNDS` (default 3).
//! Environment: `DURATION` (seconds per run, default 8), `CONNS` (default 32), `GATE_BIN`.

mod common;

use anyhow::{ensure, Result};
use common::{env_u64, load, upstream, Outcome};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HOST: &str = "api.bench.test";
const TOKEN: &str = "bench-token-0057-0123456789abcdef";

/// A test CA and the PEM of leaves it signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// (certificate PEM, key PEM) for `sans` (IP literals, DNS names) or a URI SAN.
    fn leaf(&self, sans: &[&str], uri: Option<&str>) -> Result<(String, String)> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        if let Some(u) = uri {
            p.subject_alt_names.push(SanType::URI(u.try_into()?));
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// `[[client]]` blocks `svc-000` … `svc-099`: tokens, /32 addresses in 10.99.0.0/16 and SPIFFE
/// IDs; `svc-057` has the bench token, 127.0.0.1 and `spiffe://bench/svc-057`.
fn clients() -> String {
    let mut s = String::new();
    for i in 0..100 {
        let token = if i == 57 {
            TOKEN.to_owned()
        } else {
            format!("other-token-{i:04}")
        };
        let cidr = if i == 57 {
            "127.0.0.1/32".to_owned()
        } else {
            format!("10.99.{}.{}/32", i / 200, i % 200 + 1)
        };
        s.push_str(&format!(
            "[[client]]\nname = \"svc-{i:03}\"\nowner = \"team {i}\"\ntoken_sha256 = [\"{}\"]\ncidrs = [\"{cidr}\"]\ntls_identities = [\"spiffe://bench/svc-{i:03}\"]\n\n",
            transfer_gate::identity::token_digest_hex(&token)
        ));
    }
    s
}

/// Starts the gate: `gate_keys` go into `[gate]`, `with_clients` declares the 100 clients.
async fn gate(
    bin: &Path,
    dir: &Path,
    up: SocketAddr,
    gate_keys: &str,
    with_clients: bool,
) -> Result<common::Gate> {
    let rest = format!(
        r#"{gate_keys}
[entity]
name = "Bench Co"
regime = "cac-2024"

[inspection.subjects]
fields = ["user_id"]
detectors = ["cn_resident_id", "cn_mobile", "email", "bank_card"]

[[destination]]
name = "bench"
recipient = "Bench Recipient"
country = "DE"
hosts = ["{HOST}"]
connect_to = "{up}"

{}"#,
        if with_clients {
            clients()
        } else {
            String::new()
        }
    );
    common::start_gate(bin, dir, &rest).await
}

/// The gate's `transfer_gate_decisions_total` allowed for `client`, from its admin listener
/// (read from `gate.toml`).
async fn allowed_for(dir: &Path, client: &str) -> Result<f64> {
    let cfg = std::fs::read_to_string(dir.join("gate.toml"))?;
    let admin = cfg
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = "))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let series = format!(
        "transfer_gate_decisions_total{{client=\"{client}\",decision=\"allow\",destination=\"bench\",reason=\"allowed\"}} "
    );
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

struct Scenario {
    name: &'static str,
    runs: Vec<Outcome>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let duration = Duration::from_secs(env_u64("DURATION", 8));
    let conns = env_u64("CONNS", 32);
    let rounds = env_u64("ROUNDS", 3);
    let bin = PathBuf::from(
        std::env::var("GATE_BIN").unwrap_or_else(|_| "target/release/transfer-gate".into()),
    );
    let up = upstream(None).await?;
    let server_ca = Ca::new("bench proxy CA")?;
    let client_ca = Ca::new("bench clients CA")?;
    let (proxy_cert, proxy_key) = server_ca.leaf(&["127.0.0.1"], None)?;
    let (client_cert, client_key) = client_ca.leaf(&[], Some("spiffe://bench/svc-057"))?;
    let server_root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes())?;
    let identity = reqwest::Identity::from_pem(format!("{client_cert}{client_key}").as_bytes())?;

    let url = format!("http://{HOST}/ingest");
    let names = [
        "plain listener, no clients declared (baseline)",
        "plain listener, 100 clients, Bearer token",
        "plain listener, 100 clients, source address",
        "TLS proxy listener, no client certificate (TLS baseline)",
        "TLS proxy listener, 100 clients, client certificate",
    ];
    let mut scenarios: Vec<Scenario> = names
        .iter()
        .map(|n| Scenario {
            name: n,
            runs: Vec::new(),
        })
        .collect();
    for _ in 0..rounds {
        for (i, s) in scenarios.iter_mut().enumerate() {
            let dir = tempfile::tempdir()?;
            let d = dir.path();
            std::fs::write(d.join("proxy.pem"), &proxy_cert)?;
            std::fs::write(d.join("proxy.key"), &proxy_key)?;
            std::fs::write(d.join("clients-ca.pem"), &client_ca.pem)?;
            let tls_port = common::free_port()?;
            let tls_keys = format!(
                "proxy_tls_listen = \"127.0.0.1:{tls_port}\"\nproxy_tls_cert = \"proxy.pem\"\nproxy_tls_key = \"proxy.key\"\nclient_ca_file = \"clients-ca.pem\"\n"
            );
            let (keys, with_clients) = match i {
                0 => (String::new(), false),
                1 | 2 => (String::new(), true),
                3 => (tls_keys, false),
                _ => (tls_keys, true),
            };
            let g = gate(&bin, d, up, &keys, with_clients).await?;
            let proxy = match i {
                0..=2 => reqwest::Proxy::http(format!("http://{}", g.proxy))?,
                _ => reqwest::Proxy::http(format!("https://127.0.0.1:{tls_port}"))?,
            };
            let proxy = if i == 1 {
                proxy.custom_http_auth(format!("Bearer {TOKEN}").parse()?)
            } else {
                proxy
            };
            let mut b = reqwest::Client::builder()
                .proxy(proxy)
                .http1_only()
                .timeout(Duration::from_secs(30))
                .add_root_certificate(server_root.clone());
            if i == 4 {
                b = b.identity(identity.clone());
            }
            let out = load(g.child.id(), b.build()?, &url, conns, duration).await;
            let expect = if matches!(i, 0 | 3) {
                "unidentified"
            } else {
                "svc-057"
            };
            let counted = allowed_for(d, expect).await?;
            ensure!(
                out.requests > 0 && counted >= out.requests as f64,
                "{}: {} requests answered, {counted} counted under {expect} (errors {})",
                s.name,
                out.requests,
                out.errors
            );
            s.runs.push(out);
        }
    }
    println!("| scenario | req/s (median) | vs baseline | gate CPU per request (median) | p99 (median) | errors |");
    println!("|---|---|---|---|---|---|");
    let rps = |s: &Scenario| median(s.runs.iter().map(|o| o.requests as f64 / o.secs).collect());
    let cpu = |s: &Scenario| {
        median(
            s.runs
                .iter()
                .map(|o| o.gate_cpu * 1e6 / o.requests.max(1) as f64)
                .collect(),
        )
    };
    for (i, s) in scenarios.iter().enumerate() {
        let base = if i < 3 { &scenarios[0] } else { &scenarios[3] };
        println!(
            "| {} | {:.0} | {:.3} | {:.1} µs | {:.2} ms | {} |",
            s.name,
            rps(s),
            rps(s) / rps(base),
            cpu(s),
            median(s.runs.iter().map(|o| o.p99_us as f64 / 1000.0).collect()),
            s.runs.iter().map(|o| o.errors).sum::<u64>()
        );
    }
    Ok(())
}
