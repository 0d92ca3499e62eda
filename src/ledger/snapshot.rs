//! Snapshots of the local backend: the scope registry, the monthly tallies and every table
//! entry, written to a temporary file, fsynced and renamed over `snapshot.bin`, so that restart
//! reads one sequential file plus the short log written since.
//!
//! Format (integers little-endian): `TGLSNP01` · `seq u64` (every record up to it is included)
//! · `n_scopes u32` · (`id u32 · len u16 · name`)× · `n_tallies u32` · (`scope u32 · year i32 ·
//! month u8 · new_all u64 · new_sensitive u64`)× · for each of the 256 shards: `n_tables u32` ·
//! (`scope u32 · count u32` · (`key [u8;16] · last_year u8 · last_sensitive_year u8`)×count)×
//! · `crc32 u32` of everything before it.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::api::{LedgerError, Scope};
use super::index::{Index, Tally, TallyKey, SHARDS};
use super::table::{Table, YearByte, Years};

const MAGIC: &[u8; 8] = b"TGLSNP01";
/// File name of the snapshot inside the ledger directory.
pub(crate) const FILE: &str = "snapshot.bin";
const TMP: &str = "snapshot.tmp";

struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

fn storage(what: &str, e: std::io::Error) -> LedgerError {
    LedgerError::Storage(format!("{what}: {e}"))
}

/// Writes a snapshot of `index` covering every record up to `seq` (the caller read `seq`,
/// `scopes` and `tallies` together under the core mutex, after the log was rotated).
/// Subjects last counted before `min_year` are pruned from memory and left out.
pub(crate) fn write(
    dir: &Path,
    index: &Index,
    seq: u64,
    scopes: &[Scope],
    tallies: &[(TallyKey, Tally)],
    min_year: YearByte,
) -> Result<u64, LedgerError> {
    let tmp = dir.join(TMP);
    let file = File::create(&tmp).map_err(|e| storage("create snapshot", e))?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let io = |e| storage("write snapshot", e);
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&seq.to_le_bytes()).map_err(io)?;
    w.write_all(&(scopes.len() as u32).to_le_bytes())
        .map_err(io)?;
    for (id, s) in scopes.iter().enumerate() {
        let name = s.stored_name();
        w.write_all(&(id as u32).to_le_bytes()).map_err(io)?;
        w.write_all(&(name.len() as u16).to_le_bytes())
            .map_err(io)?;
        w.write_all(name.as_bytes()).map_err(io)?;
    }
    w.write_all(&(tallies.len() as u32).to_le_bytes())
        .map_err(io)?;
    for &((scope, year, month), (all, sens)) in tallies {
        w.write_all(&scope.to_le_bytes()).map_err(io)?;
        w.write_all(&year.to_le_bytes()).map_err(io)?;
        w.write_all(&[month]).map_err(io)?;
        w.write_all(&all.to_le_bytes()).map_err(io)?;
        w.write_all(&sens.to_le_bytes()).map_err(io)?;
    }
    let mut entries = 0u64;
    index.for_each_shard(|_, shard| {
        index.prune_shard(shard, min_year);
        let live = shard.tables().filter(|(_, t)| t.len() > 0).count();
        w.write_all(&(live as u32).to_le_bytes()).map_err(io)?;
        for (scope, t) in shard.tables().filter(|(_, t)| t.len() > 0) {
            w.write_all(&(scope as u32).to_le_bytes()).map_err(io)?;
            w.write_all(&(t.len() as u32).to_le_bytes()).map_err(io)?;
            for (k, y) in t.iter() {
                w.write_all(k).map_err(io)?;
                w.write_all(&[y.all, y.sensitive]).map_err(io)?;
            }
            entries += t.len() as u64;
        }
        Ok(())
    })?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io)?;
    let file = inner
        .into_inner()
        .map_err(|e| storage("write snapshot", e.into_error()))?;
    file.sync_all().map_err(|e| storage("fsync snapshot", e))?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE)).map_err(|e| storage("rename snapshot", e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage("fsync ledger dir", e))?;
    Ok(entries)
}

fn read_arr<const N: usize>(r: &mut impl Read) -> Result<[u8; N], LedgerError> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)
        .map_err(|e| LedgerError::Corrupt(format!("snapshot truncated: {e}")))?;
    Ok(b)
}

fn u32_of(r: &mut impl Read) -> Result<u32, LedgerError> {
    Ok(u32::from_le_bytes(read_arr(r)?))
}

fn u64_of(r: &mut impl Read) -> Result<u64, LedgerError> {
    Ok(u64::from_le_bytes(read_arr(r)?))
}

/// Loads `snapshot.bin` into an empty `index`; returns the sequence it covers (0 if there is
/// no snapshot).
///
/// # Errors
/// [`LedgerError::Corrupt`] when the snapshot is truncated or its checksum fails (it was
/// renamed into place only after an fsync, so this is not a torn write but damage).
pub(crate) fn load(dir: &Path, index: &Index) -> Result<u64, LedgerError> {
    let file = match File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(storage("open snapshot", e)),
    };
    let mut r = Crc {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    if &read_arr::<8>(&mut r)? != MAGIC {
        return Err(LedgerError::Corrupt("snapshot magic".into()));
    }
    let seq = u64_of(&mut r)?;
    for _ in 0..u32_of(&mut r)? {
        let id = u32_of(&mut r)?;
        let len = u16::from_le_bytes(read_arr(&mut r)?) as usize;
        let mut name = vec![0u8; len];
        r.read_exact(&mut name)
            .map_err(|e| LedgerError::Corrupt(format!("snapshot truncated: {e}")))?;
        let scope = std::str::from_utf8(&name)
            .ok()
            .and_then(Scope::from_stored_name)
            .ok_or_else(|| LedgerError::Corrupt("snapshot scope name".into()))?;
        index.restore_scope(id, scope)?;
    }
    let mut tallies = Vec::new();
    for _ in 0..u32_of(&mut r)? {
        let scope = u32_of(&mut r)?;
        let year = i32::from_le_bytes(read_arr(&mut r)?);
        let [month] = read_arr::<1>(&mut r)?;
        tallies.push(((scope, year, month), (u64_of(&mut r)?, u64_of(&mut r)?)));
    }
    index.lock_core().tallies.extend(tallies);
    let n_scopes = index.lock_core().scopes.len();
    let mut chunk = Vec::new();
    for i in 0..SHARDS {
        let n_tables = u32_of(&mut r)?;
        let mut shard = index.write_shard(i);
        for _ in 0..n_tables {
            let scope = u32_of(&mut r)? as usize;
            let count = u32_of(&mut r)? as usize;
            if scope >= n_scopes {
                return Err(LedgerError::Corrupt(
                    "snapshot table of unknown scope".into(),
                ));
            }
            chunk.resize(count * 18, 0);
            r.read_exact(&mut chunk)
                .map_err(|e| LedgerError::Corrupt(format!("snapshot truncated: {e}")))?;
            // Headroom (load 0.58 to 0.72, drawn from a key: see `Table::restored`), so that the
            // replayed tail does not rehash and the first new subjects do not rehash every
            // table at once.
            let mut t = Table::restored(count, chunk.get(1).copied().unwrap_or(0));
            for e in chunk.chunks_exact(18) {
                if let Ok(k) = <&[u8; 16]>::try_from(&e[..16]) {
                    t.raise(
                        k,
                        Years {
                            all: e[16],
                            sensitive: e[17],
                        },
                    );
                }
            }
            *shard.table_mut(scope) = t;
        }
    }
    let expected = r.crc.clone().finalize();
    let stored = u32::from_le_bytes(read_arr(&mut r.inner)?);
    if stored != expected {
        return Err(LedgerError::Corrupt("snapshot checksum mismatch".into()));
    }
    Ok(seq)
}
