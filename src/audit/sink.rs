//! The audit writer task: appends the JSON lines to `gate.audit_log` (or stdout), buffered and
//! flushed at least every second, on request and before a reopen.
//!
//! - Reopen (`SIGHUP`, after logrotate moved the file): everything recorded before the reopen
//!   is flushed to the old file, then the configured path is opened again (created 0640) and
//!   every later line goes there; lines are written whole, so none is split across the move.
//!   When the new file cannot be opened the old one stays in use and the error is logged.
//! - A disk that stays full: lines that cannot be written wait in a buffer of at most
//!   [`MAX_PENDING`] bytes; beyond it new lines are dropped and counted (one error when the
//!   outage starts, the count when it ends), so memory stays bounded however long it lasts.

use super::{AuditRecord, Msg};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Buffered bytes that trigger a write.
const FLUSH_AT: usize = 64 * 1024;
/// Most bytes kept while writes fail (a full disk); later lines are dropped and counted.
pub(crate) const MAX_PENDING: usize = 1 << 20;

/// Opens `path` for appending, creating it (mode 0640) and its directory.
pub(super) fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
    o.open(path)
}

pub(super) struct Writer {
    out: Box<dyn Write + Send>,
    /// The file's path (`None`: stdout, never reopened).
    path: Option<PathBuf>,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// The last byte written was not a line end (a write stopped inside a line).
    mid_line: bool,
    /// Writes are failing.
    failing: bool,
    /// Lines dropped since the outage began.
    dropped: u64,
    line: Vec<u8>,
}

impl Writer {
    pub(super) fn new(out: Box<dyn Write + Send>, path: Option<PathBuf>) -> Self {
        Writer {
            out,
            path,
            buf: Vec::with_capacity(FLUSH_AT),
            mid_line: false,
            failing: false,
            dropped: 0,
            line: Vec::with_capacity(512),
        }
    }

    fn record(&mut self, rec: &AuditRecord) {
        self.line.clear();
        super::line::write(rec, &mut self.line);
        self.line.push(b'\n');
        if self.buf.len() + self.line.len() > MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.buf.extend_from_slice(&self.line);
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes the buffer; on failure keeps what was not written (bounded by [`MAX_PENDING`]).
    fn flush(&mut self) {
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buf[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if written > 0 {
            self.mid_line = self.buf[written - 1] != b'\n';
            self.buf.drain(..written);
        }
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::warn!(
                        lines_lost = self.dropped,
                        "audit log writes recovered; lines that did not fit the buffer meanwhile are lost"
                    );
                }
                self.failing = false;
                self.dropped = 0;
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(error = %e, "audit log write failed; keeping at most 1 MiB of lines until it works again");
                }
                self.failing = true;
            }
        }
    }

    /// Flushes to the current file, then opens the configured path again.
    fn reopen(&mut self) -> Result<(), String> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.flush();
        let file = open(&path).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "cannot reopen the audit log; writing on to the old file");
            format!("{}: {e}", path.display())
        })?;
        if !self.buf.is_empty() && self.mid_line {
            // The old file ends inside a line that could not be finished (its disk is full):
            // the rest of that line would start the new file torn, so it is dropped.
            let end = self
                .buf
                .iter()
                .position(|b| *b == b'\n')
                .map_or(self.buf.len(), |i| i + 1);
            self.buf.drain(..end);
            self.dropped += 1;
        }
        self.mid_line = false;
        self.out = Box::new(file);
        tracing::info!(path = %path.display(), "audit log reopened");
        self.flush();
        Ok(())
    }
}

/// How long the writer lets lines gather after a batch before it takes the next: under load
/// the request path then wakes the writer about once per pause instead of once per line (a
/// wake-up of another thread costs more than serialising the line).
const GATHER: Duration = Duration::from_millis(5);
/// Written lines wait in the buffer at most this long.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn write_loop(mut rx: mpsc::Receiver<Msg>, mut w: Writer) {
    let mut batch = Vec::with_capacity(1024);
    let mut flushed = tokio::time::Instant::now();
    loop {
        // Nothing received within FLUSH_EVERY is no error: the buffer is flushed below.
        if let Ok(0) = tokio::time::timeout(FLUSH_EVERY, rx.recv_many(&mut batch, 1024)).await {
            break; // every sender is gone
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Record(rec) => w.record(&rec),
                Msg::Flush(done) => {
                    w.flush();
                    let _ = done.send(());
                }
                Msg::Reopen(done) => {
                    let _ = done.send(w.reopen());
                }
            }
        }
        if w.buf.is_empty() {
            flushed = tokio::time::Instant::now();
        } else if flushed.elapsed() >= FLUSH_EVERY {
            w.flush();
            flushed = tokio::time::Instant::now();
        }
        tokio::time::sleep(GATHER).await;
    }
    w.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that accepts `room` bytes, then fails like a full disk until `room` grows.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<Mutex<Vec<u8>>>,
        room: Arc<Mutex<usize>>,
    }

    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = b.len().min(*room);
            *room -= n;
            self.data.lock().unwrap().extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn rec(i: u64) -> AuditRecord {
        let mut r = AuditRecord::new(
            &format!("r{i}"),
            "127.0.0.1:1".parse().unwrap(),
            "eu",
            "POST",
            "/x",
        );
        r.new_subjects = i;
        r
    }

    #[test]
    fn a_full_disk_keeps_at_most_the_bound_and_loses_no_line_it_kept() {
        let disk = Disk::default();
        *disk.room.lock().unwrap() = 100;
        let mut w = Writer::new(Box::new(disk.clone()), None);
        for i in 0..50_000 {
            w.record(&rec(i));
            assert!(w.buf.len() <= MAX_PENDING);
        }
        w.flush();
        assert!(w.failing && w.dropped > 0);
        let dropped = w.dropped;
        let kept = w.buf.len();
        assert!(kept <= MAX_PENDING && kept > MAX_PENDING / 2, "{kept}");
        // Space again: every kept line is written whole, after the first partial one.
        *disk.room.lock().unwrap() = usize::MAX;
        w.flush();
        assert!(!w.failing && w.buf.is_empty());
        let data = disk.data.lock().unwrap();
        let text = std::str::from_utf8(&data).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert_eq!(
            lines.len() as u64 + dropped,
            50_000,
            "every line is written or counted"
        );
        assert_eq!(text.len(), 100 + kept);
    }
}
