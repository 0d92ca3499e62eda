//! Connection lifecycle through the real binary (SPEC §9): connections that send nothing, half
//! an h2 preface or half a head are closed on both listeners; an idle keep-alive connection is
//! closed; a gate limited to 256 descriptors (`prlimit`) under 300 idle sockets keeps serving
//! real clients and logs accept failures at most once a second; a slow streamed upload that
//! outlasts `response_header_seconds` is not cut (the response-head timer starts when the
//! request body has been sent).

use crate::harness::upstream::Upstream;
use crate::harness::{Dest, GateBuilder};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded) until the peer closes `s`; true when it did.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

async fn open(addr: SocketAddr, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !first.is_empty() {
        s.write_all(first).await.unwrap();
    }
    s
}

#[tokio::test]
async fn stalled_connections_are_closed_on_both_listeners() {
    let gate = GateBuilder::new()
        .timeouts("client_header_seconds = 1\nidle_seconds = 2")
        .start()
        .await;
    let cases: [(&str, SocketAddr, &[u8]); 5] = [
        ("proxy: nothing", gate.proxy, b""),
        (
            "proxy: half an h2 preface",
            gate.proxy,
            b"PRI * HTTP/2.0\r\n",
        ),
        (
            "proxy: half a head",
            gate.proxy,
            b"GET http://x.cn/ HTTP/1.1\r\nHost: x.cn\r\n",
        ),
        ("admin: nothing", gate.admin, b""),
        (
            "admin: half a head",
            gate.admin,
            b"GET /metrics HTTP/1.1\r\n",
        ),
    ];
    let mut socks = Vec::new();
    for (name, addr, first) in cases {
        socks.push((name, open(addr, first).await));
    }
    for (name, s) in &mut socks {
        assert!(closed_by_peer(s).await, "{name}: still open");
    }
    // A complete request, then silence: the keep-alive connection is closed too.
    for addr in [gate.admin] {
        let mut s = open(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(closed_by_peer(&mut s).await, "idle keep-alive still open");
    }
    // The listeners still serve.
    let r = reqwest::get(gate.admin_url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_descriptor_limited_gate_survives_idle_sockets() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .wrapper(&["prlimit", "--nofile=256:256", "--"])
        .timeouts("client_header_seconds = 3")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gate.pid())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    assert!(nofile.contains(" 256 "), "{nofile}");
    // A keep-alive client connected before the flood.
    let early = gate.client();
    let r = early.get("http://api.eu.test/before").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(gate.proxy).await.unwrap());
    }
    // Real clients get through once the header deadline has freed descriptors.
    let mut served = false;
    for _ in 0..60 {
        let fresh = gate.client();
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(5),
            fresh.get("http://api.eu.test/during").send(),
        )
        .await
        {
            if r.status() == 200 {
                served = true;
                break;
            }
        }
    }
    assert!(served, "no real client got through; log:\n{}", gate.logs());
    let r = early.get("http://api.eu.test/after").send().await.unwrap();
    assert_eq!(r.status(), 200, "the earlier connection is unaffected");
    // The descriptor limit was reached (at least one accept failure was logged), and the
    // failures were logged at most once per second.
    // The line may trail the request that got through: poll for it.
    let logged = crate::harness::poll_until(Duration::from_secs(10), || async {
        Some(()).filter(|()| gate.logs().contains("accept failed"))
    })
    .await;
    assert!(
        logged.is_some(),
        "no accept failure logged: the descriptor limit was never reached; log:\n{}",
        gate.logs()
    );
    let elapsed = started.elapsed().as_secs() + 2;
    let lines = gate.logs().matches("accept failed").count() as u64;
    assert!(
        lines <= elapsed,
        "{lines} accept-failure lines in about {elapsed} s"
    );
    // Every idle socket was closed by the gate.
    for s in &mut idle {
        assert!(closed_by_peer(s).await);
    }
}

#[tokio::test]
async fn a_slow_upload_longer_than_the_response_header_timeout_is_not_cut() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .timeouts("response_header_seconds = 1\nidle_seconds = 5")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    // One NDJSON record every 300 ms for about 3 s: three response-header timeouts long.
    let records = futures_util::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let line = format!("{{\"event\":{i}}}\n");
        Some((Ok::<_, std::io::Error>(line.into_bytes()), i + 1))
    });
    let r = gate
        .client()
        .post("http://api.eu.test/v1/stream")
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(records))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].complete);
    assert_eq!(got[0].body.iter().filter(|b| **b == b'\n').count(), 10);
}

/// SIGTERM with client connections open that have no request in flight (nothing sent yet, a
/// first byte that could start a head or the h2 preface, half the preface, a keep-alive
/// connection after its response): the drain closes them at once and the gate exits, instead of waiting for them until
/// `drain_seconds` (5 in the harness) runs out.
#[tokio::test]
async fn sigterm_does_not_wait_for_connections_without_a_request() {
    let up = Upstream::http().await;
    let mut gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .timeouts("client_header_seconds = 60\nidle_seconds = 60")
        .start()
        .await;
    let mut socks = Vec::new();
    for first in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n"] {
        socks.push(open(gate.proxy, first).await);
    }
    let mut kept = open(
        gate.proxy,
        b"GET http://api.eu.test/kept HTTP/1.1\r\nHost: api.eu.test\r\n\r\n",
    )
    .await;
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The response to the last one says the gate accepted all four (in the order they came).
    gate.signal("TERM");
    let code = tokio::task::spawn_blocking(move || {
        let code = gate.wait_exit(Duration::from_secs(30));
        (code, gate.logs())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert!(
        !code.1.contains("drain time over"),
        "the drain waited for connections without a request"
    );
    drop(socks);
}
