//! The lock on `gate.data_dir`: one gate (or one `ledger export`) per directory. Two gates on
//! one local ledger would each replay and append to the same log and snapshots and corrupt
//! each other's counts; the second one refuses to start, naming the directory and the process
//! that holds it.
//!
//! The lock is an advisory exclusive lock (`flock`) on `<data_dir>/transfer-gate.lock`, held
//! for the life of the process and released by the kernel however the process ends (`kill -9`
//! included), so a stale lock file never blocks a restart. The holder writes its process id
//! into the file for the message of the one refused.
//!
//! Once its listeners are bound, the gate also records the addresses it actually listens on
//! in `<data_dir>/listen.json` ([`write_listening`]): with a port of 0 in `gate.*_listen` the
//! kernel picks the port, and this file is where operators and tests find it.

use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The lock file's name inside `data_dir`.
pub const LOCK_FILE: &str = "transfer-gate.lock";

/// A held lock on a data directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the directory.
    #[error("data_dir {} is in use by another transfer-gate ({holder}; lock {}): stop it first, or give this one its own gate.data_dir", dir.display(), dir.join(LOCK_FILE).display())]
    Held {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as far as the lock file says (`pid 1234`).
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock data_dir {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Locks `dir` (which must exist) for this process.
///
/// # Errors
/// [`LockError::Held`] when another process holds it, [`LockError::Io`] otherwise.
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_owned(),
        source,
    };
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut file = o.open(dir.join(LOCK_FILE)).map_err(io)?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "a process that has not written its pid yet".to_owned(),
            };
            return Err(LockError::Held {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}

/// The name, inside `data_dir`, of the file of bound addresses.
pub const LISTEN_FILE: &str = "listen.json";

/// The addresses a running gate listens on, as written to [`LISTEN_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listening {
    /// The gate's process id (a file left by a gate that is gone names another process).
    pub pid: u32,
    /// The proxy listener.
    pub proxy: SocketAddr,
    /// The TLS proxy listener, when `gate.proxy_tls_listen` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_tls: Option<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The ICAP listener, when `gate.icap_listen` is set.
    pub icap: Option<SocketAddr>,
}

/// Writes `listening` to `<dir>/listen.json` atomically (a temporary file renamed over it), so
/// a reader never sees half a file.
///
/// # Errors
/// When the file cannot be written or renamed.
pub fn write_listening(dir: &Path, listening: &Listening) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LISTEN_FILE}.tmp"));
    let mut text = serde_json::to_vec_pretty(listening).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut file = File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(LISTEN_FILE))
}

/// Reads `<dir>/listen.json`.
///
/// # Errors
/// When the file cannot be read or is not a [`Listening`] document.
pub fn read_listening(dir: &Path) -> std::io::Result<Listening> {
    let text = std::fs::read(dir.join(LISTEN_FILE))?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_addresses_are_written_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let l = Listening {
            pid: 7,
            proxy: "127.0.0.1:3128".parse().unwrap(),
            proxy_tls: None,
            admin: "127.0.0.1:9464".parse().unwrap(),
            icap: None,
        };
        write_listening(dir.path(), &l).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LISTEN_FILE)).unwrap();
        assert_eq!(read_listening(dir.path()).unwrap(), l);
        assert!(text.contains("\"proxy\": \"127.0.0.1:3128\""), "{text}");
        assert!(!dir.path().join("listen.json.tmp").exists());
    }

    #[test]
    fn a_second_lock_on_the_directory_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let e = lock(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LockError::Held { .. }), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        let _again = lock(dir.path()).unwrap();
    }
}
