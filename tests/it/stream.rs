//! The live decision stream and the recent request counts, through the real binary (SPEC §6
//! `GET /v1/decisions/stream`, the console's "Destinations"): refused and allowed decisions
//! arriving as events, the filters (percent-decoded, exact, a bad `decision` refused), a
//! stalled reader that costs the gate a bounded amount and is told what it dropped, a
//! thousand streams against the cap while `/healthz`, `/metrics` and the proxy go on, a stream
//! outliving a short admin idle timeout, a shutdown with streams open, and `/v1/status`'s
//! requests in the last hour and day.
//!
//! The gate's entity is a CIIO, so any personal information to `eu` or `us` needs a security
//! assessment nobody holds: a record with a `user_id` gets 451 `approval_required`, a request
//! without personal information is allowed (`no_pi`). `us` takes only the client `billing`:
//! an unidentified request to it gets 403 `client_not_allowed` before anything is read.

use crate::harness::upstream::Upstream;
use crate::harness::{poll_until, Dest, GateBuilder, GateProc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transfer_gate::admin::stream::MAX_STREAMS;

const BILLING_TOKEN: &str = "billing-token-0123456789abcdef";
const PI: &str = r#"{"user_id": "u-1001", "name": "Li Lei"}"#;
const EU: &str = "http://api.eu.test";
const US: &str = "http://api.us.test";

async fn gate(up: &Upstream, timeouts: &str) -> GateProc {
    let billing = transfer_gate::identity::token_digest_hex(BILLING_TOKEN);
    GateBuilder::new()
        .entity("regime = \"cac-2024\"\nciio = true")
        .timeouts(timeouts)
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .destination(
            Dest::new("us", "api.us.test")
                .connect_to(up.addr)
                .set("clients", "[\"billing\"]"),
        )
        .section(&format!(
            "[[client]]\nname = \"billing\"\ntoken_sha256 = [\"{billing}\"]"
        ))
        .start()
        .await
}

fn admin() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs personal information to `base` + `path` through the gate (451 expected).
async fn refused(gate: &GateProc, base: &str, path: &str) -> u16 {
    gate.post_json(&format!("{base}{path}"), PI)
        .await
        .status()
        .as_u16()
}

/// GETs `base` + `path` through the gate, with no personal information (allowed).
async fn allowed(gate: &GateProc, base: &str, path: &str) -> u16 {
    gate.client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One Server-Sent Event.
#[derive(Debug)]
struct Event {
    event: String,
    id: Option<u64>,
    data: String,
}

impl Event {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A decision stream read through reqwest.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Opens `/v1/decisions/stream?query`; asserts 200 and the SSE headers.
    async fn open(gate: &GateProc, query: &str) -> Sse {
        let resp = admin()
            .get(gate.admin_url(&format!("/v1/decisions/stream?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/event-stream");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-accel-buffering"], "no");
        let mut s = Sse {
            resp,
            buf: String::new(),
        };
        // The opening (retry and a comment) comes at once, before any decision.
        let first = s.block(Duration::from_secs(10)).await.expect("opening");
        assert!(first.starts_with("retry: 3000\n:"), "{first:?}");
        s
    }

    /// The next blank-line-terminated block, waiting at most `within` in all.
    async fn block(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let b = self.buf[..i].to_owned();
                self.buf.drain(..i + 2);
                return Some(b);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event (comments skipped), waiting at most `within` in all.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.block(left).await?;
            let mut e = Event {
                event: String::new(),
                id: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    e.event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    e.id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(e.data.is_empty(), "one data line per event: {block:?}");
                    e.data = v.into();
                } else {
                    assert!(line.starts_with(':'), "unexpected line {line:?}");
                }
            }
            if !e.event.is_empty() {
                return Some(e);
            }
        }
    }

    /// The next event, which must be a decision.
    async fn decision(&mut self) -> serde_json::Value {
        let e = self
            .next(Duration::from_secs(20))
            .await
            .expect("a decision event within 20 s");
        assert_eq!(e.event, "decision", "{e:?}");
        assert!(e.id.is_some(), "{e:?}");
        e.json()
    }
}

#[tokio::test]
async fn refused_and_allowed_decisions_arrive_on_an_open_stream() {
    let up = Upstream::http().await;
    let gate = gate(&up, "").await;
    let mut sse = Sse::open(&gate, "").await;
    assert_eq!(refused(&gate, EU, "/v1/customers").await, 451);
    let e = sse
        .next(Duration::from_secs(20))
        .await
        .expect("the refusal");
    assert_eq!(e.event, "decision");
    let first_id = e.id.unwrap();
    let d = e.json();
    assert_eq!(d["destination"], "eu");
    assert_eq!(d["decision"], "block");
    assert_eq!(d["reason"], "approval_required");
    assert_eq!(d["client_name"], "unidentified");
    assert_eq!(d["path"], "/v1/customers");
    assert!(
        !e.data.contains("u-1001"),
        "never an identifier: {}",
        e.data
    );
    assert_eq!(allowed(&gate, EU, "/v1/ping").await, 200);
    let e = sse.next(Duration::from_secs(20)).await.expect("the allow");
    assert!(e.id.unwrap() > first_id, "{e:?}");
    let d = e.json();
    assert_eq!(
        (&d["destination"], &d["decision"], &d["reason"]),
        (&"eu".into(), &"allow".into(), &"no_pi".into())
    );
    assert_eq!(d["path"], "/v1/ping");
}

#[tokio::test]
async fn filters_pass_only_matching_decisions() {
    let up = Upstream::http().await;
    let gate = gate(&up, "").await;
    let mut blocks_to_eu = Sse::open(&gate, "decision=block&destination=eu&unknown=1").await;
    let mut billing = Sse::open(&gate, "client_name=bill%69ng&reason=approval+required").await;
    let mut billing_exact =
        Sse::open(&gate, "client_name=bill%69ng&reason=approval_required").await;
    // Not matching the first: allowed to eu, refused at us. Then one that matches.
    assert_eq!(allowed(&gate, EU, "/first").await, 200);
    assert_eq!(refused(&gate, US, "/second").await, 403);
    assert_eq!(refused(&gate, EU, "/third").await, 451);
    let d = blocks_to_eu.decision().await;
    assert_eq!(
        (&d["path"], &d["destination"], &d["decision"]),
        (&"/third".into(), &"eu".into(), &"block".into())
    );
    // `client_name`: an unidentified refusal first, then billing's.
    let r = gate
        .client()
        .post(format!("{EU}/fourth"))
        .header("proxy-authorization", format!("Bearer {BILLING_TOKEN}"))
        .header("content-type", "application/json")
        .body(PI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    let d = billing_exact.decision().await;
    assert_eq!(
        (&d["path"], &d["client_name"], &d["reason"]),
        (
            &"/fourth".into(),
            &"billing".into(),
            &"approval_required".into()
        )
    );
    // `+` decodes to a space: "approval required" is no reason, so nothing passes.
    let none = billing.next(Duration::from_millis(500)).await;
    assert!(none.is_none(), "{none:?}");
    // A bad decision value: 400 with a message naming the parameter.
    let r = admin()
        .get(gate.admin_url("/v1/decisions/stream?decision=refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("`decision` must be allow, block or would_block"),
        "{text}"
    );
    // And a method the stream does not take.
    let r = admin()
        .post(gate.admin_url("/v1/decisions/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// Opens a stream on a raw socket with a small receive buffer and reads only the response
/// head; returns the status line and head, and the socket.
async fn raw_stream(gate: &GateProc, rcvbuf: Option<u32>) -> (String, TcpStream) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    let mut s = sock.connect(gate.admin).await.unwrap();
    s.write_all(b"GET /v1/decisions/stream HTTP/1.1\r\nhost: gate\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the connection closed in the head: {head:?}");
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_costs_a_bounded_amount_and_is_told_what_it_dropped() {
    use futures_util::stream::StreamExt;
    let up = Upstream::http().await;
    let gate = gate(&up, "").await;
    let (head, mut stalled) = raw_stream(&gate, Some(4096)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let rss_before = gate.rss_bytes();
    // Far more decisions than the feed (1,024) plus the socket buffers hold (about 5,000 of
    // these events on a 4 MiB tcp_wmem): 403s to `us`, decided before any body is read.
    const N: usize = 20_000;
    let started = Instant::now();
    let client = gate.client();
    let codes: Vec<u16> = futures_util::stream::iter(0..N)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .get(format!("{US}/flood/x{}", i % 10))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(codes.len(), N);
    assert!(codes.iter().all(|c| *c == 403), "{:?}", &codes[..10]);
    let flood = started.elapsed();
    let grown = gate.rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "the gate grew by {grown} bytes for one stalled reader"
    );
    let r = admin()
        .get(gate.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Now read: what the buffers held, then the marker.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let marker = b"event: dropped\ndata: {\"dropped\": ";
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(i) = seen.windows(marker.len()).position(|w| w == marker) {
                return Some(i);
            }
            let n = stalled.read(&mut buf).await.unwrap();
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            assert!(seen.len() < 256 << 20, "no marker in 256 MiB");
        }
    })
    .await
    .expect("the dropped marker within 30 s")
    .expect("the stream ended without a dropped marker");
    let rest = &seen[found + marker.len()..];
    let n: u64 = std::str::from_utf8(&rest[..rest.iter().position(|c| *c == b'}').unwrap()])
        .unwrap()
        .parse()
        .unwrap();
    let delivered = seen
        .windows(16)
        .filter(|w| w == b"event: decision\n")
        .count();
    assert!(n > 0 && delivered > 0, "dropped {n}, delivered {delivered}");
    // Every decision of the flood was either delivered or counted as dropped.
    assert_eq!(
        delivered + n as usize,
        N,
        "delivered {delivered} + dropped {n}"
    );
    eprintln!("flood of {N} in {flood:?}: delivered {delivered} before the marker, dropped {n}");
    // The stream goes on, from the newest.
    assert_eq!(allowed(&gate, EU, "/after-the-drop").await, 200);
    let tail = tokio::time::timeout(Duration::from_secs(20), async {
        let mut tail = seen[found..].to_vec();
        while !tail.windows(15).any(|w| w == b"/after-the-drop") {
            let n = stalled.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended");
            tail.extend_from_slice(&buf[..n]);
        }
        tail
    })
    .await
    .expect("the next decision after the drop");
    assert!(!tail.is_empty());
}

/// Opens a stream on a raw socket; `Ok` holds a 200's socket, `Err` a refusal's status and
/// head (the socket closed).
async fn try_stream(gate: &GateProc) -> Result<TcpStream, String> {
    let (head, s) = raw_stream(gate, None).await;
    if head.starts_with("HTTP/1.1 200") {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        Ok(s)
    } else {
        Err(head)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_meet_the_cap_and_the_admin_listener_goes_on() {
    let up = Upstream::http().await;
    let gate = gate(&up, "").await;
    let started = Instant::now();
    let attempts = (0..1000).map(|_| try_stream(&gate));
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(attempts),
    )
    .await
    .expect("a thousand stream requests answered within 60 s");
    let took = started.elapsed();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for r in results {
        match r {
            Ok(s) => open.push(s),
            Err(head) => refused.push(head),
        }
    }
    assert_eq!(open.len(), MAX_STREAMS, "{took:?}");
    assert_eq!(refused.len(), 1000 - MAX_STREAMS);
    for head in &refused {
        let h = head.to_ascii_lowercase();
        assert!(
            h.starts_with("http/1.1 503") && h.contains("retry-after: 5\r\n"),
            "{head}"
        );
    }
    eprintln!("1000 stream requests answered in {took:?}");
    // With the streams held, the probes, the metrics and the proxy go on.
    for path in ["/healthz", "/metrics", "/v1/status"] {
        let r = admin().get(gate.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(refused_status(&gate).await, 451);
    // Every held stream saw that decision.
    for s in &mut open[..3] {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(20), async {
            while !got.windows(6).any(|w| w == b"/while") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the decision on a held stream");
    }
    drop(open);
    // The slots come back when the bodies are dropped.
    let again = poll_until(Duration::from_secs(20), || async {
        try_stream(&gate).await.ok()
    })
    .await;
    assert!(again.is_some(), "no stream slot came back");
}

async fn refused_status(gate: &GateProc) -> u16 {
    refused(gate, EU, "/while-held").await
}

/// Opens an admin connection, sends one request, and waits (at most 10 s) until the gate
/// closes it as idle; returns how long that took.
async fn idle_connection_closed(gate: &GateProc) -> Duration {
    let mut idle = TcpStream::connect(gate.admin).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: gate\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        while idle.read(&mut buf).await.unwrap() > 0 {}
        started.elapsed()
    })
    .await
    .expect("an idle admin connection is closed")
}

#[tokio::test]
async fn a_stream_outlives_the_admin_idle_timeout() {
    let up = Upstream::http().await;
    let gate = gate(&up, "idle_seconds = 1").await;
    let mut sse = Sse::open(&gate, "").await;
    // The idle timeout is in force: a connection without a request in flight is closed. Three
    // such connections, one after the other, each awaited until the gate closes it: the
    // stream has lived through at least three idle timeouts by then.
    for _ in 0..3 {
        let closed_within = idle_connection_closed(&gate).await;
        assert!(
            closed_within >= Duration::from_millis(900),
            "{closed_within:?}"
        );
    }
    assert_eq!(refused(&gate, EU, "/later").await, 451);
    let d = sse.decision().await;
    assert_eq!(d["path"], "/later");
}

#[tokio::test]
async fn the_gate_shuts_down_promptly_with_streams_open() {
    let up = Upstream::http().await;
    let mut gate = gate(&up, "").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Sse::open(&gate, "").await);
    }
    let started = Instant::now();
    gate.signal("TERM");
    // drain_seconds is 5 in the harness: the streams must not hold the exit up to it.
    let code = gate.wait_exit(Duration::from_secs(4));
    assert_eq!(
        code,
        Some(0),
        "exit after {:?}; log:\n{}",
        started.elapsed(),
        gate.logs()
    );
    for s in &mut streams {
        let end = s.next(Duration::from_secs(5)).await;
        assert!(end.is_none(), "{end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_requests_in_the_last_hour_and_day() {
    let up = Upstream::http().await;
    let gate = gate(&up, "").await;
    for i in 0..3 {
        assert_eq!(allowed(&gate, EU, &format!("/ok{i}")).await, 200);
    }
    for i in 0..2 {
        assert_eq!(refused(&gate, EU, &format!("/no{i}")).await, 451);
    }
    assert_eq!(refused(&gate, US, "/not-yours").await, 403);
    let s = gate.status().await;
    let dest = |name: &str| {
        s["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {s:#}"))
            .clone()
    };
    let tally = |a: u64, r: u64| serde_json::json!({"allowed": a, "refused": r});
    let eu = dest("eu");
    assert_eq!(eu["requests"]["last_hour"], tally(3, 2), "{eu:#}");
    assert_eq!(eu["requests"]["last_day"], tally(3, 2), "{eu:#}");
    assert_eq!(eu["clients"], serde_json::Value::Null);
    let us = dest("us");
    assert_eq!(us["requests"]["last_hour"], tally(0, 1), "{us:#}");
    assert_eq!(us["requests"]["last_day"], tally(0, 1), "{us:#}");
    assert_eq!(us["clients"], serde_json::json!(["billing"]));
    // `transfer-gate status` shows them: subjects, sensitive, 1h allowed/refused, 1d.
    let out = crate::harness::cli_on(&gate.config, &["status"]);
    assert!(out.success(), "{}", out.stdout);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with("eu "))
        .unwrap_or_else(|| panic!("no eu row in\n{}", out.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(row[4..8], ["3", "2", "3", "2"], "{row:?}");
}
