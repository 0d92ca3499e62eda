//! Real Redis for the tests: [`RedisServer`] and [`RedisCluster`] from the library's test
//! support (`src/testing/redis_server.rs`), the one implementation the unit tests and the
//! benchmarks use too. Also what the tests of gate replicas on one Redis share: the shared
//! hash key, the `[ledger]` keys, starting the replicas, sending a subject, reading what the
//! upstream received and what the ledger holds.

pub use transfer_gate::testing::redis_server::*;

use super::upstream::Upstream;
use super::{Dest, GateBuilder, GateProc};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use transfer_gate::ledger::{
    Ledger, RedisLedger, RedisOptions, RedisTarget, Scope, Subject, SubjectHasher,
};
use transfer_gate::model::Regime;

/// What the gates' shared Redis ledger (hash key `key`, entity `Test Co.`) holds of the
/// subjects (`user_id`s) the upstream received: how many of them are missing from the entity's
/// window under `regime`, and the entity's count.
pub async fn ledger_view(
    redis: &RedisServer,
    key: [u8; 32],
    forwarded: impl IntoIterator<Item = u64>,
    regime: Regime,
) -> (u64, u64) {
    let hasher = SubjectHasher::from_key(key);
    let l = RedisLedger::open(
        RedisOptions {
            target: RedisTarget::Server(redis.url()),
            timeout: Duration::from_secs(2),
            entity: "Test Co.".into(),
            cache_entries: 1,
            journal_dir: None,
        },
        &hasher,
    )
    .await
    .unwrap();
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let subjects: Vec<Subject> = forwarded
        .into_iter()
        .map(|id| Subject {
            key: hasher.hash("field", id.to_string().as_bytes()),
            sensitive: false,
        })
        .collect();
    let p = l
        .probe(&subjects, &ids, regime, SystemTime::now())
        .await
        .unwrap();
    (p[0].new_all, p[0].all_after - p[0].new_all)
}

/// The hash key every replica shares.
pub const KEY: [u8; 32] = [0x5a; 32];

/// One hash key file shared by every replica (mode 0600).
pub fn shared_key(dir: &Path) -> PathBuf {
    let p = dir.join("subject-hash.key");
    std::fs::write(&p, KEY).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The `[ledger]` keys of a replica on `redis` with the key file `key`.
pub fn ledger_toml(redis: &RedisServer, key: &Path) -> String {
    format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nhash_key_file = \"{}\"\ntimeout_ms = 300",
        redis.url(),
        key.display()
    )
}

/// `n` gates on one ledger (`ledger`: the `[ledger]` keys) sending `eu` to `up`, with
/// `approvals`: cac-2022 when `volume` (every PI transfer needs an approval), else cac-2024.
pub async fn replicas_with(
    n: usize,
    ledger: &str,
    up: &Upstream,
    volume: bool,
    approvals: &str,
) -> Vec<GateProc> {
    let mut gates = Vec::new();
    for _ in 0..n {
        gates.push(
            GateBuilder::new()
                .regime(if volume { "cac-2022" } else { "cac-2024" })
                .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
                .approvals(approvals)
                .ledger_toml(ledger)
                .start()
                .await,
        );
    }
    gates
}

/// The user ids the upstream received in complete bodies.
pub fn received_ids(up: &Upstream) -> Vec<u64> {
    up.received()
        .iter()
        .filter(|r| r.complete && !r.body.is_empty())
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter_map(|v| v.get("user_id").and_then(serde_json::Value::as_u64))
        .collect()
}

/// What one request got: the status and the gate's reason header, or the transport error (a
/// reset or refused connection, a body cut off) as text. A transport error is an outcome the
/// caller asserts on, never a request left out of the count.
pub type Outcome = Result<(u16, String), String>;

/// Posts `{"user_id": id}` to `eu` and reads the whole answer.
pub async fn send(client: &reqwest::Client, id: u64) -> Outcome {
    let r = client
        .post("http://api.eu.test/v1/events")
        .header("content-type", "application/json")
        .body(format!("{{\"user_id\": {id}}}"))
        .send()
        .await
        .map_err(|e| format!("subject {id}: request failed: {e:?}"))?;
    let status = r.status().as_u16();
    let reason = crate::harness::reason_of(&r);
    r.bytes()
        .await
        .map_err(|e| format!("subject {id}: the body of a {status} answer failed: {e:?}"))?;
    Ok((status, reason))
}
