//! The behavioural test suite of the [`Ledger`] trait, written once over a backend factory so
//! that every backend (memory, local, and later Redis) runs the same checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::model::Regime;

/// A fresh backend, plus whatever must live as long as it (e.g. a temporary directory).
pub(crate) type Made = (Arc<dyn Ledger>, Box<dyn std::any::Any + Send>);

/// The moment `y-m-d 12:00` in Asia/Shanghai.
pub(crate) fn at(y: i32, m: u8, d: u8) -> SystemTime {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
    let t = date
        .with_hms(12, 0, 0)
        .unwrap()
        .assume_offset(time::macros::offset!(+8));
    UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}

/// A subject key from a number.
pub(crate) fn key(i: u64) -> SubjectKey {
    SubjectHasher::from_key([42; 32]).hash("test", &i.to_le_bytes())
}

pub(crate) fn subj(i: u64, sensitive: bool) -> Subject {
    Subject {
        key: key(i),
        sensitive,
    }
}

pub(crate) fn plain(range: std::ops::Range<u64>) -> Vec<Subject> {
    range.map(|i| subj(i, false)).collect()
}

pub(crate) async fn reserve(
    l: &dyn Ledger,
    subjects: &[Subject],
    scopes: &[ScopeId],
    ceilings: &[Ceiling],
    regime: Regime,
    now: SystemTime,
) -> ReserveOutcome {
    l.reserve(Reservation {
        subjects,
        scopes,
        ceilings,
        alternatives: &[],
        regime,
        now,
    })
    .await
    .unwrap()
}

fn reserved(o: ReserveOutcome) -> Vec<ScopeOutcome> {
    match o {
        ReserveOutcome::Reserved(v) => v,
        ReserveOutcome::Refused(r) => panic!("refused: {r:?}"),
    }
}

const R24: Regime = Regime::Cac2024;
const R22: Regime = Regime::Cac2022;

async fn counts_each_subject_once(l: &dyn Ledger) {
    let ids = l
        .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
        .await
        .unwrap();
    let now = at(2026, 3, 1);
    let o = reserved(
        reserve(
            l,
            &[subj(1, false), subj(2, false), subj(1, false)],
            &ids,
            &[],
            R24,
            now,
        )
        .await,
    );
    assert_eq!(
        (o[0].new_all, o[0].all_after, o[1].new_all, o[1].all_after),
        (2, 2, 2, 2)
    );
    let o = reserved(reserve(l, &plain(2..4), &ids, &[], R24, now).await);
    assert_eq!(
        (o[0].new_all, o[0].all_after, o[0].new_sensitive),
        (1, 3, 0)
    );
    let o = reserved(reserve(l, &plain(1..4), &ids, &[], R24, now).await);
    assert_eq!((o[0].new_all, o[0].all_after), (0, 3));
    assert_eq!(
        l.counts(ids[1], R24, now).await.unwrap(),
        ScopeCounts {
            all: 3,
            sensitive: 0
        }
    );
    // Registration is idempotent.
    assert_eq!(
        l.register_scopes(&[Scope::Destination("a".into())])
            .await
            .unwrap(),
        [ids[1]]
    );
    assert!(matches!(
        l.counts(ScopeId(999), R24, now).await,
        Err(LedgerError::UnknownScope(999))
    ));
}

async fn sensitive_is_an_upgrade(l: &dyn Ledger) {
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let now = at(2026, 3, 1);
    reserved(reserve(l, &[subj(1, false)], &ids, &[], R24, now).await);
    let o = reserved(reserve(l, &[subj(1, true), subj(2, true)], &ids, &[], R24, now).await);
    assert_eq!(
        (
            o[0].new_all,
            o[0].new_sensitive,
            o[0].all_after,
            o[0].sensitive_after
        ),
        (1, 2, 2, 2)
    );
    let o = reserved(reserve(l, &[subj(1, false), subj(1, true)], &ids, &[], R24, now).await);
    assert_eq!((o[0].new_all, o[0].new_sensitive), (0, 0));
}

async fn ceilings_are_all_or_nothing(l: &dyn Ledger) {
    let ids = l
        .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
        .await
        .unwrap();
    let now = at(2026, 5, 5);
    let ceil = |max| {
        [Ceiling {
            scope: ids[0],
            class: Class::All,
            max_after: max,
        }]
    };
    reserved(reserve(l, &plain(0..3), &ids, &ceil(4), R24, now).await);
    let o = reserve(l, &plain(2..5), &ids, &ceil(4), R24, now).await;
    assert_eq!(
        o,
        ReserveOutcome::Refused(Refusal {
            ceiling: ceil(4)[0],
            count_before: 3,
            new: 2
        })
    );
    // Nothing of the refused request was counted, in any scope.
    let p = l.probe(&plain(2..5), &ids, R24, now).await.unwrap();
    assert_eq!((p[0].new_all, p[0].all_after, p[1].new_all), (2, 5, 2));
    assert_eq!(l.counts(ids[1], R24, now).await.unwrap().all, 3);
    // Already counted subjects pass even at a ceiling they could not be newly counted under.
    reserved(reserve(l, &plain(0..3), &ids, &ceil(0), R24, now).await);
    let o = reserved(reserve(l, &plain(2..4), &ids, &ceil(4), R24, now).await);
    assert_eq!(o[0].all_after, 4);
    // A sensitive ceiling on the destination.
    let sc = [Ceiling {
        scope: ids[1],
        class: Class::Sensitive,
        max_after: 1,
    }];
    reserved(reserve(l, &[subj(0, true)], &ids, &sc, R24, now).await);
    match reserve(l, &[subj(1, true), subj(9, false)], &ids, &sc, R24, now).await {
        ReserveOutcome::Refused(r) => assert_eq!((r.count_before, r.new), (1, 1)),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        l.counts(ids[0], R24, now).await.unwrap(),
        ScopeCounts {
            all: 4,
            sensitive: 1
        }
    );
}

async fn approval_scope_is_shared(l: &dyn Ledger) {
    let s = [
        Scope::Entity,
        Scope::Destination("a".into()),
        Scope::Destination("b".into()),
        Scope::Approval("ap-1".into()),
        Scope::Exempt("hr".into()),
    ];
    let ids = l.register_scopes(&s).await.unwrap();
    let now = at(2026, 7, 1);
    reserved(reserve(l, &plain(0..10), &[ids[0], ids[1], ids[3]], &[], R24, now).await);
    let o = reserved(reserve(l, &plain(5..15), &[ids[0], ids[2], ids[3]], &[], R24, now).await);
    assert_eq!((o[1].new_all, o[2].new_all, o[2].all_after), (10, 5, 15));
    reserved(reserve(l, &plain(100..103), &[ids[4]], &[], R24, now).await);
    let mut c = Vec::new();
    for id in &ids {
        c.push(l.counts(*id, R24, now).await.unwrap().all);
    }
    assert_eq!(c, [15, 10, 10, 15, 3]);
}

async fn windows_follow_the_shanghai_calendar(l: &dyn Ledger) {
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let y25 = at(2025, 12, 31);
    reserved(
        reserve(
            l,
            &[subj(1, true), subj(2, false), subj(3, false)],
            &ids,
            &[],
            R22,
            y25,
        )
        .await,
    );
    // 2025-12-31 23:59:59 Shanghai is still 2025; one second later it is 2026.
    let midnight = at(2025, 12, 31) + Duration::from_secs(12 * 3600);
    assert_eq!(
        l.counts(ids[0], R24, midnight - Duration::from_secs(1))
            .await
            .unwrap()
            .all,
        3
    );
    assert_eq!(l.counts(ids[0], R24, midnight).await.unwrap().all, 0);
    assert_eq!(
        l.counts(ids[0], R22, midnight).await.unwrap(),
        ScopeCounts {
            all: 3,
            sensitive: 1
        }
    );
    // cac-2022 in 2026: subject 1 seen again (not new), subject 4 new.
    let y26 = at(2026, 2, 1);
    let o = reserved(reserve(l, &[subj(1, false), subj(4, false)], &ids, &[], R22, y26).await);
    assert_eq!(
        (o[0].new_all, o[0].all_after, o[0].sensitive_after),
        (1, 4, 1)
    );
    // cac-2024 in 2026 counts only 2026: subjects 1 and 4.
    assert_eq!(
        l.counts(ids[0], R24, y26).await.unwrap(),
        ScopeCounts {
            all: 2,
            sensitive: 0
        }
    );
    // A subject seen in both years counts once; in 2027 only those seen in 2026 remain.
    let y27 = at(2027, 1, 2);
    assert_eq!(
        l.counts(ids[0], R22, y27).await.unwrap(),
        ScopeCounts {
            all: 2,
            sensitive: 0
        }
    );
    let p = l.probe(&plain(1..5), &ids, R22, y27).await.unwrap();
    assert_eq!(p[0].new_all, 2);
    // Sensitive seen only in 2025: newly sensitive again under cac-2024 in 2026.
    let o = reserved(reserve(l, &[subj(1, true)], &ids, &[], R24, y26).await);
    assert_eq!((o[0].new_all, o[0].new_sensitive), (0, 1));
}

async fn monthly_tallies(l: &dyn Ledger) {
    let ids = l
        .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
        .await
        .unwrap();
    reserved(reserve(l, &plain(0..3), &ids, &[], R24, at(2026, 1, 31)).await);
    reserved(
        reserve(
            l,
            &[subj(2, true), subj(3, true)],
            &ids,
            &[],
            R24,
            at(2026, 2, 1),
        )
        .await,
    );
    let m = l.monthly().await.unwrap();
    let get = |s: &Scope, month| {
        m.iter()
            .find(|t| &t.scope == s && t.year == 2026 && t.month == month)
            .cloned()
    };
    let jan = get(&Scope::Destination("a".into()), 1).unwrap();
    let feb = get(&Scope::Entity, 2).unwrap();
    assert_eq!(
        (
            jan.new_all,
            jan.new_sensitive,
            feb.new_all,
            feb.new_sensitive
        ),
        (3, 0, 1, 2)
    );
    assert_eq!(m.len(), 4);
}

async fn race_exact_at_ceiling(make: &dyn Fn() -> Made) {
    // 64 tasks, 10,000 distinct subjects, a ceiling of 5,000: exactly 5,000 counted.
    let (l, _guard) = make();
    let ids = l
        .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
        .await
        .unwrap();
    let ceil = [Ceiling {
        scope: ids[0],
        class: Class::All,
        max_after: 5_000,
    }];
    let next = Arc::new(AtomicUsize::new(0));
    let won = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (l, ids, next, won) = (l.clone(), ids.clone(), next.clone(), won.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 10_000 {
                    break;
                }
                let s = [subj(i as u64, false)];
                if let ReserveOutcome::Reserved(o) =
                    reserve(&*l, &s, &ids, &ceil, R24, at(2026, 4, 4)).await
                {
                    won.fetch_add(o[0].new_all as usize, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(won.load(Ordering::Relaxed), 5_000);
    assert_eq!(
        l.counts(ids[0], R24, at(2026, 4, 4)).await.unwrap().all,
        5_000
    );
    assert_eq!(
        l.counts(ids[1], R24, at(2026, 4, 4)).await.unwrap().all,
        5_000
    );

    // Overlapping batches: the count equals the distinct subjects of accepted requests.
    let (l, _guard) = make();
    let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
    let ceil = [Ceiling {
        scope: ids[0],
        class: Class::All,
        max_after: 700,
    }];
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let (l, ids, accepted) = (l.clone(), ids.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..40 {
                let batch: Vec<u64> = (0..5)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % 1_000
                    })
                    .collect();
                let s: Vec<Subject> = batch.iter().map(|&i| subj(i, false)).collect();
                if let ReserveOutcome::Reserved(_) =
                    reserve(&*l, &s, &ids, &ceil, R24, at(2026, 4, 4)).await
                {
                    accepted.lock().unwrap().extend(batch);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = accepted.lock().unwrap().len() as u64;
    assert!(n <= 700);
    assert_eq!(l.counts(ids[0], R24, at(2026, 4, 4)).await.unwrap().all, n);
}

/// Reserves under alternatives; returns the outcome and the chosen alternative.
async fn reserve_alt(
    l: &dyn Ledger,
    subjects: &[Subject],
    scopes: &[ScopeId],
    alternatives: &[Alternative<'_>],
    now: SystemTime,
) -> (ReserveOutcome, Option<usize>) {
    let req = Reservation {
        subjects,
        scopes,
        ceilings: &[],
        alternatives,
        regime: R24,
        now,
    };
    let o = l.reserve(req).await.unwrap();
    let chosen = match &o {
        ReserveOutcome::Reserved(v) => req.chosen(v),
        ReserveOutcome::Refused(_) => None,
    };
    (o, chosen)
}

fn cap(scope: ScopeId, max_after: u64) -> Ceiling {
    Ceiling {
        scope,
        class: Class::All,
        max_after,
    }
}

async fn alternatives_choose_one_with_room(l: &dyn Ledger) {
    let s = [
        Scope::Entity,
        Scope::Destination("a".into()),
        Scope::Approval("SMALL".into()),
        Scope::Approval("BIG".into()),
    ];
    let ids = l.register_scopes(&s).await.unwrap();
    let (base, small, big) = (&ids[..2], ids[2], ids[3]);
    let now = at(2026, 5, 1);
    let small_cap = [cap(small, 5)];
    let big_cap = [cap(big, 100)];
    let alts = [
        Alternative {
            scope: Some(small),
            ceilings: &small_cap,
        },
        Alternative {
            scope: Some(big),
            ceilings: &big_cap,
        },
    ];
    let counts = |id| async move { l.counts(id, R24, now).await.unwrap().all };
    // The first with room is relied on, and only its volume counts the subjects.
    let (o, c) = reserve_alt(l, &plain(0..5), base, &alts, now).await;
    assert_eq!(c, Some(0));
    let o = reserved(o);
    assert_eq!((o.len(), o[2].scope, o[2].all_after), (3, small, 5));
    assert_eq!((counts(small).await, counts(big).await), (5, 0));
    // SMALL is full: the next subject relies on BIG.
    let (o, c) = reserve_alt(l, &plain(5..6), base, &alts, now).await;
    assert_eq!(c, Some(1));
    assert_eq!(reserved(o)[2].all_after, 1);
    assert_eq!((counts(small).await, counts(big).await), (5, 1));
    // A subject already counted under SMALL costs no volume there: SMALL again.
    let (_, c) = reserve_alt(l, &plain(0..1), base, &alts, now).await;
    assert_eq!(c, Some(0));
    // ... and one counted under BIG goes to BIG, even though SMALL comes first.
    let (_, c) = reserve_alt(l, &plain(5..6), base, &alts, now).await;
    assert_eq!(c, Some(1));
    // A mix that SMALL has no room for: BIG, counting both there.
    let (_, c) = reserve_alt(l, &[subj(0, false), subj(6, false)], base, &alts, now).await;
    assert_eq!(c, Some(1));
    assert_eq!((counts(small).await, counts(big).await), (5, 3));
    assert_eq!(counts(ids[0]).await, 7);
    // None with room: refused on a volume (the first alternative's own), nothing counted.
    let big_tight = [cap(big, 3)];
    let tight = [
        Alternative {
            scope: Some(small),
            ceilings: &small_cap,
        },
        Alternative {
            scope: Some(big),
            ceilings: &big_tight,
        },
    ];
    match reserve_alt(l, &plain(7..8), base, &tight, now).await.0 {
        ReserveOutcome::Refused(r) => {
            assert_eq!((r.ceiling, r.count_before, r.new), (small_cap[0], 5, 1))
        }
        o => panic!("expected a refusal, got {o:?}"),
    }
    assert_eq!(counts(ids[0]).await, 7);
    // An entity ceiling refuses the way without an approval; the volume refusal is reported.
    let entity_cap = [cap(ids[0], 7)];
    let mixed = [
        Alternative {
            scope: None,
            ceilings: &entity_cap,
        },
        tight[1],
    ];
    match reserve_alt(l, &plain(7..8), base, &mixed, now).await.0 {
        ReserveOutcome::Refused(r) => assert_eq!(r.ceiling, big_tight[0]),
        o => panic!("expected a refusal, got {o:?}"),
    }
    match reserve_alt(l, &plain(7..8), base, &mixed[..1], now).await.0 {
        ReserveOutcome::Refused(r) => assert_eq!(r.ceiling, entity_cap[0]),
        o => panic!("expected a refusal, got {o:?}"),
    }
    // A way without an approval that fits is taken first, and counts in no approval.
    let free = [
        Alternative {
            scope: None,
            ceilings: &[],
        },
        alts[1],
    ];
    let (o, c) = reserve_alt(l, &plain(8..9), base, &free, now).await;
    assert_eq!((c, reserved(o).len()), (Some(0), 2));
    assert_eq!(
        (counts(small).await, counts(big).await, counts(ids[0]).await),
        (5, 3, 8)
    );
    // A common ceiling refuses whatever the alternatives.
    let req = Reservation {
        subjects: &plain(9..10),
        scopes: base,
        ceilings: &[cap(ids[0], 8)],
        alternatives: &alts,
        regime: R24,
        now,
    };
    assert!(
        matches!(l.reserve(req).await.unwrap(), ReserveOutcome::Refused(r) if r.ceiling.scope == ids[0])
    );
    assert_eq!(counts(ids[0]).await, 8);
}

async fn race_across_alternatives(make: &dyn Fn() -> Made) {
    // 32 tasks, 2,000 distinct subjects, volumes 300 and 500: exactly 800 counted, each
    // approval exactly full, whatever the interleaving.
    let (l, _guard) = make();
    let s = [
        Scope::Entity,
        Scope::Approval("A".into()),
        Scope::Approval("B".into()),
    ];
    let ids = l.register_scopes(&s).await.unwrap();
    let now = at(2026, 4, 4);
    let next = Arc::new(AtomicUsize::new(0));
    let won = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (l, ids, next, won) = (l.clone(), ids.clone(), next.clone(), won.clone());
        tasks.push(tokio::spawn(async move {
            let ca = [cap(ids[1], 300)];
            let cb = [cap(ids[2], 500)];
            let alts = [
                Alternative {
                    scope: Some(ids[1]),
                    ceilings: &ca,
                },
                Alternative {
                    scope: Some(ids[2]),
                    ceilings: &cb,
                },
            ];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2_000 {
                    break;
                }
                let s = [subj(i as u64, false)];
                if let (ReserveOutcome::Reserved(o), _) =
                    reserve_alt(&*l, &s, &ids[..1], &alts, now).await
                {
                    won.fetch_add(o[0].new_all as usize, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(won.load(Ordering::Relaxed), 800);
    let mut c = Vec::new();
    for id in &ids {
        c.push(l.counts(*id, R24, now).await.unwrap().all);
    }
    assert_eq!(c, [800, 300, 500]);
}

type Check =
    for<'a> fn(&'a dyn Ledger) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Runs every check against fresh backends from `make`.
pub(crate) async fn run_all(make: &dyn Fn() -> Made) {
    let checks: [Check; 7] = [
        |l| Box::pin(counts_each_subject_once(l)),
        |l| Box::pin(alternatives_choose_one_with_room(l)),
        |l| Box::pin(sensitive_is_an_upgrade(l)),
        |l| Box::pin(ceilings_are_all_or_nothing(l)),
        |l| Box::pin(approval_scope_is_shared(l)),
        |l| Box::pin(windows_follow_the_shanghai_calendar(l)),
        |l| Box::pin(monthly_tallies(l)),
    ];
    for check in checks {
        let (l, _guard) = make();
        check(&*l).await;
    }
    race_exact_at_ceiling(make).await;
    race_across_alternatives(make).await;
}
