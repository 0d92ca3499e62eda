//! The lock on `gate.data_dir`: one gate (or one `ledger export`) per directory. Two gates on
//! one local ledger would each replay and append to the same log and snapshots and corrupt
//! each other's counts; the second one refuses to start, naming the directory and the process
//! that holds it.
//!
//! The lock is an advisory exclusive lock (`flock`) on `<data_dir>/transfer-gate.lock`, held
//! for the life of the process and released by the kernel however the process ends (`kill -9`
//! included), so a stale lock file never blocks a restart. The holder writes its process id
//! into the file for the message of the one refused.

use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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

#[cfg(test)]
mod tests {
    use super::*;

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
