//! The activity store behind the report: this process's file with the local backend, the
//! shared backend's store (here a fake that keeps it in memory and can fail) otherwise.

use super::*;
use crate::ledger::activity::{ActivityRecorder, StoredActivity};
use crate::ledger::{
    LedgerFuture, MemoryLedger, MonthlyTally, Reservation, ReserveOutcome, ScopeCounts, ScopeId,
    ScopeOutcome, Subject,
};
use crate::model::Regime;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A backend that shares activity, like Redis, in memory; `down` makes it fail.
#[derive(Debug, Default)]
struct Shared {
    inner: MemoryLedger,
    store: Mutex<StoredActivity>,
    down: AtomicBool,
    adds: std::sync::atomic::AtomicU64,
}

impl Ledger for Shared {
    fn backend(&self) -> &'static str {
        "shared-test"
    }
    fn register_scopes<'a>(&'a self, scopes: &'a [Scope]) -> LedgerFuture<'a, Vec<ScopeId>> {
        self.inner.register_scopes(scopes)
    }
    fn reserve<'a>(&'a self, req: Reservation<'a>) -> LedgerFuture<'a, ReserveOutcome> {
        self.inner.reserve(req)
    }
    fn probe<'a>(
        &'a self,
        subjects: &'a [Subject],
        scopes: &'a [ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'a, Vec<ScopeOutcome>> {
        self.inner.probe(subjects, scopes, regime, now)
    }
    fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        self.inner.counts(scope, regime, now)
    }
    fn monthly(&self) -> LedgerFuture<'_, Vec<MonthlyTally>> {
        self.inner.monthly()
    }
    fn shares_activity(&self) -> bool {
        true
    }
    fn add_activity<'a>(&'a self, delta: &'a StoredActivity) -> LedgerFuture<'a, ()> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(LedgerError::Unavailable("down".into()));
            }
            self.adds.fetch_add(1, Ordering::SeqCst);
            let mut s = self.store.lock().unwrap();
            merge(&mut s.months, &delta.months);
            if let Some(d) = &delta.since {
                if s.since.as_ref().is_none_or(|cur| d < cur) {
                    s.since = Some(d.clone());
                }
            }
            Ok(())
        })
    }
    fn activity(&self) -> LedgerFuture<'_, StoredActivity> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(LedgerError::Unavailable("down".into()));
            }
            Ok(self.store.lock().unwrap().clone())
        })
    }
}

fn now() -> SystemTime {
    // 2026-11-27 in Shanghai.
    UNIX_EPOCH + Duration::from_secs(1_796_000_000)
}

/// What one replica counted: `n` records of `basic` to `eu` and one refusal to `us`.
fn counted(n: u64, reason: &'static str) -> ActivityMonths {
    let r = ActivityRecorder::new();
    let mut cats = [0u64; 9];
    cats[0] = n;
    r.records(now(), "eu", &cats);
    r.decision(now(), "us", "block", reason);
    r.take()
}

#[tokio::test]
async fn local_activity_is_this_process_and_survives_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = MemoryLedger::new();
    let h = History::open(dir.path());
    h.flush_delta(counted(2, "approval_required"), &ledger, "2026-11-27")
        .await;
    h.flush_delta(counted(1, "approval_required"), &ledger, "2026-11-27")
        .await;
    let a = h.stored(&ledger).await.unwrap();
    assert_eq!(a.months["2026-11"]["eu"].records["basic"], 3);
    assert_eq!(a.months["2026-11"]["us"].blocked["approval_required"], 2);
    {
        let mut st = h.lock();
        h.save(&mut st);
    }
    let again = History::open(dir.path());
    assert_eq!(again.stored(&ledger).await.unwrap().months, a.months);
}

#[tokio::test]
async fn replicas_on_a_shared_store_read_the_union() {
    let shared = Shared::default();
    let (a, b) = (History::in_memory(), History::in_memory());
    a.flush_delta(counted(2, "approval_required"), &shared, "2026-11-27")
        .await;
    b.flush_delta(counted(5, "unknown_destination"), &shared, "2026-11-26")
        .await;
    let (ra, rb) = (
        a.stored(&shared).await.unwrap(),
        b.stored(&shared).await.unwrap(),
    );
    assert_eq!(ra, rb);
    let m = &ra.months["2026-11"];
    assert_eq!(m["eu"].records["basic"], 7);
    assert_eq!(m["us"].blocked["approval_required"], 1);
    assert_eq!(m["us"].blocked["unknown_destination"], 1);
    assert_eq!(ra.since.as_deref(), Some("2026-11-26"));
    // Nothing new: no call.
    let calls = shared.adds.load(Ordering::SeqCst);
    a.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    assert_eq!(shared.adds.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_store_that_fails_gets_the_delta_later_once() {
    let shared = Shared::default();
    let h = History::in_memory();
    shared.down.store(true, Ordering::SeqCst);
    h.flush_delta(counted(2, "approval_required"), &shared, "2026-11-27")
        .await;
    h.flush_delta(counted(1, "approval_required"), &shared, "2026-11-27")
        .await;
    assert!(h.stored(&shared).await.is_err());
    shared.down.store(false, Ordering::SeqCst);
    h.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    h.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    let m = h.stored(&shared).await.unwrap().months;
    assert_eq!(m["2026-11"]["eu"].records["basic"], 3);
    assert_eq!(m["2026-11"]["us"].blocked["approval_required"], 2);
}

#[tokio::test]
async fn months_kept_in_the_file_move_to_the_shared_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let local = MemoryLedger::new();
    let h = History::open(dir.path());
    h.flush_delta(counted(4, "approval_required"), &local, "2026-10-01")
        .await;
    {
        let mut st = h.lock();
        st.data
            .days
            .insert("2026-10-01".into(), DaySample::default());
        st.dirty = true;
        h.save(&mut st);
    }
    // The same data dir, now on a shared backend that is down at first.
    let shared = Shared::default();
    shared.down.store(true, Ordering::SeqCst);
    let h = History::open(dir.path());
    h.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    assert!(!h.data().months.is_empty(), "kept in the file while down");
    shared.down.store(false, Ordering::SeqCst);
    h.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    h.flush_delta(ActivityMonths::new(), &shared, "2026-11-27")
        .await;
    let s = h.stored(&shared).await.unwrap();
    assert_eq!(s.months["2026-11"]["eu"].records["basic"], 4);
    assert_eq!(s.since.as_deref(), Some("2026-10-01"));
    let reopened = History::open(dir.path());
    assert!(reopened.data().months.is_empty(), "moved out of the file");
    assert_eq!(reopened.data().days.len(), 1);
}
