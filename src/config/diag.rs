//! Configuration diagnostics: every problem found in a file, with the file, the key path
//! (`destination[2].hosts[0]`) and a message, so `check` and `/v1/reload` can list them all.

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
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{sev}: {}: {}", self.file, self.message)
        } else {
            write!(f, "{sev}: {}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Collects diagnostics for one file.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Everything found so far, in the order found.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error at `path` in `file`.
    pub fn error(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, file, path.into(), message.into());
    }

    /// Records a warning at `path` in `file`.
    pub fn warn(&mut self, file: &str, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, file, path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, file: &str, path: String, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: file.to_owned(),
            path,
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
