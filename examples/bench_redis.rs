//! Redis ledger load generator (BENCHMARKS.md, section "Redis ledger"): starts its own
//! `redis-server` on a free loopback port (AOF on), then for 1, 2 and 3 replicas — separate
//! `RedisLedger` instances, each with its own connection and local cache, as separate gate
//! processes would have — makes new-subject reservations (1 new subject per request, counted
//! into entity + destination + approval, with ceilings) from 16 concurrent tasks per replica,
//! and prints reservations/s, latency percentiles and the bytes each replica's journal
//! (`<data_dir>/redis-journal`) grew by per subject. Then the journal alone (a `LocalLedger`
//! under the same load: the cost a new-subject request adds on the gate), and Redis memory and
//! journal size per subject with `INFO memory` (100,000 subjects reserved 1,000 per call).
//! Bounded: a fixed number of reservations per run.
//!
//! `cargo run --release --example bench_redis -- [reservations per run] [appendfsync]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use transfer_gate::ledger::{
    Ceiling, Class, Ledger, LocalLedger, LocalOptions, RedisLedger, RedisOptions, RedisTarget,
    Reservation, ReserveOutcome, Scope, ScopeId, Subject, SubjectHasher,
};
use transfer_gate::model::Regime;
use transfer_gate::testing::redis_server as server;

const TASKS_PER_REPLICA: usize = 16;

fn subject(h: &SubjectHasher, i: u64) -> Subject {
    Subject {
        key: h.hash("field", i.to_string().as_bytes()),
        sensitive: false,
    }
}

/// The bytes of every file under `dir` (a replica's journal directory).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// What one measured run gave.
struct Run {
    rate: f64,
    lat: Vec<Duration>,
    /// Journal bytes on disk of every replica together after the run.
    journal_bytes: u64,
}

/// `total` new-subject reservations (1 subject each, 3 scopes, 2 ceilings) from
/// [`TASKS_PER_REPLICA`] tasks per ledger of `ledgers`.
async fn reserve_load(
    ledgers: &[(Arc<dyn Ledger>, Vec<ScopeId>)],
    total: u64,
    first: u64,
) -> (f64, Vec<Duration>) {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + total;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (l, ids) in ledgers {
        for _ in 0..TASKS_PER_REPLICA {
            let (l, ids, next) = (l.clone(), ids.clone(), next.clone());
            let hasher = SubjectHasher::from_key([9; 32]);
            tasks.push(tokio::spawn(async move {
                let ceilings = [
                    Ceiling {
                        scope: ids[0],
                        class: Class::All,
                        max_after: 99_999_999,
                    },
                    Ceiling {
                        scope: ids[2],
                        class: Class::All,
                        max_after: 99_999_999,
                    },
                ];
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let s = [subject(&hasher, i)];
                    let t = Instant::now();
                    let o = l
                        .reserve(Reservation {
                            subjects: &s,
                            scopes: &ids,
                            ceilings: &ceilings,
                            alternatives: &[],
                            regime: Regime::Cac2024,
                            now: SystemTime::now(),
                        })
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                    assert!(matches!(o, ReserveOutcome::Reserved(ref v) if v[0].new_all == 1));
                }
                lat
            }));
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    (total as f64 / secs, lat)
}

const SCOPES: [&str; 3] = ["entity", "destination:eu", "approval:SC-1"];

fn scopes() -> Vec<Scope> {
    SCOPES
        .iter()
        .filter_map(|s| Scope::from_stored_name(s))
        .collect()
}

async fn run(url: &str, entity: &str, replicas: usize, total: u64, first: u64) -> Run {
    let hasher = SubjectHasher::from_key([9; 32]);
    let journals = tempfile::tempdir().unwrap();
    let mut ledgers: Vec<(Arc<dyn Ledger>, Vec<ScopeId>)> = Vec::new();
    for r in 0..replicas {
        let l = RedisLedger::open(
            RedisOptions {
                target: RedisTarget::Server(url.into()),
                timeout: Duration::from_secs(2),
                entity: entity.into(),
                cache_entries: 1 << 20,
                journal_dir: Some(journals.path().join(format!("replica-{r}"))),
            },
            &hasher,
        )
        .await
        .unwrap();
        let ids = l.register_scopes(&scopes()).await.unwrap();
        ledgers.push((l as Arc<dyn Ledger>, ids));
    }
    let (rate, lat) = reserve_load(&ledgers, total, first).await;
    Run {
        rate,
        lat,
        journal_bytes: dir_bytes(journals.path()),
    }
}

/// The journal alone: a `LocalLedger` (what every replica's journal is) taking the same
/// one-subject reservations from [`TASKS_PER_REPLICA`] tasks; the cost each new-subject request
/// now adds on the gate (group-committed `fdatasync`).
async fn journal_alone(total: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let l =
        Arc::new(LocalLedger::open(&dir.path().join("journal"), LocalOptions::default()).unwrap());
    let ids = l.register_scopes(&scopes()).await.unwrap();
    let ledgers: Vec<(Arc<dyn Ledger>, Vec<ScopeId>)> = vec![(l as Arc<dyn Ledger>, ids)];
    reserve_load(&ledgers, 2_000, 0).await;
    let before = dir_bytes(dir.path());
    let (rate, lat) = reserve_load(&ledgers, total, 2_000).await;
    Run {
        rate,
        lat,
        journal_bytes: dir_bytes(dir.path()) - before,
    }
}

fn pct(l: &[Duration], p: f64) -> f64 {
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1e3
}

fn used_memory(s: &server::RedisServer) -> u64 {
    s.info_field("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(30_000, |a| a.parse().unwrap());
    let fsync = args.next().unwrap_or_else(|| "always".into());
    let server = server::RedisServer::with_args(&["--appendfsync", &fsync]);
    let url = server.url();
    println!("redis-server {} (appendonly yes, appendfsync {fsync}), {TASKS_PER_REPLICA} tasks per replica, {total} new-subject reservations per run, 3 scopes per reservation", server.info_field("server", "redis_version").unwrap_or_default());
    println!();
    println!(
        "| replicas | reservations/s | p50 ms | p99 ms | max ms | journal bytes per subject |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut first = 0;
    for replicas in 1..=3 {
        // Warm-up (connections, script cache), then the measured run.
        run(&url, "Bench Co", replicas, 2_000, first).await;
        first += 2_000;
        let r = run(&url, "Bench Co", replicas, total, first).await;
        first += total;
        println!(
            "| {replicas} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.rate,
            pct(&r.lat, 0.5),
            pct(&r.lat, 0.99),
            pct(&r.lat, 1.0),
            r.journal_bytes as f64 / total as f64
        );
    }
    let j = journal_alone(total).await;
    println!();
    println!("The journal alone (a LocalLedger, {TASKS_PER_REPLICA} tasks, 1 new subject in 3 scopes per reservation, {total} reservations):");
    println!();
    println!("| reservations/s | p50 ms | p99 ms | max ms | journal bytes per subject |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
        j.rate,
        pct(&j.lat, 0.5),
        pct(&j.lat, 0.99),
        pct(&j.lat, 1.0),
        j.journal_bytes as f64 / total as f64
    );
    // Memory per subject: a fresh namespace, 100,000 subjects in 2 and in 3 scopes.
    println!();
    println!("| scopes per subject | subjects | used_memory growth | bytes per subject | journal on disk per subject | journal heap per subject |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let journals = tempfile::tempdir().unwrap();
    for (name, n_scopes) in [("Mem Two", 2usize), ("Mem Three", 3)] {
        let hasher = SubjectHasher::from_key([9; 32]);
        let l = RedisLedger::open(
            RedisOptions {
                target: RedisTarget::Server(url.clone()),
                timeout: Duration::from_secs(5),
                entity: name.into(),
                cache_entries: 1,
                journal_dir: Some(journals.path().join(name)),
            },
            &hasher,
        )
        .await
        .unwrap();
        let scopes = [
            Scope::Entity,
            Scope::Destination("eu".into()),
            Scope::Approval("SC-1".into()),
        ];
        let ids = l.register_scopes(&scopes[..n_scopes]).await.unwrap();
        let before = used_memory(&server);
        let n = 100_000u64;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            let s: Vec<Subject> = chunk
                .iter()
                .map(|i| subject(&hasher, 1_000_000_000 + i))
                .collect();
            l.reserve(Reservation {
                subjects: &s,
                scopes: &ids,
                ceilings: &[],
                alternatives: &[],
                regime: Regime::Cac2024,
                now: SystemTime::now(),
            })
            .await
            .unwrap();
        }
        let grown = used_memory(&server).saturating_sub(before);
        let disk = dir_bytes(&journals.path().join(name));
        let (_, heap) = l.journal_stats().unwrap();
        println!(
            "| {n_scopes} | {n} | {grown} | {:.0} | {:.1} | {:.1} |",
            grown as f64 / n as f64,
            disk as f64 / n as f64,
            heap as f64 / n as f64
        );
    }
}
