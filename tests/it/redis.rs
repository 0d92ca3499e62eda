//! The shared Redis ledger with the real binary: several gate replicas on one `redis-server`
//! (started by the test on a free loopback port) and one hash key file. Many concurrent
//! clients race past an approval's volume → the upstream receives exactly the limit; Redis
//! killed mid-load → 503 `ledger_unavailable`, nothing forwarded uncounted; Redis restarted →
//! traffic resumes without restarting the gates.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::redis::{
    ledger_toml, ledger_view, received_ids, replicas_with, send, shared_key, Outcome, RedisCluster,
    RedisServer, KEY,
};
use crate::harness::upstream::Upstream;
use crate::harness::{cli_on, eventually, poll_until, Dest, GateBuilder, GateProc};
use transfer_gate::model::Regime;

const APPROVAL_500: &str = r#"
[[approval]]
id = "SC-2026-0500"
mechanism = "standard_contract"
status = "active"
destinations = ["eu"]
categories = ["basic"]
max_subjects = 500
valid_from = "2026-01-01"
valid_until = "2099-12-31"
"#;

/// `n` gates on one Redis and key: `volume` = cac-2022 with the 500-subject approval (every
/// PI transfer needs it), otherwise cac-2024 without approvals (no mechanism needed below
/// 100,000 subjects).
async fn replicas(
    n: usize,
    redis: &RedisServer,
    key: &Path,
    up: &Upstream,
    volume: bool,
) -> Vec<GateProc> {
    replicas_on(n, &ledger_toml(redis, key), up, volume).await
}

async fn replicas_on(n: usize, ledger: &str, up: &Upstream, volume: bool) -> Vec<GateProc> {
    replicas_with(
        n,
        ledger,
        up,
        volume,
        if volume { APPROVAL_500 } else { "" },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_race_to_an_approval_volume_exactly() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let gates = replicas(3, &redis, &key, &up, true).await;
    race_to_500(&gates, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_a_redis_cluster_race_to_an_approval_volume_exactly() {
    let cluster = RedisCluster::start();
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        "backend = \"redis\"\nredis_cluster = [{}]\nhash_key_file = \"{}\"\ntimeout_ms = 500",
        nodes.join(", "),
        key.display()
    );
    let up = Upstream::http().await;
    let gates = replicas_on(3, &toml, &up, true).await;
    race_to_500(&gates, &up).await;
}

/// 3 replicas × 8 clients send 1,200 distinct subjects (and repeats of early ones) against
/// an approval volume of 500: the upstream receives exactly 500 distinct subjects.
async fn race_to_500(gates: &[GateProc], up: &Upstream) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for g in gates {
        for c in 0..8u64 {
            let client = g.client();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 1_200 {
                        break;
                    }
                    let id = if i % 7 == c % 7 && i > 50 { i % 50 } else { i };
                    out.push(send(&client, id).await.expect("gate answers"));
                }
                out
            }));
        }
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let allowed = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&(u16, String)> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        refused
            .iter()
            .all(|(s, r)| *s == 451 && r == "approval_volume_exceeded"),
        "unexpected refusals: {:?}",
        refused.iter().take(5).collect::<Vec<_>>()
    );
    let distinct: HashSet<u64> = received_ids(up).into_iter().collect();
    assert_eq!(distinct.len(), 500, "distinct subjects forwarded");
    assert!(allowed >= 500);
    // An already counted subject still passes on every replica.
    for g in gates {
        let r = send(&g.client(), 3).await.unwrap();
        assert_eq!(r.0, 200, "an already counted subject still passes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_fails_closed_then_traffic_resumes() {
    let mut redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let gates = replicas(2, &redis, &key, &up, false).await;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(10_000));
    let mut tasks = Vec::new();
    for g in &gates {
        for _ in 0..4 {
            let (client, stop, next) = (g.client(), stop.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    out.push(send(&client, id).await);
                }
                out
            }));
        }
    }
    // Mid load: the clients have sent a good number of requests.
    eventually("50 requests sent", Duration::from_secs(10), || async {
        (next.load(Ordering::Relaxed) >= 10_050).then_some(())
    })
    .await;
    redis.kill();
    let killed_at = Instant::now();
    // Not synchronisation: the outage lasts a while under load before it is looked at.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // During the outage: PI-carrying requests get 503, the gates are not ready, and traffic
    // without PI still flows.
    let client = gates[0].client();
    let r = send(&client, 1).await.unwrap();
    assert_eq!(r, (503, "ledger_unavailable".to_owned()));
    let plain = client
        .get("http://api.eu.test/health")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200, "PI-free traffic is unaffected");
    // Readiness does not depend on the ledger (the Service keeps its endpoints for PI-free
    // and domestic egress); the ledger's state is the gauge and a field of /v1/status.
    assert_eq!(gates[1].readyz().await, 200);
    gates[1].wait_ledger(false).await;
    assert_eq!(gates[1].status().await["ledger"]["up"], false);
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    assert!(killed_at.elapsed() < Duration::from_secs(20));
    // Every request the clients sent is an outcome here, transport errors included.
    assert!(!statuses.is_empty(), "no request was sent");
    let ok = statuses
        .iter()
        .filter(|o| matches!(o, Ok((200, _))))
        .count();
    let unavailable = statuses
        .iter()
        .filter(|o| matches!(o, Ok((503, r)) if r == "ledger_unavailable"))
        .count();
    assert!(ok > 0 && unavailable > 0, "{ok} allowed, {unavailable} 503");
    let other: Vec<&Outcome> = statuses
        .iter()
        .filter(|o| {
            !matches!(o, Ok((200, _))) && !matches!(o, Ok((503, r)) if r == "ledger_unavailable")
        })
        .collect();
    assert!(
        other.is_empty(),
        "only 200 and 503: {} others, first {:?}",
        other.len(),
        other.first()
    );
    assert!(
        gates[0]
            .metric("transfer_gate_ledger_errors_total{backend=\"redis\"}")
            .await
            > 0.0
    );

    // Redis back (AOF replayed): the gates recover without a restart.
    redis.restart();
    for g in &gates {
        g.wait_ledger_up().await;
    }
    // The gauge can turn before the replica has re-asserted its journal into the restarted
    // Redis; until then a PI request still fails closed. Traffic resumes within seconds.
    let client = gates[1].client();
    poll_until(Duration::from_secs(15), || async {
        let r = send(&client, 99_999_999).await.unwrap();
        assert!(
            r.0 == 200 || r == (503, "ledger_unavailable".to_owned()),
            "only 200 or a fail-closed 503 after the restart: {r:?}"
        );
        (r.0 == 200).then_some(())
    })
    .await
    .expect("traffic resumes after the restart");

    // Nothing was forwarded uncounted: every subject the upstream received is in Redis.
    let forwarded: Vec<u64> = received_ids(&up);
    assert!(!forwarded.is_empty());
    let (missing, count) =
        ledger_view(&redis, KEY, forwarded.iter().copied(), Regime::Cac2024).await;
    assert_eq!(missing, 0, "forwarded subjects missing from the ledger");
    assert!(count >= forwarded.iter().collect::<HashSet<_>>().len() as u64);
}

#[tokio::test]
async fn a_missing_hash_key_is_not_created_with_redis() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("absent.key");
    let b = GateBuilder::new().ledger_toml(&ledger_toml(&redis, &key));
    let cfg = b.write(0, 0);
    let out = cli_on(&cfg, &["run"]);
    assert!(!out.success());
    let err = out.stderr;
    assert!(err.contains("does not exist"), "{err}");
    assert!(!key.exists(), "the gate created a key of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_gate_moves_to_redis_with_export_and_import() {
    let up = Upstream::http().await;
    let mut local = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    for id in [1, 2, 3, 2] {
        assert_eq!(send(&local.client(), id).await.unwrap().0, 200);
    }
    local.signal("TERM");
    assert_eq!(local.wait_exit(Duration::from_secs(20)), Some(0));
    let export = local.dir().join("ledger-export.jsonl");
    let out = cli_on(
        &local.config,
        &["ledger", "export", "--out", export.to_str().unwrap()],
    );
    assert!(out.success(), "{}", out.stderr);
    let mode = std::fs::metadata(&export).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(!text.contains("user_id"), "no identifiers in the export");

    // The same key file, now on Redis.
    let redis = RedisServer::start();
    let key = local.dir().join("secrets/subject-hash.key");
    let b = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .ledger_toml(&ledger_toml(&redis, &key));
    let cfg = b.write(0, 0);
    let out = cli_on(
        &cfg,
        &["ledger", "import", "--in", export.to_str().unwrap()],
    );
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("imported 6 subject entries"));
    let gate = b.start().await;
    assert_eq!(
        gate.metric("transfer_gate_entity_subjects{class=\"all\"}")
            .await,
        3.0
    );
    // Subject 2 is already counted; subject 4 is new.
    assert_eq!(send(&gate.client(), 2).await.unwrap().0, 200);
    assert_eq!(send(&gate.client(), 4).await.unwrap().0, 200);
    let o = gate
        .metric("transfer_gate_entity_subjects{class=\"all\"}")
        .await;
    assert_eq!(o, 4.0);
}
