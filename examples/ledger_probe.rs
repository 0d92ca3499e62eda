//! Ledger probe (issue 5 benchmarks that are too large for criterion): bytes of memory per
//! counted subject and restart time, at N subjects (default 10 M) each counted in the entity
//! and one destination scope.
//!
//! `cargo run --release --example ledger_probe -- memory [N]`
//! `cargo run --release --example ledger_probe -- restart [N] [DIR]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use transfer_gate::ledger::{
    Ledger, LocalLedger, LocalOptions, MemoryLedger, Reservation, Scope, ScopeId, Subject,
    SubjectHasher,
};
use transfer_gate::model::Regime;

const BATCH: u64 = 10_000;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn fill(h: &SubjectHasher, from: u64, buf: &mut Vec<Subject>) {
    buf.clear();
    buf.extend((from..from + BATCH).map(|i| Subject {
        key: h.hash("probe", &i.to_le_bytes()),
        sensitive: i % 10 == 0,
    }));
}

fn req<'a>(s: &'a [Subject], ids: &'a [ScopeId]) -> Reservation<'a> {
    Reservation {
        subjects: s,
        scopes: ids,
        ceilings: &[],
        alternatives: &[],
        regime: Regime::Cac2024,
        now: SystemTime::now(),
    }
}

fn memory(n: u64) {
    let h = SubjectHasher::from_key([5; 32]);
    let mut buf = Vec::with_capacity(BATCH as usize);
    let before = rss_bytes();
    let l = MemoryLedger::new();
    let ids = l
        .register_now(&[Scope::Entity, Scope::Destination("d".into())])
        .unwrap();
    let start = Instant::now();
    for b in 0..n / BATCH {
        fill(&h, b * BATCH, &mut buf);
        l.reserve_now(&req(&buf, &ids)).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    println!("subjects: {n} (each in 2 scopes: {} entries)", l.entries());
    println!(
        "index heap: {:.1} bytes/subject",
        l.heap_bytes() as f64 / n as f64
    );
    println!(
        "RSS delta:  {:.1} bytes/subject",
        after.saturating_sub(before) as f64 / n as f64
    );
    println!(
        "insert (hashing included, 1 thread): {:.2} M subjects/s",
        n as f64 / secs / 1e6
    );
    // A second pass: every subject already counted.
    let start = Instant::now();
    for b in 0..n / BATCH {
        fill(&h, b * BATCH, &mut buf);
        l.reserve_now(&req(&buf, &ids)).unwrap();
    }
    println!(
        "lookup known (hashing included, 1 thread): {:.2} M subjects/s",
        n as f64 / start.elapsed().as_secs_f64() / 1e6
    );
}

async fn durable_fill(l: &Arc<LocalLedger>, ids: &[ScopeId], from: u64, n: u64) {
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (l, ids) = (l.clone(), ids.to_vec());
        tasks.push(tokio::spawn(async move {
            let h = SubjectHasher::from_key([5; 32]);
            let mut buf = Vec::with_capacity(BATCH as usize);
            let mut b = t;
            while b < n / BATCH {
                fill(&h, from + b * BATCH, &mut buf);
                l.reserve(req(&buf, &ids)).await.unwrap();
                b += 4;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn timed_open(dir: &std::path::Path, opts: &LocalOptions, what: &str) -> Arc<LocalLedger> {
    let start = Instant::now();
    let l = LocalLedger::open(dir, opts.clone()).unwrap();
    println!(
        "restart {what}: {:.2} s ({:?})",
        start.elapsed().as_secs_f64(),
        l.recovery()
    );
    Arc::new(l)
}

fn restart(n: u64, dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Automatic snapshots off, so that each phase is measured on its own.
    let opts = LocalOptions {
        snapshot_after_bytes: u64::MAX,
        ..LocalOptions::default()
    };
    let _ = std::fs::remove_dir_all(dir);
    let l = Arc::new(LocalLedger::open(dir, opts.clone()).unwrap());
    let ids = rt
        .block_on(l.register_scopes(&[Scope::Entity, Scope::Destination("d".into())]))
        .unwrap();
    let start = Instant::now();
    rt.block_on(durable_fill(&l, &ids, 0, n));
    println!(
        "durable fill of {n} subjects (4 tasks x 10,000 per reservation): {:.2} s",
        start.elapsed().as_secs_f64()
    );
    drop(l);
    let l = timed_open(dir, &opts, "from the log only");
    let start = Instant::now();
    l.compact(SystemTime::now()).unwrap();
    println!(
        "snapshot of {} entries: {:.2} s",
        l.entries(),
        start.elapsed().as_secs_f64()
    );
    drop(l);
    let l = timed_open(dir, &opts, "from the snapshot");
    // The worst case under the default policy: a full snapshot_after_bytes of log on top.
    let tail = LocalOptions::default().snapshot_after_bytes / 17 / BATCH * BATCH;
    rt.block_on(durable_fill(&l, &ids, n, tail));
    drop(l);
    let l = timed_open(
        dir,
        &opts,
        &format!("from the snapshot + {tail} subjects of log (default snapshot interval)"),
    );
    let c = rt
        .block_on(l.counts(ScopeId(0), Regime::Cac2024, SystemTime::now()))
        .unwrap();
    println!("subjects counted after restart: {}", c.all);
    let size: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("ledger dir: {:.0} MB", size as f64 / 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    match args.get(1).map(String::as_str) {
        Some("memory") => memory(n),
        Some("restart") => {
            let dir = args
                .get(3)
                .map_or_else(|| std::env::temp_dir().join("ledger-probe"), Into::into);
            restart(n, &dir);
        }
        _ => eprintln!("usage: ledger_probe memory|restart [N] [DIR]"),
    }
}
