//! WebSocket through the real binary (SPEC §2, §3 "WebSocket", §9): a real Python `websockets`
//! server and client (`tests/it/websocket_peer.py`, installed by `scripts/test`), with and
//! without permessage-deflate. Messages are counted exactly as the same people in a JSON body;
//! a fragmented message is judged whole; a refused message after a thousand clean ones closes
//! both sides with 1008 and never reaches the server; a message over `max_record_bytes` closes
//! with 1009; a fragmented message never finished closes after `idle_seconds`; a ping flood
//! leaves the gate serving; a destination without `websocket = true` stays 451.

use crate::harness::approvals::eu;
use crate::harness::{cli_on, peer, poll_until_blocking, Dest, GateBuilder, GateProc};
use serde_json::Value;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/websocket_peer.py");
const URL: &str = "ws://api.eu.test/chat";

/// The Python WebSocket server: every message it receives is logged.
struct WsServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl WsServer {
    fn start(dir: &Path, deflate: bool) -> WsServer {
        Self::start_tls(dir, deflate, &[])
    }

    /// [`WsServer::start`] over TLS with `cert_key` (certificate and key files), if given.
    fn start_tls(dir: &Path, deflate: bool, cert_key: &[&Path]) -> WsServer {
        let log = dir.join(format!("ws-server-{deflate}.log"));
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "server".as_ref(),
            log.to_str().unwrap().as_ref(),
            mode(deflate).as_ref(),
        ];
        args.extend(cert_key.iter().map(|p| p.as_os_str()));
        let (child, port) = peer::start(PEER, &args, "websockets");
        WsServer { child, port, log }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The log's lines so far.
    fn lines(&self) -> Vec<Value> {
        peer::json_lines(&self.log)
    }

    /// The messages received, once the connection's end is logged.
    fn messages_after_close(&self) -> (Vec<String>, Value) {
        let lines = poll_until_blocking(Duration::from_secs(30), || {
            let l = self.lines();
            l.iter().any(|v| v.get("close").is_some()).then_some(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "the server never logged the connection's end: {:?}",
                self.lines()
            )
        });
        let msgs = lines
            .iter()
            .filter_map(|v| v["msg"].as_str().map(str::to_owned))
            .collect();
        let close = lines
            .into_iter()
            .find(|v| v.get("close").is_some())
            .unwrap();
        (msgs, close)
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(deflate: bool) -> &'static str {
    if deflate {
        "deflate"
    } else {
        "none"
    }
}

/// Runs the Python client through the gate; its JSON report.
async fn client(gate: &GateProc, deflate: bool, scenario: &str, messages: &[String]) -> Value {
    client_to(gate, URL, deflate, scenario, messages).await
}

/// [`client`] to `url`.
async fn client_to(
    gate: &GateProc,
    url: &str,
    deflate: bool,
    scenario: &str,
    messages: &[String],
) -> Value {
    let file = gate.dir().join(format!("ws-msgs-{}.json", messages.len()));
    std::fs::write(&file, serde_json::to_string(messages).unwrap()).unwrap();
    peer::client_report(vec![
        PEER.into(),
        "client".into(),
        gate.proxy_port().to_string(),
        url.into(),
        mode(deflate).into(),
        scenario.into(),
        file.to_str().unwrap().into(),
    ])
    .await
}

fn ws_dest(up: &WsServer) -> crate::harness::Dest {
    eu(up.addr()).set("websocket", "true")
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The same people as WebSocket messages (two JSON messages, one text) and as one JSON body.
fn people() -> (Vec<String>, String) {
    let msgs = vec![
        s(r#"{"user_id": 1, "phone": "13800138000"}"#),
        s(r#"[{"user_id": 2}, {"user_id": 3}]"#),
        s("please call me at 139 0013 9000"),
        s("bye"),
    ];
    let body = r#"[{"user_id": 1, "phone": "13800138000"}, {"user_id": 2}, {"user_id": 3}, {"note": "please call me at 139 0013 9000"}]"#;
    (msgs, body.to_owned())
}

async fn counted_like_json(deflate: bool) {
    let (msgs, body) = people();
    // The reference: the same people in a JSON body.
    let reference = {
        let up = crate::harness::upstream::Upstream::http().await;
        let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
        let r = gate.post_json("http://api.eu.test/ingest", body).await;
        assert_eq!(r.status(), 200);
        gate.entity_counts().await
    };
    assert_eq!(reference, (4, 0));

    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), deflate);
    let gate = GateBuilder::new().destination(ws_dest(&up)).start().await;
    let report = client(&gate, deflate, "messages", &msgs).await;
    assert_eq!(report["code"], 1000, "{report}");
    assert_eq!(report["acks"], 3, "{report}");
    let ext = report["extensions"].as_str().unwrap_or("");
    assert_eq!(
        ext.contains("permessage-deflate"),
        deflate,
        "negotiated end to end: {report}"
    );
    let (got, _) = up.messages_after_close();
    assert_eq!(got, msgs);
    assert_eq!(gate.entity_counts().await, reference);
    // One connection, one audit line, written when it ends.
    let audit = gate.audit_lines(1).await;
    let ws: Vec<&Value> = audit.iter().filter(|a| a["path"] == "/chat").collect();
    assert_eq!(ws.len(), 1, "{audit:?}");
    assert_eq!(ws[0]["decision"], "allow", "{audit:?}");
    assert_eq!(ws[0]["messages"], 4, "{audit:?}");
}

#[tokio::test]
async fn messages_are_counted_as_the_same_people_in_json() {
    counted_like_json(false).await;
}

#[tokio::test]
async fn deflated_messages_are_inflated_for_inspection_and_counted_alike() {
    counted_like_json(true).await;
}

#[tokio::test]
async fn a_fragmented_message_is_judged_whole() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), false);
    let gate = GateBuilder::new().destination(ws_dest(&up)).start().await;
    // Each character its own frame: the subject field and its value are split over frames.
    let report = client(
        &gate,
        false,
        "fragments",
        &[s(r#"{"user_id": 4242, "email": "a@b.example"}"#), s("bye")],
    )
    .await;
    assert_eq!(report["code"], 1000, "{report}");
    let (got, _) = up.messages_after_close();
    assert_eq!(got[0], r#"{"user_id": 4242, "email": "a@b.example"}"#);
    assert_eq!(gate.entity_counts().await, (1, 0));
}

#[tokio::test]
async fn a_refused_message_after_a_thousand_clean_ones_closes_1008_and_is_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), true);
    let gate = GateBuilder::new().destination(ws_dest(&up)).start().await;
    let mut msgs: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"user_id": {i}}}"#))
        .collect();
    // A bank card is sensitive: under cac-2024 it needs an approval the register lacks.
    msgs.push(s(r#"{"user_id": 5000, "card": "4111 1111 1111 1111"}"#));
    msgs.push(s("bye"));
    let report = client(&gate, true, "messages", &msgs).await;
    assert_eq!(report["code"], 1008, "{report}");
    assert_eq!(report["reason"], "approval_required", "{report}");
    let (got, close) = up.messages_after_close();
    assert_eq!(got.len(), 1000, "only the clean messages reach the server");
    assert!(!got.iter().any(|m| m.contains("4111")));
    assert_eq!(close["close"], 1008, "{close}");
    assert_eq!(close["reason"], "approval_required", "{close}");
    assert_eq!(gate.entity_counts().await, (1000, 0));
    let audit = gate.audit_lines(1).await;
    let ws: Vec<&Value> = audit.iter().filter(|a| a["path"] == "/chat").collect();
    assert_eq!(ws.len(), 1, "{audit:?}");
    assert_eq!(ws[0]["decision"], "block", "{audit:?}");
    assert_eq!(ws[0]["reason"], "approval_required", "{audit:?}");
    assert_eq!(ws[0]["messages"], 1001, "{audit:?}");
}

#[tokio::test]
async fn a_message_over_max_record_bytes_closes_1009_plain_and_inflated() {
    for deflate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let up = WsServer::start(dir.path(), deflate);
        let gate = GateBuilder::new()
            .destination(ws_dest(&up))
            .section("[inspection]\nmax_record_bytes = 4096")
            .start()
            .await;
        // Highly compressible: small on the wire with deflate, over the limit inflated.
        let big = "a".repeat(20_000);
        let report = client(&gate, deflate, "messages", &[s("hello"), big, s("bye")]).await;
        assert_eq!(report["code"], 1009, "deflate {deflate}: {report}");
        let (got, _) = up.messages_after_close();
        assert_eq!(got, vec![s("hello")], "deflate {deflate}");
    }
}

#[tokio::test]
async fn a_fragmented_message_never_finished_closes_after_idle_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), false);
    let gate = GateBuilder::new()
        .destination(ws_dest(&up))
        .timeouts("idle_seconds = 2")
        .start()
        .await;
    let report = client(&gate, false, "unfinished", &[s(r#"{"user_id": 1"#)]).await;
    assert_eq!(report["code"], 1008, "{report}");
    assert_eq!(report["reason"], "message_not_finished", "{report}");
    let (got, _) = up.messages_after_close();
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn a_ping_flood_neither_grows_memory_nor_stops_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), false);
    let gate = GateBuilder::new().destination(ws_dest(&up)).start().await;
    let before = gate.rss_bytes();
    let report = client(
        &gate,
        false,
        "pingflood",
        &[s(r#"{"user_id": 9}"#), s("bye")],
    )
    .await;
    assert_eq!(report["code"], 1000, "{report}");
    assert_eq!(report["acks"], 1, "{report}");
    assert_eq!(gate.entity_counts().await, (1, 0));
    let grown = gate.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "resident memory grew by {grown} bytes");
}

#[tokio::test]
async fn a_destination_without_websocket_true_still_refuses_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), false);
    let gate = GateBuilder::new().destination(eu(up.addr())).start().await;
    let report = client(&gate, false, "messages", &[s("hello")]).await;
    assert_eq!(report["status"], 451, "{report}");
    assert!(up.lines().is_empty());
}

#[test]
fn websocket_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateBuilder::new()
        .destination(
            Dest::new("chat", "chat.example.com")
                .set("websocket", "true")
                .set("websocket_binary", "\"json\""),
        )
        .destination(
            Dest::new("other", "other.example.com").set("websocket_binary", "\"protobuf\""),
        )
        .destination(
            Dest::new("ok", "ok.example.com")
                .set("websocket", "true")
                .set("websocket_binary", "\"protobuf\""),
        );
    let cfg = gate.write(13128, 19464);
    let _ = &dir;
    let out = cli_on(&cfg, &["check"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("destination[0].websocket_binary: `json` is not one of: protobuf"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("destination[1].websocket_binary: is set but `websocket` is not true"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("2 errors"), "{}", out.stdout);
}

#[tokio::test]
async fn messages_inside_intercepted_tls_are_judged() {
    use crate::harness::certs::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let up_ca = TestCa::new("upstream test CA");
    let (cert, key) = up_ca.leaf_pem(&["api.eu.test"]);
    let (cert_file, key_file) = (dir.path().join("up.pem"), dir.path().join("up.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let up = WsServer::start_tls(dir.path(), true, &[&cert_file, &key_file]);
    let b = GateBuilder::new();
    let out = crate::harness::command(["ca", "init", "--out"])
        .arg(b.dir().join("secrets"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gate = b
        .file("upstream-ca.pem", up_ca.cert_pem.as_bytes())
        .section("[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"\nupstream_ca_file = \"upstream-ca.pem\"")
        .destination(ws_dest(&up).set("tls", "\"intercept\""))
        .start()
        .await;
    let ca = gate.dir().join("secrets/ca.pem");
    let msgs = [
        s(r#"{"user_id": 77}"#),
        s(r#"{"user_id": 78, "card": "4111 1111 1111 1111"}"#),
        s("bye"),
    ];
    let scenario = format!("tls:{}", ca.display());
    let report = client_to(&gate, "wss://api.eu.test/chat", true, &scenario, &msgs).await;
    assert_eq!(report["code"], 1008, "{report}");
    assert_eq!(report["reason"], "approval_required", "{report}");
    let (got, _) = up.messages_after_close();
    assert_eq!(got, vec![s(r#"{"user_id": 77}"#)]);
    assert_eq!(gate.entity_counts().await, (1, 0));
}

/// A length-delimited protobuf field.
fn pb_field(n: u8, v: &[u8]) -> Vec<u8> {
    let mut o = vec![n << 3 | 2, u8::try_from(v.len()).unwrap()];
    o.extend_from_slice(v);
    o
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("hex:");
    for c in b {
        s.push_str(&format!("{c:02x}"));
    }
    s
}

/// How the Python server logs a binary message (latin-1).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|c| char::from(*c)).collect()
}

#[tokio::test]
async fn binary_messages_are_read_as_protobuf_with_websocket_binary_protobuf() {
    let dir = tempfile::tempdir().unwrap();
    let up = WsServer::start(dir.path(), false);
    let gate = GateBuilder::new()
        .destination(ws_dest(&up).set("websocket_binary", "\"protobuf\""))
        .start()
        .await;
    // `partner.v1.Customer { name: "张三", phone: "13812345678", address { city } }`.
    let mut customer = pb_field(1, "张三".as_bytes());
    customer.extend(pb_field(2, b"13812345678"));
    customer.extend(pb_field(4, &pb_field(1, "北京".as_bytes())));
    let report = client(&gate, false, "messages", &[hex(&customer), s("bye")]).await;
    assert_eq!(report["code"], 1000, "{report}");
    let (got, _) = up.messages_after_close();
    assert_eq!(got, vec![latin1(&customer), s("bye")]);
    assert_eq!(gate.entity_counts().await, (1, 0));

    // Malformed protobuf (a length past the end): 1008 unreadable_body, never forwarded.
    let up2 = WsServer::start(dir.path(), true);
    let gate2 = GateBuilder::new()
        .destination(ws_dest(&up2).set("websocket_binary", "\"protobuf\""))
        .start()
        .await;
    let mut bad = pb_field(2, b"13987654321");
    bad.extend([0x0a, 0x40, b'x']);
    let report = client(
        &gate2,
        true,
        "messages",
        &[hex(&customer), hex(&bad), s("bye")],
    )
    .await;
    assert_eq!(report["code"], 1008, "{report}");
    assert_eq!(report["reason"], "unreadable_body", "{report}");
    let (got, _) = up2.messages_after_close();
    assert_eq!(got, vec![latin1(&customer)]);
    assert_eq!(gate2.entity_counts().await, (1, 0));
}
