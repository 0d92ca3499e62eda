//! Ledger benchmarks (issue 5): in-memory lookups and inserts per core, and durable new
//! subjects per second with group commit. Memory per subject and restart time at 10 M subjects
//! are measured by `examples/ledger_probe.rs` (too large for criterion's repetitions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use transfer_gate::ledger::{
    Ledger, LocalLedger, LocalOptions, MemoryLedger, Reservation, Scope, ScopeId, Subject,
    SubjectHasher,
};
use transfer_gate::model::Regime;

fn subjects(from: u64, n: u64) -> Vec<Subject> {
    let h = SubjectHasher::from_key([3; 32]);
    (from..from + n)
        .map(|i| Subject {
            key: h.hash("bench", &i.to_le_bytes()),
            sensitive: i % 10 == 0,
        })
        .collect()
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

const PREFILL: u64 = 1_000_000;
const BATCH: u64 = 64;

/// One core: reservations of 64 subjects each, counted in the entity and one destination.
fn memory(c: &mut Criterion) {
    let l = MemoryLedger::new();
    let ids = l
        .register_now(&[Scope::Entity, Scope::Destination("d".into())])
        .unwrap();
    let all = subjects(0, PREFILL);
    for chunk in all.chunks(10_000) {
        l.reserve_now(&req(chunk, &ids)).unwrap();
    }
    let mut g = c.benchmark_group("ledger_memory");
    g.throughput(Throughput::Elements(BATCH));
    let mut at = 0usize;
    g.bench_function("lookup_known_batch64", |b| {
        b.iter(|| {
            at = (at + BATCH as usize) % (all.len() - BATCH as usize);
            l.reserve_now(&req(&all[at..at + BATCH as usize], &ids))
                .unwrap()
        })
    });
    let next = AtomicU64::new(PREFILL);
    g.bench_function("insert_new_batch64", |b| {
        b.iter_batched(
            || subjects(next.fetch_add(BATCH, Ordering::Relaxed), BATCH),
            |s| l.reserve_now(&req(&s, &ids)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // The realistic mix: most subjects of a request already counted, a few new.
    g.bench_function("mixed_batch64_6_new", |b| {
        b.iter_batched(
            || {
                at = (at + BATCH as usize) % (all.len() - BATCH as usize);
                let mut s = all[at..at + 58].to_vec();
                s.extend(subjects(next.fetch_add(6, Ordering::Relaxed), 6));
                s
            },
            |s| l.reserve_now(&req(&s, &ids)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Durable new subjects per second: 32 concurrent reservers of 1,000 new subjects each, the
/// writer thread sharing one `fdatasync` among every reservation in flight.
fn durable(c: &mut Criterion) {
    const TASKS: u64 = 32;
    const PER: u64 = 1_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let dir =
        tempfile::tempdir_in(std::env::var_os("LEDGER_BENCH_DIR").unwrap_or_else(|| ".".into()))
            .unwrap();
    let opts = LocalOptions {
        snapshot_after_bytes: u64::MAX,
        ..LocalOptions::default()
    };
    let l = Arc::new(LocalLedger::open(&dir.path().join("ledger"), opts).unwrap());
    let ids = rt
        .block_on(l.register_scopes(&[Scope::Entity, Scope::Destination("d".into())]))
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("ledger_durable");
    g.throughput(Throughput::Elements(TASKS * PER));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("new_subjects_32x1000_group_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Vec<Subject>> = (0..TASKS)
                    .map(|_| subjects(next.fetch_add(PER, Ordering::Relaxed), PER))
                    .collect();
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = batches
                        .into_iter()
                        .map(|s| {
                            let (l, ids) = (l.clone(), ids.clone());
                            tokio::spawn(async move { l.reserve(req(&s, &ids)).await.unwrap() })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Keyed hashing of one identifier (on the stack, no allocation).
fn hashing(c: &mut Criterion) {
    let h = SubjectHasher::from_key([3; 32]);
    let mut g = c.benchmark_group("ledger_hash");
    g.throughput(Throughput::Elements(1));
    g.bench_function("phone_11_digits", |b| {
        b.iter(|| {
            h.hash(
                std::hint::black_box("phone"),
                std::hint::black_box(b"13800138000"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, hashing, memory, durable);
criterion_main!(benches);
