//! The JSON rendering of the report: the `/v1/report` document as it is, pretty-printed, for
//! machines and for archiving next to the assessment file.

use serde_json::Value;

/// The report as pretty-printed JSON (with a final newline).
pub fn render(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).unwrap_or_default();
    s.push('\n');
    s
}
