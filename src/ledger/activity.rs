//! The report's activity statistics: per Asia/Shanghai month and destination, the
//! records forwarded per data category and the transfers refused (`block`) or that would have
//! been (`would_block`, observe mode) per reason.
//!
//! They are counted where the gate decides, into the process's [`ActivityRecorder`] (a mutex
//! and a few array cells, no I/O on the request path), and flushed every second by
//! [`crate::report::history::History::flush`] into a store: the shared backend when it keeps
//! them for every replica ([`super::Ledger::shares_activity`], Redis: one hash per entity
//! namespace, see `docs/ledger.md`), else the gate's own `history.json`.
//!
//! These are report statistics, not subject counts: a `kill -9` loses what was not flushed
//! yet (at most the last second with Redis), and they are not re-asserted after Redis loses
//! data. Subject counts, which every limit uses, never depend on them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::{shanghai_date, Category};

/// What one destination did in one month.
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
    /// What each client did here: `<client>:<counter>` → count, the counters being
    /// [`CLIENT_COUNTERS`] (SPEC §2 "Where it shows"). Subjects are attributed to the client
    /// that sent them here first in the window: these add counters, never a subject set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clients: BTreeMap<String, u64>,
}

/// The per-client counters of a destination, in the order of [`ClientDelta`]'s fields:
/// requests forwarded and refused, body bytes sent upstream, subjects newly counted at the
/// destination (all, sensitive).
pub const CLIENT_COUNTERS: [&str; 5] = [
    "allowed",
    "refused",
    "bytes",
    "new_subjects",
    "new_sensitive_subjects",
];

/// What one request of a client adds to its counters at a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientDelta {
    /// Forwarded (allowed, or observed as `would_block`).
    pub allowed: u64,
    /// Refused.
    pub refused: u64,
    /// Body bytes sent upstream.
    pub bytes: u64,
    /// Subjects newly counted at the destination.
    pub new_subjects: u64,
    /// Sensitive subjects newly counted at the destination.
    pub new_sensitive_subjects: u64,
}

impl ClientDelta {
    fn values(self) -> [u64; 5] {
        [
            self.allowed,
            self.refused,
            self.bytes,
            self.new_subjects,
            self.new_sensitive_subjects,
        ]
    }
}

/// `YYYY-MM` → destination → activity (the same shape as deltas and as totals).
pub type ActivityMonths = BTreeMap<String, BTreeMap<String, MonthActivity>>;

/// The activity a store holds: the months, and since when it has been kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredActivity {
    /// The first Asia/Shanghai date (`YYYY-MM-DD`) from which activity was kept, if known.
    pub since: Option<String>,
    /// Every month's activity.
    pub months: ActivityMonths,
}

/// Which count of a month and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records per category.
    Records,
    /// Refused transfers per reason.
    Blocked,
    /// Transfers that would have been refused per reason.
    WouldBlock,
    /// Per-client counters (`<client>:<counter>`).
    Clients,
}

const KINDS: [Kind; 4] = [
    Kind::Records,
    Kind::Blocked,
    Kind::WouldBlock,
    Kind::Clients,
];

impl Kind {
    const fn code(self) -> char {
        match self {
            Kind::Records => 'r',
            Kind::Blocked => 'b',
            Kind::WouldBlock => 'w',
            Kind::Clients => 'c',
        }
    }

    fn get(self, a: &MonthActivity) -> &BTreeMap<String, u64> {
        match self {
            Kind::Records => &a.records,
            Kind::Blocked => &a.blocked,
            Kind::WouldBlock => &a.would_block,
            Kind::Clients => &a.clients,
        }
    }

    fn select(self, a: &mut MonthActivity) -> &mut BTreeMap<String, u64> {
        match self {
            Kind::Records => &mut a.records,
            Kind::Blocked => &mut a.blocked,
            Kind::WouldBlock => &mut a.would_block,
            Kind::Clients => &mut a.clients,
        }
    }
}

/// Adds `delta` to `into` (counts of the same month, destination and label add up).
pub fn merge(into: &mut ActivityMonths, delta: &ActivityMonths) {
    for (month, dests) in delta {
        for (dest, a) in dests {
            if is_zero(a) {
                continue;
            }
            let t = into
                .entry(month.clone())
                .or_default()
                .entry(dest.clone())
                .or_default();
            for kind in KINDS {
                let src = kind.get(a);
                let dst = kind.select(t);
                for (label, n) in src.iter().filter(|(_, n)| **n > 0) {
                    *dst.entry(label.clone()).or_default() += n;
                }
            }
        }
    }
}

fn is_zero(a: &MonthActivity) -> bool {
    KINDS.iter().all(|k| k.get(a).values().all(|n| *n == 0))
}

/// Whether `m` holds no count above zero.
pub fn is_empty(m: &ActivityMonths) -> bool {
    m.values().all(|d| d.values().all(is_zero))
}

/// The counts of `m` as hash fields `<YYYY-MM>|<r|b|w>|<label>|<destination>` (the
/// destination last: it is a configuration name and may contain `|`; months and labels
/// never do). Zero counts are left out.
pub fn to_fields(m: &ActivityMonths) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (month, dests) in m {
        for (dest, a) in dests {
            for kind in KINDS {
                for (label, n) in kind.get(a).iter().filter(|(_, n)| **n > 0) {
                    out.push((format!("{month}|{}|{label}|{dest}", kind.code()), *n));
                }
            }
        }
    }
    out
}

/// Parses the fields written by [`to_fields`] (after `HINCRBY` summed them); other fields
/// and values that are not positive are ignored.
pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, i64)>) -> ActivityMonths {
    let mut out = ActivityMonths::new();
    for (field, n) in fields {
        let Ok(n) = u64::try_from(n) else { continue };
        let mut parts = field.splitn(4, '|');
        let (Some(month), Some(kind), Some(label), Some(dest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let kind = match kind {
            "r" => Kind::Records,
            "b" => Kind::Blocked,
            "w" => Kind::WouldBlock,
            "c" => Kind::Clients,
            _ => continue,
        };
        if n == 0 || month.len() != 7 {
            continue;
        }
        let a = out
            .entry(month.to_owned())
            .or_default()
            .entry(dest.to_owned())
            .or_default();
        *kind.select(a).entry(label.to_owned()).or_default() += n;
    }
    out
}

/// One destination's counts in one month, not yet flushed.
#[derive(Debug, Default)]
struct Cell {
    /// In [`Category::ALL`] order.
    records: [u64; 9],
    blocked: Vec<(&'static str, u64)>,
    would_block: Vec<(&'static str, u64)>,
    /// Per client name, in [`CLIENT_COUNTERS`] order.
    clients: Vec<(Box<str>, [u64; 5])>,
}

/// The activity counted by this process since the last flush: per month (`year × 100 +
/// month`) and destination. The request path only takes a mutex and adds to array cells; a
/// destination's cell is allocated once per flush interval.
#[derive(Debug, Default)]
pub struct ActivityRecorder {
    pending: Mutex<Vec<(u32, Cells)>>,
}

/// Destination → its cell, for one month.
type Cells = HashMap<Box<str>, Cell>;

fn month_code(now: SystemTime) -> u32 {
    let d = shanghai_date(now);
    u32::try_from(d.year()).unwrap_or(0) * 100 + u32::from(u8::from(d.month()))
}

impl ActivityRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_cell(&self, now: SystemTime, dest: &str, f: impl FnOnce(&mut Cell)) {
        let month = month_code(now);
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let i = match p.iter().position(|(m, _)| *m == month) {
            Some(i) => i,
            None => {
                p.push((month, HashMap::new()));
                p.len() - 1
            }
        };
        let cells = &mut p[i].1;
        match cells.get_mut(dest) {
            Some(c) => f(c),
            None => {
                let mut c = Cell::default();
                f(&mut c);
                cells.insert(dest.into(), c);
            }
        }
    }

    /// Counts the records forwarded to `dest` per category (in [`Category::ALL`] order).
    pub fn records(&self, now: SystemTime, dest: &str, per_category: &[u64; 9]) {
        if per_category.iter().all(|n| *n == 0) {
            return;
        }
        self.with_cell(now, dest, |c| {
            for (t, n) in c.records.iter_mut().zip(per_category) {
                *t += n;
            }
        });
    }

    /// Counts one decision on a transfer to `dest` (`allow`, `block`, `would_block`); only
    /// refusals are kept.
    pub fn decision(&self, now: SystemTime, dest: &str, decision: &str, reason: &'static str) {
        let would = match decision {
            "block" => false,
            "would_block" => true,
            _ => return,
        };
        self.with_cell(now, dest, |c| {
            let v = if would {
                &mut c.would_block
            } else {
                &mut c.blocked
            };
            match v.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => v.push((reason, 1)),
            }
        });
    }

    /// Adds `delta` to client `client`'s counters at `dest`.
    pub fn client(&self, now: SystemTime, dest: &str, client: &str, delta: ClientDelta) {
        if delta == ClientDelta::default() {
            return;
        }
        self.with_cell(now, dest, |c| {
            let values = delta.values();
            match c.clients.iter_mut().find(|(n, _)| &**n == client) {
                Some((_, t)) => {
                    for (t, v) in t.iter_mut().zip(values) {
                        *t += v;
                    }
                }
                None => c.clients.push((client.into(), values)),
            }
        });
    }

    /// Takes everything counted since the last call.
    pub fn take(&self) -> ActivityMonths {
        let p = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out = ActivityMonths::new();
        for (month, cells) in p {
            let key = format!("{:04}-{:02}", month / 100, month % 100);
            let dests = out.entry(key).or_default();
            for (dest, c) in cells {
                let a = dests.entry(dest.into_string()).or_default();
                for (cat, n) in Category::ALL.iter().zip(c.records) {
                    if n > 0 {
                        *a.records.entry(cat.as_str().to_owned()).or_default() += n;
                    }
                }
                for (r, n) in c.blocked {
                    *a.blocked.entry(r.to_owned()).or_default() += n;
                }
                for (r, n) in c.would_block {
                    *a.would_block.entry(r.to_owned()).or_default() += n;
                }
                for (client, values) in c.clients {
                    for (counter, n) in CLIENT_COUNTERS.iter().zip(values) {
                        if n > 0 {
                            *a.clients.entry(format!("{client}:{counter}")).or_default() += n;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-03-31 20:00 UTC is 2026-04-01 04:00 in Shanghai.
    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }
    const MARCH_31_UTC_20H: u64 = 1_774_987_200;

    #[test]
    fn recorder_counts_per_shanghai_month_and_keeps_refusals_only() {
        let r = ActivityRecorder::new();
        let mut cats = [0u64; 9];
        cats[0] = 2;
        cats[5] = 1;
        r.records(at(MARCH_31_UTC_20H - 5 * 3600), "eu", &cats);
        r.records(at(MARCH_31_UTC_20H), "eu", &cats);
        r.records(at(MARCH_31_UTC_20H), "eu", &[0; 9]);
        r.decision(at(MARCH_31_UTC_20H), "eu", "allow", "allowed");
        r.decision(at(MARCH_31_UTC_20H), "us", "block", "approval_required");
        r.decision(at(MARCH_31_UTC_20H), "us", "block", "approval_required");
        r.decision(
            at(MARCH_31_UTC_20H),
            "us|x",
            "would_block",
            "important_data",
        );
        let m = r.take();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["2026-03", "2026-04"]);
        assert_eq!(m["2026-03"]["eu"].records["basic"], 2);
        assert_eq!(m["2026-04"]["eu"].records["health"], 1);
        assert_eq!(m["2026-04"]["us"].blocked["approval_required"], 2);
        assert_eq!(m["2026-04"]["us|x"].would_block["important_data"], 1);
        assert!(!m["2026-04"]["eu"].blocked.contains_key("allowed"));
        assert!(is_empty(&r.take()), "taken once");
    }

    #[test]
    fn fields_round_trip_and_merge_adds() {
        let r = ActivityRecorder::new();
        let mut cats = [0u64; 9];
        cats[1] = 3;
        r.records(at(MARCH_31_UTC_20H), "a|b", &cats);
        r.decision(
            at(MARCH_31_UTC_20H),
            "unknown",
            "block",
            "unknown_destination",
        );
        let delta = ClientDelta {
            allowed: 1,
            bytes: 120,
            new_subjects: 3,
            ..ClientDelta::default()
        };
        r.client(at(MARCH_31_UTC_20H), "a|b", "billing", delta);
        r.client(at(MARCH_31_UTC_20H), "a|b", "billing", delta);
        r.client(at(MARCH_31_UTC_20H), "a|b", "crm", ClientDelta::default());
        let m = r.take();
        assert_eq!(m["2026-04"]["a|b"].clients["billing:bytes"], 240);
        assert_eq!(m["2026-04"]["a|b"].clients["billing:new_subjects"], 6);
        assert!(!m["2026-04"]["a|b"].clients.contains_key("billing:refused"));
        assert!(!m["2026-04"]["a|b"]
            .clients
            .keys()
            .any(|k| k.starts_with("crm")));
        let fields = to_fields(&m);
        assert!(fields.contains(&("2026-04|r|contact|a|b".to_owned(), 3)));
        assert!(fields.contains(&("2026-04|c|billing:allowed|a|b".to_owned(), 2)));
        let back = from_fields(fields.iter().map(|(f, n)| (f.as_str(), *n as i64)));
        assert_eq!(back, m);
        let mut twice = m.clone();
        merge(&mut twice, &m);
        assert_eq!(twice["2026-04"]["a|b"].records["contact"], 6);
        assert_eq!(
            twice["2026-04"]["unknown"].blocked["unknown_destination"],
            2
        );
        // Foreign or broken fields are skipped.
        let junk = from_fields([
            ("since", 5),
            ("2026-04|x|a|b", 1),
            ("2026-04|r|basic|eu", -1),
        ]);
        assert!(junk.is_empty());
    }
}
