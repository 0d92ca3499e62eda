//! TLS interception through the real binary: `ca init`, curl and reqwest clients trusting the
//! gate's CA over h2 and http/1.1, an HTTPS upstream with its own CA, refusals inside the
//! tunnel, upstream and client certificate failures, SNI checks, blind-tunnel audit lines.

use crate::harness::certs::TestCa;
use crate::harness::upstream::Upstream;
use crate::harness::{cli_on, command, curl, eventually, poll_until, Dest, GateBuilder, GateProc};
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ca_init(dir: &Path, force: bool) -> Output {
    let mut cmd = command(["ca", "init", "--out"]);
    cmd.arg(dir);
    if force {
        cmd.arg("--force");
    }
    cmd.output().unwrap()
}

/// The `eu` destination (`api.eu.test`) with interception, sent to `addr`.
fn eu(addr: SocketAddr) -> Dest {
    Dest::new("eu", "api.eu.test")
        .connect_to(addr)
        .set("tls", "\"intercept\"")
}

/// A gate CA made with `ca init` in `<config dir>/secrets`, and `[tls]` naming it (plus the
/// upstream's CA when `upstream_ca` is given).
fn with_gate_ca(b: GateBuilder, upstream_ca: Option<&TestCa>) -> GateBuilder {
    let out = ca_init(&b.dir().join("secrets"), false);
    assert!(out.status.success(), "{out:?}");
    let mut tls = String::from("[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"");
    let b = match upstream_ca {
        Some(ca) => {
            tls.push_str("\nupstream_ca_file = \"upstream-ca.pem\"");
            b.file("upstream-ca.pem", ca.cert_pem.as_bytes())
        }
        None => b,
    };
    b.section(&tls)
}

/// An HTTPS upstream for `api.eu.test` with its own test CA, and an intercepting gate that
/// trusts that CA for upstream connections.
async fn intercepting(b: GateBuilder) -> (GateProc, Upstream, PathBuf) {
    intercepting_only(b, "").await
}

/// [`intercepting`] with `eu` open only to `clients` (a TOML array; empty: every client).
async fn intercepting_only(b: GateBuilder, clients: &str) -> (GateProc, Upstream, PathBuf) {
    let up_ca = TestCa::new("upstream test CA");
    let up = Upstream::builder()
        .tls(up_ca.server_config(&["api.eu.test"]))
        .start()
        .await;
    let dest = match clients {
        "" => eu(up.addr),
        list => eu(up.addr).set("clients", list),
    };
    let gate = with_gate_ca(b, Some(&up_ca))
        .destination(dest)
        .start()
        .await;
    let ca = gate.dir().join("secrets/ca.pem");
    (gate, up, ca)
}

/// A reqwest client using the gate as proxy and trusting the gate's CA.
fn client(gate: &GateProc, ca: &Path, http1_only: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let b = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gate.proxy_url()).unwrap())
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(30));
    let b = if http1_only { b.http1_only() } else { b };
    b.build().unwrap()
}

/// Polls a metric until it reaches `want` (events are counted after the client has given up).
async fn metric_reaches(gate: &GateProc, series: &str, want: f64) -> f64 {
    let reached = poll_until(Duration::from_secs(5), || async {
        gate.metric_opt(series).await.filter(|v| *v >= want)
    })
    .await;
    match reached {
        Some(v) => v,
        None => gate.metric(series).await,
    }
}

/// The gate's log without ANSI colour codes.
fn plain_logs(gate: &GateProc) -> String {
    let raw = gate.logs();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn logs_contain(gate: &GateProc, needle: &str) -> bool {
    poll_until(Duration::from_secs(5), || async {
        plain_logs(gate).contains(needle).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn curl_with_the_gate_ca_reaches_the_https_upstream() {
    let (gate, up, ca) = intercepting(GateBuilder::new()).await;
    let (proxy, ca_s) = (gate.proxy_url(), ca.display().to_string());
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--proxy",
            &proxy,
            "--cacert",
            &ca_s,
            "-H",
            "content-type: application/json",
            "--data-binary",
            "{\"user_id\":1}",
            "https://api.eu.test/v1/events?page=2",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}\n{}", gate.logs());
    assert_eq!(body, "upstream-ok");
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].target, "/v1/events?page=2");
    assert_eq!(got[0].body, b"{\"user_id\":1}");
    assert!(got[0].complete);
    assert_eq!(got[0].headers["via"], "1.1 transfer-gate");
    assert!(got[0].headers.contains_key("x-request-id"));
    // Counted like a plain request to the destination; no tunnel.
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"allow\",destination=\"eu\",reason=\"allowed\"}").await,
        1.0
    );
    // No tunnel: the eu series does not exist (it appears with the first tunnel).
    assert_eq!(
        gate.metric_opt("transfer_gate_tunnels_total{destination=\"eu\"}")
            .await,
        None
    );
    assert_eq!(
        gate.metric("transfer_gate_bytes_total{client=\"unidentified\",destination=\"eu\",direction=\"upstream\"}")
            .await,
        13.0
    );
    // The error series exists before the first error.
    assert!(gate
        .metrics()
        .await
        .contains("transfer_gate_tls_client_errors_total{destination=\"eu\"} 0"));
}

#[tokio::test]
async fn reqwest_over_h2_and_http1_inside_the_tunnel() {
    let (gate, up, ca) = intercepting(GateBuilder::new()).await;
    for (http1_only, want) in [
        (false, http::Version::HTTP_2),
        (true, http::Version::HTTP_11),
    ] {
        let c = client(&gate, &ca, http1_only);
        for i in 0..3 {
            let r = c
                .post(format!("https://api.eu.test/v1/batch/{i}"))
                .header("x-end-to-end", "kept")
                .header("content-type", "application/json")
                .body(format!("\"payload-{i}\""))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), want);
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["via"], "1.1 transfer-gate");
            assert!(r.headers().get("x-hop").is_none());
            assert!(r.headers().contains_key("x-request-id"));
            assert_eq!(r.text().await.unwrap(), "upstream-ok");
        }
    }
    let got = up.received();
    assert_eq!(got.len(), 6);
    for (n, g) in got.iter().enumerate() {
        assert_eq!(g.target, format!("/v1/batch/{}", n % 3));
        assert_eq!(g.body, format!("\"payload-{}\"", n % 3).as_bytes());
        assert_eq!(g.headers["x-end-to-end"], "kept");
        assert!(matches!(
            g.headers.get("host").map(|h| h.to_str().unwrap()),
            Some("api.eu.test") | None // h2 upstream: :authority instead of Host
        ));
    }
    assert_eq!(
        gate.metric(
            "transfer_gate_decisions_total{client=\"unidentified\",decision=\"allow\",destination=\"eu\",reason=\"no_pi\"}"
        )
        .await,
        6.0
    );
}

#[tokio::test]
async fn refusals_inside_the_tunnel_are_the_spec_json() {
    let (gate, up, ca) = intercepting(
        GateBuilder::new().section("[inspection]\nmax_body_bytes = 1000\natomic_body_bytes = 1000"),
    )
    .await;
    let c = client(&gate, &ca, true);
    let r = c
        .get("https://api.eu.test/socket")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-transfer-gate-reason"], "uninspectable");
    assert_eq!(
        r.headers()["link"],
        "<https://compliance.example.cn/transfer-gate>; rel=\"blocked-by\""
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "transfer_blocked");
    assert_eq!(v["reason"], "uninspectable");
    assert_eq!(v["destination"], "eu");
    assert_eq!(v["required_mechanism"], "none");

    let r = c
        .post("https://api.eu.test/big")
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // A request for another host inside the tunnel is not sent anywhere.
    let r = c
        .get("https://api.eu.test/elsewhere")
        .header("host", "other.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert!(up.received().is_empty(), "nothing may reach the upstream");
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"block\",destination=\"eu\",reason=\"uninspectable\"}").await,
        1.0
    );
}

#[tokio::test]
async fn an_invalid_upstream_certificate_is_502() {
    // The upstream's CA is not given to the gate.
    let up_ca = TestCa::new("unknown upstream CA");
    let up = Upstream::builder()
        .tls(up_ca.server_config(&["api.eu.test"]))
        .start()
        .await;
    let gate = with_gate_ca(GateBuilder::new(), None)
        .destination(eu(up.addr))
        .start()
        .await;
    let ca = gate.dir().join("secrets/ca.pem");
    let r = client(&gate, &ca, false)
        .get("https://api.eu.test/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unreachable");
    assert!(up.received().is_empty());
    let logs = gate.logs();
    assert!(
        logs.contains("upstream request failed")
            && logs.contains("TLS handshake with upstream failed")
            && logs.contains("UnknownIssuer"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_and_nothing_is_forwarded() {
    let (gate, up, _ca) = intercepting(GateBuilder::new()).await;
    let proxy = gate.proxy_url();
    let (code, _) = tokio::task::spawn_blocking(move || {
        curl(&["--proxy", &proxy, "https://api.eu.test/secret?user_id=7"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "curl must fail its handshake");
    let r = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gate.proxy_url()).unwrap())
        .build()
        .unwrap()
        .get("https://api.eu.test/secret")
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(
        metric_reaches(
            &gate,
            "transfer_gate_tls_client_errors_total{destination=\"eu\"}",
            2.0
        )
        .await,
        2.0
    );
    assert!(logs_contain(&gate, "TLS client error").await);
    let logs = plain_logs(&gate);
    assert!(logs.contains("sni=\"api.eu.test\""), "{logs}");
    assert!(!logs.contains("user_id"), "no query strings in logs");
    assert!(up.received().is_empty(), "nothing may reach the upstream");
}

/// Opens `CONNECT target` on the gate and returns the stream after the `200`.
async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn the_sni_must_be_the_connect_host() {
    use rustls::pki_types::ServerName;
    let (gate, up, ca) = intercepting(GateBuilder::new()).await;
    let tls = tls_connector(&ca);

    // The right name: the handshake completes and a request goes through.
    let s = tunnel(gate.proxy, "api.eu.test:443").await;
    let mut t = tls
        .connect(ServerName::try_from("api.eu.test").unwrap(), s)
        .await
        .unwrap();
    t.write_all(b"GET /ok HTTP/1.1\r\nHost: api.eu.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    t.read_to_end(&mut out).await.unwrap_or_default();
    assert!(out.starts_with(b"HTTP/1.1 200"));
    assert_eq!(up.received().len(), 1);

    // Another name.
    let s = tunnel(gate.proxy, "api.eu.test:443").await;
    let e = tls
        .connect(ServerName::try_from("other.example.org").unwrap(), s)
        .await;
    assert!(e.is_err());
    assert!(logs_contain(&gate, "the SNI is not the CONNECT host").await);
    assert!(plain_logs(&gate).contains("sni=\"other.example.org\""));

    // No SNI at all (rustls sends none for an IP address). Not synchronisation: the log line
    // is rate limited to one a second, so the next one needs a second to pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = tunnel(gate.proxy, "api.eu.test:443").await;
    let e = tls
        .connect(
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            s,
        )
        .await;
    assert!(e.is_err());
    assert!(logs_contain(&gate, "the client sent no SNI").await);
    assert_eq!(
        metric_reaches(
            &gate,
            "transfer_gate_tls_client_errors_total{destination=\"eu\"}",
            2.0
        )
        .await,
        2.0
    );
    assert_eq!(up.received().len(), 1, "refused handshakes forward nothing");
}

#[tokio::test]
async fn sigterm_drains_in_flight_intercepted_requests() {
    let up_ca = TestCa::new("upstream test CA");
    let up = Upstream::builder()
        .tls(up_ca.server_config(&["api.eu.test"]))
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let mut gate = with_gate_ca(GateBuilder::new(), Some(&up_ca))
        .destination(eu(up.addr))
        .start()
        .await;
    let ca = gate.dir().join("secrets/ca.pem");
    for http1_only in [false, true] {
        let c = client(&gate, &ca, http1_only);
        c.get("https://api.eu.test/warm").send().await.unwrap();
    }
    let c2 = client(&gate, &ca, false);
    let c1 = client(&gate, &ca, true);
    let inflight = tokio::spawn(async move {
        let (a, b) = tokio::join!(
            c2.get("https://api.eu.test/long-h2").send(),
            c1.get("https://api.eu.test/long-h1").send()
        );
        (a.map(|r| r.status()), b.map(|r| r.status()))
    });
    eventually(
        "both requests reached the upstream",
        Duration::from_secs(10),
        || async {
            let long = up
                .received()
                .iter()
                .filter(|r| r.target.starts_with("/long"))
                .count();
            (long == 2).then_some(())
        },
    )
    .await;
    gate.signal("TERM");
    let (a, b) = inflight.await.unwrap();
    assert_eq!(a.unwrap(), 200, "in-flight h2 request was cut");
    assert_eq!(b.unwrap(), 200, "in-flight http/1.1 request was cut");
    let code = tokio::task::spawn_blocking(move || gate.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn interception_starts_after_ca_init_and_reload() {
    let up_ca = TestCa::new("upstream test CA");
    let up = Upstream::builder()
        .tls(up_ca.server_config(&["api.eu.test"]))
        .start()
        .await;
    // `[tls]` names a CA that does not exist yet (a fresh install): the gate starts, warns,
    // and refuses CONNECT to the intercept destination.
    let gate = GateBuilder::new()
        .file("upstream-ca.pem", up_ca.cert_pem.as_bytes())
        .section("[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"\nupstream_ca_file = \"upstream-ca.pem\"")
        .destination(eu(up.addr))
        .start()
        .await;
    assert!(plain_logs(&gate).contains("ca init"));
    let ca = gate.dir().join("secrets/ca.pem");
    let proxy = gate.proxy_url();
    let (code, _) = tokio::task::spawn_blocking(move || {
        curl(&["--proxy", &proxy, "-k", "https://api.eu.test/x"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "CONNECT must be refused");
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"block\",destination=\"eu\",reason=\"uninspectable\"}").await,
        1.0
    );
    assert!(ca_init(&gate.dir().join("secrets"), false).status.success());
    gate.signal("HUP");
    assert!(logs_contain(&gate, "configuration reloaded").await);
    let r = client(&gate, &ca, false)
        .get("https://api.eu.test/after-reload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().len(), 1);
}

#[tokio::test]
async fn without_a_ca_intercept_destinations_stay_uninspectable() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let mut s = TcpStream::connect(gate.proxy).await.unwrap();
    s.write_all(b"CONNECT api.eu.test:443 HTTP/1.1\r\nHost: api.eu.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 451"), "{resp}");
    assert!(
        resp.contains("x-transfer-gate-reason: uninspectable"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_blind_tunnel_is_audited() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(
            Dest::new("eu", "api.eu.test")
                .connect_to(up.addr)
                .set("tls", "\"tunnel\""),
        )
        .start()
        .await;
    let proxy = gate.proxy_url();
    let (code, _) = tokio::task::spawn_blocking(move || {
        curl(&["-p", "-x", &proxy, "http://api.eu.test:443/blind"])
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(logs_contain(&gate, "tunnel closed").await);
    let logs = plain_logs(&gate);
    let opened = logs.lines().find(|l| l.contains("tunnel opened")).unwrap();
    assert!(opened.contains("transfer_gate::audit"), "{opened}");
    assert!(opened.contains("destination=\"eu\""), "{opened}");
    assert!(opened.contains("reason=\"tunnel\""), "{opened}");
    let closed = logs.lines().find(|l| l.contains("tunnel closed")).unwrap();
    assert!(closed.contains("bytes_upstream="), "{closed}");
}

#[test]
fn ca_init_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ca");
    let out = ca_init(&out_dir, false);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "update-ca-certificates",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "keytool",
        "ca_cert",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let key = out_dir.join("ca.key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert!(std::fs::read_to_string(out_dir.join("ca.pem"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let before = std::fs::read(&key).unwrap();

    let again = ca_init(&out_dir, false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "key must be untouched"
    );

    let forced = ca_init(&out_dir, true);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(&key).unwrap(), before);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn a_group_readable_ca_key_is_an_error_in_check_and_run() {
    let b = GateBuilder::new();
    let b = with_gate_ca(b, None).destination(eu("127.0.0.1:9".parse().unwrap()));
    let key = b.dir().join("secrets/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = b.write(0, 0);
    let check = cli_on(&cfg, &["check"]);
    assert_eq!(check.code, Some(2));
    let text = check.stdout;
    assert!(
        text.contains("tls.ca_key") && text.contains("chmod 600"),
        "{text}"
    );
    let run = cli_on(&cfg, &["run"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("chmod 600"));
}

/// The requests inside an intercepted `CONNECT` carry the identity the `CONNECT` had (clients
/// send `Proxy-Authorization` on the `CONNECT` only), over http/1.1 and h2; a client outside
/// the destination's `clients` is refused at the `CONNECT`.
#[tokio::test]
async fn requests_inside_a_connect_carry_its_identity() {
    let token = "intercept-token-0123456789abcdef";
    let clients = format!(
        "[[client]]\nname = \"billing\"\ntoken_sha256 = [\"{}\"]\n\n[[client]]\nname = \"crm\"\ntoken_sha256 = [\"{}\"]",
        transfer_gate::identity::token_digest_hex(token),
        transfer_gate::identity::token_digest_hex("crm-token-0123456789abcdef0123")
    );
    let b = GateBuilder::new().section(&clients);
    let (gate, up, ca) = intercepting_only(b, "[\"billing\"]").await;
    for http1 in [true, false] {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        let proxy = reqwest::Proxy::all(gate.proxy_url())
            .unwrap()
            .basic_auth("billing", token);
        let b = reqwest::Client::builder()
            .proxy(proxy)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(30));
        let c = if http1 { b.http1_only() } else { b }.build().unwrap();
        for _ in 0..2 {
            let r = c
                .post("https://api.eu.test/v1/events")
                .header("content-type", "application/json")
                .body("{\"user_id\":7}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    // crm's CONNECT is refused before any TLS.
    let mut s = TcpStream::connect(gate.proxy).await.unwrap();
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("crm:crm-token-0123456789abcdef0123")
    };
    s.write_all(
        format!("CONNECT api.eu.test:443 HTTP/1.1\r\nHost: api.eu.test:443\r\nProxy-Authorization: Basic {basic}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(up.received().len(), 4);
    let lines = gate.audit_lines(5).await;
    let inner: Vec<_> = lines.iter().filter(|l| l["method"] == "POST").collect();
    assert_eq!(inner.len(), 4, "{lines:#?}");
    assert!(inner
        .iter()
        .all(|l| l["client_name"] == "billing" && l["identified_by"] == "token"));
    assert!(lines
        .iter()
        .any(|l| l["client_name"] == "crm" && l["reason"] == "client_not_allowed"));
}

/// The TLS proxy listener carries interception too: curl speaks TLS to the gate (with its
/// client certificate), sends `CONNECT` inside it and TLS to the intercepted host inside that;
/// the inner request carries the certificate's identity.
#[tokio::test]
async fn interception_through_the_tls_proxy_listener_carries_the_certificate() {
    let server_ca = TestCa::new("proxy server CA");
    let client_ca = TestCa::new("clients CA");
    let (cert, key) = server_ca.leaf_pem(&["127.0.0.1"]);
    let (client_cert, client_key) = client_ca.client_pem("spiffe://corp.test/billing");
    let b = GateBuilder::new()
        .file("proxy.pem", cert.as_bytes())
        .file("proxy.key", key.as_bytes())
        .file("clients-ca.pem", client_ca.cert_pem.as_bytes())
        .file("server-ca.pem", server_ca.cert_pem.as_bytes())
        .file("client.pem", client_cert.as_bytes())
        .file("client.key", client_key.as_bytes())
        .gate_key("proxy_tls_listen = \"127.0.0.1:0\"")
        .gate_key("proxy_tls_cert = \"proxy.pem\"")
        .gate_key("proxy_tls_key = \"proxy.key\"")
        .gate_key("client_ca_file = \"clients-ca.pem\"")
        .section(
            "[[client]]\nname = \"billing\"\ntls_identities = [\"spiffe://corp.test/billing\"]",
        );
    let (gate, up, _) = intercepting_only(b, "[\"billing\"]").await;
    let d = gate.dir().to_owned();
    let p = |f: &str| d.join(f).display().to_string();
    let proxy = format!("https://127.0.0.1:{}", gate.proxy_tls.unwrap().port());
    let args = [
        "--proxy".to_owned(),
        proxy,
        "--proxy-cacert".to_owned(),
        p("server-ca.pem"),
        "--proxy-cert".to_owned(),
        p("client.pem"),
        "--proxy-key".to_owned(),
        p("client.key"),
        "--cacert".to_owned(),
        p("secrets/ca.pem"),
        "-H".to_owned(),
        "content-type: application/json".to_owned(),
        "--data-binary".to_owned(),
        "{\"user_id\":9}".to_owned(),
        "https://api.eu.test/v1/events".to_owned(),
    ];
    let (code, body) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&a)
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}\n{}", gate.logs());
    assert_eq!(up.received().len(), 1);
    let lines = gate.audit_lines(1).await;
    let inner = lines.iter().find(|l| l["method"] == "POST").unwrap();
    assert_eq!(inner["client_name"], "billing", "{lines:#?}");
    assert_eq!(inner["identified_by"], "certificate");
}
