//! Real Redis for the tests: [`RedisServer`] and [`RedisCluster`] from the library's test
//! support (`src/testing/redis_server.rs`), the one implementation the unit tests and the
//! benchmarks use too.

pub use transfer_gate::testing::redis_server::*;

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
