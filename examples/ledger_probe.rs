//! Ledger probe (issue 5 benchmarks that are too large for criterion): bytes of memory per
//! counted subject and restart time, at N subjects (default 10 M) each counted in the entity
//! and one destination scope.
//!
//! `cargo run --release --example ledger_probe -- memory [N]`
//! `cargo run --release --example ledger_probe -- durable [N] [DIR]`
//! `cargo run --release --example ledger_probe -- restart [N] [DIR]`
//!
//! `durable` is the whole-process figure of the product spec (§10): N new subjects counted
//! through the real [`LocalLedger`] (writer thread, log, periodic snapshots) by several tasks in
//! reservations of 1 to 1,000 subjects, with the process's VmRSS and VmHWM before and after.
//! The probe uses mimalloc as its global allocator, as the gate binary does (`src/main.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use transfer_gate::ledger::{
    Ledger, LocalLedger, LocalOptions, MemoryLedger, Reservation, Scope, ScopeId, Subject,
    SubjectHasher,
};
use transfer_gate::model::Regime;

// The same allocator as the gate binary, so that RSS figures are the gate's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 10_000;

/// A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: peak resident).
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

fn hwm_bytes() -> u64 {
    status_bytes("VmHWM:")
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

/// Tasks that count subjects concurrently in the durable probe.
const TASKS: u64 = 8;
/// Largest reservation of the durable probe (sizes are drawn from 1..=MAX_RESERVATION).
const MAX_RESERVATION: u64 = 1_000;

/// N new subjects through the durable ledger, from TASKS tasks in reservations of 1..=1,000.
fn durable(n: u64, dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let (rss0, hwm0) = (rss_bytes(), hwm_bytes());
    let l = Arc::new(LocalLedger::open(dir, LocalOptions::default()).unwrap());
    let ids = rt
        .block_on(l.register_scopes(&[Scope::Entity, Scope::Destination("d".into())]))
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (l, ids, next) = (l.clone(), ids.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let h = SubjectHasher::from_key([5; 32]);
                let mut buf = Vec::with_capacity(MAX_RESERVATION as usize);
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let size = x % MAX_RESERVATION + 1;
                    let from = next.fetch_add(size, Ordering::Relaxed);
                    if from >= n {
                        break;
                    }
                    buf.clear();
                    buf.extend((from..(from + size).min(n)).map(|i| Subject {
                        key: h.hash("probe", &i.to_le_bytes()),
                        sensitive: i % 10 == 0,
                    }));
                    l.reserve(req(&buf, &ids)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (rss1, hwm1) = (rss_bytes(), hwm_bytes());
    let heap = l.heap_bytes();
    println!(
        "subjects: {n} ({} entries), {TASKS} tasks, reservations of 1..={MAX_RESERVATION}, \
         default snapshot interval: {:.1} s",
        l.entries(),
        secs
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let per = |b: u64| b as f64 / n as f64;
    println!(
        "index heap: {:.1} MiB, {:.1} bytes/subject",
        mib(heap as u64),
        per(heap as u64)
    );
    println!(
        "VmRSS: {:.1} MiB before, {:.1} MiB after: {:.1} bytes/subject",
        mib(rss0),
        mib(rss1),
        per(rss1.saturating_sub(rss0))
    );
    println!(
        "VmHWM: {:.1} MiB before, {:.1} MiB after: {:.1} bytes/subject",
        mib(hwm0),
        mib(hwm1),
        per(hwm1.saturating_sub(rss0))
    );
    // One more snapshot at full size (as the next periodic one would be), once a background
    // one still running has finished (`compact` returns at once while another one runs).
    transfer_gate::testing::poll::poll_until_blocking(Duration::from_secs(300), || {
        (!snapshot_running()).then_some(())
    })
    .expect("the background snapshot ends");
    let start = Instant::now();
    l.compact(SystemTime::now()).unwrap();
    let (rss2, hwm2) = (rss_bytes(), hwm_bytes());
    println!(
        "after a snapshot of {} entries ({:.2} s): VmRSS {:.1} bytes/subject, VmHWM {:.1} \
         bytes/subject",
        l.entries(),
        start.elapsed().as_secs_f64(),
        per(rss2.saturating_sub(rss0)),
        per(hwm2.saturating_sub(rss0))
    );
    drop(l);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether the ledger's background snapshot thread is running (by its thread name).
fn snapshot_running() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| {
        d.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "ledger-snapshot")
        })
    })
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
        Some("durable") => {
            let dir = args.get(3).map_or_else(
                || std::env::temp_dir().join(format!("ledger-probe-{}", std::process::id())),
                Into::into,
            );
            durable(n, &dir);
        }
        _ => eprintln!("usage: ledger_probe memory|durable|restart [N] [DIR]"),
    }
}
