//! Unit tests of the ledger: the shared suite against the memory and local backends, then
//! the local backend's restart, torn-tail, compaction and bad-disk behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::suite::{self, at, plain, reserve, subj, Made};
use super::*;
use crate::model::Regime;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn suite_memory() {
    runtime().block_on(suite::run_all(&|| -> Made {
        (Arc::new(MemoryLedger::new()), Box::new(()))
    }));
}

#[test]
fn suite_local() {
    runtime().block_on(suite::run_all(&|| -> Made {
        let dir = tempfile::tempdir().unwrap();
        let l = LocalLedger::open(&dir.path().join("ledger"), LocalOptions::default()).unwrap();
        (Arc::new(l), Box::new(dir))
    }));
}

const R24: Regime = Regime::Cac2024;

fn open(dir: &std::path::Path) -> LocalLedger {
    LocalLedger::open(dir, LocalOptions::default()).unwrap()
}

fn segments(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    v.sort();
    v
}

#[test]
fn restart_keeps_scopes_counts_and_tallies() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ids, counts, monthly) = rt.block_on(async {
        let l = open(&dir);
        let ids = l
            .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
            .await
            .unwrap();
        reserve(&l, &plain(0..100), &ids, &[], R24, at(2026, 1, 5)).await;
        reserve(
            &l,
            &[subj(5, true), subj(500, true)],
            &ids,
            &[],
            R24,
            at(2026, 2, 5),
        )
        .await;
        let c = l.counts(ids[1], R24, at(2026, 2, 5)).await.unwrap();
        (ids, c, l.monthly().await.unwrap())
    });
    assert_eq!(
        counts,
        ScopeCounts {
            all: 101,
            sensitive: 2
        }
    );
    rt.block_on(async {
        let l = open(&dir);
        assert_eq!(l.recovery().bytes_cut, 0);
        // Registration order may differ after a restart: ids stay those on disk.
        let again = l
            .register_scopes(&[Scope::Destination("a".into()), Scope::Entity])
            .await
            .unwrap();
        assert_eq!(again, [ids[1], ids[0]]);
        assert_eq!(l.counts(ids[1], R24, at(2026, 2, 5)).await.unwrap(), counts);
        assert_eq!(l.monthly().await.unwrap(), monthly);
        let p = l
            .probe(&plain(99..101), &ids, R24, at(2026, 2, 5))
            .await
            .unwrap();
        assert_eq!(p[0].new_all, 1);
    });
}

#[test]
fn torn_or_corrupt_tail_is_cut_and_logged() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let ids = rt.block_on(async {
        let l = open(&dir);
        let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
        reserve(&l, &plain(0..10), &ids, &[], R24, at(2026, 1, 5)).await;
        reserve(&l, &plain(10..20), &ids, &[], R24, at(2026, 1, 5)).await;
        ids
    });
    let seg = dir.join(segments(&dir).last().unwrap());
    let whole = std::fs::read(&seg).unwrap();
    // The last frame (10 subjects × 17 bytes + header) loses its final 3 bytes: a torn write.
    std::fs::write(&seg, &whole[..whole.len() - 3]).unwrap();
    rt.block_on(async {
        let l = open(&dir);
        let r = l.recovery();
        assert!(r.bytes_cut > 170, "{r:?}");
        assert_eq!(l.counts(ids[0], R24, at(2026, 1, 5)).await.unwrap().all, 10);
        reserve(&l, &plain(30..35), &ids, &[], R24, at(2026, 1, 5)).await;
    });
    // A flipped bit in the last frame, followed by garbage.
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    bytes.extend_from_slice(&[0xAB; 37]);
    std::fs::write(&seg, &bytes).unwrap();
    rt.block_on(async {
        let l = open(&dir);
        assert!(l.recovery().bytes_cut > 37);
        assert_eq!(l.counts(ids[0], R24, at(2026, 1, 5)).await.unwrap().all, 10);
    });
    rt.block_on(async {
        let l = open(&dir);
        assert_eq!(l.recovery().bytes_cut, 0);
    });
}

#[test]
fn compaction_bounds_the_log_and_prunes_old_years() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ids, before) = rt.block_on(async {
        let l = Arc::new(open(&dir));
        let ids = l
            .register_scopes(&[Scope::Entity, Scope::Destination("a".into())])
            .await
            .unwrap();
        reserve(&*l, &plain(0..50), &ids, &[], R24, at(2024, 6, 1)).await;
        reserve(&*l, &plain(40..100), &ids, &[], R24, at(2025, 6, 1)).await;
        // Reservations keep going while snapshots are taken.
        let writer = {
            let (l, ids) = (l.clone(), ids.clone());
            tokio::spawn(async move {
                for i in 0..200u64 {
                    let s = [subj(1_000 + i, i % 3 == 0), subj(i % 50, false)];
                    reserve(&*l, &s, &ids, &[], R24, at(2026, 3, 1)).await;
                }
            })
        };
        for _ in 0..5 {
            let l = l.clone();
            tokio::task::spawn_blocking(move || l.compact(at(2026, 3, 1)))
                .await
                .unwrap()
                .unwrap();
        }
        writer.await.unwrap();
        let before: Vec<_> = [Regime::Cac2022, R24]
            .into_iter()
            .map(|r| {
                (
                    l.counts(ids[0], r, at(2026, 3, 1)),
                    l.counts(ids[1], r, at(2026, 3, 1)),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (a, b) in before {
            out.push((a.await.unwrap(), b.await.unwrap()));
        }
        // Subjects 50..100 (2025) and 0..50 re-seen in 2026 stay; nothing of 2024 alone remains.
        assert_eq!(out[0].0.all, 300);
        assert_eq!(l.entries(), 600);
        (ids, out)
    });
    assert!(dir.join("snapshot.bin").exists());
    assert_eq!(segments(&dir).len(), 1, "{:?}", segments(&dir));
    rt.block_on(async {
        let l = open(&dir);
        let mut out = Vec::new();
        for r in [Regime::Cac2022, R24] {
            out.push((
                l.counts(ids[0], r, at(2026, 3, 1)).await.unwrap(),
                l.counts(ids[1], r, at(2026, 3, 1)).await.unwrap(),
            ));
        }
        assert_eq!(out, before);
        let m = l.monthly().await.unwrap();
        assert_eq!(
            m.iter()
                .filter(|t| t.scope == Scope::Entity)
                .map(|t| t.new_all)
                .sum::<u64>(),
            50 + 60 + 50 + 200
        );
    });
}

#[test]
fn automatic_snapshots_after_log_bytes() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let opts = LocalOptions {
        snapshot_after_bytes: 4_096,
        ..LocalOptions::default()
    };
    rt.block_on(async {
        let l = LocalLedger::open(&dir, opts.clone()).unwrap();
        let ids = l.register_scopes(&[Scope::Entity]).await.unwrap();
        for i in 0..40 {
            reserve(
                &l,
                &plain(i * 20..i * 20 + 20),
                &ids,
                &[],
                R24,
                suite::at(2026, 1, 1),
            )
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    assert!(dir.join("snapshot.bin").exists());
    let l = LocalLedger::open(&dir, opts).unwrap();
    assert!(l.recovery().snapshot_seq > 0);
    let c = rt
        .block_on(l.counts(ScopeId(0), R24, at(2026, 1, 1)))
        .unwrap();
    assert_eq!(c.all, 800);
}

#[test]
fn unusable_directory_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = LocalLedger::open(&file.join("ledger"), LocalOptions::default()).unwrap_err();
    assert!(matches!(e, LedgerError::Storage(_)), "{e}");
}

/// A real full disk: a 256 KiB tmpfs (needs root and `mount`; skipped otherwise), unmounted
/// by a guard even if the test fails.
#[test]
fn full_disk_fails_reservations_then_recovers() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(tmp.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    let _mount = Mount(tmp.path().to_owned());
    let dir = tmp.path().join("ledger");
    let rt = runtime();
    let l = open(&dir);
    let ids = rt.block_on(l.register_scopes(&[Scope::Entity])).unwrap();
    // Fill the disk.
    let filler = tmp.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.sync_all();
    }
    let now = at(2026, 6, 1);
    let mut failed = None;
    for i in 0..2_000u64 {
        let s = plain(i * 100..i * 100 + 100);
        match rt.block_on(l.reserve(Reservation {
            subjects: &s,
            scopes: &ids,
            ceilings: &[],
            regime: R24,
            now,
        })) {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e, LedgerError::Storage(_)), "{e}");
                failed = Some(i);
                break;
            }
        }
    }
    let failed = failed.expect("a full disk must fail a reservation");
    // The failed request's subjects stay counted in memory (over-counting, the safe side), and
    // a request that sees them cannot succeed before they are durable.
    let counted = rt.block_on(l.counts(ids[0], R24, now)).unwrap().all;
    assert_eq!(counted, (failed + 1) * 100);
    let again = plain(failed * 100..failed * 100 + 1);
    let r = rt.block_on(l.reserve(Reservation {
        subjects: &again,
        scopes: &ids,
        ceilings: &[],
        regime: R24,
        now,
    }));
    assert!(matches!(r, Err(LedgerError::Storage(_))), "{r:?}");
    // Space comes back: the writer retries the kept bytes and reservations succeed again.
    std::fs::remove_file(&filler).unwrap();
    let more = plain(1_000_000..1_000_010);
    let mut ok = false;
    for _ in 0..100 {
        if rt
            .block_on(l.reserve(Reservation {
                subjects: &more,
                scopes: &ids,
                ceilings: &[],
                regime: R24,
                now,
            }))
            .is_ok()
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ok);
    drop(l);
    let l = open(&dir);
    assert_eq!(
        rt.block_on(l.counts(ids[0], R24, now)).unwrap().all,
        counted + 10
    );
}
