//! Who is sending, through the real binary (SPEC §2 "Who is sending: clients"): tokens in
//! `Proxy-Authorization` (curl's proxy URL, Python `requests`, reqwest with a Bearer header),
//! source addresses (a client bound to 127.0.0.2), client certificates on the TLS proxy
//! listener (curl `--proxy https://… --proxy-cert`), a destination's `clients` allowlist, a
//! client in observe mode, `gate.unidentified = "refuse"`, and the hostile cases — wrong,
//! empty, over-long and non-UTF-8 credentials, a flood of wrong tokens, a certificate from
//! another CA, a token together with a certificate, a phone number in a Basic user name.

use crate::harness::certs::TestCa;
use crate::harness::upstream::Upstream;
use crate::harness::{curl, python_post, reason_of, require_tool, Dest, GateBuilder, GateProc};
use std::process::Command;

const BILLING_TOKEN: &str = "billing-token-0123456789abcdef";
const BILLING_NEXT: &str = "billing-token-rotated-fedcba9876";
const CRM_TOKEN: &str = "crm-token-0123456789abcdef0123";
const BODY: &str = r#"{"user_id": "u-1001", "name": "Li Lei"}"#;

fn digest(token: &str) -> String {
    transfer_gate::identity::token_digest_hex(token)
}

/// `billing` (two tokens: rotation), `crm` (a token, observe mode) and `batch` (127.0.0.2).
fn clients_toml(crm_mode: &str) -> String {
    format!(
        "[[client]]\nname = \"billing\"\nowner = \"payments team\"\ntoken_sha256 = [\"{}\", \"{}\"]\n\n\
         [[client]]\nname = \"crm\"\nowner = \"sales team\"\nmode = \"{crm_mode}\"\ntoken_sha256 = [\"{}\"]\n\n\
         [[client]]\nname = \"batch\"\ncidrs = [\"127.0.0.2/32\"]",
        digest(BILLING_TOKEN),
        digest(BILLING_NEXT),
        digest(CRM_TOKEN)
    )
}

/// A gate with the three clients and `eu` (allowlist: billing, batch) sent to `up`; no
/// approval is needed under the entity's counts.
async fn gate_with_clients(up: &Upstream, crm_mode: &str, extra_gate: &[&str]) -> GateProc {
    let mut b = GateBuilder::new()
        .destination(
            Dest::new("eu", "api.eu.test")
                .connect_to(up.addr)
                .set("clients", "[\"billing\", \"batch\"]"),
        )
        .section(&clients_toml(crm_mode));
    for l in extra_gate {
        b = b.gate_key(l);
    }
    b.start().await
}

/// curl through the gate with `proxy` (a proxy URL, credentials included) and `extra` args.
fn curl_via(proxy: &str, extra: &[&str]) -> (u16, String) {
    let mut args = vec![
        "--proxy",
        proxy,
        "-H",
        "content-type: application/json",
        "--data",
        BODY,
    ];
    args.extend_from_slice(extra);
    args.push("http://api.eu.test/v1/customers");
    curl_verbose(&args)
}

/// Like [`curl`], with curl's error message in the text when it got no answer.
fn curl_verbose(args: &[&str]) -> (u16, String) {
    require_tool("curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    let mut body = body.to_owned();
    if code == 0 {
        body.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_identify_clients_and_the_allowlist_refuses_the_others() {
    let up = Upstream::http().await;
    let gate = gate_with_clients(&up, "enforce", &[]).await;
    let port = gate.proxy.port();

    // Basic in curl's proxy URL, both tokens of the rotation; Python requests the same way.
    for t in [BILLING_TOKEN, BILLING_NEXT] {
        let (code, body) = curl_via(&format!("http://billing:{t}@127.0.0.1:{port}"), &[]);
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(
        python_post(
            &format!("http://billing:{BILLING_TOKEN}@127.0.0.1:{port}"),
            "http://api.eu.test/v1/customers",
            BODY
        )
        .0,
        200
    );
    // Bearer from reqwest.
    let r = gate
        .client()
        .post("http://api.eu.test/v1/customers")
        .header("proxy-authorization", format!("Bearer {BILLING_TOKEN}"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().len(), 4);
    // The credential never goes upstream.
    assert!(up
        .received()
        .iter()
        .all(|r| !r.headers.contains_key("proxy-authorization")));

    // crm is declared but not allowed at eu: 403 before anything is read or counted.
    let (code, body) = curl_via(&format!("http://crm:{CRM_TOKEN}@127.0.0.1:{port}"), &[]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("\"reason\":\"client_not_allowed\""), "{body}");
    // Unidentified (no credential, 127.0.0.1 is no client's) is not on the list either.
    let (code, body) = curl_via(&format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        up.received().len(),
        4,
        "nothing refused reached the upstream"
    );

    let lines = gate.audit_lines(6).await;
    let by = |l: &serde_json::Value| {
        (
            l["client_name"].as_str().unwrap().to_owned(),
            l["identified_by"].as_str().unwrap_or("null").to_owned(),
            l["reason"].as_str().unwrap().to_owned(),
        )
    };
    let seen: Vec<_> = lines.iter().map(by).collect();
    assert_eq!(
        seen.iter()
            .filter(|s| s.0 == "billing" && s.1 == "token")
            .count(),
        4,
        "{seen:?}"
    );
    assert!(seen.contains(&("crm".into(), "token".into(), "client_not_allowed".into())));
    assert!(seen.contains(&(
        "unidentified".into(),
        "null".into(),
        "client_not_allowed".into()
    )));
    assert!(
        lines.iter().all(|l| l["client"].is_string()),
        "the socket address stays"
    );

    // Metrics carry the client; the refusal counted under crm's name.
    assert!(
        gate.metric(r#"transfer_gate_decisions_total{client="billing",decision="allow",destination="eu",reason="allowed"}"#)
            .await
            >= 4.0
    );
    assert_eq!(
        gate.metric(r#"transfer_gate_decisions_total{client="crm",decision="block",destination="eu",reason="client_not_allowed"}"#)
            .await,
        1.0
    );
    assert!(
        gate.metric(
            r#"transfer_gate_bytes_total{client="billing",destination="eu",direction="upstream"}"#
        )
        .await
            >= (4 * BODY.len()) as f64
    );

    // /v1/status attributes the one subject to billing, which sent it first.
    let st = gate.status().await;
    let billing = st["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "billing")
        .unwrap()
        .clone();
    assert_eq!(billing["owner"], "payments team");
    let eu = &billing["destinations"][0];
    assert_eq!(eu["destination"], "eu");
    assert_eq!(eu["allowed"], 4);
    assert_eq!(eu["refused"], 0);
    assert_eq!(eu["new_subjects"], 1, "{st:#}");
    let crm = st["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "crm")
        .unwrap()
        .clone();
    assert_eq!(crm["destinations"][0]["refused"], 1);
    assert_eq!(crm["destinations"][0]["new_subjects"], 0);

    // `status` prints the CLIENT table.
    let out = crate::harness::cli_on(&gate.config, &["status"]);
    assert!(out.stdout.contains("CLIENT"), "{}", out.stdout);
    assert!(out.stdout.contains("payments team"), "{}", out.stdout);

    // No token in any log or the audit file.
    let audit = std::fs::read_to_string(gate.dir().join("data/audit.jsonl")).unwrap();
    for secret in [BILLING_TOKEN, BILLING_NEXT, CRM_TOKEN] {
        assert!(!gate.logs().contains(secret));
        assert!(!audit.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_do_not_verify_get_407_and_never_fall_back() {
    let up = Upstream::http().await;
    let gate = gate_with_clients(&up, "enforce", &[]).await;
    let port = gate.proxy.port();
    let long = "x".repeat(6000);
    let phone_user = "13812345678";
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("wrong".into(), b"Bearer not-a-token".to_vec()),
        ("empty".into(), b"".to_vec()),
        ("empty bearer".into(), b"Bearer ".to_vec()),
        ("unknown scheme".into(), b"Digest username=x".to_vec()),
        ("over-long".into(), format!("Bearer {long}").into_bytes()),
        ("non-UTF-8".into(), b"Bearer \xff\xfe\xfd".to_vec()),
        // Basic: the user name must be the token's client.
        (
            "another client's name".into(),
            format!("Basic {}", b64(&format!("crm:{BILLING_TOKEN}"))).into_bytes(),
        ),
        (
            "a phone number as user".into(),
            format!("Basic {}", b64(&format!("{phone_user}:wrong"))).into_bytes(),
        ),
    ];
    // 127.0.0.2 would identify `batch` by address: a bad credential must not fall back to it.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(gate.proxy_url()).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for (what, value) in &cases {
        let r = client
            .post("http://api.eu.test/v1/customers")
            .header(
                "proxy-authorization",
                http::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 407, "{what}");
        assert_eq!(reason_of(&r), "client_unidentified", "{what}");
        assert_eq!(
            r.headers()["proxy-authenticate"],
            "Basic realm=\"transfer-gate\"",
            "{what}"
        );
    }
    assert!(up.received().is_empty());
    // Without a credential, the same source address identifies `batch`.
    let r = client
        .post("http://api.eu.test/v1/customers")
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A flood of wrong tokens: 407 each, the gate stays responsive, nothing of them logged.
    let mut codes = Vec::new();
    for i in 0..300 {
        let (code, _) = curl(&[
            "--proxy",
            &format!("http://billing:flood-{i}@127.0.0.1:{port}"),
            "http://api.eu.test/",
        ]);
        codes.push(code);
    }
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 407),
        "{codes:?}"
    );
    let (code, body) = curl_via(
        &format!("http://billing:{BILLING_TOKEN}@127.0.0.1:{port}"),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let audit = std::fs::read_to_string(gate.dir().join("data/audit.jsonl")).unwrap_or_default();
    let logs = gate.logs();
    for secret in ["flood-1", "not-a-token", phone_user, BILLING_TOKEN] {
        assert!(!logs.contains(secret), "{secret} in the log");
        assert!(!audit.contains(secret), "{secret} in the audit log");
    }
    let lines = gate.audit_lines(cases.len() + 300 + 2).await;
    let refused = lines
        .iter()
        .filter(|l| l["reason"] == "client_unidentified")
        .count();
    assert_eq!(refused, cases.len() + 300);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidentified_refuse_and_a_client_in_observe_mode() {
    let up = Upstream::http().await;
    let gate = gate_with_clients(&up, "observe", &["unidentified = \"refuse\""]).await;
    let port = gate.proxy.port();
    // Unidentified: 407 even for a domestic host.
    let (code, _) = curl(&[
        "--proxy",
        &format!("http://127.0.0.1:{port}"),
        "http://intranet.example.cn/",
    ]);
    assert_eq!(code, 407);
    let (code, _) = curl_via(&format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(code, 407);
    // From 127.0.0.2 the address identifies `batch`, which eu allows.
    let (code, body) = curl_via(
        &format!("http://127.0.0.1:{port}"),
        &["--interface", "127.0.0.2"],
    );
    assert_eq!(code, 200, "{body}");
    // crm is in observe mode: its client_not_allowed is recorded, and the request goes on,
    // inspected and counted.
    let (code, body) = curl_via(&format!("http://crm:{CRM_TOKEN}@127.0.0.1:{port}"), &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(up.received().len(), 2);
    let lines = gate.audit_lines(4).await;
    let crm = lines
        .iter()
        .find(|l| l["client_name"] == "crm")
        .expect("crm's audit line");
    assert_eq!(crm["decision"], "would_block");
    assert_eq!(crm["reason"], "client_not_allowed");
    let batch = lines.iter().find(|l| l["client_name"] == "batch").unwrap();
    assert_eq!(batch["identified_by"], "address");
    assert_eq!(batch["new_subjects"], 1);
    assert_eq!(
        gate.metric(r#"transfer_gate_decisions_total{client="unidentified",decision="block",destination="domestic",reason="client_unidentified"}"#)
            .await,
        1.0
    );
}

/// A TLS proxy listener (its certificate for 127.0.0.1 from `server_ca`) asking for client
/// certificates of `client_ca`; `billing` is `spiffe://corp.test/billing`, `crm` any
/// `*.crm.corp.test` DNS name and also has a token.
async fn tls_gate(up: &Upstream, mode: &str) -> (GateProc, TestCa, TestCa) {
    let server_ca = TestCa::new("proxy server CA");
    let client_ca = TestCa::new("clients CA");
    let (cert, key) = server_ca.leaf_pem(&["127.0.0.1"]);
    let clients = format!(
        "[[client]]\nname = \"billing\"\ntls_identities = [\"spiffe://corp.test/billing\"]\n\n\
         [[client]]\nname = \"crm\"\ntls_identities = [\"*.crm.corp.test\"]\ntoken_sha256 = [\"{}\"]",
        digest(CRM_TOKEN)
    );
    let gate = GateBuilder::new()
        .file("proxy.pem", cert.as_bytes())
        .file("proxy.key", key.as_bytes())
        .file("clients-ca.pem", client_ca.cert_pem.as_bytes())
        .gate_key("proxy_tls_listen = \"127.0.0.1:0\"")
        .gate_key("proxy_tls_cert = \"proxy.pem\"")
        .gate_key("proxy_tls_key = \"proxy.key\"")
        .gate_key("client_ca_file = \"clients-ca.pem\"")
        .gate_key(&format!("client_certificates = \"{mode}\""))
        .destination(
            Dest::new("eu", "api.eu.test")
                .connect_to(up.addr)
                .set("clients", "[\"billing\", \"crm\"]"),
        )
        .section(&clients)
        .start()
        .await;
    assert!(
        gate.proxy_tls.is_some(),
        "listen.json names the TLS proxy listener"
    );
    (gate, server_ca, client_ca)
}

/// Writes a client certificate (URI SAN `uri` or DNS SAN `dns`) signed by `ca`; returns the
/// cert and key paths.
fn client_cert(gate: &GateProc, ca: &TestCa, name: &str, san: &str) -> (String, String) {
    let (cert, key) = ca.client_pem(san);
    let c = gate.dir().join(format!("{name}.pem"));
    let k = gate.dir().join(format!("{name}.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c.display().to_string(), k.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_identify_on_the_tls_proxy_listener() {
    let up = Upstream::http().await;
    let (gate, server_ca, client_ca) = tls_gate(&up, "optional").await;
    let proxy = format!("https://127.0.0.1:{}", gate.proxy_tls.unwrap().port());
    let ca_path = gate.dir().join("server-ca.pem");
    std::fs::write(&ca_path, &server_ca.cert_pem).unwrap();
    let ca_path = ca_path.display().to_string();
    let (bc, bk) = client_cert(&gate, &client_ca, "billing", "spiffe://corp.test/billing");
    let (cc, ck) = client_cert(&gate, &client_ca, "crm", "api.crm.corp.test");
    let other_ca = TestCa::new("another CA");
    let (oc, ok) = client_cert(&gate, &other_ca, "other", "spiffe://corp.test/billing");

    let via = |cert: Option<(&str, &str)>, extra: &[&str]| {
        let mut args = vec!["--proxy-cacert", ca_path.as_str()];
        if let Some((c, k)) = cert {
            args.extend(["--proxy-cert", c, "--proxy-key", k]);
        }
        args.extend_from_slice(extra);
        curl_via(&proxy, &args)
    };
    let (code, body) = via(Some((&bc, &bk)), &[]);
    assert_eq!(code, 200, "{body}");
    let (code, body) = via(Some((&cc, &ck)), &[]);
    assert_eq!(code, 200, "{body}");
    // A certificate and a token: the certificate wins, the token is not consulted.
    let (code, body) = via(
        Some((&bc, &bk)),
        &["--proxy-header", "Proxy-Authorization: Bearer wrong-token"],
    );
    assert_eq!(code, 200, "{body}");
    // Optional: another CA's certificate is ignored; unidentified, not allowed at eu.
    let (code, body) = via(Some((&oc, &ok)), &[]);
    assert_eq!(code, 403, "{body}");
    // No certificate, a token instead.
    let (code, body) = via(
        None,
        &[
            "--proxy-header",
            &format!("Proxy-Authorization: Bearer {CRM_TOKEN}"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    // h2 to the TLS proxy listener (ALPN) carries the certificate's identity too.
    let (code, body) = via(Some((&bc, &bk)), &["--proxy-http2"]);
    assert!(code == 200 || body.contains("proxy-http2"), "{code} {body}");

    let lines = gate.audit_lines(5).await;
    let who: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["client_name"].as_str().unwrap().to_owned(),
                l["identified_by"].as_str().unwrap_or("null").to_owned(),
            )
        })
        .collect();
    assert_eq!(who[0], ("billing".into(), "certificate".into()));
    assert_eq!(who[1], ("crm".into(), "certificate".into()));
    assert_eq!(who[2], ("billing".into(), "certificate".into()));
    assert_eq!(who[3], ("unidentified".into(), "null".into()));
    assert_eq!(who[4], ("crm".into(), "token".into()));
    // Under `optional` no handshake was refused.
    assert_eq!(handshake_errors(&gate).await, 0.0);
}

/// All of `transfer_gate_proxy_tls_handshake_errors_total` (a series appears when first used).
async fn handshake_errors(gate: &GateProc) -> f64 {
    gate.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("transfer_gate_proxy_tls_handshake_errors_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_the_handshake_without_a_certificate_of_the_ca() {
    let up = Upstream::http().await;
    let (gate, server_ca, client_ca) = tls_gate(&up, "require").await;
    let proxy = format!("https://127.0.0.1:{}", gate.proxy_tls.unwrap().port());
    let ca_path = gate.dir().join("server-ca.pem");
    std::fs::write(&ca_path, &server_ca.cert_pem).unwrap();
    let ca_path = ca_path.display().to_string();
    let other_ca = TestCa::new("another CA");
    let (oc, ok) = client_cert(&gate, &other_ca, "other", "spiffe://corp.test/billing");
    let (bc, bk) = client_cert(&gate, &client_ca, "billing", "spiffe://corp.test/billing");

    let (code, _) = curl_via(&proxy, &["--proxy-cacert", &ca_path]);
    assert_eq!(code, 0, "no certificate: no HTTP answer at all");
    let (code, _) = curl_via(
        &proxy,
        &[
            "--proxy-cacert",
            &ca_path,
            "--proxy-cert",
            &oc,
            "--proxy-key",
            &ok,
        ],
    );
    assert_eq!(code, 0, "another CA: the handshake is refused");
    assert!(up.received().is_empty());
    let (code, body) = curl_via(
        &proxy,
        &[
            "--proxy-cacert",
            &ca_path,
            "--proxy-cert",
            &bc,
            "--proxy-key",
            &bk,
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(handshake_errors(&gate).await, 2.0);
    let text = gate.metrics().await;
    assert!(
        text.contains(r#"transfer_gate_proxy_tls_handshake_errors_total{reason="unknown_ca"}"#)
            || text.contains(
                r#"transfer_gate_proxy_tls_handshake_errors_total{reason="no_certificate"}"#
            ),
        "{text}"
    );
}

#[test]
fn client_token_prints_a_token_once_and_its_digest() {
    let out = crate::harness::cli::cli(["client", "token", "billing"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let token = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .expect("a 64-hex-digit token")
        .to_owned();
    let line = format!("token_sha256 = [\"{}\"]", digest(&token));
    assert!(out.stdout.contains(&line), "{}", out.stdout);
    // A new token each time; a name that is not a client name is refused.
    let again = crate::harness::cli::cli(["client", "token", "billing"]);
    assert!(!again.stdout.contains(&token));
    assert_eq!(
        crate::harness::cli::cli(["client", "token", "Not A Name"]).code,
        Some(2)
    );
}

/// A stalled TLS handshake on the TLS proxy listener — nothing sent, or half a record — is
/// closed by the header deadline (SPEC §9), and the listener goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_on_the_tls_proxy_listener_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::http().await;
    let (gate, server_ca, _) = tls_gate(&up, "optional").await;
    let addr = gate.proxy_tls.unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The first bytes of a TLS handshake record, then nothing.
    half.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    for s in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        // The harness's client_header_seconds is well under this bound.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("the gate closes a stalled handshake");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
    // The listener still serves a real client.
    let ca_path = gate.dir().join("server-ca.pem");
    std::fs::write(&ca_path, &server_ca.cert_pem).unwrap();
    let proxy = format!("https://127.0.0.1:{}", addr.port());
    let ca = ca_path.display().to_string();
    let token = format!("Proxy-Authorization: Bearer {CRM_TOKEN}");
    let (code, body) = curl_via(&proxy, &["--proxy-cacert", &ca, "--proxy-header", &token]);
    assert_eq!(code, 200, "{body}");
}
