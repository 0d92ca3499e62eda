//! The process-wide buffered-bytes budget (SPEC §9, `inspection.max_buffered_bytes`) through
//! the real binary: with the budget held by HTTP/1.1 uploads that never end, h2c clients
//! flooding streams that each declare a 1 MiB body and send all but its last byte cannot grow
//! the gate's memory past it; streams that find no room wait and are answered 503 `gate_busy`
//! once `idle_seconds` pass; every byte is returned afterwards and ordinary traffic flows. A brotli body whose window is over the bound is
//! refused `unreadable_body` before anything is decoded or forwarded.

use crate::harness::upstream::Upstream;
use crate::harness::{poll_until, Dest, GateBuilder, GateProc};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::Write;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 32 * MIB;
const CONNS: usize = 3;
const STREAMS_PER_CONN: usize = 120;
const BUFFERED: &str = "transfer_gate_buffered_bytes";

/// Polls the buffered-bytes gauge until `done` holds for it; returns the last value.
async fn buffered_until(gate: &GateProc, what: &str, done: impl Fn(f64) -> bool) -> f64 {
    let reached = poll_until(Duration::from_secs(60), || async {
        Some(gate.metric(BUFFERED).await).filter(|v| done(*v))
    })
    .await;
    match reached {
        Some(v) => v,
        None => panic!(
            "{what}: transfer_gate_buffered_bytes stayed at {}",
            gate.metric(BUFFERED).await
        ),
    }
}

/// A 1 MiB JSON record of which all but its last `kept` bytes are sent at once; then, with
/// `trickle`, one byte a second (a client that stays within `idle_seconds` but never ends),
/// else nothing more.
fn all_but(kept: u64, trickle: bool) -> reqwest::Body {
    let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
    let head = Bytes::from_static(b"{\"note\":\"");
    let mut parts = vec![head.clone()];
    let mut sent = head.len() as u64;
    while sent + chunk.len() as u64 <= MIB - kept {
        parts.push(chunk.clone());
        sent += chunk.len() as u64;
    }
    parts.push(Bytes::from(vec![b'a'; (MIB - kept - sent) as usize]));
    let first = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    if trickle {
        // Pacing, not synchronisation: the holder must look alive to the idle timer.
        let drip = futures_util::stream::unfold(kept - 1, |left| async move {
            if left == 0 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(Bytes::from_static(b"a")), left - 1))
        });
        reqwest::Body::wrap_stream(first.chain(drip).chain(futures_util::stream::pending()))
    } else {
        reqwest::Body::wrap_stream(first.chain(futures_util::stream::pending()))
    }
}

async fn post_1mib(c: reqwest::Client, body: reqwest::Body) -> (u16, String) {
    let r = c
        .post("http://api.eu.test/v1/upload")
        .header("content-type", "application/json")
        .header("content-length", MIB.to_string())
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test]
async fn flooded_h2_streams_stay_within_the_buffered_bytes_budget() {
    let up = Upstream::builder().sink().start().await;
    let gate = GateBuilder::new()
        .timeouts("idle_seconds = 3")
        .section(&format!("[inspection]\nmax_buffered_bytes = {BUDGET}"))
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let base = gate.rss_bytes();
    assert!(base > 0, "the gate's RSS is readable");
    // HTTP/1.1 holders: 1 MiB bodies read whole, each alive but never complete, fill the
    // budget exactly.
    let holders: Vec<_> = (0..BUDGET / MIB)
        .map(|_| tokio::spawn(post_1mib(gate.client(), all_but(200, true))))
        .collect();
    let held = buffered_until(&gate, "holders", |v| v >= BUDGET as f64).await;
    assert_eq!(held, BUDGET as f64);
    // The flood: 360 h2c streams each offering 1 MiB (360 MiB against a full budget of
    // 32 MiB). None finds room: each waits, is gated record by record, and is answered 503
    // gate_busy once idle_seconds pass without room.
    let mut flood = Vec::new();
    for _ in 0..CONNS {
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(gate.proxy_url()).unwrap())
            .http2_prior_knowledge()
            .build()
            .unwrap();
        for _ in 0..STREAMS_PER_CONN {
            flood.push(tokio::spawn(post_1mib(client.clone(), all_but(1, false))));
        }
    }
    for t in flood {
        let (status, text) = t.await.unwrap();
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("gate_busy"), "{text}");
    }
    assert!(gate.metric(BUFFERED).await <= BUDGET as f64);
    // The peak: without the budget the flood alone holds ~360 MiB.
    let peak = gate.peak_rss_bytes();
    assert!(
        peak < base + BUDGET + 96 * MIB,
        "peak RSS {peak} from {base} with a budget of {BUDGET}"
    );
    // Every byte is returned once the holders are gone, and ordinary traffic flows.
    for h in holders {
        h.abort();
    }
    buffered_until(&gate, "after the flood", |v| v == 0.0).await;
    let r = gate
        .client()
        .post("http://api.eu.test/v1/events")
        .header("content-type", "application/json")
        .body(r#"{"event": "ok"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up
        .received()
        .iter()
        .all(|r| !r.complete || r.body_len < MIB));
}

#[tokio::test]
async fn a_brotli_window_over_the_bound_is_refused_unread() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    let encode = |lgwin: u32| {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, lgwin);
            w.write_all(br#"{"event": "no personal information"}"#)
                .unwrap();
        }
        out
    };
    let send = |body: Vec<u8>| {
        gate.client()
            .post("http://api.eu.test/v1/events")
            .header("content-type", "application/json")
            .header("content-encoding", "br")
            .body(body)
            .send()
    };
    let r = send(encode(24)).await.unwrap();
    assert_eq!(r.status(), 451);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "unreadable_body");
    assert!(up.received().is_empty(), "nothing was forwarded");
    // The usual window (22) passes.
    let r = send(encode(22)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.received().len(), 1);
}
