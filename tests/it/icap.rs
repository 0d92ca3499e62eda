//! The ICAP REQMOD service behind a real Squid: clients (curl, Python `requests`, reqwest) use
//! Squid as their proxy, Squid asks the gate over ICAP (`bypass=off`), and the gate judges each
//! request on its own path — the same counts, refusals, audit lines and streaming guarantees as
//! the proxy listener. Also the ICAP protocol itself over raw TCP (OPTIONS, ISTag on reload,
//! preview, malformed input).

use crate::harness::python_post;
use crate::harness::squid::Squid;
use crate::harness::upstream::Upstream;
use crate::harness::{
    eventually, free_port, poll_until, require_tool, Dest, GateBuilder, GateProc,
};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CATEGORIES: &str = "[inspection.categories]\nhealth = [\"diagnosis\"]\ncontact = [\"phone\"]";

fn approval(id: &str, mechanism: &str, dest: &str, cats: &str) -> String {
    format!(
        "[[approval]]\nid = \"{id}\"\nmechanism = \"{mechanism}\"\nstatus = \"active\"\ndestinations = [\"{dest}\"]\ncategories = [{cats}]\nvalid_from = \"2024-01-01\"\nvalid_until = \"2099-12-31\"\n"
    )
}

/// A gate with an ICAP listener on a port it picks; returns it with the ICAP port.
async fn gate_with_icap(b: GateBuilder) -> (GateProc, u16) {
    let gate = b.gate_key("icap_listen = \"127.0.0.1:0\"").start().await;
    let port = gate.icap.unwrap().port();
    (gate, port)
}

/// `eu` (approved: security assessment for basic, contact, health) and `us` (no approval),
/// both served by `up` through Squid (their names resolve to loopback in Squid's hosts file).
fn two_destinations(up: &Upstream) -> GateBuilder {
    GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .section(CATEGORIES)
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "eu",
            "\"basic\", \"contact\", \"health\", \"identity\"",
        ))
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .destination(Dest::new("us", "api.us.test").connect_to(up.addr))
}

fn audit_lines(gate: &GateProc) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gate.dir().join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls until `n` audit lines are written (the audit log is flushed at least every second).
async fn wait_audit(gate: &GateProc, n: usize) -> Vec<serde_json::Value> {
    let enough = poll_until(Duration::from_secs(10), || async {
        Some(audit_lines(gate)).filter(|l| l.len() >= n)
    })
    .await;
    enough.unwrap_or_else(|| audit_lines(gate))
}

/// Sends raw bytes to the ICAP port and reads the answer until the peer closes or `until`
/// appears in it (bounded by 10 s).
pub(crate) async fn icap_raw(port: u16, msg: &[u8], until: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(msg).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        if !until.is_empty() && String::from_utf8_lossy(&buf).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn options_msg(port: u16) -> Vec<u8> {
    format!("OPTIONS icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nEncapsulated: null-body=0\r\n\r\n").into_bytes()
}

fn istag_of(resp: &str) -> String {
    resp.lines()
        .find_map(|l| l.strip_prefix("ISTag: "))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn options_advertise_the_reqmod_service_and_the_istag_changes_on_reload() {
    let up = Upstream::http().await;
    let (gate, port) = gate_with_icap(two_destinations(&up)).await;
    let r = icap_raw(port, &options_msg(port), "\r\n\r\n").await;
    assert!(r.starts_with("ICAP/1.0 200 OK\r\n"), "{r}");
    for h in [
        "Methods: REQMOD\r\n",
        "Allow: 204\r\n",
        "Transfer-Preview: *\r\n",
        "Encapsulated: null-body=0\r\n",
        "Max-Connections: ",
        "Options-TTL: ",
        "Preview: ",
    ] {
        assert!(r.contains(h), "OPTIONS lacks {h:?}: {r}");
    }
    let tag = istag_of(&r);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() <= 34,
        "{tag}"
    );
    // A reload that changes the approvals changes the ISTag.
    std::fs::write(
        gate.dir().join("approvals.toml"),
        approval("SC-9", "standard_contract", "us", "\"basic\""),
    )
    .unwrap();
    let reload = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(gate.admin_url("/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let r2 = icap_raw(port, &options_msg(port), "\r\n\r\n").await;
    assert_ne!(istag_of(&r2), tag, "the ISTag must change on reload");
    // Other services and methods are refused at the ICAP level.
    let r = icap_raw(
        port,
        format!("OPTIONS icap://127.0.0.1:{port}/respmod ICAP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
        "",
    )
    .await;
    assert!(r.starts_with("ICAP/1.0 404 "), "{r}");
    let r = icap_raw(
        port,
        format!("RESPMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: x\r\nEncapsulated: null-body=0\r\n\r\n").as_bytes(),
        "",
    )
    .await;
    assert!(r.starts_with("ICAP/1.0 405 "), "{r}");
}

/// Runs curl through Squid; returns (status, reason header, body).
fn curl_via(proxy: &str, url: &str, body: &str) -> (u16, String, String) {
    require_tool("curl");
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-D", "-", "-o", "-"])
        .args(["-x", proxy])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            url,
        ])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reason = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-transfer-gate-reason: ")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, reason, body.to_owned())
}

#[tokio::test]
async fn curl_and_python_requests_through_squid_are_judged_by_the_gate() {
    let up = Upstream::http().await;
    let (gate, port) = gate_with_icap(two_destinations(&up)).await;
    let squid = Squid::start(port, &["api.eu.test", "api.us.test"]).await;
    let eu = format!("http://api.eu.test:{}/v1/ingest", up.addr.port());
    let us = format!("http://api.us.test:{}/v1/ingest", up.addr.port());
    type Client = fn(&str, &str, &str) -> (u16, String, String);
    let clients: [(&str, Client); 2] = [("curl", curl_via), ("python", python_post)];
    let mut next_user = 1;
    for (name, client) in clients {
        // Allowed: forwarded by Squid with the body unchanged.
        let body = format!("{{\"user_id\":{next_user},\"diagnosis\":\"flu\"}}");
        let before = up.received().len();
        // The clients block: they run off the runtime thread that serves the upstream.
        let run = |url: &str, body: &str| {
            let (proxy, url, body) = (squid.proxy_url(), url.to_owned(), body.to_owned());
            tokio::task::spawn_blocking(move || client(&proxy, &url, &body))
        };
        let (status, _, text) = run(&eu, &body).await.unwrap();
        assert_eq!(status, 200, "{name}: {text}\n{}", squid.logs());
        assert_eq!(text, "upstream-ok", "{name}");
        let got = up.received();
        assert_eq!(got.len(), before + 1, "{name}");
        assert_eq!(got[before].body, body.as_bytes(), "{name}");
        assert!(got[before].complete, "{name}");
        // Refused: the 451 JSON and the reason header, nothing forwarded.
        let (status, reason, text) = run(&us, &format!("{{\"user_id\":{}}}", next_user + 1))
            .await
            .unwrap();
        assert_eq!(status, 451, "{name}: {text}");
        assert_eq!(reason, "approval_required", "{name}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "transfer_blocked", "{name}");
        assert_eq!(v["reason"], "approval_required", "{name}");
        assert_eq!(v["destination"], "us", "{name}");
        assert_eq!(
            up.received().len(),
            before + 1,
            "{name}: a refused request was forwarded"
        );
        // An unknown host is refused before anything leaves.
        let (status, reason, _) = run(
            &format!("http://api.eu.test.invalid:{}/x", up.addr.port()),
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(
            (status, reason.as_str()),
            (451, "unknown_destination"),
            "{name}"
        );
        next_user += 10;
    }
    // Counted exactly once each, sensitive (health), on the gate's own counters.
    assert_eq!(gate.entity_counts().await, (2, 2));
    let lines = wait_audit(&gate, 6).await;
    assert!(lines.len() >= 6, "{lines:?}");
    for l in &lines {
        assert_eq!(l["origin"], "icap", "{l}");
    }
    assert!(lines
        .iter()
        .any(|l| l["destination"] == "us" && l["reason"] == "approval_required"));
    assert_eq!(
        gate.metric(
            r#"transfer_gate_decisions_total{client="unidentified",decision="allow",destination="eu",reason="allowed"}"#
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn spec_examples_count_exactly_the_same_through_squid() {
    let up = Upstream::http().await;
    let (gate, port) = gate_with_icap(two_destinations(&up)).await;
    let squid = Squid::start(port, &["api.eu.test"]).await;
    let url = format!("http://api.eu.test:{}/v1/ingest", up.addr.port());
    let client = squid.client();
    let post = |body: &'static str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // The same corpus and expectations as the proxy listener's SPEC §11 test.
    let r = post(r#"[{"user_id":1,"diagnosis":"x"},{"user_id":"1"},{"user_id":2}]"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (2, 1));
    let r =
        post(r#"{"batch":[{"user_id":7,"phone":"138 0013 8000"}],"contact":"+86 139-0013-9000"}"#)
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (4, 1));
    let r = post(r#"{"name":"x","id_no":"11010519491231002X"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (5, 2));
    let r = post(r#"{"name":"x","id_no":"110105194912310021"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (5, 2));
    // The same subjects again: nothing new.
    let r = post(r#"[{"user_id":1,"diagnosis":"x"},{"user_id":"1"},{"user_id":2}]"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (5, 2));
    // A subject in the query string and in a subject header count too.
    let r = client
        .get(format!("{url}?user_id=900"))
        .header("x-user-id", "901")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gate.entity_counts().await, (7, 2));
    assert_eq!(up.received().len(), 6);
}

#[tokio::test]
async fn the_icap_listener_down_fails_closed() {
    let up = Upstream::http().await;
    // Squid points at an ICAP port where nothing listens (the gate is not running).
    let squid = Squid::start(free_port(), &["api.eu.test"]).await;
    let url = format!("http://api.eu.test:{}/v1/ingest", up.addr.port());
    let (proxy, u) = (squid.proxy_url(), url.clone());
    let (status, _, _) =
        tokio::task::spawn_blocking(move || curl_via(&proxy, &u, r#"{"user_id":1}"#))
            .await
            .unwrap();
    assert!(
        status >= 500,
        "status {status}: bypass=off must fail the request"
    );
    let r = squid.client().get(&url).send().await.unwrap();
    assert!(r.status().as_u16() >= 500);
    assert!(
        up.received().is_empty(),
        "nothing may be forwarded unjudged"
    );
}

/// A chunked NDJSON body through Squid: `allowed` records without PI, then `tail`.
async fn stream_via_squid(
    squid: &Squid,
    url: &str,
    allowed_chunks: u64,
    tail: &'static [u8],
) -> Result<reqwest::Response, reqwest::Error> {
    use futures_util::StreamExt as _;
    let line = format!("{{\"event\":\"view\",\"pad\":\"{}\"}}\n", "p".repeat(100));
    let chunk = bytes::Bytes::from(line.repeat((64 << 10) / line.len()));
    let body = futures_util::stream::iter(
        (0..allowed_chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    )
    .chain(futures_util::stream::iter([Ok(bytes::Bytes::from_static(
        tail,
    ))]));
    squid
        .client()
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
}

#[tokio::test]
async fn a_late_refused_record_in_a_streamed_body_never_completes_upstream() {
    let up = Upstream::builder().sink().start().await;
    let (gate, port) = gate_with_icap(
        GateBuilder::new()
            .section(CATEGORIES)
            .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr)),
    )
    .await;
    let squid = Squid::start(port, &["api.eu.test"]).await;
    let url = format!("http://api.eu.test:{}/v1/ingest", up.addr.port());
    // 32 MiB without PI, streamed (chunked, over atomic_body_bytes): released as it is judged.
    let ok = stream_via_squid(&squid, &url, 512, b"{\"event\":\"end\"}\n")
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", squid.logs());
    eventually(
        "the allowed stream upstream",
        Duration::from_secs(10),
        || async { (!up.received().is_empty()).then_some(()) },
    )
    .await;
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].complete);
    let allowed_len = got[0].body_len;
    // The same, then one record with sensitive data and no contract: refused after most of
    // the body went on. Squid must never complete the upstream request.
    let r = stream_via_squid(
        &squid,
        &url,
        512,
        b"{\"user_id\":42,\"diagnosis\":\"flu\"}\n{\"event\":\"after\"}\n",
    )
    .await;
    // Squid answers the client with its ICAP error page (5xx) once the gate refuses: an
    // answer, not a broken connection, and never a success.
    let r = r.expect("Squid answers the refused stream");
    assert!(
        r.status().is_server_error(),
        "a refused stream gets Squid's error page, not {}",
        r.status()
    );
    eventually(
        "the refused stream's request upstream",
        Duration::from_secs(20),
        || async { (up.received().len() >= 2).then_some(()) },
    )
    .await;
    let got = up.received();
    assert_eq!(got.len(), 2, "one request per stream");
    assert!(
        !got[1].complete,
        "the upstream must see a broken body, never a clean end"
    );
    assert!(
        got[1].body_len < allowed_len + 64,
        "bytes of the refused record went upstream"
    );
    assert_eq!(gate.entity_counts().await, (0, 0));
    let lines = wait_audit(&gate, 2).await;
    assert!(
        lines
            .iter()
            .any(|l| l["origin"] == "icap" && l["reason"] == "approval_required"),
        "{lines:?}"
    );
}

/// A REQMOD message encapsulating a request head without a body.
fn reqmod_head(port: u16, head: &str) -> Vec<u8> {
    format!(
        "REQMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body={}\r\n\r\n{head}",
        head.len()
    )
    .into_bytes()
}

/// SPEC §2 through ICAP: the ICAP client dials what the gate allows, so a request or tunnel to
/// the gate's own listeners, or a domestic tunnel to a port outside `tunnel_ports`, is refused
/// `forbidden_target` (encapsulated 403, audited with origin `icap`), while other domestic
/// traffic passes.
#[tokio::test]
async fn targets_the_gate_refuses_are_refused_through_icap_too() {
    let (gate, port) =
        gate_with_icap(GateBuilder::new().section("[[domestic]]\ncidrs = [\"10.0.0.0/8\"]")).await;
    let admin = gate
        .admin_url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let cases = [
        format!("GET http://{admin}/v1/status HTTP/1.1\r\nHost: {admin}\r\n\r\n"),
        format!("CONNECT {admin} HTTP/1.1\r\nHost: {admin}\r\n\r\n"),
        format!("CONNECT {p} HTTP/1.1\r\nHost: {p}\r\n\r\n", p = gate.proxy),
        "CONNECT 10.1.2.3:5432 HTTP/1.1\r\nHost: 10.1.2.3:5432\r\n\r\n".to_owned(),
    ];
    for head in &cases {
        let resp = icap_raw(port, &reqmod_head(port, head), "}").await;
        assert!(resp.starts_with("ICAP/1.0 200"), "{head}: {resp}");
        assert!(resp.contains("HTTP/1.1 403"), "{head}: {resp}");
        assert!(resp.contains("forbidden_target"), "{head}: {resp}");
    }
    // A domestic request elsewhere (loopback is open in the harness's deny_cidrs; port 9 is
    // none of the gate's) passes unmodified (204).
    let head = "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n";
    let resp = icap_raw(port, &reqmod_head(port, head), "\r\n\r\n").await;
    assert!(resp.starts_with("ICAP/1.0 204"), "{resp}");
    let lines = wait_audit(&gate, cases.len()).await;
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["reason"] == "forbidden_target" && l["origin"] == "icap")
        .collect();
    assert_eq!(refused.len(), cases.len(), "{lines:?}");
}

/// A hostile ICAP client: a REQMOD whose body carries a subject, sent as a preview, then
/// (after the gate's `100 Continue`) half of the rest before the client goes away. Nothing of
/// it may be allowed or counted — no `204`, no echoed request, no subject in the ledger — and
/// the listener goes on serving.
#[tokio::test]
async fn a_body_cut_off_after_the_preview_is_neither_allowed_nor_counted() {
    let up = Upstream::builder().sink().start().await;
    let (gate, port) = gate_with_icap(two_destinations(&up)).await;
    let body = r#"{"user_id":"77001234","name":"Preview Person","note":"0123456789abcdef"}"#;
    let head = format!(
        "POST http://api.eu.test/v1/ingest HTTP/1.1\r\nHost: api.eu.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (preview, rest) = body.as_bytes().split_at(16);
    let mut msg = format!(
        "REQMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nAllow: 204\r\nPreview: {}\r\nEncapsulated: req-hdr=0, req-body={}\r\n\r\n{head}{:x}\r\n",
        preview.len(),
        head.len(),
        preview.len()
    )
    .into_bytes();
    msg.extend_from_slice(preview);
    msg.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&msg).await.unwrap();
    // The gate has not seen the subject's value yet: it asks for the rest.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("100 Continue") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    assert!(
        String::from_utf8_lossy(&got).contains("100 Continue"),
        "100 Continue expected: {}",
        String::from_utf8_lossy(&got)
    );
    // Half of the rest, announced as all of it, then the client is gone.
    let half = &rest[..rest.len() / 2];
    s.write_all(format!("{:x}\r\n", rest.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(half).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    // The gate answers and closes: a gate that hangs on the cut-off body fails here.
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the gate answers the cut-off body and closes the connection")
        .expect("the connection ends cleanly");
    let answer = String::from_utf8_lossy(&answer);
    // Its answer: the request replaced by a 400 (the body could not be read).
    assert!(answer.starts_with("ICAP/1.0 200"), "{answer}");
    assert!(answer.contains("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(!answer.contains("ICAP/1.0 204"), "allowed: {answer}");
    assert!(
        !answer.contains("POST http://api.eu.test"),
        "echoed: {answer}"
    );
    let series = "transfer_gate_entity_subjects{class=\"all\"}";
    assert!(gate.metrics().await.contains(series), "the gauge exists");
    assert_eq!(
        gate.metric(series).await,
        0.0,
        "a cut-off body counts no subject"
    );
    // The listener goes on serving, and the same request sent whole is allowed and counted.
    let r = icap_raw(port, &options_msg(port), "\r\n\r\n").await;
    assert!(r.starts_with("ICAP/1.0 200"), "{r}");
    let mut whole = format!(
        "REQMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nAllow: 204\r\nPreview: {}\r\nEncapsulated: req-hdr=0, req-body={}\r\n\r\n{head}{:x}\r\n",
        body.len(),
        head.len(),
        body.len()
    )
    .into_bytes();
    whole.extend_from_slice(body.as_bytes());
    whole.extend_from_slice(b"\r\n0; ieof\r\n\r\n");
    let r = icap_raw(port, &whole, "\r\n\r\n").await;
    assert!(r.starts_with("ICAP/1.0 204"), "{r}");
    let counted = poll_until(Duration::from_secs(10), || async {
        (gate.metric(series).await == 1.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the whole request counts its subject");
}

/// Who is sending behind Squid (SPEC §2 "Behind Squid"), with the shipped fragment's
/// `adaptation_send_username on` and `adaptation_send_client_ip on`: Squid authenticates its
/// users (Basic, through a helper that accepts any password); a user name that is a declared
/// client's `name` identifies that client, any other falls back to `X-Client-IP` against the
/// clients' `cidrs` — both `identified_by` `icap` — and the destination's `clients` allowlist
/// applies to either.
#[tokio::test]
async fn squid_tells_the_gate_who_is_sending() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::http().await;
    let b = GateBuilder::new()
        .destination(
            Dest::new("eu", "api.eu.test")
                .connect_to(up.addr)
                .set("clients", "[\"billing\"]"),
        )
        .section(&format!(
            "[[client]]\nname = \"billing\"\nowner = \"payments team\"\ntoken_sha256 = [\"{}\"]\n\n\
             [[client]]\nname = \"batch\"\ncidrs = [\"127.0.0.0/8\"]",
            transfer_gate::identity::token_digest_hex("not-used-behind-squid-0123456789")
        ));
    let (gate, port) = gate_with_icap(b).await;
    // Squid's Basic authentication helper: every user name and password is accepted (the
    // password is Squid's business; the gate only ever sees the name).
    let helper_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(helper_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper = helper_dir.path().join("accept-any");
    std::fs::write(&helper, "#!/bin/sh\nwhile read -r line; do echo OK; done\n").unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let auth = format!(
        "auth_param basic program {}\n\
         auth_param basic children 1\n\
         auth_param basic realm transfer-gate-test\n\
         acl authed proxy_auth REQUIRED\n\
         http_access allow authed",
        helper.display()
    );
    let squid = Squid::start_with(port, &["api.eu.test"], &auth).await;
    let url = format!("http://api.eu.test:{}/v1/events", up.addr.port());
    let as_user = |user: &str| {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(squid.proxy_url())
                    .unwrap()
                    .basic_auth(user, "squid-password"),
            )
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let body = r#"{"user_id": "u-1001"}"#;
    // The user name is a declared client: billing, allowed at eu.
    let r = as_user("billing")
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", squid.logs());
    // Not a declared client's name: X-Client-IP (127.0.0.1) makes it batch, not allowed at eu.
    let r = as_user("someone-else")
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-transfer-gate-reason")
            .and_then(|v| v.to_str().ok()),
        Some("client_not_allowed")
    );
    assert_eq!(
        up.received().len(),
        1,
        "only billing's request went upstream"
    );

    let lines = wait_audit(&gate, 2).await;
    let who: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["client_name"].as_str().unwrap_or("?"),
                l["identified_by"].as_str().unwrap_or("null"),
                l["reason"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            ("billing", "icap", "allowed"),
            ("batch", "icap", "client_not_allowed")
        ],
        "{lines:?}"
    );
    assert_eq!(
        gate.metric(
            r#"transfer_gate_decisions_total{client="billing",decision="allow",destination="eu",reason="allowed"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        gate.metric(
            r#"transfer_gate_decisions_total{client="batch",decision="block",destination="eu",reason="client_not_allowed"}"#
        )
        .await,
        1.0
    );
}

/// Who is sending, behind Squid (SPEC §2 "Behind Squid"): Squid's `X-Client-IP` matched
/// against the clients' networks through a real Squid; `X-Client-Username` naming a declared
/// client (sent by Squid when it authenticates users, here in a raw REQMOD); a client outside
/// the destination's `clients` gets the 403 encapsulated, and under `unidentified = "refuse"`
/// an unidentified request the 407.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_who_is_sending_are_encapsulated() {
    let up = Upstream::http().await;
    let (gate, port) = gate_with_icap(
        GateBuilder::new()
            .section(CATEGORIES)
            .gate_key("unidentified = \"refuse\"")
            .section("[[client]]\nname = \"desk\"\nowner = \"office\"\ncidrs = [\"127.0.0.1/32\"]\n\n[[client]]\nname = \"crm\"\n")
            .destination(
                Dest::new("jp", "api.jp.test")
                    .connect_to(up.addr)
                    .set("clients", "[\"desk\"]"),
            ),
    )
    .await;
    let squid = Squid::start(port, &["api.jp.test"]).await;
    let proxy = format!("http://{}", squid.addr);
    let url = format!("http://api.jp.test:{}/v1/c", up.addr.port());
    let (status, reason, body) =
        tokio::task::spawn_blocking(move || curl_via(&proxy, &url, r#"{"user_id":"u-77"}"#))
            .await
            .unwrap();
    assert_eq!(status, 200, "{reason} {body}");
    assert_eq!(up.received().len(), 1);

    // A user name naming crm wins over the address; crm may not send to jp.
    let head =
        "POST http://api.jp.test/v1/c HTTP/1.1\r\nHost: api.jp.test\r\nContent-Length: 0\r\n\r\n";
    let icap = |extra: &str| {
        format!(
            "REQMOD icap://127.0.0.1:{port}/reqmod ICAP/1.0\r\nHost: 127.0.0.1:{port}\r\nAllow: 204\r\n{extra}Encapsulated: req-hdr=0, null-body={}\r\n\r\n{head}",
            head.len()
        )
        .into_bytes()
    };
    let resp = icap_raw(
        port,
        &icap("X-Client-IP: 127.0.0.1\r\nX-Client-Username: crm\r\n"),
        "}",
    )
    .await;
    assert!(resp.contains("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("client_not_allowed"), "{resp}");
    // No identity at all under `refuse`: the 407, encapsulated.
    let resp = icap_raw(port, &icap("X-Client-IP: 192.0.2.7\r\n"), "}").await;
    assert!(resp.contains("HTTP/1.1 407"), "{resp}");
    assert!(resp.contains("client_unidentified"), "{resp}");
    // A hostile ICAP client: a phone number as the user name and as the address names nobody,
    // and is written nowhere.
    let phone = "13812345678";
    let resp = icap_raw(
        port,
        &icap(&format!(
            "X-Client-IP: {phone}\r\nX-Client-Username: {phone}\r\n"
        )),
        "}",
    )
    .await;
    assert!(resp.contains("HTTP/1.1 407"), "{resp}");
    assert!(!resp.contains(phone), "{resp}");
    assert_eq!(
        up.received().len(),
        1,
        "nothing refused reached the upstream"
    );

    let lines = gate.audit_lines(4).await;
    let audit = std::fs::read_to_string(gate.dir().join("data/audit.jsonl")).unwrap();
    assert!(!audit.contains(phone) && !gate.logs().contains(phone));
    let who: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["client_name"].as_str().unwrap(),
                l["identified_by"].as_str().unwrap_or("null"),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(who.contains(&("desk", "icap", "allowed")), "{who:?}");
    assert!(
        who.contains(&("crm", "icap", "client_not_allowed")),
        "{who:?}"
    );
    assert!(
        who.contains(&("unidentified", "null", "client_unidentified")),
        "{who:?}"
    );
    assert!(lines.iter().all(|l| l["origin"] == "icap"));
}
