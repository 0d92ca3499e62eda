//! Detecting that Redis lost data and re-asserting this replica's journal.
//!
//! Every script call carries the epoch this replica asserted into (namespace generation `gen`,
//! the server's run id) and the namespace write counter `v` it last saw; the script refuses
//! (reply `{2, …}`, nothing written) when the marker is gone or changed, the server process is
//! another (restart, failover, a Cluster node replaced), or `v` went back (writes lost). The
//! health check asks the same every 500 ms (mode `i`). A replica that starts compares Redis
//! with the epoch stored next to its journal.
//!
//! On a loss: the replica refuses PI (every reservation, probe and count is
//! `LedgerError::Unavailable`, the proxy answers 503 `ledger_unavailable`), waits for the
//! reservations already past the script to be journaled, re-creates the marker if needed and
//! re-asserts its whole journal in batches through the same script (mode `a`, no ceilings:
//! these subjects were already counted and forwarded), then adopts the new epoch, clears its
//! cache and counts, and serves again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use redis::{FromRedisValue, Value};

use super::journal::{Entry, Epoch, Journal};
use super::{shanghai_date, year_expiry, Conn, RedisLedger};
use crate::ledger::api::LedgerError;

/// Subjects per re-assertion call.
pub(super) const REASSERT_BATCH: usize = 1_000;

/// Pause between two failed re-assertion attempts.
const RETRY: Duration = Duration::from_millis(200);

/// The loss-detection state of a [`RedisLedger`].
#[derive(Debug, Default)]
pub(super) struct LossState {
    /// The epoch this replica asserted into (`None`: not established yet).
    epoch: Mutex<Option<Epoch>>,
    /// The highest namespace write counter seen.
    v_seen: AtomicU64,
    /// A loss was detected and the journal is not re-asserted yet: refuse PI.
    lost: AtomicBool,
    /// A re-assertion task is running.
    recovering: AtomicBool,
    /// Held (read) from a reservation's script call until its journal write is durable;
    /// the re-assertion takes it (write) before reading the journal.
    pub(super) inflight: tokio::sync::RwLock<()>,
    /// Losses detected (metric).
    losses: AtomicU64,
    /// Subjects re-asserted, per (scope, subject) entry (metric).
    reasserted: AtomicU64,
}

/// What the script's mode `i` (or a refusal `{2, …}`) says about the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) epoch: Epoch,
    pub(super) v: u64,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Parses `{code, gen, run id, v}` when the reply's first element is `code`.
pub(super) fn parse_seen(v: &Value, code: i64) -> Option<Seen> {
    let Value::Array(items) = v else {
        return None;
    };
    if items.len() != 4 || i64::from_redis_value(items.first()?).ok()? != code {
        return None;
    }
    Some(Seen {
        epoch: Epoch {
            gen: text(items.get(1))?,
            run_id: text(items.get(2))?,
        },
        v: u64::from_redis_value(items.get(3)?).ok()?,
    })
}

fn recovering() -> LedgerError {
    LedgerError::Unavailable(
        "redis ledger lost data: re-asserting this replica's journal before counting again".into(),
    )
}

/// The journal's two marks of a subject relative to `cur`: `c`urrent, `p`revious, `n`ever.
fn mark(year: i32, cur: i32) -> u8 {
    if year >= cur {
        b'c'
    } else if year == cur - 1 {
        b'p'
    } else {
        b'n'
    }
}

impl RedisLedger {
    /// Losses of Redis data detected by this replica.
    pub fn losses_detected(&self) -> u64 {
        self.loss.losses.load(Ordering::Relaxed)
    }

    /// (scope, subject) entries this replica re-asserted after losses.
    pub fn reasserted_subjects(&self) -> u64 {
        self.loss.reasserted.load(Ordering::Relaxed)
    }

    /// The journal's (scope, subject) entries and the heap bytes of its index (sizing).
    pub fn journal_stats(&self) -> Option<(usize, usize)> {
        self.journal.as_ref().map(|j| (j.len(), j.heap_bytes()))
    }

    /// Whether a detected loss is not re-asserted yet (PI refused).
    pub fn recovering(&self) -> bool {
        self.loss.lost.load(Ordering::Acquire)
    }

    pub(super) fn epoch_known(&self) -> bool {
        self.loss
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The epoch and write counter to send with a script call, establishing the epoch on
    /// first contact.
    pub(super) async fn expected(&self) -> Result<(Epoch, u64), LedgerError> {
        for _ in 0..2 {
            if self.loss.lost.load(Ordering::Acquire) {
                self.spawn_recovery();
                return Err(recovering());
            }
            let e = self
                .loss
                .epoch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(e) = e {
                return Ok((e, self.loss.v_seen.load(Ordering::Acquire)));
            }
            self.establish().await?;
        }
        Err(recovering())
    }

    /// Mode `i` through a verified connection.
    pub(super) async fn seen(&self) -> Result<Seen, LedgerError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.keys.meta()).arg("i");
        let v = self.run(|mut c| async move { c.eval(&inv).await }).await?;
        parse_seen(&v, 3).ok_or_else(|| LedgerError::Unavailable("redis: bad info reply".into()))
    }

    /// Mode `i`, re-creating the namespace marker (and hash key fingerprint) when it is gone.
    async fn seen_with_marker(&self) -> Result<Seen, LedgerError> {
        let s = self.seen().await?;
        if !s.epoch.gen.is_empty() {
            return Ok(s);
        }
        self.verified.store(false, Ordering::Release);
        let s = self.seen().await?;
        if s.epoch.gen.is_empty() {
            return Err(LedgerError::Unavailable(
                "redis: the namespace marker could not be created".into(),
            ));
        }
        Ok(s)
    }

    /// First contact: adopt Redis's epoch when this replica has nothing journaled or Redis is
    /// the same namespace and server process it last asserted into; else it is a loss.
    async fn establish(&self) -> Result<(), LedgerError> {
        let s = self.seen_with_marker().await?;
        let same = match &self.journal {
            None => true,
            Some(j) => j.len() == 0 || j.load_epoch().as_ref() == Some(&s.epoch),
        };
        if same {
            self.adopt(&s)?;
            Ok(())
        } else {
            self.on_loss(
                "the namespace or the server changed since this replica last asserted its journal",
            );
            Err(recovering())
        }
    }

    fn adopt(&self, s: &Seen) -> Result<(), LedgerError> {
        if let Some(j) = &self.journal {
            if j.load_epoch().as_ref() != Some(&s.epoch) {
                j.store_epoch(&s.epoch)?;
            }
        }
        self.loss.v_seen.fetch_max(s.v, Ordering::AcqRel);
        *self
            .loss
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(s.epoch.clone());
        Ok(())
    }

    /// The health check's question: did Redis lose data since the last call?
    pub(super) async fn check_loss(&self) -> Result<(), LedgerError> {
        let (e, v) = self.expected().await?;
        let s = self.seen().await?;
        if s.epoch != e || s.v < v {
            self.on_loss(if s.epoch.gen != e.gen {
                "the namespace marker is gone or was re-created"
            } else if s.epoch.run_id != e.run_id {
                "the Redis server (or the Cluster node of the namespace) is another process"
            } else {
                "the namespace holds fewer writes than this replica already saw"
            });
            return Err(recovering());
        }
        self.loss.v_seen.fetch_max(s.v, Ordering::AcqRel);
        Ok(())
    }

    /// Records a detected loss (once until re-asserted) and starts the re-assertion.
    pub(super) fn on_loss(&self, why: &str) {
        if !self.loss.lost.swap(true, Ordering::AcqRel) {
            self.loss.losses.fetch_add(1, Ordering::Relaxed);
            tracing::error!(namespace = %self.keys.ns, reason = why, "redis ledger lost data; refusing PI until this replica's journal is re-asserted");
        }
        self.spawn_recovery();
    }

    /// Called with a script reply `{2, …}`.
    pub(super) fn on_refused_epoch(&self, s: &Seen, sent: &Epoch) {
        let current = self
            .loss
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current.as_ref() != Some(sent) {
            // Sent before a re-assertion that already adopted a newer epoch.
            return;
        }
        self.on_loss(if s.epoch.gen != sent.gen {
            "the namespace marker is gone or was re-created"
        } else if s.epoch.run_id != sent.run_id {
            "the Redis server (or the Cluster node of the namespace) is another process"
        } else {
            "the namespace holds fewer writes than this replica already saw"
        });
    }

    fn spawn_recovery(&self) {
        if self.loss.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.loss.recovering.store(false, Ordering::Release);
            return;
        };
        let weak = self.this.clone();
        rt.spawn(async move {
            loop {
                let Some(l) = weak.upgrade() else {
                    return;
                };
                match l.reassert().await {
                    Ok(n) => {
                        tracing::info!(namespace = %l.keys.ns, entries = n, "redis ledger: this replica's journal is re-asserted; counting again");
                        l.loss.recovering.store(false, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %l.keys.ns, error = %e, "redis ledger: re-assertion failed; retrying");
                    }
                }
                drop(l);
                tokio::time::sleep(RETRY).await;
            }
        });
    }

    /// Re-asserts the whole journal into the current namespace; returns the entries sent.
    async fn reassert(&self) -> Result<u64, LedgerError> {
        let _all = self.loss.inflight.write().await;
        let s = self.seen_with_marker().await?;
        let mut sent = 0u64;
        if let Some(j) = &self.journal {
            sent = self.reassert_journal(j, &s).await?;
            j.store_epoch(&s.epoch)?;
        }
        self.cache.clear();
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.loss.v_seen.store(s.v, Ordering::Release);
        *self
            .loss
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(s.epoch.clone());
        self.loss.lost.store(false, Ordering::Release);
        Ok(sent)
    }

    async fn reassert_journal(&self, j: &Journal, s: &Seen) -> Result<u64, LedgerError> {
        let cur = shanghai_date(SystemTime::now()).year();
        let names = j.scope_names();
        let mut pending: Vec<Vec<Entry>> = vec![Vec::new(); names.len()];
        let mut sent = 0u64;
        for shard in 0..Journal::SHARDS {
            for e in j.entries(shard, cur - 1) {
                let Some(p) = pending.get_mut(e.0 as usize) else {
                    continue;
                };
                p.push(e);
                if p.len() >= REASSERT_BATCH {
                    let batch = std::mem::take(p);
                    sent += self.reassert_batch(&names, &batch, cur, s).await?;
                }
            }
        }
        for batch in pending.into_iter().filter(|p| !p.is_empty()) {
            sent += self.reassert_batch(&names, &batch, cur, s).await?;
        }
        Ok(sent)
    }

    /// One mode `a` call for entries of one scope.
    async fn reassert_batch(
        &self,
        names: &[String],
        batch: &[Entry],
        cur: i32,
        s: &Seen,
    ) -> Result<u64, LedgerError> {
        let Some(name) = batch.first().and_then(|e| names.get(e.0 as usize)) else {
            return Ok(0);
        };
        let mut blob = Vec::with_capacity(16 * batch.len());
        let mut marks = Vec::with_capacity(2 * batch.len());
        for (_, key, all, sens) in batch {
            blob.extend_from_slice(key);
            marks.push(mark(*all, cur));
            marks.push(mark(*sens, cur));
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(self.keys.monthly())
            .key(self.keys.year(name, cur))
            .key(self.keys.year(name, cur - 1))
            .key(self.keys.counters(name))
            .key(self.keys.meta());
        inv.arg("a")
            .arg(cur)
            .arg(year_expiry(cur))
            .arg(year_expiry(cur - 1))
            .arg(blob)
            .arg(marks)
            .arg(&s.epoch.gen)
            .arg(&s.epoch.run_id)
            .arg(0);
        let v = self
            .run(|mut c: Conn| async move { c.eval(&inv).await })
            .await?;
        if let Some(now) = parse_seen(&v, 2) {
            return Err(LedgerError::Unavailable(format!(
                "redis changed again during the re-assertion (marker {})",
                if now.epoch.gen == s.epoch.gen {
                    "kept"
                } else {
                    "changed"
                }
            )));
        }
        let n = batch.len() as u64;
        self.loss.reasserted.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}
