//! Running the `transfer-gate` binary as a command (`check`, `run`, `report`, `ca init`, …):
//! the one place tests build its command line.

use std::ffi::OsStr;
use std::process::Command;

/// The gate binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_transfer-gate");

/// The gate binary with `args`, not yet started (for tests that spawn it themselves).
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

/// What a finished command returned and printed.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the gate binary with `args` to completion, e.g.
/// `cli(["check", "-c"].iter().chain(..))` or `cli(["check".as_ref(), "-c".as_ref(), path])`.
pub fn cli<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = command(args).output().unwrap();
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `transfer-gate <args…> -c <config>`: a command on a configuration file.
pub fn cli_on<P: AsRef<OsStr>>(config: P, args: &[&str]) -> CliOutput {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(OsStr::new("-c"));
    all.push(config.as_ref());
    cli(all)
}
