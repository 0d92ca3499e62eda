//! Test support shared by the library's unit tests, the integration tests (`tests/it/harness/`
//! re-exports it) and the benchmark examples, so each helper has one implementation: polling
//! for a condition ([`poll`]) and real Redis servers ([`redis_server`]). Not part of the gate:
//! nothing in the request path uses it. Failing loudly (a panic) is how a helper reports that
//! the test's world is not as it needs to be, hence the lints allowed here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod poll;
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per property test: `PROPTEST_CASES` when set (a longer soak), else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fails the test when the command-line tool `name` is not on PATH: under CI a missing tool
/// is a failure, not a skip (`scripts/test` installs every tool the tests use).
pub fn require_tool(name: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{name}` is required by this test (scripts/test installs it)"
    );
}

/// A fresh directory under the system's temporary directory, removed with everything in it on
/// drop (the library cannot use the `tempfile` crate, a dev-dependency).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `transfer-gate-<what>-<pid>-<n>` under the temporary directory.
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("transfer-gate-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
