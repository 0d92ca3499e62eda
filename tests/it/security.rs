//! SPEC §2 "The gate is never a way around itself", through the real binary: a real
//! `redis-server` ledger that a proxy client tries to reach by `CONNECT` and by plain HTTP
//! (by IP and by `localhost`), the admin API and the proxy port through the proxy, the default
//! `deny_cidrs` (loopback, link-local) and `tunnel_ports` (a domestic database port refused
//! before anything is dialled) — each a 403 `forbidden_target` with an audit line and a
//! decision sample, while a destination's `connect_to` stays exempt.

use crate::harness::redis::RedisServer;
use crate::harness::upstream::Upstream;
use crate::harness::{cli_on, eventually, poll_until, Dest, GateBuilder, GateProc};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `CONNECT target` and returns the status code and the whole answer (head and body).
async fn connect(proxy: SocketAddr, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // A refusal carries a content-length body; a 200 has none: read until both are in.
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => break,
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn assert_forbidden(code: u16, text: &str, what: &str) {
    assert_eq!(code, 403, "{what}: {text}");
    assert!(
        text.contains("\"reason\":\"forbidden_target\""),
        "{what}: {text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("x-transfer-gate-reason: forbidden_target"),
        "{what}: {text}"
    );
}

async fn assert_forbidden_response(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 403, "{what}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "forbidden_target", "{what}");
    assert_eq!(v["error"], "transfer_blocked", "{what}");
}

fn audit_lines(gate: &GateProc) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gate.dir().join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const FORBIDDEN_DOMESTIC: &str = "transfer_gate_decisions_total{client=\"unidentified\",decision=\"block\",destination=\"domestic\",reason=\"forbidden_target\"}";

/// Polls until the audit log holds `n` `forbidden_target` lines.
async fn wait_audited(gate: &GateProc, n: usize) -> Vec<serde_json::Value> {
    let enough = poll_until(Duration::from_secs(5), || async {
        let lines: Vec<_> = audit_lines(gate)
            .into_iter()
            .filter(|l| l["reason"] == "forbidden_target")
            .collect();
        Some(lines).filter(|l| l.len() >= n)
    })
    .await;
    enough.unwrap_or_else(|| {
        panic!(
            "fewer than {n} forbidden_target audit lines:\n{:?}",
            audit_lines(gate)
        )
    })
}

#[tokio::test]
async fn the_ledger_redis_is_never_reached_through_the_gate() {
    let redis = RedisServer::start();
    let up = Upstream::http().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("subject-hash.key");
    std::fs::write(&key, [0x5a; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = redis.addr().rsplit_once(':').unwrap().1.to_owned();
    // Loopback open (the harness's deny_cidrs) and the Redis port open to tunnels: only the
    // "never the ledger" rule stands between a client and Redis.
    let gate = GateBuilder::new()
        .ledger_toml(&format!(
            "backend = \"redis\"\nredis_url = \"{}\"\nhash_key_file = \"{}\"",
            redis.url(),
            key.display()
        ))
        .gate_key(&format!("tunnel_ports = [443, {port}]"))
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let r = gate
        .post_json("http://api.eu.test/v1/events", r#"{"user_id": 1}"#)
        .await;
    assert_eq!(r.status(), 200);
    let keys_before = redis.cli(&["DBSIZE"]);
    assert_ne!(keys_before.trim(), "0", "the ledger wrote to Redis");

    for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (code, text) = connect(gate.proxy, &target).await;
        assert_forbidden(code, &text, &target);
    }
    // Plain HTTP to the Redis port (a cross-protocol request) is refused the same way.
    let r = gate
        .client()
        .post(format!("http://127.0.0.1:{port}/"))
        .body("FLUSHALL\r\n")
        .send()
        .await
        .unwrap();
    assert_forbidden_response(r, "plain HTTP to Redis").await;

    assert_eq!(redis.cli(&["DBSIZE"]), keys_before, "Redis untouched");
    assert_eq!(gate.entity_counts().await.0, 1);
    assert_eq!(gate.metric(FORBIDDEN_DOMESTIC).await, 3.0);
    let lines = wait_audited(&gate, 3).await;
    assert!(lines.iter().all(|l| l["decision"] == "block"));
}

#[tokio::test]
async fn the_admin_api_and_the_proxy_are_not_reachable_through_the_proxy() {
    // Loopback open and the gate's own ports open to tunnels: only "never the gate's own
    // listeners" refuses.
    let gate = GateBuilder::new()
        .gate_key("tunnel_ports = [443, {proxy_port}, {admin_port}]")
        .start()
        .await;
    let admin = gate.admin.port();
    let client = gate.client();
    let r = client
        .post(format!("http://127.0.0.1:{admin}/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_forbidden_response(r, "POST /v1/reload through the proxy").await;
    let r = client
        .get(format!("http://localhost:{admin}/v1/status"))
        .send()
        .await
        .unwrap();
    assert_forbidden_response(r, "GET /v1/status through the proxy").await;
    for target in [
        format!("127.0.0.1:{admin}"),
        format!("127.0.0.1:{}", gate.proxy.port()),
        format!("localhost:{}", gate.proxy.port()),
    ] {
        let (code, text) = connect(gate.proxy, &target).await;
        assert_forbidden(code, &text, &target);
    }
    assert!(
        !gate.logs().contains("configuration reloaded"),
        "the reload must not have run"
    );
    assert_eq!(gate.metric(FORBIDDEN_DOMESTIC).await, 5.0);
    wait_audited(&gate, 5).await;
}

#[tokio::test]
async fn by_default_loopback_link_local_and_closed_ports_are_refused() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .default_deny_cidrs()
        .section("[[domestic]]\ncidrs = [\"10.0.0.0/8\", \"169.254.0.0/16\"]")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let client = gate.client();
    for url in [
        format!("http://127.0.0.1:{}/x", up.addr.port()),
        format!("http://localhost:{}/x", up.addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_forbidden_response(r, &url).await;
    }
    for target in [
        "127.0.0.1:443".to_owned(),
        "169.254.169.254:443".to_owned(),
        // A domestic database port: refused by tunnel_ports before anything is dialled (the
        // address is never connected to, on or off loopback).
        "10.1.2.3:5432".to_owned(),
        format!("127.0.0.1:{}", up.addr.port()),
    ] {
        let (code, text) = connect(gate.proxy, &target).await;
        assert_forbidden(code, &text, &target);
    }
    assert!(up.received().is_empty(), "nothing reached the upstream");
    // A destination's connect_to (to loopback) is the operator's own setting: exempt.
    let r = client.get("http://api.eu.test/ok").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().len(), 1);
    assert_eq!(gate.metric(FORBIDDEN_DOMESTIC).await, 7.0);
}

#[test]
fn check_refuses_an_open_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        "[gate]\nproxy_listen = \"127.0.0.1:13128\"\nadmin_listen = \"0.0.0.0:19464\"\n\n[entity]\nname = \"Co\"\nregime = \"cac-2024\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("approvals.toml"), "").unwrap();
    let out = cli_on(&cfg, &["check"]);
    let text = &out.stdout;
    assert!(!out.success(), "{text}");
    assert!(
        text.contains("error: gate.toml:3: gate.admin_listen: not a loopback address and no gate.admin_token_file"),
        "{text}"
    );
    // Explicit target-rule keys are validated too.
    std::fs::write(
        &cfg,
        "[gate]\nproxy_listen = \"127.0.0.1:13128\"\nadmin_listen = \"127.0.0.1:19464\"\ndeny_cidrs = [\"10.0.0.0/33\"]\ntunnel_ports = [0]\n\n[entity]\nname = \"Co\"\nregime = \"cac-2024\"\n",
    )
    .unwrap();
    let out = cli_on(&cfg, &["check"]);
    let text = &out.stdout;
    assert!(!out.success(), "{text}");
    assert!(text.contains("gate.deny_cidrs[0]"), "{text}");
    assert!(text.contains("gate.tunnel_ports[0]"), "{text}");
}

/// SPEC §9: client-chosen text reaches the audit log, the logs and `/v1/decisions` only with its
/// identifier-like parts replaced by `*`; an `X-Request-Id` holding an identifier is replaced
/// by the gate's own id, in the request sent on too.
#[tokio::test]
async fn client_chosen_text_is_redacted_before_it_rests() {
    const ID: &str = "11010519491231002X";
    const PHONE: &str = "13800138000";
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    // A CONNECT authority carrying an ID number (unknown destination: refused, audited).
    let (code, text) = connect(gate.proxy, &format!("{ID}.unknown.example.org:443")).await;
    assert_eq!(code, 451, "{text}");
    // A request id carrying a phone number, on a request with no PI anywhere else.
    let r = gate
        .client()
        .get("http://api.eu.test/v1/events")
        .header("x-request-id", format!("req-{PHONE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.received();
    assert_eq!(got.len(), 1);
    let sent_id = got[0].headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(!sent_id.contains(PHONE), "the upstream got {sent_id}");
    // A plain request id is kept as the client chose it.
    let r = gate
        .client()
        .get("http://api.eu.test/v1/events")
        .header("x-request-id", "order-77.retry:2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received()[1].headers["x-request-id"], "order-77.retry:2");

    eventually("three audit lines", Duration::from_secs(10), || async {
        (audit_lines(&gate).len() >= 3).then_some(())
    })
    .await;
    let lines = audit_lines(&gate);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["path"], "*.unknown.example.org:443");
    assert_eq!(lines[1]["request_id"], sent_id.as_str());
    assert_eq!(lines[2]["request_id"], "order-77.retry:2");
    let decisions = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gate.admin_url("/v1/decisions?limit=10"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let audit = std::fs::read_to_string(gate.dir().join("data/audit.jsonl")).unwrap();
    for (what, text) in [
        ("audit log", audit),
        ("/v1/decisions", decisions),
        ("logs", gate.logs()),
    ] {
        for pi in [ID, &ID.to_ascii_lowercase(), PHONE] {
            assert!(!text.contains(pi), "{what} holds client PI: {text}");
        }
    }
}
