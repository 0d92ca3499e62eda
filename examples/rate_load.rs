//! Open-loop constant-rate load generator for `scripts/bench-proxy`: sends POSTs of a JSON body
//! at a fixed aggregate rate over keep-alive connections and reports latency percentiles
//! measured from each request's *scheduled* start (so a stall is not hidden by the generator
//! waiting — no coordinated omission). Loopback only.
//!
//! `cargo run --release --example rate_load -- URL HOST BODY_FILE RATE SECONDS [CONNS [NEW_EVERY]]`
//! prints `sent ok p50_us p90_us p99_us max_us`. When the body contains `NEWID`, one request in
//! `NEW_EVERY` (default 10; 0: none, 1: every one) carries a user id never sent before (fresh
//! per run), the others the already-counted id `1`. With `PROXY_AUTHORIZATION` set in the
//! environment, every request carries it as its `Proxy-Authorization` header (a client token).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 6,
        "usage: rate_load URL HOST BODY_FILE RATE SECONDS [CONNS [NEW_EVERY]]"
    );
    let url: hyper::Uri = args[1].parse()?;
    let host = args[2].clone();
    let body = std::fs::read_to_string(&args[3])?;
    let rate: f64 = args[4].parse()?;
    let secs: f64 = args[5].parse()?;
    let conns: usize = args.get(6).map(|c| c.parse()).transpose()?.unwrap_or(64);
    let new_every: u64 = args.get(7).map(|c| c.parse()).transpose()?.unwrap_or(10);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build_http();
    let total = (rate * secs) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    // Fresh ids per run: a run never re-sends an id an earlier run counted.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 100_000);
    let next_id = Arc::new(AtomicU64::new(1_000_000_000 + seed * 100_000));
    let ok = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(conns));
    let auth = std::env::var("PROXY_AUTHORIZATION")
        .ok()
        .filter(|a| !a.is_empty());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await?;
        let (client, url, host, tx, ok, auth) = (
            client.clone(),
            url.clone(),
            host.clone(),
            tx.clone(),
            ok.clone(),
            auth.clone(),
        );
        let payload = if new_every > 0 && i % new_every == 0 && body.contains("NEWID") {
            body.replace(
                "NEWID",
                &next_id.fetch_add(1, Ordering::Relaxed).to_string(),
            )
        } else {
            body.replace("NEWID", "1")
        };
        tokio::spawn(async move {
            let mut req = hyper::Request::post(url).header("host", host);
            if let Some(a) = auth {
                req = req.header("proxy-authorization", a);
            }
            let req = req
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(payload)));
            if let Ok(req) = req {
                if let Ok(resp) = client.request(req).await {
                    let good = resp.status().is_success();
                    if resp.into_body().collect().await.is_ok() && good {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = tx.send(due.elapsed().as_micros() as u64);
            drop(permit);
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(total as usize);
    while let Some(us) = rx.recv().await {
        lat.push(us);
    }
    lat.sort_unstable();
    // A run that measured nothing fails instead of printing zeros for the percentiles.
    let good = ok.load(Ordering::Relaxed);
    anyhow::ensure!(
        !lat.is_empty() && good > 0,
        "nothing measured: {} requests timed, {good} answered 2xx",
        lat.len()
    );
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} {} {} {} {} {}",
        lat.len(),
        ok.load(Ordering::Relaxed),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
