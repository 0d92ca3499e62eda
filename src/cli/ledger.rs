//! `ledger export` and `ledger import`: moving the subject ledger between backends.

use std::path::Path;
use std::process::ExitCode;

/// Which way the ledger moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The local ledger of `gate.data_dir` → a file of keyed hashes.
    Export,
    /// A file of keyed hashes → the Redis ledger of the configuration.
    Import,
}

/// Exports to, or imports from, `file` with the configuration at `config`. Exit 0 on
/// success, 2 on configuration errors, 1 when the move fails.
pub fn migrate(config: &Path, direction: Direction, file: &Path) -> ExitCode {
    use crate::ledger::migrate;
    let cfg = match super::load_config(config) {
        Ok(cfg) => cfg,
        Err(code) => {
            eprintln!("transfer-gate: configuration has errors");
            return code;
        }
    };
    let export = direction == Direction::Export;
    let r = super::block_on(async {
        if export {
            migrate::export_file(&cfg, file).await
        } else {
            migrate::import_file(&cfg, file).await
        }
    });
    match r {
        None => ExitCode::from(1),
        Some(Ok(m)) => {
            println!(
                "{} {} subject entries and {} monthly tallies ({} entries outside every window skipped)",
                if export { "exported" } else { "imported" },
                m.subjects,
                m.tallies,
                m.skipped
            );
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!(
                "transfer-gate: ledger {}: {e}",
                if export { "export" } else { "import" }
            );
            ExitCode::from(1)
        }
    }
}
