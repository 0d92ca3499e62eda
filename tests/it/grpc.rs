//! gRPC through the real binary (SPEC §2, §3 "gRPC and protobuf", §9, §12 `upstream_http2`): a
//! real Python `grpcio` server and client (`tests/it/grpc_peer.py`, installed by
//! `scripts/test`), over h2c to an `upstream_http2 = true` destination and over TLS the gate
//! intercepts (ALPN h2 on both sides), and raw HTTP/2 and HTTP/1.1 clients for what grpcio
//! will not send. Calls are forwarded with their trailers; the gate's refusals are gRPC
//! statuses (`grpc-status` 7 and the reason code in `grpc-message`).

use crate::harness::approvals::{approval, eu, CATEGORIES};
use crate::harness::certs::TestCa;
use crate::harness::{peer, poll_until_blocking, GateBuilder, GateProc};
use crate::protobuf::{frame, ld as field, varint};
use bytes::Bytes;
use serde_json::{json, Value};

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/grpc_peer.py");
const HOST: &str = "api.eu.test";
const UPLOAD: &str = "/partner.v1.CustomerService/Upload";

/// The Python gRPC server: every message it receives is logged, and each call's end.
struct GrpcServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl GrpcServer {
    /// Plaintext HTTP/2 (h2c), or TLS with `cert_key` (certificate and key files).
    fn start(dir: &Path, cert_key: &[&Path]) -> GrpcServer {
        let log = dir.join(format!("grpc-server-{}.log", cert_key.len()));
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["server".as_ref(), log.to_str().unwrap().as_ref()];
        args.extend(cert_key.iter().map(|p| p.as_os_str()));
        let (child, port) = peer::start(PEER, &args, "grpcio");
        GrpcServer { child, port, log }
    }

    /// The gRPC-Web server over HTTP/1.1 (the peer script's own: grpcio has none).
    fn start_web(dir: &Path) -> GrpcServer {
        let log = dir.join("grpc-web-server.log");
        let args: Vec<&std::ffi::OsStr> = vec!["web-server".as_ref(), log.as_os_str()];
        let (child, port) = peer::start(PEER, &args, "grpcio");
        GrpcServer { child, port, log }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn lines(&self) -> Vec<Value> {
        peer::json_lines(&self.log)
    }

    /// The messages (hex) of the calls so far and the end of the last call, once `calls`
    /// calls have ended.
    fn after_calls(&self, calls: usize) -> (Vec<String>, Value) {
        let lines = poll_until_blocking(Duration::from_secs(30), || {
            let l = self.lines();
            (l.iter().filter(|v| v.get("end").is_some()).count() >= calls).then_some(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "the server never logged {calls} call ends: {:?}",
                self.lines()
            )
        });
        let msgs = lines
            .iter()
            .filter_map(|v| v["msg"].as_str().map(str::to_owned))
            .collect();
        let end = lines.into_iter().rfind(|v| v.get("end").is_some()).unwrap();
        (msgs, end)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Python client with `spec` (its `port` set to the gate's); its JSON report.
async fn call(gate: &GateProc, mut spec: Value) -> Value {
    spec["port"] = json!(gate.proxy_port());
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let file = gate.dir().join(format!("grpc-call-{n}.json"));
    std::fs::write(&file, spec.to_string()).unwrap();
    peer::client_report(vec![
        PEER.into(),
        "client".into(),
        file.to_str().unwrap().into(),
    ])
    .await
}

/// A call over h2c straight to the gate (the destination as the `:authority`).
fn h2c(method: &str, messages: &[Vec<u8>]) -> Value {
    json!({
        "route": "h2c",
        "authority": HOST,
        "method": method,
        "messages": messages.iter().map(|m| hex_of(m)).collect::<Vec<_>>(),
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `partner.v1.Customer { name = 1; phone = 2; id_number = 3; }`, encoded by hand.
fn customer(name: &str, phone: &str, id_number: &str) -> Vec<u8> {
    let mut m = field(1, name.as_bytes());
    if !phone.is_empty() {
        m.extend(field(2, phone.as_bytes()));
    }
    if !id_number.is_empty() {
        m.extend(field(3, id_number.as_bytes()));
    }
    m
}

/// The `eu` destination over h2c to `up`, with `extra` keys.
/// `clean` customers with a phone each, then one with a bank card (sensitive: under cac-2024 it
/// needs an approval the register lacks), then one more clean customer that must never leave.
fn clean_then_card(clean: usize) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = (0..clean)
        .map(|i| customer(&format!("n{i}"), &format!("1380013{i:04}"), ""))
        .collect();
    let mut card = customer("Zed", "", "");
    card.extend(field(5, b"4111 1111 1111 1111"));
    msgs.push(card);
    msgs.push(customer("after", "", ""));
    msgs
}

/// After a [`clean_then_card`] call to `method` refused at the card: only the `clean` messages
/// reached the server, whose call was cut (not completed); they stay counted; the call has one
/// audit line, blocked for `approval_required`, counting every message the gate received
/// whole (the card included).
async fn assert_cut_after_clean(gate: &GateProc, up: &GrpcServer, method: &str, clean: usize) {
    let (got, end) = up.after_calls(1);
    assert_eq!(
        got.len(),
        clean,
        "only the clean messages reach the server: {got:?}"
    );
    assert_eq!(
        end["end"], "cancelled",
        "the upstream's call was cut, not completed: {end}"
    );
    assert_eq!(
        gate.entity_counts().await,
        (clean as u64, 0),
        "the clean ones stay counted"
    );
    let path = format!("/partner.v1.CustomerService/{method}");
    let lines = call_lines(gate, &path, 1).await;
    assert_eq!(lines.len(), 1, "one audit line per call: {lines:?}");
    assert_eq!(lines[0]["decision"], "block", "{lines:?}");
    assert_eq!(lines[0]["reason"], "approval_required", "{lines:?}");
    assert_eq!(lines[0]["messages"], clean + 1, "{lines:?}");
}

fn h2c_dest(up: &GrpcServer) -> crate::harness::Dest {
    eu(up.addr()).set("upstream_http2", "true")
}

/// The audit lines of calls to `path`, once there are `n`.
async fn call_lines(gate: &GateProc, path: &str, n: usize) -> Vec<Value> {
    let mut all = gate.audit_lines(n).await;
    all.retain(|a| a["path"] == path);
    all
}

#[tokio::test]
async fn h2c_upstream_carries_unary_and_streaming_calls_and_their_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    // Without a gRPC reader the messages are unreadable: allowed here, so that the transport
    // alone is under test.
    let gate = GateBuilder::new()
        .destination(h2c_dest(&up).set("unreadable", "\"allow\""))
        .start()
        .await;
    let hello = customer("Ann", "", "");
    let r = call(&gate, h2c("unary", std::slice::from_ref(&hello))).await;
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["response"], "0801", "{r}");
    assert_eq!(r["trailing"]["x-partner-trailer"], "kept", "{r}");
    let msgs = vec![customer("A", "", ""), customer("B", "", ""), vec![]];
    let r = call(&gate, h2c("stream", &msgs)).await;
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["response"], "0803", "{r}");
    assert_eq!(r["trailing"]["x-partner-trailer"], "kept", "{r}");
    let (got, end) = up.after_calls(2);
    let want: Vec<String> = std::iter::once(&hello)
        .chain(&msgs)
        .map(|m| hex_of(m))
        .collect();
    assert_eq!(got, want);
    assert_eq!(end["end"], "completed", "{end}");
    let lines = call_lines(&gate, "/partner.v1.CustomerService/UploadMany", 2).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["messages"], 3, "{lines:?}");
}

#[tokio::test]
async fn a_call_refused_at_its_head_is_a_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    // A destination open to one declared client only: 403 client_not_allowed → 7.
    let gate = GateBuilder::new()
        .destination(h2c_dest(&up).set("clients", "[\"billing\"]"))
        .section("[[client]]\nname = \"billing\"\nowner = \"payments\"\ncidrs = [\"10.20.0.0/16\"]")
        .start()
        .await;
    let r = call(&gate, h2c("unary", &[customer("Ann", "", "")])).await;
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["details"], "client_not_allowed", "{r}");
    // Trailers-only: grpcio gives the answer's headers as trailing metadata.
    assert_eq!(
        r["trailing"]["x-transfer-gate-reason"], "client_not_allowed",
        "{r}"
    );
    assert!(up.lines().is_empty(), "nothing reached the server");
}

/// A raw HTTP/2 (prior knowledge) client: what grpcio will not send. The answer's status,
/// headers, body and trailers.
async fn raw_h2(
    gate: &GateProc,
    path: &str,
    frames: Vec<Bytes>,
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gate.proxy_port()))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(
        frames
            .into_iter()
            .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b))),
    ));
    let req = http::Request::post(format!("http://{HOST}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_length_prefix_larger_than_the_body_is_unreadable_and_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    // A prefix of 1,000 bytes over a body of 3.
    let mut body = vec![0, 0, 0, 0x03, 0xe8];
    body.extend_from_slice(b"abc");
    let (parts, bytes, trailers) = raw_h2(&gate, UPLOAD, vec![Bytes::from(body)]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert_eq!(parts.headers["grpc-status"], "7", "{parts:?}");
    assert_eq!(
        parts.headers["grpc-message"], "unreadable_body",
        "{parts:?}"
    );
    assert!(bytes.is_empty() && trailers.is_none(), "trailers-only");
    assert!(up.lines().is_empty(), "nothing reached the server");
    let lines = call_lines(&gate, UPLOAD, 1).await;
    assert_eq!(lines[0]["reason"], "unreadable_body", "{lines:?}");
}

#[tokio::test]
async fn a_grpc_web_call_refused_gets_the_grpc_web_form() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    // Over HTTP/1.1, a body that is no gRPC-Web framing at all.
    let r = gate
        .client()
        .post(format!("http://{HOST}{UPLOAD}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(vec![0x80, 0, 0, 0, 2, 1, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert_eq!(r.headers()["grpc-status"], "7");
    assert_eq!(r.headers()["grpc-message"], "unreadable_body");
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(up.lines().is_empty(), "nothing reached the server");
}

#[test]
fn check_warns_that_upstream_http2_does_nothing_for_a_tls_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let gate = "[gate]\nproxy_listen = \"127.0.0.1:13128\"\nadmin_listen = \"127.0.0.1:19464\"\n\n[entity]\nname = \"Co\"\nregime = \"cac-2024\"\n\n[[destination]]\nname = \"eu\"\nrecipient = \"EU\"\ncountry = \"DE\"\nhosts = [\"api.eu.test\"]\nupstream_scheme = \"https\"\nupstream_http2 = true\n\n[[destination]]\nname = \"us\"\nrecipient = \"US\"\ncountry = \"US\"\nhosts = [\"api.us.test\"]\nupstream_http2 = true\n";
    std::fs::write(dir.path().join("gate.toml"), gate).unwrap();
    std::fs::write(dir.path().join("approvals.toml"), "").unwrap();
    let out = crate::harness::cli_on(dir.path().join("gate.toml"), &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("warning: gate.toml:15: destination[0].upstream_http2: has no effect"),
        "{}",
        out.stdout
    );
    // On a plain upstream it is what it says: no warning.
    assert!(
        !out.stdout.contains("destination[1].upstream_http2"),
        "{}",
        out.stdout
    );
}

/// A TLS gRPC server for `api.eu.test` (its own test CA), and an intercepting gate that trusts
/// that CA upstream; the gate's CA file for the client.
async fn intercepting(dir: &Path, b: GateBuilder) -> (GrpcServer, GateProc, PathBuf) {
    let up_ca = TestCa::new("upstream test CA");
    let (cert, key) = up_ca.leaf_pem(&[HOST]);
    let (cert_file, key_file) = (dir.join("up.pem"), dir.join("up.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let up = GrpcServer::start(dir, &[&cert_file, &key_file]);
    let secrets = b.dir().join("secrets");
    let out = crate::harness::command(["ca", "init", "--out"])
        .arg(&secrets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gate = b
        .file("upstream-ca.pem", up_ca.cert_pem.as_bytes())
        .section("[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"\nupstream_ca_file = \"upstream-ca.pem\"")
        .destination(eu(up.addr()).set("tls", "\"intercept\""))
        .start()
        .await;
    let ca = gate.dir().join("secrets/ca.pem");
    (up, gate, ca)
}

/// A call over TLS to `api.eu.test:443` with the gate as the channel's HTTP proxy (a
/// `CONNECT` the gate intercepts; the client trusts the gate's CA).
fn tls(ca: &Path, method: &str, messages: &[Vec<u8>]) -> Value {
    json!({
        "route": "tls",
        "authority": format!("{HOST}:443"),
        "ca": ca,
        "method": method,
        "messages": messages.iter().map(|m| hex_of(m)).collect::<Vec<_>>(),
    })
}

/// The same people as gRPC messages and as one JSON body: the first, third and fourth
/// messages carry a phone or an e-mail address, the second nothing (none sensitive: no
/// approval is needed).
fn people() -> (Vec<Vec<u8>>, String) {
    let msgs = vec![
        customer("Ann", "13800138000", ""),
        customer("Bo", "", ""),
        customer("cy@example.com", "", ""),
        customer("Di", "139 0013 9000", ""),
    ];
    let json = r#"[{"name": "Ann", "phone": "13800138000"}, {"name": "Bo"}, {"name": "cy@example.com"}, {"name": "Di", "phone": "139 0013 9000"}]"#;
    (msgs, json.to_owned())
}

/// The entity counts the same people give as a JSON body.
async fn json_reference(body: &str) -> (u64, u64) {
    json_reference_on(GateBuilder::new(), body).await
}

/// [`json_reference`] on a gate configured by `b` (its destination added here).
async fn json_reference_on(b: GateBuilder, body: &str) -> (u64, u64) {
    let up = crate::harness::upstream::Upstream::http().await;
    let gate = b.destination(eu(up.addr)).start().await;
    let r = gate
        .post_json("http://api.eu.test/ingest", body.to_owned())
        .await;
    assert_eq!(r.status(), 200);
    gate.entity_counts().await
}

#[tokio::test]
async fn calls_are_counted_as_the_same_people_in_json_over_h2c_and_tls_compressed_or_not() {
    let (msgs, body) = people();
    let reference = json_reference(&body).await;
    assert_eq!(reference.0, 3, "{reference:?}");
    for compression in ["none", "gzip"] {
        // h2c: client streaming, then each message unary.
        let dir = tempfile::tempdir().unwrap();
        let up = GrpcServer::start(dir.path(), &[]);
        let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
        let mut spec = h2c("stream", &msgs);
        spec["compression"] = json!(compression);
        let r = call(&gate, spec).await;
        assert_eq!(r["code"], "OK", "{compression}: {r}");
        assert_eq!(r["trailing"]["x-partner-trailer"], "kept", "{r}");
        assert_eq!(gate.entity_counts().await, reference, "h2c {compression}");
        for m in &msgs {
            let mut spec = h2c("unary", std::slice::from_ref(m));
            spec["compression"] = json!(compression);
            let r = call(&gate, spec).await;
            assert_eq!(r["code"], "OK", "{compression}: {r}");
        }
        let (got, _) = up.after_calls(1 + msgs.len());
        assert_eq!(got.len(), 2 * msgs.len());
        assert_eq!(
            gate.entity_counts().await,
            reference,
            "h2c unary {compression}"
        );
        let lines = call_lines(&gate, "/partner.v1.CustomerService/UploadMany", 1).await;
        assert_eq!(lines[0]["messages"], 4, "{lines:?}");
        assert_eq!(lines[0]["new_subjects"], 3, "{lines:?}");

        // TLS intercepted, ALPN h2 on both sides.
        let dir = tempfile::tempdir().unwrap();
        let (up, gate, ca) = intercepting(dir.path(), GateBuilder::new()).await;
        let mut spec = tls(&ca, "stream", &msgs);
        spec["compression"] = json!(compression);
        let r = call(&gate, spec).await;
        assert_eq!(r["code"], "OK", "tls {compression}: {r}");
        assert_eq!(r["trailing"]["x-partner-trailer"], "kept", "{r}");
        let (got, end) = up.after_calls(1);
        assert_eq!(got.len(), msgs.len());
        assert_eq!(end["end"], "completed");
        assert_eq!(gate.entity_counts().await, reference, "tls {compression}");
    }
}

#[tokio::test]
async fn messages_are_forwarded_one_by_one_as_they_are_judged() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    // Each message leaves the client only once the server logged the one before: a gate that
    // held the call's body until its end would never deliver the first.
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| customer(&format!("n{i}"), "", "")).collect();
    let mut spec = h2c("stream", &msgs);
    spec["scenario"] = json!("lockstep");
    spec["server_log"] = json!(up.log);
    let r = call(&gate, spec).await;
    assert_eq!(r["code"], "OK", "{r}");
    let (got, end) = up.after_calls(1);
    assert_eq!(got.len(), 5);
    assert_eq!(end["end"], "completed");
}

#[tokio::test]
async fn a_refused_message_after_clean_ones_denies_the_call_and_cancels_the_upstream() {
    for compression in ["none", "gzip"] {
        let dir = tempfile::tempdir().unwrap();
        let up = GrpcServer::start(dir.path(), &[]);
        let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
        let msgs = clean_then_card(20);
        let mut spec = h2c("stream", &msgs);
        spec["compression"] = json!(compression);
        let r = call(&gate, spec).await;
        assert_eq!(r["code"], "PERMISSION_DENIED", "{compression}: {r}");
        assert_eq!(r["details"], "approval_required", "{r}");
        assert_cut_after_clean(&gate, &up, "UploadMany", 20).await;
        let blocks = gate
            .metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"block\",destination=\"eu\",reason=\"approval_required\"}")
            .await;
        assert_eq!(blocks, 1.0);
    }
}

#[tokio::test]
async fn malformed_protobuf_ends_the_call_with_status_7_unreadable_body() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    // A length-delimited field claiming 100 bytes with 2.
    let r = call(&gate, h2c("unary", &[vec![0x0a, 100, b'h', b'i']])).await;
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["details"], "unreadable_body", "{r}");
    // In a stream, after a clean message: that one forwarded, the call cut.
    let r = call(
        &gate,
        h2c(
            "stream",
            &[customer("ok", "", ""), vec![0x0a, 100, b'h', b'i']],
        ),
    )
    .await;
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["details"], "unreadable_body", "{r}");
    let (got, end) = up.after_calls(1);
    assert_eq!(got, vec![hex_of(&customer("ok", "", ""))]);
    assert_eq!(end["end"], "cancelled", "{end}");
}

#[tokio::test]
async fn a_message_split_across_many_data_frames_is_judged_whole() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    let m = customer("Split", "13800138000", "");
    // One DATA frame per byte: the prefix and the phone number cut everywhere.
    let frames: Vec<Bytes> = frame(&m)
        .into_iter()
        .map(|b| Bytes::from(vec![b]))
        .collect();
    let (parts, _, trailers) =
        raw_h2(&gate, "/partner.v1.CustomerService/UploadMany", frames).await;
    assert_eq!(parts.status, 200);
    let t = trailers.expect("the server's status as trailers");
    assert_eq!(t["grpc-status"], "0", "{t:?}");
    assert_eq!(t["x-partner-trailer"], "kept", "{t:?}");
    let (got, _) = up.after_calls(1);
    assert_eq!(got, vec![hex_of(&m)]);
    assert_eq!(gate.entity_counts().await, (1, 0));
}

#[tokio::test]
async fn a_zero_length_message_stream_held_open_ends_by_the_idle_timeout_with_a_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new()
        .destination(h2c_dest(&up))
        .timeouts("idle_seconds = 2")
        .start()
        .await;
    let mut spec = h2c("stream", &[vec![], vec![]]);
    spec["scenario"] = json!("hold");
    spec["timeout"] = json!(120);
    let r = call(&gate, spec).await;
    assert_eq!(
        r["code"],
        "DEADLINE_EXCEEDED",
        "ended by the gate, not the client: {r}\ngate log:\n{}",
        gate.logs()
    );
    // It was the client's stream that went quiet, not the upstream (SPEC §9 "slow client").
    assert_eq!(r["details"], "client_timeout", "{r}");
    let (got, end) = up.after_calls(1);
    assert_eq!(got, vec![String::new(), String::new()]);
    assert_eq!(end["end"], "cancelled", "{end}");
    let lines = call_lines(&gate, "/partner.v1.CustomerService/UploadMany", 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["messages"], 2, "{lines:?}");
    // Nothing is held afterwards: no buffered bytes, no request in flight.
    let held = crate::harness::poll_until(Duration::from_secs(10), || async {
        let b = gate.metric("transfer_gate_buffered_bytes").await;
        (b == 0.0).then_some(b)
    })
    .await;
    assert_eq!(held, Some(0.0));
    // And the gate goes on serving calls.
    let r = call(&gate, h2c("unary", &[customer("next", "", "")])).await;
    assert_eq!(r["code"], "OK", "{r}");
}

/// One varint field (wire type 0).
fn uint(n: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(n << 3, &mut out);
    varint(v, &mut out);
    out
}

/// The gate's config with the fixture descriptor set (`tests/data/partner.proto`:
/// `Customer { name = 1; phone = 2; id_number = 3; Address address = 4; email = 5;
/// uint64 member_id = 6; diagnosis = 7; }`) or without it; `member_id` a subject field,
/// `diagnosis` health and `phone` contact, and an approval that covers them.
fn schema_config(descriptors: bool) -> GateBuilder {
    let b = GateBuilder::new()
        .subject_fields(&["user_id", "member_id"])
        .section(CATEGORIES)
        .approvals(&approval(
            "SA-1",
            "security_assessment",
            "\"basic\", \"contact\", \"health\"",
            "2099-12-31",
            "",
        ));
    if descriptors {
        b.section(&format!(
            "[inspection]\nprotobuf_descriptor_sets = [\"{}\"]",
            crate::protobuf::fixture()
        ))
    } else {
        b
    }
}

#[tokio::test]
async fn with_descriptor_sets_the_path_gives_the_type_and_field_names_count_like_json_keys() {
    // Four messages streamed to UploadMany and one unary Upload, all `Customer` by the path.
    let msgs = vec![
        [field(1, b"Ann"), uint(6, 1001), field(7, b"flu")].concat(),
        [field(1, b"Bo"), uint(6, 1002), field(2, b"13800138000")].concat(),
        uint(6, 1001),
        [
            field(1, b"Cy"),
            field(5, b"cy@example.com"),
            field(4, &field(1, b"Berlin")),
        ]
        .concat(),
    ];
    let unary = [uint(6, 1003), field(7, b"cold")].concat();
    let json = r#"[{"name": "Ann", "member_id": 1001, "diagnosis": "flu"},
        {"name": "Bo", "member_id": 1002, "phone": "13800138000"}, {"member_id": 1001},
        {"name": "Cy", "email": "cy@example.com", "address": {"city": "Berlin"}},
        {"member_id": 1003, "diagnosis": "cold"}]"#;
    let reference = json_reference_on(schema_config(false), json).await;
    // member 1001 (health), 1002 with the phone in its record, the loose e-mail, member 1003
    // (health).
    assert_eq!(reference, (4, 2));
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = schema_config(true).destination(h2c_dest(&up)).start().await;
    let r = call(&gate, h2c("stream", &msgs)).await;
    assert_eq!(r["code"], "OK", "{r}");
    let r = call(&gate, h2c("unary", std::slice::from_ref(&unary))).await;
    assert_eq!(r["code"], "OK", "{r}");
    let (got, _) = up.after_calls(2);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(gate.entity_counts().await, reference);
    let lines = call_lines(&gate, "/partner.v1.CustomerService/UploadMany", 2).await;
    assert_eq!(lines[0]["messages"], 4, "{lines:?}");
    assert_eq!(lines[0]["new_subjects"], 3, "{lines:?}");
    assert_eq!(lines[0]["new_sensitive_subjects"], 1, "{lines:?}");

    // Without the descriptor set the same calls have no field names: no member numbers, no
    // diagnosis; only what the detectors find (the phone, the e-mail address).
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = schema_config(false)
        .destination(h2c_dest(&up))
        .start()
        .await;
    let r = call(&gate, h2c("stream", &msgs)).await;
    assert_eq!(r["code"], "OK", "{r}");
    let r = call(&gate, h2c("unary", std::slice::from_ref(&unary))).await;
    assert_eq!(r["code"], "OK", "{r}");
    let (got, _) = up.after_calls(2);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(gate.entity_counts().await, (2, 0));
}

#[tokio::test]
async fn a_message_refused_after_the_response_started_ends_the_call_with_status_7_in_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new().destination(h2c_dest(&up)).start().await;
    let msgs = clean_then_card(3);
    // `UploadLive` sends its response headers first; the client sends the card only once
    // they have arrived: the gate has passed the upstream's answer on when it refuses.
    let mut spec = h2c("live", &msgs);
    spec["after_headers"] = json!(3);
    let r = call(&gate, spec).await;
    assert_eq!(
        r["initial"]["x-partner-started"], "yes",
        "the response had started: {r}"
    );
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["details"], "approval_required", "{r}");
    assert_cut_after_clean(&gate, &up, "UploadLive", 3).await;
}

/// The body the gRPC-Web peer answers a call of `n` messages with: the Ack as a data frame,
/// then the trailer frame (flag 0x80).
fn web_answer(n: u8) -> Vec<u8> {
    let mut out = frame(&[0x08, n]);
    let trailer = b"grpc-status: 0\r\nx-partner-trailer: kept\r\n";
    out.push(0x80);
    out.extend_from_slice(&u32::try_from(trailer.len()).unwrap().to_be_bytes());
    out.extend_from_slice(trailer);
    out
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_is_counted_and_its_trailer_frame_comes_back_intact() {
    let (msgs, json) = people();
    let reference = json_reference(&json).await;
    // Whole (a Content-Length, judged at once) and streamed (chunked, one message a chunk,
    // judged message by message).
    for chunked in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let up = GrpcServer::start_web(dir.path());
        let gate = GateBuilder::new().destination(eu(up.addr())).start().await;
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| frame(m)).collect();
        let body = if chunked {
            let chunks = frames
                .iter()
                .map(|f| Ok::<_, std::io::Error>(Bytes::from(f.clone())))
                .collect::<Vec<_>>();
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
        } else {
            reqwest::Body::from(frames.concat())
        };
        let r = gate
            .client()
            .post(format!(
                "http://{HOST}/partner.v1.CustomerService/UploadMany"
            ))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "chunked {chunked}");
        assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
        assert!(
            r.headers().get("grpc-status").is_none(),
            "not trailers-only"
        );
        let got = r.bytes().await.unwrap();
        assert_eq!(&got[..], &web_answer(4)[..], "chunked {chunked}");
        let (received, end) = up.after_calls(1);
        let want: Vec<String> = msgs.iter().map(|m| hex_of(m)).collect();
        assert_eq!(received, want, "chunked {chunked}");
        assert_eq!(end["end"], "completed", "{end}");
        assert_eq!(gate.entity_counts().await, reference, "chunked {chunked}");
        let lines = call_lines(&gate, "/partner.v1.CustomerService/UploadMany", 1).await;
        assert_eq!(lines[0]["messages"], 4, "chunked {chunked}: {lines:?}");
        assert_eq!(lines[0]["decision"], "allow", "{lines:?}");
    }
}

#[tokio::test]
async fn a_long_lived_call_whose_server_answered_early_is_idle_only_when_neither_side_moves() {
    let dir = tempfile::tempdir().unwrap();
    let up = GrpcServer::start(dir.path(), &[]);
    let gate = GateBuilder::new()
        .destination(h2c_dest(&up))
        .timeouts("idle_seconds = 2")
        .start()
        .await;
    // The server's response headers come first and nothing else until the call ends; the
    // client sends a message a second, five in all: longer than idle_seconds, never idle.
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| customer(&format!("n{i}"), "", "")).collect();
    let mut spec = h2c("live", &msgs);
    spec["scenario"] = json!("paced");
    spec["pace"] = json!(1);
    let r = call(&gate, spec).await;
    assert_eq!(r["code"], "OK", "{r}\ngate log:\n{}", gate.logs());
    assert_eq!(r["initial"]["x-partner-started"], "yes", "{r}");
    assert_eq!(r["response"], "0805", "{r}");
    let (got, end) = up.after_calls(1);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(end["end"], "completed", "{end}");
}
