//! The audit line's JSON, written field by field into the writer's buffer: the same bytes
//! `serde_json` makes of an [`AuditRecord`] (the tests compare them), without its serializer
//! state machine on every line of the writer's hot loop (BENCHMARKS.md "Instructions per
//! request": serialising was about 5,700 instructions a line).

use super::AuditRecord;
use std::io::Write;

/// Appends `rec` as one line of compact JSON (without the line end) to `out`.
pub(super) fn write(rec: &AuditRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    let mut t = [0u8; 24];
    match super::fmt_rfc3339(rec.time, &mut t) {
        Some(s) => out.extend_from_slice(s.as_bytes()),
        None => out.extend_from_slice(super::rfc3339_slow(rec.time).as_bytes()),
    }
    out.extend_from_slice(b"\",\"request_id\":");
    string(out, &rec.request_id);
    out.extend_from_slice(b",\"client\":\"");
    // A socket address has no character that JSON escapes.
    let _ = write!(out, "{}", rec.client);
    out.extend_from_slice(b"\",\"client_name\":");
    string(out, rec.client_name());
    out.extend_from_slice(b",\"identified_by\":");
    opt_string(out, rec.identified_by);
    out.extend_from_slice(b",\"origin\":");
    string(out, rec.origin);
    out.extend_from_slice(b",\"destination\":");
    string(out, &rec.destination);
    out.extend_from_slice(b",\"method\":");
    string(out, &rec.method);
    out.extend_from_slice(b",\"path\":");
    string(out, &rec.path);
    out.extend_from_slice(b",\"decision\":");
    string(out, rec.decision.as_str());
    out.extend_from_slice(b",\"reason\":");
    string(out, rec.reason.as_str());
    out.extend_from_slice(b",\"required_mechanism\":");
    string(out, rec.required_mechanism.as_str());
    out.extend_from_slice(b",\"threshold\":");
    opt_string(out, rec.threshold);
    out.extend_from_slice(b",\"new_subjects\":");
    number(out, rec.new_subjects);
    out.extend_from_slice(b",\"new_sensitive_subjects\":");
    number(out, rec.new_sensitive_subjects);
    out.extend_from_slice(b",\"entity_subjects\":");
    number(out, rec.entity_subjects);
    out.extend_from_slice(b",\"entity_sensitive_subjects\":");
    number(out, rec.entity_sensitive_subjects);
    out.extend_from_slice(b",\"approval\":");
    opt_string(out, rec.approval.as_deref());
    out.extend_from_slice(b",\"important_data_rule\":");
    opt_string(out, rec.important_data_rule.as_deref());
    out.extend_from_slice(b",\"categories\":[");
    for (i, c) in rec.categories.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, c);
    }
    out.extend_from_slice(b"],\"bytes\":");
    number(out, rec.bytes);
    if let Some(m) = rec.messages {
        out.extend_from_slice(b",\"messages\":");
        number(out, m);
    }
    out.push(b'}');
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as `serde_json` writes it: `"` and `\` escaped, the control characters as
/// `\b \t \n \f \r` or `\u00xx`, everything else (non-ASCII included) as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, Mechanism, Reason};
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn line(rec: &AuditRecord) -> Vec<u8> {
        let mut out = Vec::new();
        write(rec, &mut out);
        out
    }

    #[test]
    fn a_full_record_is_the_bytes_serde_json_writes() {
        let mut rec = AuditRecord::new(
            "req-\"1\"\\\u{1}\u{7f}é",
            "[::1]:4567".parse().unwrap(),
            "crm-eu",
            "POST",
            "/v1/customers",
        );
        rec.client_name = Some(Arc::from("billing"));
        rec.identified_by = Some("token");
        rec.decision = Decision::Block;
        rec.reason = Reason::ApprovalRequired;
        rec.required_mechanism = Mechanism::SecurityAssessment;
        rec.threshold = Some("sensitive_subjects");
        rec.new_subjects = u64::MAX;
        rec.entity_subjects = 1_000_000;
        rec.approval = Some("SA-1\n\t".into());
        rec.important_data_rule = Some("rule\u{8}\u{c}\r".into());
        rec.categories = vec!["basic", "contact"];
        rec.bytes = 10;
        rec.messages = Some(3);
        assert_eq!(
            String::from_utf8(line(&rec)).unwrap(),
            serde_json::to_string(&rec).unwrap()
        );
        rec.messages = None;
        rec.categories.clear();
        rec.client_name = None;
        rec.time = SystemTime::UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(
            String::from_utf8(line(&rec)).unwrap(),
            serde_json::to_string(&rec).unwrap()
        );
    }

    proptest! {
        #[test]
        fn any_strings_and_numbers_are_written_as_serde_json_writes_them(
            id in any::<String>(),
            path in "[ -~\\x00-\\x1f\u{80}-\u{10ffff}]{0,40}",
            dest in any::<String>(),
            n in any::<u64>(),
            secs in 0u64..400_000_000_000,
        ) {
            let mut rec = AuditRecord::new(&id, "10.1.2.3:80".parse().unwrap(), &dest, "PUT", "/");
            rec.path = path;
            rec.bytes = n;
            rec.new_sensitive_subjects = n / 7;
            rec.time = SystemTime::UNIX_EPOCH + Duration::from_millis(secs);
            rec.approval = Some(id.clone());
            prop_assert_eq!(String::from_utf8(line(&rec)).unwrap(), serde_json::to_string(&rec).unwrap());
        }
    }
}
