//! The report's activity statistics in Redis: one hash per entity namespace,
//! `<ns>:a`, with a field per (month, kind, label, destination) summed by `HINCRBY`
//! ([`crate::ledger::activity::to_fields`]) and `since`, the earliest Asia/Shanghai date any
//! replica kept activity from. Every replica adds what it counted (one script call per
//! flush, atomic, so a delta is applied whole or not at all) and reads the union, so every
//! replica reports the same categories and refusals.
//!
//! The hash carries the namespace's hash tag, so it lives in the entity's Cluster slot like
//! every other key. It is not in the replicas' journals: a Redis that loses data loses these
//! statistics (never a subject count).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::RedisLedger;
use crate::ledger::activity::{from_fields, to_fields, StoredActivity};
use crate::ledger::api::LedgerError;

/// Adds field/increment pairs and lowers `since` to the given date.
const ADD: &str = r"
local since = redis.call('HGET', KEYS[1], 'since')
if ARGV[1] ~= '~' and ((not since) or ARGV[1] < since) then
  redis.call('HSET', KEYS[1], 'since', ARGV[1])
end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
";

static ADD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADD));

impl RedisLedger {
    /// Adds `delta` to the shared activity and lowers `since` to `delta.since`.
    pub(super) async fn add_activity_inner(
        &self,
        delta: &StoredActivity,
    ) -> Result<(), LedgerError> {
        let fields = to_fields(&delta.months);
        if fields.is_empty() {
            return Ok(());
        }
        let mut inv = ADD_SCRIPT.prepare_invoke();
        // `~`: no date (the script leaves `since` as it is).
        inv.key(self.keys.activity())
            .arg(delta.since.as_deref().unwrap_or("~"));
        for (f, n) in &fields {
            inv.arg(f).arg(*n);
        }
        self.run(|mut c| async move { c.eval(&inv).await })
            .await
            .map(drop)
    }

    /// The shared activity of every replica.
    pub(super) async fn activity_inner(&self) -> Result<StoredActivity, LedgerError> {
        let key = self.keys.activity();
        let fields: HashMap<String, String> = self
            .run(|mut c| async move {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(key);
                c.query(&cmd).await
            })
            .await?;
        Ok(StoredActivity {
            since: fields.get("since").cloned(),
            months: from_fields(
                fields
                    .iter()
                    .filter_map(|(f, v)| Some((f.as_str(), v.parse::<i64>().ok()?))),
            ),
        })
    }
}
