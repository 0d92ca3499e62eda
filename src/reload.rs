//! Loading the configuration off the async runtime and swapping it into a running gate: what
//! start-up ([`crate::app`]), `SIGHUP` and the admin API's `POST /v1/reload`
//! ([`crate::admin`]) share. Below both, so that the admin listener needs nothing of the code
//! that starts it.

use crate::config::{self, Config, Diagnostic};
use crate::proxy::Gate;
use std::path::{Path, PathBuf};

/// Loads the configuration at `path` off the async runtime.
///
/// # Errors
/// Every diagnostic when the files have errors.
pub async fn load(path: PathBuf) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    match tokio::task::spawn_blocking(move || config::load(&path)).await {
        Ok(r) => r,
        Err(e) => Err(vec![Diagnostic {
            severity: config::Severity::Error,
            file: String::new(),
            path: String::new(),
            line: None,
            column: None,
            message: format!("loader task failed: {e}"),
        }]),
    }
}

/// Re-reads the configuration and swaps it in; on any error the old one stays.
///
/// # Errors
/// Every diagnostic (or the build error) when the new files cannot be used.
pub async fn reload(gate: &Gate, path: &Path) -> Result<Vec<Diagnostic>, Vec<String>> {
    match load(path.to_path_buf()).await {
        Ok((cfg, warnings)) => match gate.reload(cfg).await {
            Ok(()) => Ok(warnings),
            Err(e) => Err(vec![e.to_string()]),
        },
        Err(diags) => Err(diags.iter().map(ToString::to_string).collect()),
    }
}

/// Logs a refused reload: every problem, then that the previous configuration stays.
pub fn log_refused(errors: &[String]) {
    for e in errors {
        tracing::error!("{e}");
    }
    tracing::error!(
        errors = errors.len(),
        "reload refused; the previous configuration stays"
    );
}
