//! Moving counts between backends (`transfer-gate ledger export | import`): the local ledger
//! is exported to a JSON Lines file of keyed hashes (never identifiers) and imported into an
//! empty Redis namespace, so a single gate can become several replicas without losing a count.
//!
//! File format (one JSON object per line):
//! - header `{"format":"transfer-gate-ledger","version":1}`;
//! - subject `{"scope":"destination:eu","key":"<32 hex>","year":2026,"sensitive_year":2026}`
//!   (the last Asia/Shanghai year counted, and counted as sensitive, 0 = never);
//! - tally `{"tally":"entity","year":2026,"month":3,"new_all":10,"new_sensitive":1}`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{Ledger, LedgerError, Scope};
use super::local::LocalLedger;
use super::redis::{year_expiry, RedisLedger, RedisOptions, RedisTarget};
use crate::config::{Backend, Config};

/// The format name in the header line.
pub const FORMAT: &str = "transfer-gate-ledger";

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line is not valid (line number, 1-based).
    #[error("line {line}: {message}")]
    Format {
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The configuration does not allow the operation, or a backend could not be opened.
    #[error("{0}")]
    Setup(String),
    /// The Redis namespace already holds counts.
    #[error("the Redis namespace {0} already holds counts; import only into an empty namespace")]
    NotEmpty(String),
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Header {
        format: String,
        version: u32,
    },
    Subject {
        scope: String,
        key: String,
        year: i32,
        sensitive_year: i32,
    },
    Tally {
        tally: String,
        year: i32,
        month: u8,
        new_all: u64,
        new_sensitive: u64,
    },
}

/// What an export or import moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// (scope, subject) entries.
    pub subjects: u64,
    /// Monthly tallies.
    pub tallies: u64,
    /// Entries skipped because no counting window can contain them any more.
    pub skipped: u64,
}

fn year_of(b: u8) -> i32 {
    if b == 0 {
        0
    } else {
        2000 + i32::from(b)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes every (scope, subject) state and monthly tally of a local ledger to `out`.
///
/// # Errors
/// I/O errors of `out`.
pub async fn export_local(
    ledger: &LocalLedger,
    out: &mut impl Write,
) -> Result<Moved, MigrateError> {
    let mut moved = Moved::default();
    let header = Line::Header {
        format: FORMAT.into(),
        version: 1,
    };
    writeln!(out, "{}", json(&header))?;
    let index = ledger.index();
    let scopes: Vec<String> = index
        .lock_core()
        .scopes
        .iter()
        .map(Scope::stored_name)
        .collect();
    let mut err: Option<std::io::Error> = None;
    index
        .for_each_shard(|_, shard| {
            for (scope, table) in shard.tables() {
                let Some(name) = scopes.get(scope) else {
                    continue;
                };
                for (key, y) in table.iter() {
                    let line = Line::Subject {
                        scope: name.clone(),
                        key: hex(key),
                        year: year_of(y.all),
                        sensitive_year: year_of(y.sensitive),
                    };
                    if let Err(e) = writeln!(out, "{}", json(&line)) {
                        err = Some(e);
                        return Err(());
                    }
                    moved.subjects += 1;
                }
            }
            Ok(())
        })
        .ok();
    if let Some(e) = err {
        return Err(e.into());
    }
    for t in ledger.monthly().await? {
        let line = Line::Tally {
            tally: t.scope.stored_name(),
            year: t.year,
            month: t.month,
            new_all: t.new_all,
            new_sensitive: t.new_sensitive,
        };
        writeln!(out, "{}", json(&line))?;
        moved.tallies += 1;
    }
    out.flush()?;
    Ok(moved)
}

fn json(l: &Line) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

/// Imports an export into the (empty) Redis namespace of `ledger`. Entries last counted
/// before `current_year - 1` are skipped: no window can contain them.
///
/// # Errors
/// A malformed file, a namespace that already holds counts, Redis failures.
pub async fn import_redis(
    ledger: &RedisLedger,
    input: impl BufRead,
    current_year: i32,
) -> Result<Moved, MigrateError> {
    ledger.ping().await?;
    if ledger.namespace_has_counts().await? {
        return Err(MigrateError::NotEmpty(ledger.namespace().to_owned()));
    }
    let keys = ledger.keys().clone();
    let mut moved = Moved::default();
    let mut pipe = redis::pipe();
    let mut queued = 0usize;
    let mut expire: std::collections::BTreeSet<(String, i32)> = Default::default();
    let bad = |line: usize, message: &str| MigrateError::Format {
        line,
        message: message.into(),
    };
    for (n, text) in input.lines().enumerate() {
        let text = text?;
        let line = n + 1;
        if text.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&text)
            .map_err(|e| bad(line, &format!("not a ledger line: {e}")))?;
        match parsed {
            Line::Header { format, version } => {
                if format != FORMAT || version != 1 {
                    return Err(bad(line, "not a transfer-gate ledger export (version 1)"));
                }
            }
            Line::Subject {
                scope,
                key,
                year,
                sensitive_year,
            } => {
                let k = unhex(&key).ok_or_else(|| bad(line, "key is not 32 hex digits"))?;
                if Scope::from_stored_name(&scope).is_none() {
                    return Err(bad(line, "unknown scope name"));
                }
                if year < current_year - 1 {
                    moved.skipped += 1;
                    continue;
                }
                let n_key = keys.counters(&scope);
                let y_key = keys.year(&scope, year);
                let sens_here = sensitive_year == year;
                pipe.hset(&y_key, &k[..], if sens_here { "1" } else { "0" })
                    .ignore();
                pipe.hincr(&n_key, format!("a:{year}"), 1).ignore();
                expire.insert((y_key, year));
                if sensitive_year != 0 && sensitive_year >= current_year - 1 {
                    if !sens_here {
                        let s_key = keys.year(&scope, sensitive_year);
                        pipe.hset(&s_key, &k[..], "1").ignore();
                        expire.insert((s_key, sensitive_year));
                    }
                    pipe.hincr(&n_key, format!("s:{sensitive_year}"), 1)
                        .ignore();
                }
                moved.subjects += 1;
                queued += 1;
            }
            Line::Tally {
                tally,
                year,
                month,
                new_all,
                new_sensitive,
            } => {
                let m = keys.monthly();
                let f = format!("{tally}|{year}|{month}");
                pipe.hincr(&m, format!("{f}|a"), new_all).ignore();
                pipe.hincr(&m, format!("{f}|s"), new_sensitive).ignore();
                moved.tallies += 1;
                queued += 1;
            }
        }
        if queued >= 1_000 {
            ledger.exec_pipeline(&pipe).await?;
            pipe = redis::pipe();
            queued = 0;
        }
    }
    for (key, year) in &expire {
        pipe.cmd("EXPIREAT")
            .arg(key)
            .arg(year_expiry(*year))
            .ignore();
    }
    ledger.exec_pipeline(&pipe).await?;
    Ok(moved)
}

/// `transfer-gate ledger export`: writes the local ledger of `cfg` (in `gate.data_dir`; the
/// gate must be stopped) to `out` (created 0600, never overwritten).
///
/// # Errors
/// An unreadable ledger, an existing or unwritable `out`.
pub async fn export_file(cfg: &Config, out: &Path) -> Result<Moved, MigrateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = cfg.gate.data_dir.clone();
    // A running gate holds the directory: its log would change under the export.
    let _lock = if dir.is_dir() {
        Some(crate::data_dir::lock(&dir).map_err(|e| MigrateError::Setup(e.to_string()))?)
    } else {
        None
    };
    let local = tokio::task::spawn_blocking(move || {
        LocalLedger::open_in_data_dir(&dir, super::LocalOptions::default())
    })
    .await
    .map_err(|e| MigrateError::Setup(e.to_string()))??;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    let mut w = std::io::BufWriter::new(file);
    let moved = export_local(&local, &mut w).await?;
    w.into_inner()
        .map_err(|e| MigrateError::Io(e.into_error()))?
        .sync_all()?;
    Ok(moved)
}

/// `transfer-gate ledger import`: reads an export into the Redis ledger configured in `cfg`
/// (`ledger.backend = "redis"`, same hash key file as the exporting gate).
///
/// # Errors
/// A config without Redis, a missing key, an unreadable or malformed file, a namespace that
/// holds counts, Redis failures.
pub async fn import_file(cfg: &Config, input: &Path) -> Result<Moved, MigrateError> {
    let target = match &cfg.ledger.backend {
        Backend::Redis { url } => RedisTarget::Server(url.clone()),
        Backend::RedisCluster { nodes } => RedisTarget::Cluster(nodes.clone()),
        Backend::Local => {
            return Err(MigrateError::Setup(
                "ledger.backend is \"local\"; import needs backend = \"redis\"".into(),
            ))
        }
    };
    let hasher = crate::app::load_hasher(cfg).map_err(|e| MigrateError::Setup(e.to_string()))?;
    let opts = RedisOptions {
        target,
        timeout: cfg.ledger.timeout.max(Duration::from_secs(10)),
        entity: cfg.entity.name.clone(),
        cache_entries: 1,
        // The import only writes through pipelines; a running gate may own the journal.
        journal_dir: None,
    };
    let auth = crate::app::redis_auth(cfg).map_err(|e| MigrateError::Setup(e.to_string()))?;
    let ledger = RedisLedger::open_with_auth(opts, auth, &hasher)
        .await
        .map_err(|e| MigrateError::Setup(e.to_string()))?;
    let file = std::io::BufReader::new(std::fs::File::open(input)?);
    let year = crate::model::shanghai_date(std::time::SystemTime::now()).year();
    import_redis(&ledger, file, year).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::ledger::suite::{at, plain, reserve, subj};
    use crate::ledger::{LocalOptions, RedisOptions, RedisTarget, ScopeCounts, SubjectHasher};
    use crate::model::Regime;
    use crate::testing::redis_server::RedisServer;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_counts_move_to_redis() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalLedger::open(dir.path(), LocalOptions::default()).unwrap();
        let s = [Scope::Entity, Scope::Destination("eu".into())];
        let ids = local.register_scopes(&s).await.unwrap();
        let r22 = Regime::Cac2022;
        reserve(&local, &plain(0..5), &ids, &[], r22, at(2025, 3, 1)).await;
        reserve(
            &local,
            &[subj(0, true), subj(9, false)],
            &ids,
            &[],
            r22,
            at(2026, 2, 1),
        )
        .await;
        reserve(&local, &plain(100..103), &ids, &[], r22, at(2019, 2, 1)).await;
        let mut buf = Vec::new();
        let moved = export_local(&local, &mut buf).await.unwrap();
        assert_eq!(moved.subjects, 2 * 9);
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with("{\"format\":\"transfer-gate-ledger\""));

        let server = RedisServer::start();
        let journal = tempfile::tempdir().unwrap();
        let opts = RedisOptions {
            target: RedisTarget::Server(server.url()),
            timeout: Duration::from_secs(2),
            entity: "Migrated Co".into(),
            cache_entries: 1024,
            journal_dir: Some(journal.path().to_path_buf()),
        };
        let hasher = SubjectHasher::from_key([3; 32]);
        let redis = RedisLedger::open(opts.clone(), &hasher).await.unwrap();
        let m = import_redis(&redis, &buf[..], 2026).await.unwrap();
        assert_eq!((m.subjects, m.skipped), (2 * 6, 2 * 3));
        let rids = redis.register_scopes(&s).await.unwrap();
        let now = at(2026, 6, 1);
        for (l, ids) in [
            (&local as &dyn Ledger, &ids),
            (&*redis as &dyn Ledger, &rids),
        ] {
            for (k, id) in ids.iter().enumerate() {
                let c = l.counts(*id, r22, now).await.unwrap();
                assert_eq!(
                    c,
                    ScopeCounts {
                        all: 6,
                        sensitive: 1
                    },
                    "scope {k}"
                );
                let c = l.counts(*id, Regime::Cac2024, now).await.unwrap();
                assert_eq!(
                    c,
                    ScopeCounts {
                        all: 2,
                        sensitive: 1
                    },
                    "scope {k}"
                );
            }
            let p = l.probe(&plain(0..10), ids, r22, now).await.unwrap();
            assert_eq!(p[0].new_all, 4);
        }
        let mut a = local.monthly().await.unwrap();
        let mut b = redis.monthly().await.unwrap();
        a.sort_by_key(|t| (t.scope.clone(), t.year, t.month));
        b.sort_by_key(|t| (t.scope.clone(), t.year, t.month));
        assert_eq!(a, b);
        // A second import is refused: the namespace holds counts.
        assert!(matches!(
            import_redis(&redis, &buf[..], 2026).await,
            Err(MigrateError::NotEmpty(_))
        ));
        // A malformed line names its number.
        let other = RedisLedger::open(
            RedisOptions {
                entity: "Other Co".into(),
                ..opts
            },
            &hasher,
        )
        .await
        .unwrap();
        match import_redis(
            &other,
            &b"{\"format\":\"transfer-gate-ledger\",\"version\":1}\n{\"x\":1}\n"[..],
            2026,
        )
        .await
        {
            Err(MigrateError::Format { line, .. }) => assert_eq!(line, 2),
            r => panic!("{r:?}"),
        }
    }
}
