//! The proxy core through the real binary: routing, forwarding, tunnels, refusals, limits,
//! timeouts, drain, streaming memory and metrics.

use crate::harness::certs::TestCa;
use crate::harness::upstream::Upstream;
use crate::harness::{curl, eventually, free_port, poll_until, Dest, GateBuilder};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn eu(addr: SocketAddr) -> Dest {
    Dest::new("eu", "api.eu.test").connect_to(addr)
}

/// Sends raw bytes to the proxy and returns what it answers (until close or 5 s).
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && !bytes.starts_with(b"CONNECT") {
                    // Enough for a status line and headers of a refusal with a small body.
                    if out.len() > 12 && String::from_utf8_lossy(&out).contains("content-length") {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
                        {
                            out.extend_from_slice(&buf[..n]);
                        }
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn absolute_form_reaches_a_registered_destination() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let r = gate
        .client()
        .post("http://api.eu.test/v1/events?page=2")
        .header("connection", "x-secret")
        .header("x-secret", "hop-only")
        .header("x-end-to-end", "kept")
        .header("content-type", "application/json")
        .body(r#"{"event":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["via"], "1.1 transfer-gate");
    assert!(
        r.headers().get("x-hop").is_none(),
        "Connection-listed response header leaked"
    );
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), "upstream-ok");

    let got = up.received();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.method, "POST");
    assert_eq!(g.target, "/v1/events?page=2");
    assert_eq!(g.body, br#"{"event":"hello"}"#);
    assert!(g.complete);
    assert_eq!(g.headers["host"], "api.eu.test");
    assert_eq!(g.headers["via"], "1.1 transfer-gate");
    assert_eq!(g.headers["x-request-id"], rid.as_str());
    assert_eq!(g.headers["x-end-to-end"], "kept");
    assert!(
        g.headers.get("x-secret").is_none(),
        "Connection-listed request header leaked"
    );
    assert!(g.headers.get("proxy-connection").is_none());
}

#[tokio::test]
async fn curl_through_the_proxy_keeps_the_request_id() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let proxy = gate.proxy_url();
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-x",
            &proxy,
            "-H",
            "X-Request-Id: trace-42",
            "--data-binary",
            "payload",
            "http://api.eu.test/upload",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, "upstream-ok");
    let got = up.received();
    assert_eq!(got[0].headers["x-request-id"], "trace-42");
    // curl's default form encoding: an inspectable body without personal information.
    assert_eq!(got[0].body, b"payload");
}

#[tokio::test]
async fn origin_form_is_routed_by_host() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = direct
        .get(format!("{}/direct?q=1", gate.proxy_url()))
        .header("host", "api.eu.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received()[0].target, "/direct?q=1");

    // Origin-form to a host that is not a registered destination is refused.
    let r = direct
        .get(format!("{}/x", gate.proxy_url()))
        .header("host", "somewhere.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
}

#[tokio::test]
async fn tls_origination_verifies_against_the_upstream_ca() {
    let ca = TestCa::new("upstream test CA");
    let up = Upstream::builder()
        .tls(ca.server_config(&["api.eu.test"]))
        .start()
        .await;
    let gate = GateBuilder::new()
        .file("upstream-ca.pem", ca.cert_pem.as_bytes())
        .section("[tls]\nupstream_ca_file = \"upstream-ca.pem\"")
        .destination(eu(up.addr).set("upstream_scheme", "\"https\""))
        .start()
        .await;
    let r = gate
        .client()
        .post("http://api.eu.test/secure")
        .header("content-type", "application/json")
        .body(r#""over-tls""#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, br#""over-tls""#);
    assert!(matches!(
        got[0].version,
        http::Version::HTTP_2 | http::Version::HTTP_11
    ));
}

#[tokio::test]
async fn tls_origination_refuses_an_untrusted_upstream() {
    let ca = TestCa::new("unknown CA");
    let up = Upstream::builder()
        .tls(ca.server_config(&["api.eu.test"]))
        .start()
        .await;
    let gate = GateBuilder::new()
        .destination(eu(up.addr).set("upstream_scheme", "\"https\""))
        .start()
        .await;
    let r = gate
        .client()
        .get("http://api.eu.test/secure")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(up.received().is_empty());
    assert!(gate.logs().contains("TLS handshake with upstream failed"));
}

#[tokio::test]
async fn connect_to_a_domestic_host_is_a_plain_tunnel() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .gate_key(&format!("tunnel_ports = [443, {}]", up.addr.port()))
        .start()
        .await;
    let proxy = gate.proxy_url();
    let url = format!("http://127.0.0.1:{}/through-tunnel", up.addr.port());
    let (code, body) = tokio::task::spawn_blocking(move || curl(&["-p", "-x", &proxy, &url]))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, "upstream-ok");
    assert_eq!(up.received()[0].target, "/through-tunnel");
    assert_eq!(
        gate.metric("transfer_gate_tunnels_total{destination=\"domestic\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn unknown_host_gets_451_with_the_spec_body() {
    let gate = GateBuilder::new().start().await;
    let r = gate
        .client()
        .post("http://unregistered.example.org/x?user_id=1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.headers()["link"],
        "<https://compliance.example.cn/transfer-gate>; rel=\"blocked-by\""
    );
    assert_eq!(r.headers()["x-transfer-gate-reason"], "unknown_destination");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "transfer_blocked");
    assert_eq!(v["reason"], "unknown_destination");
    assert_eq!(v["destination"], "unknown");
    assert_eq!(v["required_mechanism"], "none");
    assert!(v["request_id"].as_str().unwrap().len() >= 16);
    assert!(!v["message"].as_str().unwrap().is_empty());
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"block\",destination=\"unknown\",reason=\"unknown_destination\"}").await,
        1.0
    );
}

#[tokio::test]
async fn connect_and_websocket_to_overseas_are_uninspectable() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let resp = raw(
        gate.proxy,
        b"CONNECT api.eu.test:443 HTTP/1.1\r\nHost: api.eu.test:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 451"), "{resp}");
    assert!(
        resp.contains("x-transfer-gate-reason: uninspectable"),
        "{resp}"
    );
    let resp = raw(
        gate.proxy,
        b"CONNECT elsewhere.example.org:443 HTTP/1.1\r\nHost: elsewhere.example.org:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 451"), "{resp}");
    assert!(resp.contains("unknown_destination"), "{resp}");
    let ws = b"GET http://api.eu.test/socket HTTP/1.1\r\nHost: api.eu.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let resp = raw(gate.proxy, ws).await;
    assert!(resp.starts_with("HTTP/1.1 451"), "{resp}");
    assert!(resp.contains("uninspectable"), "{resp}");
    assert!(up.received().is_empty(), "nothing may reach the upstream");
}

#[tokio::test]
async fn tunnel_destination_is_blind_and_counted() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(eu(up.addr).set("tls", "\"tunnel\""))
        .start()
        .await;
    let proxy = gate.proxy_url();
    let (code, _) = tokio::task::spawn_blocking(move || {
        curl(&["-p", "-x", &proxy, "http://api.eu.test:443/blind"])
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(up.received().len(), 1);
    assert_eq!(
        gate.metric("transfer_gate_tunnels_total{destination=\"eu\"}")
            .await,
        1.0
    );
    assert_eq!(
        gate.metric("transfer_gate_decisions_total{client=\"unidentified\",decision=\"allow\",destination=\"eu\",reason=\"tunnel\"}").await,
        1.0
    );
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(format!("{}/h2c", gate.proxy_url()))
        .header("host", "api.eu.test")
        .header("content-type", "application/json")
        .body(r#""via-h2""#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    // curl speaks h2c to the gate directly (it ignores prior knowledge towards a proxy).
    let url = format!("{}/h2c-curl", gate.proxy_url());
    let (code, _) = tokio::task::spawn_blocking(move || {
        curl(&["--http2-prior-knowledge", "-H", "Host: api.eu.test", &url])
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    let got = up.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, br#""via-h2""#);
    assert_eq!(got[0].headers["host"], "api.eu.test");
    assert_eq!(got[1].target, "/h2c-curl");
}

#[tokio::test]
async fn a_forwarding_loop_is_refused() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    // A request that already passed this gate (e.g. a domestic name resolving back to it).
    let r = gate
        .client()
        .get("http://api.eu.test/loop")
        .header("via", "1.1 transfer-gate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    assert!(up.received().is_empty());
    // Addressed to the gate's own listener as a proxy target: not forwarded to itself.
    let url = format!("http://127.0.0.1:{}/loop", gate.proxy.port());
    let r = gate.client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn upstream_down_is_502() {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gate = GateBuilder::new().destination(eu(dead)).start().await;
    let r = gate
        .client()
        .get("http://api.eu.test/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unreachable");
}

#[tokio::test]
async fn upstream_slow_is_504() {
    let up = Upstream::builder()
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let gate = GateBuilder::new()
        .timeouts("response_header_seconds = 0.5")
        .destination(eu(up.addr))
        .start()
        .await;
    let r = gate
        .client()
        .get("http://api.eu.test/slow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        gate.metric("transfer_gate_upstream_errors_total{destination=\"eu\",kind=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_hyper_errors() {
    let gate = GateBuilder::new().start().await;
    let resp = raw(gate.proxy, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let mut flood = b"GET http://a.cn/ HTTP/1.1\r\nHost: a.cn\r\n".to_vec();
    for i in 0..2000 {
        flood.extend_from_slice(format!("x-flood-{i}: {}\r\n", "v".repeat(40)).as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let resp = raw(gate.proxy, &flood).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // The gate is still serving.
    assert_eq!(
        reqwest::get(gate.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413_and_not_forwarded() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .section("[inspection]\nmax_body_bytes = 1000\natomic_body_bytes = 1000")
        .destination(eu(up.addr))
        .start()
        .await;
    let r = gate
        .client()
        .post("http://api.eu.test/big")
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let up = Upstream::builder()
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let mut gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let client = gate.client();
    let inflight = tokio::spawn(async move {
        client
            .get("http://api.eu.test/long")
            .send()
            .await
            .map(|r| r.status())
    });
    eventually(
        "the request reached the upstream",
        Duration::from_secs(10),
        || async { (!up.received().is_empty()).then_some(()) },
    )
    .await;
    gate.signal("TERM");
    // No new connections once draining (well before the in-flight answer at 1.5 s).
    eventually(
        "listener stopped accepting during drain",
        Duration::from_secs(1),
        || async { TcpStream::connect(gate.proxy).await.is_err().then_some(()) },
    )
    .await;
    assert_eq!(
        inflight.await.unwrap().unwrap(),
        200,
        "in-flight request was cut"
    );
    let code = tokio::task::spawn_blocking(move || gate.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn one_gib_upload_streams_in_small_memory() {
    let up = Upstream::builder().sink().start().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    // NDJSON without personal information: inspected record by record, never held whole.
    let line = format!(
        "{{\"event\":\"page_view\",\"pad\":\"{}\"}}\n",
        "x".repeat(225)
    );
    assert_eq!(line.len(), 256);
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096; // 1 GiB
    let chunk = bytes::Bytes::from(line.repeat(CHUNK / 256));
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let body = reqwest::Body::wrap_stream(stream);
    let sampler = crate::harness::RssSampler::start(gate.pid());
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gate.proxy_url()).unwrap())
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let r = client
        .post("http://api.eu.test/upload")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let peak = sampler.stop();
    assert_eq!(r.status(), 200);
    let got = up.received();
    assert_eq!(got[0].body_len, (CHUNK * CHUNKS) as u64);
    assert!(got[0].complete);
    eprintln!("gate peak RSS during 1 GiB upload: {} MiB", peak >> 20);
    assert!(peak > 0, "RSS was never sampled");
    assert!(
        peak < 96 << 20,
        "gate RSS peaked at {} MiB while streaming 1 GiB",
        peak >> 20
    );
    assert_eq!(
        gate.metric("transfer_gate_bytes_total{client=\"unidentified\",destination=\"eu\",direction=\"upstream\"}")
            .await,
        (CHUNK * CHUNKS) as f64
    );
}

#[tokio::test]
async fn metrics_are_exposed() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    gate.client()
        .post("http://api.eu.test/m")
        .header("content-type", "application/json")
        .body("12345")
        .send()
        .await
        .unwrap();
    let text = gate.metrics().await;
    for needle in [
        "# TYPE transfer_gate_config_info gauge",
        "transfer_gate_config_info{mode=\"enforce\",regime=\"cac-2024\",sha256=\"",
        "transfer_gate_decisions_total{client=\"unidentified\",decision=\"allow\",destination=\"eu\"",
        "transfer_gate_bytes_total{client=\"unidentified\",destination=\"eu\",direction=\"upstream\"} 5",
        "transfer_gate_bytes_total{client=\"unidentified\",destination=\"eu\",direction=\"downstream\"} 11",
        "# TYPE transfer_gate_request_duration_seconds histogram",
        "# TYPE transfer_gate_tunnels_total counter",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    // No record was counted: no `transfer_gate_records_total` series yet (SPEC §6, a labelled
    // counter's series appears when first used).
    assert!(
        !text.contains("transfer_gate_records_total{"),
        "records_total series before any record was counted:\n{text}"
    );
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_file_changes_nothing() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let before = gate.metrics().await;
    // Add a second destination and reload.
    let mut text = std::fs::read_to_string(&gate.config).unwrap();
    text.push_str(&format!("\n[[destination]]\nname = \"us\"\nrecipient = \"US Co\"\ncountry = \"US\"\nhosts = [\"api.us.test\"]\nconnect_to = \"{}\"\n", up.addr));
    std::fs::write(&gate.config, &text).unwrap();
    gate.signal("HUP");
    let ok = poll_until(Duration::from_secs(5), || async {
        let r = gate
            .client()
            .get("http://api.us.test/")
            .send()
            .await
            .unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "reload did not take effect");
    assert_ne!(before, gate.metrics().await);
    // A broken file: the old config stays.
    std::fs::write(
        &gate.config,
        text.replace("[entity]", "[entity]\nbogus_key = 1"),
    )
    .unwrap();
    gate.signal("HUP");
    eventually(
        "the reload was refused",
        Duration::from_secs(10),
        || async { gate.logs().contains("reload refused").then_some(()) },
    )
    .await;
    assert_eq!(
        gate.client()
            .get("http://api.us.test/")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(gate.logs().contains("reload refused"));
    assert!(gate.logs().contains("bogus_key"));
}

#[tokio::test]
async fn added_seconds_leave_out_the_upstream_wait() {
    let up = Upstream::builder()
        .delay(Duration::from_millis(300))
        .start()
        .await;
    let gate = GateBuilder::new().destination(eu(up.addr)).start().await;
    let r = gate
        .client()
        .post("http://api.eu.test/slow")
        .header("content-type", "application/json")
        .body(r#"{"event":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let total = gate
        .metric("transfer_gate_request_duration_seconds_sum{decision=\"allow\"}")
        .await;
    let added = gate
        .metric("transfer_gate_added_seconds_sum{decision=\"allow\"}")
        .await;
    assert!(
        total >= 0.3,
        "request duration {total} s includes the upstream's 300 ms"
    );
    assert!(
        added < 0.2,
        "added {added} s of {total} s: the upstream's wait is left out"
    );

    // A refused request has no upstream: all of its duration is the gate's.
    let r = gate
        .client()
        .post("http://nowhere.test/")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    assert_eq!(
        gate.metric("transfer_gate_added_seconds_count{decision=\"block\"}")
            .await,
        1.0
    );
    assert_eq!(
        gate.metric("transfer_gate_added_seconds_sum{decision=\"block\"}")
            .await,
        gate.metric("transfer_gate_request_duration_seconds_sum{decision=\"block\"}")
            .await
    );
}
