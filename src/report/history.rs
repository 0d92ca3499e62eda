//! The gate's small activity history for `report` and `assess`, kept next to the ledger in
//! `gate.data_dir/history.json`:
//!
//! - per Asia/Shanghai day, the entity's *cumulative* newly-counted subjects (the sum of the
//!   ledger's monthly tallies for the entity scope, all and sensitive), sampled by the gate.
//!   Differences between two days are the subjects newly counted between them, across window
//!   roll-overs and across replicas sharing a backend (the tallies are the ledger's);
//! - per month and destination, the records sent per data category and the transfers refused
//!   (`block`) or that would have been (`would_block`) per reason. These are the deltas of the
//!   process's `transfer_gate_records_total` and `transfer_gate_decisions_total` counters, so
//!   they cover this process only (sum the reports of every replica, or use Prometheus), and
//!   the last sampling interval before a `kill -9` is lost.
//!
//! Sampling happens every [`INTERVAL`] and before every `/v1/report` or `/v1/history`
//! answer; the file is rewritten atomically (temporary file + rename) when something changed.
//! A file that cannot be read or written is logged and the history goes on in memory.

use crate::ledger::Scope;
use crate::model::shanghai_date;
use crate::proxy::Gate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often the gate samples its counters.
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

/// What one destination did in one month, from the process's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthActivity {
    /// Records forwarded per data category.
    #[serde(default)]
    pub records: BTreeMap<String, u64>,
    /// Refused transfers per reason.
    #[serde(default)]
    pub blocked: BTreeMap<String, u64>,
    /// Transfers that would have been refused (observe mode) per reason.
    #[serde(default)]
    pub would_block: BTreeMap<String, u64>,
}

/// The persisted part of the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryData {
    /// `YYYY-MM-DD` → the day's last entity sample.
    #[serde(default)]
    pub days: BTreeMap<String, DaySample>,
    /// `YYYY-MM` → destination → activity.
    #[serde(default)]
    pub months: BTreeMap<String, BTreeMap<String, MonthActivity>>,
}

#[derive(Debug, Default)]
struct State {
    data: HistoryData,
    /// Counter values at the previous sample, by label set (process-local, starts at zero).
    last: HashMap<Vec<String>, u64>,
    dirty: bool,
    warned: bool,
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

    /// Samples the ledger's entity tallies and the process's counters now.
    pub async fn sample(&self, gate: &Gate) {
        let now = gate.clock.now();
        let today = shanghai_date(now);
        let month = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
        let entity = match gate.ledger.monthly().await {
            Ok(t) => Some(t.iter().filter(|t| t.scope == Scope::Entity).fold(
                DaySample::default(),
                |a, t| DaySample {
                    all: a.all + t.new_all,
                    sensitive: a.sensitive + t.new_sensitive,
                },
            )),
            Err(_) => None,
        };
        let records = counter_values(&gate.metrics.records);
        let decisions = counter_values(&gate.metrics.decisions);
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
        for (labels, v) in records {
            let delta = st.delta(&labels, v);
            let (Some(dest), Some(cat)) =
                (label(&labels, "destination"), label(&labels, "category"))
            else {
                continue;
            };
            if delta > 0 {
                let a = st.activity(&month, dest);
                *a.records.entry(cat.to_owned()).or_default() += delta;
                st.dirty = true;
            }
        }
        for (labels, v) in decisions {
            let delta = st.delta(&labels, v);
            let (Some(dest), Some(decision), Some(reason)) = (
                label(&labels, "destination"),
                label(&labels, "decision"),
                label(&labels, "reason"),
            ) else {
                continue;
            };
            if delta == 0 || decision == "allow" {
                continue;
            }
            let a = st.activity(&month, dest);
            let map = if decision == "block" {
                &mut a.blocked
            } else {
                &mut a.would_block
            };
            *map.entry(reason.to_owned()).or_default() += delta;
            st.dirty = true;
        }
        self.save(&mut st);
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

impl State {
    /// The increase of a counter since the previous sample (counters start at zero with the
    /// process, so the first sample counts everything since start).
    ///
    /// Counters never decrease within a process, so a value below the previous one is a
    /// sample that read the counters earlier and took the lock later: it adds nothing.
    fn delta(&mut self, labels: &[String], v: u64) -> u64 {
        let prev = self.last.get(labels).copied().unwrap_or(0);
        if v <= prev {
            return 0;
        }
        self.last.insert(labels.to_vec(), v);
        v - prev
    }

    fn activity(&mut self, month: &str, dest: &str) -> &mut MonthActivity {
        self.data
            .months
            .entry(month.to_owned())
            .or_default()
            .entry(dest.to_owned())
            .or_default()
    }
}

/// Every series of a counter family as (`name=value` label list, value).
fn counter_values(c: &prometheus::IntCounterVec) -> Vec<(Vec<String>, u64)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for mf in c.collect() {
        for m in mf.get_metric() {
            let labels = m
                .get_label()
                .iter()
                .map(|l| format!("{}={}", l.name(), l.value()))
                .collect();
            out.push((labels, m.get_counter().get_value() as u64));
        }
    }
    out
}

fn label<'a>(labels: &'a [String], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_start_at_zero_and_ignore_stale_samples() {
        let mut st = State::default();
        let l = vec!["destination=eu".to_owned()];
        assert_eq!(st.delta(&l, 5), 5);
        assert_eq!(st.delta(&l, 7), 2);
        assert_eq!(st.delta(&l, 7), 0);
        assert_eq!(st.delta(&l, 1), 0);
        assert_eq!(st.delta(&l, 9), 2);
        assert_eq!(label(&l, "destination"), Some("eu"));
        assert_eq!(label(&l, "dest"), None);
    }
}
