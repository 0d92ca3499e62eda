//! Redis losing data, for real (`redis-server` without persistence, `FLUSHALL`, SIGKILL and an
//! empty restart, a Cluster node replaced by an empty one, a replica that was down during the
//! loss): the replicas detect it, refuse to count until their journals are re-asserted, and
//! afterwards every count and approval volume is what it was, and ceilings hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::ledger::suite::{at, plain, subj};
use crate::ledger::{Ceiling, Class, Ledger, LedgerError, ReserveOutcome, Scope, SubjectHasher};
use crate::testing::poll::{eventually, poll_until};
use crate::testing::redis_server::{raw_command, RedisCluster, RedisServer};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn hasher() -> SubjectHasher {
    SubjectHasher::from_key([5; 32])
}

fn scopes() -> Vec<Scope> {
    vec![Scope::Entity, Scope::Approval("SC-1".into())]
}

/// A replica of namespace `entity` with its own journal `journal`.
async fn replica(
    target: &RedisTarget,
    entity: &str,
    journal: &Path,
) -> (Arc<RedisLedger>, Vec<ScopeId>) {
    let l = RedisLedger::open(
        RedisOptions {
            target: target.clone(),
            timeout: Duration::from_secs(10),
            entity: entity.into(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            journal_dir: Some(journal.to_path_buf()),
        },
        &hasher(),
    )
    .await
    .unwrap();
    let ids = l.register_scopes(&scopes()).await.unwrap();
    (l, ids)
}

fn entity() -> String {
    format!("Loss Co {}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Polls (bounded) until `f` succeeds: the replica may be re-asserting.
async fn until_ok<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LedgerError>>,
{
    eventually(what, Duration::from_secs(10), || {
        let r = f();
        async move { r.await.ok() }
    })
    .await
}

fn ceiling(ids: &[ScopeId], max: u64) -> Vec<Ceiling> {
    vec![Ceiling {
        scope: ids[1],
        class: Class::All,
        max_after: max,
    }]
}

async fn reserve(
    l: &RedisLedger,
    ids: &[ScopeId],
    subjects: &[Subject],
    max: u64,
    regime: Regime,
    now: SystemTime,
) -> ReserveOutcome {
    let c = ceiling(ids, max);
    until_ok("reserve", || {
        l.reserve(Reservation {
            subjects,
            scopes: ids,
            ceilings: &c,
            alternatives: &[],
            regime,
            now,
        })
    })
    .await
}

async fn counts(l: &RedisLedger, scope: ScopeId, regime: Regime) -> ScopeCounts {
    until_ok("counts", || l.counts(scope, regime, SystemTime::now())).await
}

/// Waits until Redis lost data is noticed by `l` (health check or a call) and re-asserted.
async fn wait_reasserted(l: &RedisLedger, losses: u64) {
    let done = poll_until(Duration::from_secs(10), || async {
        (l.losses_detected() >= losses && l.is_ready()).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "no re-assertion: losses {} ready {}",
        l.losses_detected(),
        l.is_ready()
    );
}

/// Drops the last handle of a replica (its background check may hold one for a moment), so
/// that its journal is closed before another opens it.
async fn close(l: Arc<RedisLedger>) {
    let mut slot = Some(l);
    eventually("the replica to be released", Duration::from_secs(4), || {
        let released = match slot.take().map(Arc::try_unwrap) {
            Some(Ok(l)) => {
                drop(l);
                Some(())
            }
            Some(Err(back)) => {
                slot = Some(back);
                None
            }
            None => Some(()),
        };
        std::future::ready(released)
    })
    .await;
}

fn now_year() -> i32 {
    crate::model::shanghai_date(SystemTime::now()).year()
}

/// Two replicas on a Redis without persistence; 120 subjects, a loss, 80 more, another loss,
/// then 400 more offered against an approval volume of 400.
async fn two_replicas_survive(lose: impl Fn(&mut RedisServer)) {
    let mut server = RedisServer::with_args(&["--appendonly", "no"]);
    let target = RedisTarget::Server(server.url());
    let tmp = tempfile::tempdir().unwrap();
    let e = entity();
    let (a, ia) = replica(&target, &e, &tmp.path().join("a")).await;
    let (b, ib) = replica(&target, &e, &tmp.path().join("b")).await;
    let now = SystemTime::now();
    let r = Regime::Cac2024;
    // Sensitive and plain subjects on both replicas, partly the same.
    let first: Vec<Subject> = (0..120).map(|i| subj(i, i % 10 == 0)).collect();
    reserve(&a, &ia, &first[..70], 400, r, now).await;
    reserve(&b, &ib, &first[50..], 400, r, now).await;
    assert_eq!(counts(&a, ia[1], r).await.all, 120);

    lose(&mut server);
    wait_reasserted(&a, 1).await;
    wait_reasserted(&b, 1).await;
    for (l, ids) in [(&a, &ia), (&b, &ib)] {
        let c = counts(l, ids[1], r).await;
        assert_eq!((c.all, c.sensitive), (120, 12), "after the first loss");
    }
    reserve(&b, &ib, &plain(120..200), 400, r, now).await;
    lose(&mut server);
    wait_reasserted(&a, 2).await;
    wait_reasserted(&b, 2).await;
    assert_eq!(counts(&b, ib[0], r).await.all, 200);
    assert_eq!(counts(&a, ia[1], r).await.all, 200);
    // 400 more offered one by one to both replicas: exactly 200 fit.
    let mut accepted = 0;
    for i in 200..600u64 {
        let (l, ids) = if i % 2 == 0 { (&a, &ia) } else { (&b, &ib) };
        if let ReserveOutcome::Reserved(_) = reserve(l, ids, &plain(i..i + 1), 400, r, now).await {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 200);
    assert_eq!(counts(&a, ia[1], r).await.all, 400);
    assert!(a.reasserted_subjects() > 0 && b.reasserted_subjects() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_is_detected_and_reasserted() {
    two_replicas_survive(|s| {
        assert!(s.cli(&["FLUSHALL"]).contains("OK"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_data_is_detected_and_reasserted() {
    two_replicas_survive(RedisServer::restart_empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_data_changes_no_count() {
    // AOF with fsync always: nothing is lost, but the run id changes; the re-assertion is
    // idempotent, counts stay exact (nothing counted twice, last year's subjects stay last
    // year's).
    let mut server = RedisServer::start();
    let target = RedisTarget::Server(server.url());
    let tmp = tempfile::tempdir().unwrap();
    let e = entity();
    let (a, ia) = replica(&target, &e, &tmp.path().join("a")).await;
    let y = now_year();
    let r = Regime::Cac2022;
    reserve(&a, &ia, &plain(0..50), 1000, r, at(y - 1, 6, 1)).await;
    // Half of them again this year, some now sensitive.
    let again: Vec<Subject> = (25..75).map(|i| subj(i, i % 5 == 0)).collect();
    reserve(&a, &ia, &again, 1000, r, SystemTime::now()).await;
    let before = counts(&a, ia[0], r).await;
    assert_eq!((before.all, before.sensitive), (75, 10));
    let y24 = counts(&a, ia[0], Regime::Cac2024).await;
    server.restart();
    wait_reasserted(&a, 1).await;
    assert_eq!(counts(&a, ia[0], r).await, before);
    assert_eq!(counts(&a, ia[0], Regime::Cac2024).await, y24);
    // And after a loss, the same from the journal alone.
    server.restart_empty();
    wait_reasserted(&a, 2).await;
    assert_eq!(counts(&a, ia[0], r).await, before);
    assert_eq!(counts(&a, ia[0], Regime::Cac2024).await, y24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_during_the_loss_reasserts_when_it_returns() {
    let server = RedisServer::with_args(&["--appendonly", "no"]);
    let target = RedisTarget::Server(server.url());
    let tmp = tempfile::tempdir().unwrap();
    let e = entity();
    let now = SystemTime::now();
    let r = Regime::Cac2024;
    let (a, ia) = replica(&target, &e, &tmp.path().join("a")).await;
    let (b, ib) = replica(&target, &e, &tmp.path().join("b")).await;
    reserve(&a, &ia, &plain(0..100), 1000, r, now).await;
    reserve(&b, &ib, &plain(100..130), 1000, r, now).await;
    close(a).await;
    assert!(server.cli(&["FLUSHALL"]).contains("OK"));
    wait_reasserted(&b, 1).await;
    assert_eq!(counts(&b, ib[0], r).await.all, 30);
    // `a` comes back: its journal is older than the namespace; it re-asserts before counting.
    let (a, ia) = replica(&target, &e, &tmp.path().join("a")).await;
    let o = reserve(&a, &ia, &plain(0..1), 1000, r, now).await;
    assert!(matches!(o, ReserveOutcome::Reserved(_)));
    assert_eq!(a.losses_detected(), 1);
    assert_eq!(a.reasserted_subjects(), 200, "100 subjects in 2 scopes");
    assert_eq!(counts(&b, ib[1], r).await.all, 130);
    // A replica that restarts with nothing changed does not re-assert.
    close(a).await;
    let (a, _) = replica(&target, &e, &tmp.path().join("a")).await;
    assert_eq!(counts(&a, ia[0], r).await.all, 130);
    assert_eq!(a.losses_detected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_replaced_by_an_empty_one() {
    let mut cluster = RedisCluster::start();
    let target = RedisTarget::Cluster(cluster.urls());
    let tmp = tempfile::tempdir().unwrap();
    let e = entity();
    let now = SystemTime::now();
    let r = Regime::Cac2024;
    let (a, ia) = replica(&target, &e, &tmp.path().join("a")).await;
    let (b, ib) = replica(&target, &e, &tmp.path().join("b")).await;
    reserve(&a, &ia, &plain(0..60), 100, r, now).await;
    reserve(&b, &ib, &plain(40..100), 100, r, now).await;
    let meta = a.keys().meta();
    let owner = cluster
        .nodes
        .iter()
        .position(|n| {
            raw_command(n.port, &format!("EXISTS {meta}")).is_some_and(|r| r.starts_with(":1"))
        })
        .expect("a node holds the namespace");
    cluster.nodes[owner].restart_empty();
    wait_reasserted(&a, 1).await;
    wait_reasserted(&b, 1).await;
    assert_eq!(counts(&a, ia[1], r).await.all, 100);
    let o = reserve(&b, &ib, &plain(100..101), 100, r, now).await;
    assert!(matches!(o, ReserveOutcome::Refused(_)), "{o:?}");
}
