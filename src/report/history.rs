//! The gate's small activity history for `report` and `assess`:
//!
//! - per Asia/Shanghai day, the entity's *cumulative* newly-counted subjects (the sum of the
//!   ledger's monthly tallies for the entity scope, all and sensitive), sampled by the gate
//!   every [`INTERVAL`] into `gate.data_dir/history.json`. Differences between two days are the
//!   subjects newly counted between them, across window roll-overs and across replicas sharing
//!   a backend (the tallies are the ledger's; each replica samples them for the days it runs);
//! - per month and destination, the records sent per data category and the transfers refused
//!   (`block`) or that would have been (`would_block`) per reason
//!   ([`crate::ledger::activity`]). They are counted where the gate decides, into
//!   `Gate::report_activity`, and [`History::flush`] moves them every second (the gate's
//!   refresher; also before every `/v1/report` answer and when the gate stops) into one store: with a ledger
//!   that shares them ([`crate::ledger::Ledger::shares_activity`], Redis) into the backend, so
//!   every replica reports the union of all replicas; otherwise into this file, for this
//!   process. Months the file kept before the backend shared them are moved there once.
//!
//! What a `kill -9` loses of the activity: with Redis, what was not flushed yet (at most the
//! last second); with the local backend, what was not written to the file yet (at most the last
//! [`INTERVAL`]). These are report statistics; subject counts never depend on them.
//!
//! The file is rewritten atomically (temporary file + rename) when something changed, every
//! [`INTERVAL`] and before every `/v1/report` or `/v1/history` answer. A file that cannot be
//! read or written is logged and the history goes on in memory; a shared store that cannot be
//! reached keeps the deltas in memory and gets them with the next flush.

use crate::ledger::activity::{is_empty, merge, ActivityMonths};
use crate::ledger::{Ledger, LedgerError, Scope};
use crate::model::shanghai_date;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use crate::ledger::activity::{MonthActivity, StoredActivity};

/// What the history reads and moves: the activity counted in process, the ledger (its
/// tallies, and its shared activity store when it keeps one) and the time now. The gate hands
/// these over (`Gate::history_sources`); the history knows nothing else of it.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The activity counted where the gate decides.
    pub recorder: &'a crate::ledger::activity::ActivityRecorder,
    /// The subject ledger.
    pub ledger: &'a dyn Ledger,
    /// Now.
    pub now: std::time::SystemTime,
}

/// How often the gate samples the entity's counts (and writes the file).
pub const INTERVAL: Duration = Duration::from_secs(30);
/// How many days of entity samples are kept (enough for any 30-day rate and a window).
const KEEP_DAYS: usize = 800;

/// One day's last sample of the entity's cumulative newly-counted subjects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySample {
    /// Cumulative subjects newly counted (all classes).
    pub all: u64,
    /// Cumulative subjects newly counted as sensitive.
    pub sensitive: u64,
}

/// The persisted part of the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryData {
    /// `YYYY-MM-DD` → the day's last entity sample.
    #[serde(default)]
    pub days: BTreeMap<String, DaySample>,
    /// `YYYY-MM` → destination → activity, when this process keeps its own (local backend).
    #[serde(default)]
    pub months: ActivityMonths,
}

#[derive(Debug, Default)]
struct State {
    data: HistoryData,
    /// Activity the shared store did not take yet (sent again with the next flush).
    unsent: ActivityMonths,
    dirty: bool,
    warned: bool,
    store_warned: bool,
}

/// The history of one gate process.
#[derive(Debug)]
pub struct History {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl History {
    /// Opens (or starts) the history in `data_dir`; an unreadable file is logged and ignored.
    pub fn open(data_dir: &Path) -> History {
        let path = data_dir.join("history.json");
        let data = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "activity history unreadable; starting a new one");
                HistoryData::default()
            }),
            Err(_) => HistoryData::default(),
        };
        History {
            path: Some(path),
            state: Mutex::new(State {
                data,
                ..State::default()
            }),
        }
    }

    /// A history that is never written (tests).
    pub fn in_memory() -> History {
        History {
            path: None,
            state: Mutex::new(State::default()),
        }
    }

    /// A copy of the data.
    pub fn data(&self) -> HistoryData {
        self.lock().data.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Samples the ledger's entity tallies now, flushes the activity and writes the file when
    /// something changed.
    pub async fn sample(&self, src: Sources<'_>) {
        self.flush(src).await;
        let today = shanghai_date(src.now);
        let entity = match src.ledger.monthly().await {
            Ok(t) => Some(t.iter().filter(|t| t.scope == Scope::Entity).fold(
                DaySample::default(),
                |a, t| DaySample {
                    all: a.all + t.new_all,
                    sensitive: a.sensitive + t.new_sensitive,
                },
            )),
            Err(_) => None,
        };
        let mut st = self.lock();
        if let Some(e) = entity {
            let day = today.to_string();
            // Cumulative figures only grow; a sample that read the ledger earlier loses.
            let prev = st.data.days.get(&day).copied().unwrap_or_default();
            let e = DaySample {
                all: e.all.max(prev.all),
                sensitive: e.sensitive.max(prev.sensitive),
            };
            if prev != e {
                st.data.days.insert(day, e);
                st.dirty = true;
            }
            while st.data.days.len() > KEEP_DAYS {
                st.data.days.pop_first();
            }
        }
        self.save(&mut st);
    }

    /// Moves the activity counted in process (`Gate::report_activity`) into its store: the
    /// shared backend when the ledger keeps it, else this history (written by the next
    /// [`History::sample`]). A delta the backend does not take is kept for the next flush.
    pub async fn flush(&self, src: Sources<'_>) {
        let today = shanghai_date(src.now).to_string();
        self.flush_delta(src.recorder.take(), src.ledger, &today)
            .await;
    }

    /// [`History::flush`] of `fresh` into `ledger`'s store or this history.
    async fn flush_delta(&self, fresh: ActivityMonths, ledger: &dyn Ledger, today: &str) {
        if !ledger.shares_activity() {
            if !is_empty(&fresh) {
                let mut st = self.lock();
                merge(&mut st.data.months, &fresh);
                st.dirty = true;
            }
            return;
        }
        let (delta, pending, moved) = {
            let mut st = self.lock();
            let mut pending = std::mem::take(&mut st.unsent);
            merge(&mut pending, &fresh);
            // Months the file kept while this process kept its own go to the shared store once.
            let moved = std::mem::take(&mut st.data.months);
            let mut months = pending.clone();
            merge(&mut months, &moved);
            let since = st.data.days.keys().next().map_or(today, String::as_str);
            let delta = StoredActivity {
                since: Some(since.to_owned()),
                months,
            };
            (delta, pending, moved)
        };
        if is_empty(&delta.months) {
            return;
        }
        let res = ledger.add_activity(&delta).await;
        let mut st = self.lock();
        match res {
            Ok(()) => {
                st.store_warned = false;
                if !moved.is_empty() {
                    st.dirty = true;
                    self.save(&mut st);
                }
            }
            Err(e) => {
                merge(&mut st.unsent, &pending);
                merge(&mut st.data.months, &moved);
                if !st.store_warned {
                    st.store_warned = true;
                    tracing::warn!(error = %e, "cannot add the report's activity to the shared ledger; keeping it in memory until it can");
                }
            }
        }
    }

    /// The activity of every month: this process's, flushed first, or with a ledger that
    /// shares it, that of every process sharing the backend.
    ///
    /// # Errors
    /// The shared store cannot be read.
    pub async fn activity(&self, src: Sources<'_>) -> Result<StoredActivity, LedgerError> {
        self.flush(src).await;
        self.stored(src.ledger).await
    }

    async fn stored(&self, ledger: &dyn Ledger) -> Result<StoredActivity, LedgerError> {
        if ledger.shares_activity() {
            return ledger.activity().await;
        }
        let st = self.lock();
        Ok(StoredActivity {
            since: st.data.days.keys().next().cloned(),
            months: st.data.months.clone(),
        })
    }

    fn save(&self, st: &mut State) {
        let Some(path) = &self.path else {
            st.dirty = false;
            return;
        };
        if !st.dirty {
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(&st.data)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        match res {
            Ok(()) => {
                st.dirty = false;
                st.warned = false;
            }
            Err(e) if !st.warned => {
                st.warned = true;
                tracing::warn!(file = %path.display(), error = %e, "cannot write the activity history; keeping it in memory");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
