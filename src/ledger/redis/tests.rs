//! Tests of the Redis ledger against a real `redis-server` (and a 3-node Redis Cluster)
//! started on free loopback ports: the behavioural suite, the hash key check, the local
//! cache (no round trip), failure and recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::ledger::suite::{self, at, plain, subj};
use crate::ledger::{Ceiling, Class, Ledger, LedgerError, ReserveOutcome, Scope, SubjectHasher};
use crate::testing::poll::eventually;
use crate::testing::redis_server::{raw_command, RedisCluster, RedisServer};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Options with a fresh namespace (the suite wants empty backends) and a fresh journal in
/// `tmp`. The timeout is generous: these tests check counting, not speed, and CI runs them
/// beside every other test on two cores (64 racing reservations once missed 500 ms there).
/// The test of the timeout itself sets a short one.
fn opts(target: RedisTarget, tmp: &std::path::Path) -> RedisOptions {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    RedisOptions {
        target,
        timeout: Duration::from_secs(10),
        entity: format!("Test Co {n}"),
        cache_entries: DEFAULT_CACHE_ENTRIES,
        journal_dir: Some(tmp.join(format!("journal-{n}"))),
    }
}

/// `o` with another journal (another replica of the same namespace).
fn replica(o: &RedisOptions, tmp: &std::path::Path) -> RedisOptions {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    RedisOptions {
        journal_dir: Some(tmp.join(format!("journal-{n}"))),
        ..o.clone()
    }
}

fn hasher() -> SubjectHasher {
    SubjectHasher::from_key([7; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_redis_server() {
    let server = RedisServer::start();
    let url = server.url();
    let make = move || -> suite::Made {
        let tmp = tempfile::tempdir().unwrap();
        let l = RedisLedger::new(
            opts(RedisTarget::Server(url.clone()), tmp.path()),
            &hasher(),
        )
        .unwrap();
        (l, Box::new(tmp))
    };
    suite::run_all(&make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let make = move || -> suite::Made {
        let tmp = tempfile::tempdir().unwrap();
        let l = RedisLedger::new(
            opts(RedisTarget::Cluster(urls.clone()), tmp.path()),
            &hasher(),
        )
        .unwrap();
        (l, Box::new(tmp))
    };
    suite::run_all(&make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_exact_count() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(RedisTarget::Server(server.url()), tmp.path());
    let a = RedisLedger::open(replica(&o, tmp.path()), &hasher())
        .await
        .unwrap();
    let b = RedisLedger::open(o, &hasher()).await.unwrap();
    // Registration order differs: ids are local, the stored names are shared.
    let ia = a
        .register_scopes(&[Scope::Entity, Scope::Destination("eu".into())])
        .await
        .unwrap();
    let ib = b
        .register_scopes(&[Scope::Destination("eu".into()), Scope::Entity])
        .await
        .unwrap();
    let now = at(2026, 6, 1);
    let ceil = |ids: &[ScopeId]| {
        vec![Ceiling {
            scope: ids[0],
            class: Class::All,
            max_after: 300,
        }]
    };
    let (ca, cb) = (ceil(&ia), ceil(&[ib[1]]));
    let won = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let (l, ids, c) = if t % 2 == 0 {
            (a.clone(), ia.clone(), ca.clone())
        } else {
            (b.clone(), vec![ib[1], ib[0]], cb.clone())
        };
        let won = won.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let s = [subj(t * 1000 + i, false), subj(i, false)];
                if let ReserveOutcome::Reserved(o) =
                    suite::reserve(&*l, &s, &ids, &c, Regime::Cac2024, now).await
                {
                    won.fetch_add(o[0].new_all as usize, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(won.load(Ordering::Relaxed), 300);
    assert_eq!(
        a.counts(ia[0], Regime::Cac2024, now).await.unwrap().all,
        300
    );
    assert_eq!(
        b.counts(ib[0], Regime::Cac2024, now).await.unwrap().all,
        300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_hash_key_is_refused() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(RedisTarget::Server(server.url()), tmp.path());
    RedisLedger::open(replica(&o, tmp.path()), &hasher())
        .await
        .unwrap();
    let other = SubjectHasher::from_key([8; 32]);
    match RedisLedger::open(o, &other).await {
        Err(RedisOpenError::KeyMismatch { namespace }) => assert!(namespace.starts_with("tg:{")),
        r => panic!("expected a key mismatch, got {r:?}"),
    }
}

/// Every command the server runs, as `MONITOR` prints it, read by a thread until the server
/// goes away.
struct Monitor {
    port: u16,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    marks: AtomicUsize,
}

impl Monitor {
    fn start(server: &RedisServer) -> Monitor {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(b"MONITOR\r\n").unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut ok = String::new();
        r.read_line(&mut ok).unwrap();
        assert!(ok.starts_with("+OK"), "MONITOR: {ok}");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in r.lines() {
                let Ok(l) = l else { return };
                sink.lock().unwrap().push(l);
            }
        });
        Monitor {
            port: server.port,
            lines,
            marks: AtomicUsize::new(0),
        }
    }

    /// The script calls that count or probe subjects so far: every `EVAL`/`EVALSHA` except
    /// mode `i` (the ledger's own health check, every 500 ms, which a busy CI machine can
    /// fit into any window). Waits until the monitor has seen everything sent before.
    fn counting_evals(&self) -> usize {
        let mark = format!("mark-{}", self.marks.fetch_add(1, Ordering::Relaxed));
        raw_command(self.port, &format!("ECHO {mark}")).unwrap();
        let seen = crate::testing::poll::poll_until_blocking(Duration::from_secs(30), || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&mark))
                .then_some(())
        });
        assert!(seen.is_some(), "MONITOR never saw {mark}");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                (l.contains("\"evalsha\"") || l.contains("\"eval\"")) && !l.ends_with(" \"i\"")
            })
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_subjects_need_no_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let l = RedisLedger::open(
        opts(RedisTarget::Server(server.url()), tmp.path()),
        &hasher(),
    )
    .await
    .unwrap();
    let ids = l
        .register_scopes(&[Scope::Entity, Scope::Destination("eu".into())])
        .await
        .unwrap();
    let now = at(2026, 6, 1);
    let r24 = Regime::Cac2024;
    let mon = Monitor::start(&server);
    suite::reserve(&*l, &plain(0..10), &ids, &[], r24, now).await;
    let before = mon.counting_evals();
    assert!(before >= 1, "the first reservation went to Redis");
    for _ in 0..20 {
        let p = l.probe(&plain(0..10), &ids, r24, now).await.unwrap();
        assert_eq!((p[0].new_all, p[0].all_after), (0, 10));
        match suite::reserve(&*l, &plain(3..7), &ids, &[], r24, now).await {
            ReserveOutcome::Reserved(o) => assert_eq!((o[1].new_all, o[1].all_after), (0, 10)),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(mon.counting_evals(), before, "known subjects went to Redis");
    // The sensitive upgrade and a new year are not in the cache: they go to Redis.
    match suite::reserve(&*l, &[subj(1, true)], &ids, &[], r24, now).await {
        ReserveOutcome::Reserved(o) => assert_eq!((o[0].new_all, o[0].new_sensitive), (0, 1)),
        o => panic!("{o:?}"),
    }
    let next_year = at(2027, 1, 1);
    match suite::reserve(&*l, &[subj(1, false)], &ids, &[], r24, next_year).await {
        ReserveOutcome::Reserved(o) => assert_eq!((o[0].new_all, o[0].all_after), (1, 1)),
        o => panic!("{o:?}"),
    }
    assert_eq!(mon.counting_evals(), before + 2);
    // Another replica's subjects are learnt from one probe, then served locally.
    let other = RedisLedger::open(
        opts(RedisTarget::Server(server.url()), tmp.path()),
        &hasher(),
    )
    .await
    .unwrap();
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start();
    let l = RedisLedger::open(
        opts(RedisTarget::Server(server.url()), tmp.path()),
        &hasher(),
    )
    .await
    .unwrap();
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let now = at(2026, 6, 1);
    suite::reserve(&*l, &plain(0..5), &ids, &[], Regime::Cac2024, now).await;
    assert!(l.is_ready());
    server.kill();
    let t = std::time::Instant::now();
    let r = l
        .reserve(Reservation {
            subjects: &plain(5..6),
            scopes: &ids,
            ceilings: &[],
            alternatives: &[],
            regime: Regime::Cac2024,
            now,
        })
        .await;
    assert!(matches!(r, Err(LedgerError::Unavailable(_))), "{r:?}");
    assert!(r.unwrap_err().is_backend_failure());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!l.is_ready());
    // Known subjects are refused too while Redis is down (fail closed).
    let r = l.probe(&plain(0..5), &ids, Regime::Cac2024, now).await;
    assert!(r.is_err());
    server.restart();
    eventually("ready again", Duration::from_secs(10), || async {
        l.is_ready().then_some(())
    })
    .await;
    // AOF with appendfsync always: the counts survived the SIGKILL.
    match suite::reserve(&*l, &plain(3..8), &ids, &[], Regime::Cac2024, now).await {
        ReserveOutcome::Reserved(o) => assert_eq!((o[0].new_all, o[0].all_after), (3, 8)),
        o => panic!("{o:?}"),
    }
}

#[test]
fn namespaces_are_hash_tags() {
    assert_eq!(
        namespace("Example Trading (Shanghai) Co., Ltd."),
        "tg:{example-trading-shanghai-co-ltd}"
    );
    assert_eq!(namespace("{}"), "tg:{entity}");
    assert!(namespace(&"x".repeat(500)).len() < 80);
    let k = Keys::new(namespace("A"));
    assert_eq!(
        k.year("destination:eu", 2026),
        "tg:{a}:y:2026:destination:eu"
    );
    assert!(year_expiry(2020) > 0);
    let t = RedisTarget::Server("redis://gate:pw@h:6379/0".into());
    assert_eq!(format!("{t:?}"), "Server(\"redis://***@h:6379/0\")");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_erroring_redis_is_unavailable_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    let l = RedisLedger::open(
        RedisOptions {
            timeout: Duration::from_millis(500),
            ..opts(RedisTarget::Server(server.url()), tmp.path())
        },
        &hasher(),
    )
    .await
    .unwrap();
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let now = at(2026, 6, 1);
    let try_reserve = |range: std::ops::Range<u64>| {
        let (l, ids) = (l.clone(), ids.clone());
        async move {
            l.reserve(Reservation {
                subjects: &plain(range),
                scopes: &ids,
                ceilings: &[],
                alternatives: &[],
                regime: Regime::Cac2024,
                now,
            })
            .await
        }
    };
    try_reserve(0..2).await.unwrap();
    // Slow: writes and scripts paused for far longer than the test runs (WRITE mode, so
    // CLIENT UNPAUSE still gets through); only the 500 ms timeout can answer, so an answer
    // while paused is the timeout's.
    let paused = raw_command(server.port, "CLIENT PAUSE 600000 WRITE").unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    let r = tokio::time::timeout(Duration::from_secs(60), try_reserve(2..3))
        .await
        .expect("a paused Redis must not hold a reservation past the ledger's timeout");
    assert!(matches!(r, Err(LedgerError::Unavailable(_))), "{r:?}");
    assert!(!l.is_ready());
    // The pause ends: Redis answers again.
    let unpaused = raw_command(server.port, "CLIENT UNPAUSE").unwrap();
    assert!(unpaused.starts_with("+OK"), "{unpaused}");
    eventually("the pause to end", Duration::from_secs(10), || async {
        raw_command(server.port, "PING").filter(|r| r.starts_with("+PONG"))
    })
    .await;
    // Erroring: out of memory under noeviction refuses the script.
    let set = raw_command(server.port, "CONFIG SET maxmemory 1").unwrap();
    assert!(set.starts_with("+OK"), "{set}");
    let r = try_reserve(3..4).await;
    assert!(matches!(r, Err(LedgerError::Unavailable(_))), "{r:?}");
    raw_command(server.port, "CONFIG SET maxmemory 0").unwrap();
    // Back: the timed-out reservation may or may not have run (over-count at worst); the
    // refused one did not.
    let c = match try_reserve(3..5).await.unwrap() {
        ReserveOutcome::Reserved(o) => o[0],
        o => panic!("{o:?}"),
    };
    assert_eq!(c.new_all, 2);
    assert!(c.all_after == 4 || c.all_after == 5);
    assert!(l.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_user_in_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RedisServer::with_args(&["--requirepass", "s3cret"]);
    let acl = server.cli(&[
        "--no-auth-warning",
        "-a",
        "s3cret",
        "ACL",
        "SETUSER",
        "gate",
        "on",
        ">gate-pw",
        "~tg:*",
        "+@all",
    ]);
    assert!(acl.trim() == "OK", "{acl}");
    let url =
        |auth: &str| RedisTarget::Server(format!("redis://{auth}@127.0.0.1:{}/", server.port));
    for auth in [":s3cret", "gate:gate-pw"] {
        let l = RedisLedger::open(opts(url(auth), tmp.path()), &hasher())
            .await
            .unwrap();
        let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
        suite::reserve(
            &*l,
            &plain(0..3),
            &ids,
            &[],
            Regime::Cac2024,
            at(2026, 1, 5),
        )
        .await;
        assert!(l.is_ready());
    }
    // A wrong password: the gate starts, not ready, and refuses to count.
    let l = RedisLedger::open(opts(url("gate:wrong"), tmp.path()), &hasher())
        .await
        .unwrap();
    assert!(!l.is_ready());
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let r = l
        .probe(&plain(0..1), &ids, Regime::Cac2024, at(2026, 1, 5))
        .await;
    assert!(matches!(r, Err(LedgerError::Unavailable(_))), "{r:?}");
}

/// What one replica counted: `n` records of `category` to `eu`, one refusal to `dest`.
fn activity_delta(n: u64, category: usize, dest: &str, since: &str) -> StoredActivity {
    let r = crate::ledger::activity::ActivityRecorder::new();
    let mut cats = [0u64; 9];
    cats[category] = n;
    let now = at(2026, 11, 27);
    r.records(now, "eu", &cats);
    r.decision(now, dest, "block", "approval_required");
    r.decision(now, dest, "would_block", "important_data");
    StoredActivity {
        since: Some(since.to_owned()),
        months: r.take(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_activity_is_the_union_of_every_replica_on_a_server_and_a_cluster() {
    let server = RedisServer::start();
    let cluster = RedisCluster::start();
    for target in [
        RedisTarget::Server(server.url()),
        RedisTarget::Cluster(cluster.urls()),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(target, tmp.path());
        let a = RedisLedger::open(replica(&o, tmp.path()), &hasher())
            .await
            .unwrap();
        let b = RedisLedger::open(replica(&o, tmp.path()), &hasher())
            .await
            .unwrap();
        assert!(a.shares_activity());
        assert!(a.keys().activity().starts_with(a.namespace()));
        a.add_activity(&activity_delta(2, 0, "us", "2026-11-27"))
            .await
            .unwrap();
        b.add_activity(&activity_delta(3, 5, "us|x", "2026-11-20"))
            .await
            .unwrap();
        a.add_activity(&activity_delta(1, 0, "us", "2026-11-27"))
            .await
            .unwrap();
        let (ra, rb) = (a.activity().await.unwrap(), b.activity().await.unwrap());
        assert_eq!(ra, rb);
        assert_eq!(ra.since.as_deref(), Some("2026-11-20"));
        let m = &ra.months["2026-11"];
        assert_eq!(m["eu"].records["basic"], 3);
        assert_eq!(m["eu"].records["health"], 3);
        assert_eq!(m["us"].blocked["approval_required"], 2);
        assert_eq!(m["us|x"].would_block["important_data"], 1);
        // An empty delta is no call; a delta without a date leaves `since` alone.
        let none = StoredActivity::default();
        a.add_activity(&none).await.unwrap();
        let mut undated = activity_delta(1, 0, "us", "x");
        undated.since = None;
        b.add_activity(&undated).await.unwrap();
        let after = a.activity().await.unwrap();
        assert_eq!(after.since.as_deref(), Some("2026-11-20"));
        assert_eq!(after.months["2026-11"]["eu"].records["basic"], 4);
    }
}
