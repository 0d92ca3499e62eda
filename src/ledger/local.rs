//! The local durable backend (the embedded default, in `<gate.data_dir>/ledger/`): the
//! in-memory index (`index.rs`) plus a write-ahead log of checksummed frames (`wal.rs`) written by
//! one writer thread with group commit, and snapshots (`snapshot.rs`) that keep restart
//! bounded.
//!
//! Commit order of a reservation: shard locks → ceiling check, counts, sequence number and log
//! frame appended to the journal buffer (core mutex) → tables → locks released → the caller
//! waits until the writer has written and `fdatasync`ed a batch that contains its frame. Only
//! then does `reserve` return. A request whose subjects are already counted waits only if
//! frames are still in flight (it may have seen a subject whose frame is not yet durable).
//!
//! A failed write (disk full, read-only, permission) fails every waiter of that batch with
//! [`LedgerError::Storage`]; the subjects stay counted in memory (over-counting is the safe
//! side: the data was not forwarded, so at worst a later request is judged against a count
//! that is too high) and the writer keeps the bytes and retries them, so memory and disk agree
//! again as soon as the disk recovers. While writes fail, changes that would add frames are
//! refused before they count anything (the journal's `refuse`), so the kept bytes are only
//! those of the batch in flight when the failure began: memory stays bounded however long the
//! disk stays full.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::api::{
    Ledger, LedgerError, LedgerFuture, MonthlyTally, Reservation, ReserveOutcome, Scope,
    ScopeCounts, ScopeId, ScopeOutcome, Subject,
};
use super::index::Index;
use super::snapshot;
use super::table::year_byte;
use super::wal::{self, Decoded, Record, SEGMENT_MAGIC};
use crate::model::{shanghai_date, Clock, Regime, SystemClock};

/// Options of the local backend.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Take a snapshot (and drop older log segments) after this many log bytes (default 16 MiB,
    /// about 1 M subject changes: bounds the log replayed at restart).
    pub snapshot_after_bytes: u64,
    /// The clock used to prune subjects that left every window when snapshotting.
    pub clock: Arc<dyn Clock>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            snapshot_after_bytes: 16 << 20,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What recovery found, for the startup log and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sequence number covered by the snapshot loaded (0: none).
    pub snapshot_seq: u64,
    /// Log frames replayed after the snapshot.
    pub frames_replayed: u64,
    /// Bytes cut from a torn or corrupt log tail.
    pub bytes_cut: u64,
}

#[derive(Debug, Clone, Default)]
struct Status {
    durable: u64,
    failed_through: u64,
    error: Option<Arc<str>>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    index: Index,
    dir: PathBuf,
    opts: LocalOptions,
    status: watch::Sender<Status>,
    durable: AtomicU64,
    compacting: AtomicBool,
    /// Set when the ledger is dropped: no new background snapshot starts.
    closing: AtomicBool,
    /// The background snapshot thread, joined on drop.
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    rotated: Mutex<Option<mpsc::Sender<Result<u64, String>>>>,
}

/// The local durable ledger.
#[derive(Debug)]
pub struct LocalLedger {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

fn storage(what: &str, e: std::io::Error) -> LedgerError {
    LedgerError::Storage(format!("{what}: {e}"))
}

fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| storage("list ledger dir", e))? {
        let e = e.map_err(|e| storage("list ledger dir", e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(seq) = seq.parse::<u64>() {
                v.push((seq, e.path()));
            }
        }
    }
    v.sort();
    Ok(v)
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage("fsync ledger dir", e))
}

fn new_segment(dir: &Path, first_seq: u64) -> Result<File, LedgerError> {
    let path = dir.join(segment_name(first_seq));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| storage("create log segment", e))?;
    f.write_all_at(SEGMENT_MAGIC, 0)
        .map_err(|e| storage("write log segment", e))?;
    f.sync_all().map_err(|e| storage("fsync log segment", e))?;
    sync_dir(dir)?;
    Ok(f)
}

impl LocalLedger {
    /// Opens (creating if needed) the ledger in `dir`, recovering its state: snapshot, then the
    /// log; a torn or corrupt tail of the last segment is cut and logged.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when the directory cannot be created, read or written;
    /// [`LedgerError::Corrupt`] when the snapshot or a non-final segment is damaged.
    pub fn open(dir: &Path, opts: LocalOptions) -> Result<Self, LedgerError> {
        fs::create_dir_all(dir).map_err(|e| storage("create ledger dir", e))?;
        let index = Index::new(true);
        let mut report = RecoveryReport {
            snapshot_seq: snapshot::load(dir, &index)?,
            ..Default::default()
        };
        let mut last_seq = report.snapshot_seq;
        let segs = segments(dir)?;
        let mut tail: Option<(File, u64, u64)> = None; // (file, end offset, bytes in segment)
        for (n, (first, path)) in segs.iter().enumerate() {
            let is_last = n + 1 == segs.len();
            let bytes = fs::read(path).map_err(|e| storage("read log segment", e))?;
            let mut pos = SEGMENT_MAGIC.len();
            let good_magic = bytes.len() >= pos && &bytes[..pos] == SEGMENT_MAGIC;
            if !good_magic && !is_last {
                return Err(LedgerError::Corrupt(format!("log segment {first} header")));
            }
            if good_magic {
                loop {
                    match wal::decode(&bytes, pos) {
                        Decoded::Frame(rec, next) => {
                            let seq = rec.seq();
                            match rec {
                                Record::Scope { id, name, .. } => {
                                    let scope = Scope::from_stored_name(name).ok_or_else(|| {
                                        LedgerError::Corrupt("log scope name".into())
                                    })?;
                                    index.restore_scope(id, scope)?;
                                }
                                Record::Reserve {
                                    year,
                                    month,
                                    scopes,
                                    subjects,
                                    ..
                                } => {
                                    if seq > report.snapshot_seq {
                                        index.restore_reserve(
                                            (year, month),
                                            &scopes,
                                            subjects,
                                            true,
                                        )?;
                                        report.frames_replayed += 1;
                                    }
                                }
                            }
                            last_seq = last_seq.max(seq);
                            pos = next;
                        }
                        Decoded::End => break,
                        Decoded::Bad if is_last => break,
                        Decoded::Bad => {
                            return Err(LedgerError::Corrupt(format!(
                                "log segment {first} at byte {pos}"
                            )));
                        }
                    }
                }
            }
            if is_last {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| storage("open log segment", e))?;
                if !good_magic {
                    pos = SEGMENT_MAGIC.len();
                    f.write_all_at(SEGMENT_MAGIC, 0)
                        .map_err(|e| storage("write log segment", e))?;
                }
                let cut = (bytes.len() as u64).saturating_sub(pos as u64);
                if cut > 0 || !good_magic {
                    f.set_len(pos as u64)
                        .map_err(|e| storage("cut log tail", e))?;
                    f.sync_all().map_err(|e| storage("fsync log segment", e))?;
                    report.bytes_cut = cut;
                    tracing::warn!(
                        segment = first,
                        bytes_cut = cut,
                        "ledger log: torn or corrupt tail cut"
                    );
                }
                tail = Some((f, pos as u64, pos as u64));
            }
        }
        index.restore_seq(last_seq);
        index.recount();
        let (file, offset, seg_bytes) = match tail {
            Some(t) => t,
            None => (
                new_segment(dir, last_seq + 1)?,
                SEGMENT_MAGIC.len() as u64,
                0,
            ),
        };
        let (status, _) = watch::channel(Status {
            durable: last_seq,
            ..Status::default()
        });
        let shared = Arc::new(Shared {
            index,
            dir: dir.to_owned(),
            opts,
            status,
            durable: AtomicU64::new(last_seq),
            compacting: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            snapshotter: Mutex::new(None),
            rotated: Mutex::new(None),
        });
        let w = Writer {
            shared: shared.clone(),
            file,
            offset,
            pending: Vec::new(),
            since_snapshot: seg_bytes,
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || w.run())
            .map_err(|e| storage("spawn ledger writer", e))?;
        tracing::info!(
            snapshot_seq = report.snapshot_seq,
            frames_replayed = report.frames_replayed,
            bytes_cut = report.bytes_cut,
            "ledger recovered"
        );
        Ok(LocalLedger {
            shared,
            writer: Mutex::new(Some(handle)),
            recovery: report,
        })
    }

    /// The in-memory index (for `ledger export`).
    pub(crate) fn index(&self) -> &Index {
        &self.shared.index
    }

    /// Name of the ledger's directory inside `gate.data_dir`.
    pub const DIR_NAME: &'static str = "ledger";

    /// Opens the ledger in `<data_dir>/ledger` (see [`LocalLedger::open`]).
    ///
    /// # Errors
    /// As [`LocalLedger::open`].
    pub fn open_in_data_dir(data_dir: &Path, opts: LocalOptions) -> Result<Self, LedgerError> {
        Self::open(&data_dir.join(Self::DIR_NAME), opts)
    }

    /// What recovery found when this ledger was opened.
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery
    }

    /// Number of (subject, scope) entries held in memory.
    pub fn entries(&self) -> usize {
        self.shared.index.entries()
    }

    /// Heap bytes held by the in-memory index (tables and counters).
    pub fn heap_bytes(&self) -> usize {
        self.shared.index.heap_bytes()
    }

    /// Writes a snapshot and drops the log segments it covers; subjects last counted before
    /// the previous year (outside every window at `now`) are pruned.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when the snapshot cannot be written.
    pub fn compact(&self, now: SystemTime) -> Result<(), LedgerError> {
        compact(&self.shared, now)
    }

    /// Waits until `seq` is durable.
    async fn durable(shared: &Shared, seq: u64) -> Result<(), LedgerError> {
        if seq == 0 || shared.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let mut rx = shared.status.subscribe();
        let s = rx
            .wait_for(|s| s.durable >= seq || s.failed_through >= seq || s.closed)
            .await
            .map_err(|_| LedgerError::Unavailable("ledger writer stopped".into()))?
            .clone();
        if s.durable >= seq {
            Ok(())
        } else if s.closed && s.failed_through < seq {
            Err(LedgerError::Unavailable("ledger shut down".into()))
        } else {
            Err(LedgerError::Storage(
                s.error.as_deref().unwrap_or("write failed").to_owned(),
            ))
        }
    }
}

fn compact(shared: &Shared, now: SystemTime) -> Result<(), LedgerError> {
    if shared.compacting.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let r = compact_inner(shared, now);
    shared.compacting.store(false, Ordering::Release);
    r
}

fn compact_inner(shared: &Shared, now: SystemTime) -> Result<(), LedgerError> {
    // 1. The writer starts a new segment; every older segment holds only frames < first.
    let (tx, rx) = mpsc::channel();
    *shared
        .rotated
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(tx);
    {
        let mut core = shared.index.lock_core();
        if let Some(j) = core.journal.as_mut() {
            j.rotate = true;
        }
    }
    shared.index.journal_ready.notify_all();
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| LedgerError::Unavailable("ledger writer did not rotate".into()))?
        .map_err(LedgerError::Storage)?;
    // 2. The cut: sequence, scopes and tallies read together.
    let (seq, scopes, tallies) = {
        let core = shared.index.lock_core();
        let tallies: Vec<_> = core.tallies.iter().map(|(k, v)| (*k, *v)).collect();
        (core.seq, core.scopes.clone(), tallies)
    };
    let min_year = year_byte(shanghai_date(now).year() - 1);
    let entries = snapshot::write(&shared.dir, &shared.index, seq, &scopes, &tallies, min_year)?;
    // 3. Older segments are covered by the snapshot.
    for (s, path) in segments(&shared.dir)? {
        if s < first {
            fs::remove_file(&path).map_err(|e| storage("remove old log segment", e))?;
        }
    }
    tracing::info!(seq, entries, "ledger snapshot written");
    Ok(())
}

impl Drop for LocalLedger {
    fn drop(&mut self) {
        // A running snapshot needs the writer (to rotate): let it finish first.
        self.shared.closing.store(true, Ordering::Release);
        let snap = self
            .shared
            .snapshotter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = snap {
            let _ = h.join();
        }
        {
            let mut core = self.shared.index.lock_core();
            if let Some(j) = core.journal.as_mut() {
                j.shutdown = true;
            }
        }
        self.shared.index.journal_ready.notify_all();
        if let Some(h) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = h.join();
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    offset: u64,
    /// Bytes taken from the journal that are not yet durable (kept across failures).
    pending: Vec<u8>,
    since_snapshot: u64,
}

impl Writer {
    fn run(mut self) {
        let mut pending_seq = 0u64;
        let mut failing = false;
        loop {
            self.maybe_snapshot();
            let (rotate, shutdown) = {
                let mut core = self.shared.index.lock_core();
                loop {
                    let Some(j) = core.journal.as_mut() else {
                        return;
                    };
                    if !j.buf.is_empty() || j.rotate || j.shutdown {
                        break;
                    }
                    if failing {
                        // Retry the kept bytes after a pause even if nothing new arrives.
                        let (c, _) = self
                            .shared
                            .index
                            .journal_ready
                            .wait_timeout(core, Duration::from_millis(50))
                            .unwrap_or_else(PoisonError::into_inner);
                        core = c;
                        break;
                    }
                    core = self
                        .shared
                        .index
                        .journal_ready
                        .wait(core)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                match core.journal.as_mut() {
                    Some(j) => {
                        if !j.buf.is_empty() {
                            if self.pending.is_empty() {
                                std::mem::swap(&mut self.pending, &mut j.buf);
                            } else {
                                self.pending.append(&mut j.buf);
                            }
                            pending_seq = j.last_seq;
                        }
                        (std::mem::take(&mut j.rotate), j.shutdown)
                    }
                    None => return,
                }
            };
            if !self.pending.is_empty() {
                match self.flush() {
                    Ok(()) => {
                        if failing {
                            tracing::info!("ledger log writes recovered");
                            self.refuse(None);
                        }
                        failing = false;
                        self.shared.durable.store(pending_seq, Ordering::Release);
                        self.shared.status.send_modify(|s| s.durable = pending_seq);
                    }
                    Err(e) => {
                        // Logged once per outage, not at every 50 ms retry.
                        if !failing {
                            tracing::error!(error = %e, "ledger log write failed; retrying");
                        }
                        failing = true;
                        let msg: Arc<str> = Arc::from(e.to_string());
                        self.refuse(Some(msg.clone()));
                        self.shared.status.send_modify(|s| {
                            s.failed_through = pending_seq;
                            s.error = Some(msg);
                        });
                    }
                }
            }
            if rotate {
                let r = self.rotate(pending_seq.max(self.shared.durable.load(Ordering::Acquire)));
                if let Some(tx) = self
                    .shared
                    .rotated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    let _ = tx.send(r);
                }
            }
            if shutdown {
                self.shared.status.send_modify(|s| s.closed = true);
                let tx = self
                    .shared
                    .rotated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(tx) = tx {
                    let _ = tx.send(Err("ledger shutting down".into()));
                }
                return;
            }
        }
    }

    /// Sets (or clears) the journal's refusal of new frames.
    fn refuse(&self, error: Option<Arc<str>>) {
        let mut core = self.shared.index.lock_core();
        if let Some(j) = core.journal.as_mut() {
            j.refuse = error;
        }
    }

    /// Starts a background snapshot once enough log has been written since the last one
    /// (also right after recovery, when the replayed segment was already long).
    fn maybe_snapshot(&mut self) {
        if self.since_snapshot < self.shared.opts.snapshot_after_bytes
            || self.shared.compacting.load(Ordering::Acquire)
            || self.shared.closing.load(Ordering::Acquire)
        {
            return;
        }
        self.since_snapshot = 0;
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ledger-snapshot".into())
            .spawn(move || {
                if let Err(e) = compact(&shared, shared.opts.clock.now()) {
                    tracing::error!(error = %e, "ledger snapshot failed");
                }
            });
        match spawned {
            Ok(h) => {
                *self
                    .shared
                    .snapshotter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(h)
            }
            Err(e) => tracing::error!(error = %e, "cannot start a ledger snapshot"),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Positional write: a partial write after a failure is simply overwritten on retry.
        self.file.write_all_at(&self.pending, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.pending.len() as u64;
        self.since_snapshot += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn rotate(&mut self, last_seq: u64) -> Result<u64, String> {
        if !self.pending.is_empty() {
            return Err("log has unwritten frames".into());
        }
        let first = last_seq + 1;
        let f = new_segment(&self.shared.dir, first).map_err(|e| e.to_string())?;
        self.file = f;
        self.offset = SEGMENT_MAGIC.len() as u64;
        Ok(first)
    }
}

impl Ledger for LocalLedger {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn register_scopes<'a>(&'a self, scopes: &'a [Scope]) -> LedgerFuture<'a, Vec<ScopeId>> {
        Box::pin(async move {
            let (ids, seq) = self.shared.index.register(scopes)?;
            Self::durable(&self.shared, seq).await?;
            Ok(ids)
        })
    }

    fn reserve<'a>(&'a self, req: Reservation<'a>) -> LedgerFuture<'a, ReserveOutcome> {
        Box::pin(async move {
            let (outcome, seq) = self.shared.index.reserve(&req)?;
            Self::durable(&self.shared, seq).await?;
            Ok(outcome)
        })
    }

    fn probe<'a>(
        &'a self,
        subjects: &'a [Subject],
        scopes: &'a [ScopeId],
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'a, Vec<ScopeOutcome>> {
        Box::pin(async move { self.shared.index.probe(subjects, scopes, regime, now) })
    }

    fn counts(
        &self,
        scope: ScopeId,
        regime: Regime,
        now: SystemTime,
    ) -> LedgerFuture<'_, ScopeCounts> {
        Box::pin(async move { self.shared.index.counts(scope, regime, now) })
    }

    fn monthly(&self) -> LedgerFuture<'_, Vec<MonthlyTally>> {
        Box::pin(async move { Ok(self.shared.index.monthly()) })
    }

    fn is_ready(&self) -> bool {
        let s = self.shared.status.borrow();
        !s.closed && s.failed_through <= s.durable
    }
}
