//! Redis losing data under real gate replicas (the issue's scenario): two gates on one
//! `redis-server` without persistence and an approval of 400 subjects; Redis restarted empty,
//! then flushed, then 400 more subjects offered → the upstream receives at most 400 distinct
//! subjects and Redis counts every one of them. Also a loss during concurrent traffic, a
//! replica that was down during the loss, and the shared count reported by a replica that served
//! none of the requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::redis::{
    ledger_toml, ledger_view, received_ids, replicas_with, send, shared_key, RedisServer, KEY,
};
use crate::harness::upstream::Upstream;
use crate::harness::{eventually, poll_until, GateProc};
use transfer_gate::model::Regime;

const APPROVAL_400: &str = r#"
[[approval]]
id = "SC-2026-0400"
mechanism = "standard_contract"
status = "active"
destinations = ["eu"]
categories = ["basic"]
max_subjects = 400
valid_from = "2026-01-01"
valid_until = "2099-12-31"
"#;

/// Sends `id` until the gate answers something else than 503 `ledger_unavailable` (the
/// replica may be re-asserting its journal); bounded.
async fn send_settled(client: &reqwest::Client, id: u64) -> (u16, String) {
    eventually(
        &format!("subject {id}: an answer other than 503"),
        Duration::from_secs(20),
        || async {
            match send(client, id).await {
                Ok((503, r)) if r == "ledger_unavailable" => None,
                Ok(r) => Some(r),
                Err(e) => panic!("{e}"),
            }
        },
    )
    .await
}

async fn wait_metric_at_least(g: &GateProc, series: &str, min: f64) {
    eventually(
        &format!("{series} at least {min}"),
        Duration::from_secs(10),
        || async { g.metric_opt(series).await.filter(|v| *v >= min) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_a_redis_without_persistence_never_exceed_the_volume() {
    let mut redis = RedisServer::with_args(&["--appendonly", "no"]);
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let gates = replicas_with(2, &ledger_toml(&redis, &key), &up, true, APPROVAL_400).await;
    let clients: Vec<reqwest::Client> = gates.iter().map(GateProc::client).collect();
    // 120 subjects, then Redis killed and restarted empty.
    for id in 0..120u64 {
        assert_eq!(send_settled(&clients[(id % 2) as usize], id).await.0, 200);
    }
    redis.restart_empty();
    // 80 more (and some of the first ones again), then FLUSHALL.
    for id in 120..200u64 {
        assert_eq!(send_settled(&clients[(id % 2) as usize], id).await.0, 200);
        let again = send_settled(&clients[(id % 2) as usize], id - 120).await;
        assert_eq!(again.0, 200, "an already counted subject passes");
    }
    assert!(redis.cli(&["FLUSHALL"]).contains("OK"));
    // 400 more offered: only 200 fit in the approval's volume.
    let mut statuses = Vec::new();
    for id in 200..600u64 {
        statuses.push(send_settled(&clients[(id % 2) as usize], id).await);
    }
    let allowed = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(allowed, 200, "{:?}", &statuses[..3]);
    assert!(statuses
        .iter()
        .all(|(s, r)| *s == 200 || (*s == 451 && r == "approval_volume_exceeded")));
    let forwarded: HashSet<u64> = received_ids(&up).into_iter().collect();
    assert_eq!(forwarded.len(), 400, "distinct subjects upstream");
    let (missing, count) =
        ledger_view(&redis, KEY, forwarded.iter().copied(), Regime::Cac2022).await;
    assert_eq!(missing, 0, "forwarded subjects missing from Redis");
    assert!(count >= forwarded.len() as u64);
    for g in &gates {
        wait_metric_at_least(
            g,
            "transfer_gate_ledger_losses_total{backend=\"redis\"}",
            2.0,
        )
        .await;
        assert!(
            g.metric("transfer_gate_ledger_reasserted_subjects_total{backend=\"redis\"}")
                .await
                > 0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loss_during_traffic_and_a_replica_down_during_it() {
    let redis = RedisServer::with_args(&["--appendonly", "no"]);
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let mut gates = replicas_with(3, &ledger_toml(&redis, &key), &up, false, "").await;
    // Replica 2 counts some subjects alone, then goes down.
    for id in 1_000_000..1_000_050u64 {
        assert_eq!(send_settled(&gates[2].client(), id).await.0, 200);
    }
    gates[2].kill9();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for g in &gates[..2] {
        for _ in 0..4 {
            let (client, next) = (g.client(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= 800 {
                        break;
                    }
                    out.push(send(&client, id).await);
                }
                out
            }));
        }
    }
    // The loss lands while the clients send.
    eventually("200 requests sent", Duration::from_secs(20), || async {
        (next.load(Ordering::Relaxed) >= 200).then_some(())
    })
    .await;
    assert!(redis.cli(&["FLUSHALL"]).contains("OK"));
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    // Every request sent is an outcome here (800 ids), transport errors included.
    assert_eq!(statuses.len(), 800, "every request has an outcome");
    let other: Vec<_> = statuses
        .iter()
        .filter(|o| {
            !matches!(o, Ok((200, _))) && !matches!(o, Ok((503, r)) if r == "ledger_unavailable")
        })
        .collect();
    assert!(
        other.is_empty(),
        "only 200 and 503 ledger_unavailable: {} others, first {:?}",
        other.len(),
        other.first()
    );
    // Replica 2 comes back: it re-asserts before it serves.
    gates[2].restart().await;
    assert_eq!(send_settled(&gates[2].client(), 1_000_000).await.0, 200);
    let forwarded: HashSet<u64> = received_ids(&up).into_iter().collect();
    let (missing, count) =
        ledger_view(&redis, KEY, forwarded.iter().copied(), Regime::Cac2022).await;
    assert_eq!(missing, 0, "forwarded subjects missing from Redis");
    assert!(count >= forwarded.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_served_none_of_the_requests_reports_the_shared_count() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = shared_key(keys.path());
    let up = Upstream::http().await;
    let gates = replicas_with(2, &ledger_toml(&redis, &key), &up, false, "").await;
    for id in 0..30u64 {
        assert_eq!(send_settled(&gates[0].client(), id).await.0, 200);
    }
    // The other replica saw none of these requests; its gauge follows the shared count (the
    // refresh runs every second; the bound is only there so that a gauge that never follows
    // fails instead of hanging, not a speed goal).
    let series = "transfer_gate_entity_subjects{class=\"all\"}";
    let seen = poll_until(Duration::from_secs(15), || async {
        let v = gates[1].metric(series).await;
        (v >= 30.0).then_some(v)
    })
    .await;
    assert_eq!(
        seen,
        Some(30.0),
        "replica 1's {series} (None: below 30 after 15 s, now {})",
        gates[1].metric(series).await
    );
}
