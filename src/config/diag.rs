//! Configuration diagnostics: every problem found in a file, with the file, the key path
//! (`destination[2].hosts[0]`), the line it is on and a message, so `check` and `/v1/reload`
//! can list them all.

use super::locate::{Position, Source};
use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Usable, but probably not what the operator wants.
    Warning,
}

/// One problem in one file at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file's name as the operator wrote it (e.g. `gate.toml`).
    pub file: String,
    /// The key path, e.g. `destination[2].hosts[0]`; empty for the whole file.
    pub path: String,
    /// The 1-based line of the key (or of its nearest present ancestor) in the file, when known.
    pub line: Option<usize>,
    /// The 1-based column (in characters) on that line, when known.
    pub column: Option<usize>,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Collects diagnostics for the files of one load.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Everything found so far, in the order found.
    pub items: Vec<Diagnostic>,
    /// The file being validated: diagnostics about it get the line of their key.
    source: Option<Source>,
}

impl Diagnostics {
    /// Records an error at `path` in `file`.
    pub fn error(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let at = self.position(file, &path);
        self.push(Severity::Error, file, path, at, message.into());
    }

    /// Records an error at `path` in `file`, on the line of its key `key` (e.g. an unknown
    /// field of the table at `path`).
    pub fn error_at_key(&mut self, file: &str, path: &str, key: &str, message: impl Into<String>) {
        let at = self.position(file, &format!("{path}.{key}"));
        self.push(Severity::Error, file, path.to_owned(), at, message.into());
    }

    /// Records a warning at `path` in `file`.
    pub fn warn(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let at = self.position(file, &path);
        self.push(Severity::Warning, file, path, at, message.into());
    }

    /// Makes `source` the file whose diagnostics get line numbers; returns the previous one
    /// (to restore after a nested file such as the approvals).
    pub fn set_source(&mut self, source: Option<Source>) -> Option<Source> {
        std::mem::replace(&mut self.source, source)
    }

    /// Where `path` is in `file`, when `file` is the current source.
    fn position(&self, file: &str, path: &str) -> Option<Position> {
        self.source
            .as_ref()
            .filter(|s| s.file == file)
            .and_then(|s| s.position(path))
    }

    fn push(
        &mut self,
        severity: Severity,
        file: &str,
        path: String,
        position: Option<Position>,
        message: String,
    ) {
        self.items.push(Diagnostic {
            severity,
            file: file.to_owned(),
            path,
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            message,
        });
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}
