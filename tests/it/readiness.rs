//! Readiness does not depend on the ledger (SPEC §6): with the Redis ledger stopped under a
//! running gate, `/readyz` stays 200, transfers with personal information get 503
//! `ledger_unavailable`, PI-free and domestic traffic get 200, and the ledger's state is
//! `transfer_gate_ledger_up{backend}` and the `ledger.up` field of `/v1/status`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::redis::RedisServer;
use crate::harness::upstream::Upstream;
use crate::harness::{Dest, GateBuilder, GateProc};

const URL: &str = "http://api.eu.test/v1/events";

pub(crate) fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("subject-hash.key");
    std::fs::write(&p, [0x42u8; 32]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

async fn gate_on(ledger: &str, up: &Upstream) -> GateProc {
    GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .ledger_toml(ledger)
        .start()
        .await
}

async fn ledger_up(gate: &GateProc) -> f64 {
    gate.metric("transfer_gate_ledger_up{backend=\"redis\"}")
        .await
}

/// PI, PI-free and domestic requests: their status codes and the refusal reason of the first.
async fn three_kinds(gate: &GateProc, id: u64) -> (u16, String, u16, u16) {
    let r = gate.post_json(URL, format!("{{\"user_id\": {id}}}")).await;
    let pi = r.status().as_u16();
    let reason = crate::harness::reason_of(&r);
    let free = gate
        .post_json(URL, r#"{"event":"ping"}"#)
        .await
        .status()
        .as_u16();
    let domestic = gate
        .client()
        .get("http://localhost:9/")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("the domestic request got no answer: {e:?}"));
    (pi, reason, free, domestic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stopped_under_a_running_gate_leaves_it_ready() {
    let mut redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path());
    let up = Upstream::http().await;
    let ledger = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nhash_key_file = \"{}\"\ntimeout_ms = 300",
        redis.url(),
        key.display()
    );
    let gate = gate_on(&ledger, &up).await;
    gate.wait_ledger_up().await;
    assert_eq!(ledger_up(&gate).await, 1.0);
    assert_eq!(gate.status().await["ledger"]["up"], true);
    let (pi, _, free, _) = three_kinds(&gate, 1).await;
    assert_eq!((pi, free), (200, 200));

    redis.kill();
    gate.wait_ledger(false).await;
    assert_eq!(ledger_up(&gate).await, 0.0);
    assert_eq!(
        gate.readyz().await,
        200,
        "a ledger outage leaves the gate ready"
    );
    let before = up.received().len();
    let (pi, reason, free, domestic) = three_kinds(&gate, 2).await;
    assert_eq!(pi, 503);
    assert_eq!(reason, "ledger_unavailable");
    assert_eq!(free, 200, "PI-free traffic goes on");
    // localhost:9 has no listener: whatever the answer, it is not the ledger's 503.
    assert!(domestic != 0 && domestic != 503, "domestic: {domestic}");
    let got = up.received();
    assert_eq!(
        got.len(),
        before + 1,
        "only the PI-free request reached the upstream"
    );
    assert!(!String::from_utf8_lossy(&got[before].body).contains("user_id"));
    let status = gate.status().await;
    assert_eq!(status["ledger"]["backend"], "redis");
    assert_eq!(status["ledger"]["up"], false);
    assert_eq!(gate.readyz().await, 200);

    // Redis back: the gauge returns to 1 and PI flows again, without a restart.
    redis.restart();
    gate.wait_ledger_up().await;
    let (pi, _, free, _) = three_kinds(&gate, 3).await;
    assert_eq!((pi, free), (200, 200));
    assert_eq!(gate.status().await["ledger"]["up"], true);
}

#[tokio::test]
async fn a_gate_started_while_redis_is_down_is_ready_with_the_ledger_down() {
    // A port nothing listens on.
    let port = crate::harness::free_port();
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path());
    let up = Upstream::http().await;
    let ledger = format!(
        "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}/\"\nhash_key_file = \"{}\"\ntimeout_ms = 200",
        key.display()
    );
    let gate = gate_on(&ledger, &up).await;
    assert_eq!(gate.readyz().await, 200);
    assert_eq!(ledger_up(&gate).await, 0.0);
    let (pi, reason, free, _) = three_kinds(&gate, 1).await;
    assert_eq!(
        (pi, reason.as_str(), free),
        (503, "ledger_unavailable", 200)
    );
}

#[tokio::test]
async fn the_local_ledger_reads_up() {
    let up = Upstream::http().await;
    let gate = GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .start()
        .await;
    assert_eq!(
        gate.metric("transfer_gate_ledger_up{backend=\"local\"}")
            .await,
        1.0
    );
    assert_eq!(gate.status().await["ledger"]["up"], true);
}
