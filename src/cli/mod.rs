//! The work behind each `transfer-gate` command, so that `main.rs` only parses the command
//! line: one way to build the runtime ([`block_on`]), one way to load a configuration and
//! report its problems ([`load_config`]), and one function per command returning the exit code.
//!
//! Exit codes: `check` and `run` exit 2 on configuration errors; `run` exits 1 when a usable
//! configuration cannot start. The client commands (`status`, `report`, `assess`) and
//! `ledger` are described with each function.

pub mod ca;
pub mod client;
pub mod ledger;
pub mod token;

use crate::config::{self, Config, Diagnostic, Severity};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The exit code for a configuration with errors (`check`, `run` and every command that
/// reads the configuration).
pub const CONFIG_ERRORS: u8 = 2;

/// Runs `fut` to completion on a new multi-threaded tokio runtime; `None` (after saying why
/// on standard error) when the runtime cannot be built.
pub fn block_on<F: Future>(fut: F) -> Option<F::Output> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(fut)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

/// Prints every diagnostic, one a line, on standard error.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// Loads the configuration at `path` for a command that needs it; on errors prints every
/// diagnostic on standard error and returns the exit code [`CONFIG_ERRORS`].
///
/// # Errors
/// The exit code when the configuration has errors.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    match config::load(path) {
        Ok((cfg, _warnings)) => Ok(cfg),
        Err(diags) => {
            print_diagnostics(&diags);
            Err(ExitCode::from(CONFIG_ERRORS))
        }
    }
}

/// `check`: every error and warning of the configuration and the files it names, on standard
/// output, then a count. Exit 0 when usable (warnings allowed), 2 on errors — the same code
/// as `run` on the same configuration.
pub fn check(path: &Path) -> ExitCode {
    let diags = match config::load(path) {
        Ok((_, warnings)) => warnings,
        Err(diags) => diags,
    };
    for d in &diags {
        println!("{d}");
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    println!("{errors} errors, {warnings} warnings");
    if errors > 0 {
        ExitCode::from(CONFIG_ERRORS)
    } else {
        ExitCode::SUCCESS
    }
}

/// `run`: the gate until SIGTERM or SIGINT. Exit 0 after a clean stop, 2 on configuration
/// errors (every one printed), 1 when it cannot start otherwise.
pub fn run(path: PathBuf) -> ExitCode {
    match block_on(crate::app::run(path)) {
        None => ExitCode::from(1),
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(crate::app::StartError::Config(diags))) => {
            print_diagnostics(&diags);
            eprintln!("transfer-gate: configuration has errors; not started");
            ExitCode::from(CONFIG_ERRORS)
        }
        Some(Err(e)) => {
            eprintln!("transfer-gate: {e}");
            ExitCode::from(1)
        }
    }
}
