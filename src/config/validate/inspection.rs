//! `[inspection]`, `[inspection.subjects]` and `[inspection.categories]`: size and depth
//! limits, what to do with unreadable bodies, subject fields, detectors, headers and the
//! field names of each category; `protobuf_descriptor_sets`, loaded here so that `check`,
//! `run` and reload agree (a missing or corrupt file is an error at its position in the list).

use crate::config::raw::RawInspection;
use crate::config::{resolve, Diagnostics, Inspection, Unreadable, DETECTORS};
use crate::model::Category;
use std::path::Path;

/// Validates `[inspection]` and its subtables, filling in the defaults; `path` is the config
/// file (relative paths are resolved against it).
pub(super) fn validate(
    path: &Path,
    file: &str,
    raw: RawInspection,
    d: &mut Diagnostics,
) -> Inspection {
    let protobuf_descriptor_sets: Vec<_> = raw
        .protobuf_descriptor_sets
        .iter()
        .map(|p| resolve(path, p))
        .collect();
    let protobuf_schemas = if protobuf_descriptor_sets.is_empty() {
        None
    } else {
        match crate::inspect::ProtobufSchemas::load(&protobuf_descriptor_sets) {
            Ok(s) => Some(s),
            Err(e) => {
                d.error(
                    file,
                    format!("inspection.protobuf_descriptor_sets[{}]", e.index),
                    e.to_string(),
                );
                None
            }
        }
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 30);
    let atomic_body_bytes = raw.atomic_body_bytes.unwrap_or(1 << 20);
    let max_record_bytes = raw.max_record_bytes.unwrap_or(1 << 20);
    let max_buffered_bytes = raw.max_buffered_bytes.unwrap_or(256 << 20);
    let max_depth = raw.max_depth.unwrap_or(64);
    // Default 64 MiB, never more than a body may be.
    let max_workbook_bytes = raw
        .max_workbook_bytes
        .unwrap_or(crate::inspect::DEFAULT_MAX_WORKBOOK_BYTES.min(max_body_bytes));
    for (k, v) in [
        ("inspection.max_workbook_bytes", max_workbook_bytes),
        ("inspection.max_body_bytes", max_body_bytes),
        ("inspection.atomic_body_bytes", atomic_body_bytes),
        ("inspection.max_record_bytes", max_record_bytes),
        ("inspection.max_buffered_bytes", max_buffered_bytes),
        ("inspection.max_depth", u64::from(max_depth)),
    ] {
        if v == 0 {
            d.error(file, k, "must be positive");
        }
    }
    // One streamed record of the largest size, with the largest decoder window, must fit:
    // otherwise such a request could never be judged.
    let one_request = max_record_bytes + crate::inspect::decoder_cost(crate::inspect::Coding::Zstd);
    if max_buffered_bytes > 0 && max_buffered_bytes < one_request {
        d.error(
            file,
            "inspection.max_buffered_bytes",
            format!(
                "must hold at least one record of max_record_bytes plus a decoder window: at least {one_request}"
            ),
        );
    }
    if atomic_body_bytes > max_body_bytes {
        d.error(
            file,
            "inspection.atomic_body_bytes",
            "must not exceed max_body_bytes",
        );
    }
    if atomic_body_bytes > 256 << 20 {
        d.error(
            file,
            "inspection.atomic_body_bytes",
            "is held in memory per request; at most 268435456 (256 MiB)",
        );
    }
    if max_record_bytes > 256 << 20 {
        d.error(
            file,
            "inspection.max_record_bytes",
            "is held in memory per request; at most 268435456 (256 MiB)",
        );
    }
    if max_workbook_bytes > max_body_bytes {
        d.error(
            file,
            "inspection.max_workbook_bytes",
            "must not exceed max_body_bytes",
        );
    }
    // A workbook is held twice while it is judged (the body, and the scanner's copy that the
    // zip is read from): one that cannot fit in the budget waits for room and may get 503.
    if raw.max_workbook_bytes.is_some()
        && max_buffered_bytes > 0
        && max_workbook_bytes.saturating_mul(2) > max_buffered_bytes
    {
        d.warn(
            file,
            "inspection.max_workbook_bytes",
            format!(
                "a workbook is held twice while it is judged; workbooks over max_buffered_bytes / 2 ({}) can never be read and get 503",
                max_buffered_bytes / 2
            ),
        );
    }
    if max_depth > 1024 {
        d.error(file, "inspection.max_depth", "at most 1024");
    }
    let mut fields = Vec::new();
    for (i, f) in raw.subjects.fields.iter().enumerate() {
        let f = f.trim().to_ascii_lowercase();
        if f.is_empty() {
            d.error(
                file,
                format!("inspection.subjects.fields[{i}]"),
                "must not be empty",
            );
        } else if fields.contains(&f) {
            d.error(
                file,
                format!("inspection.subjects.fields[{i}]"),
                format!("`{f}` is listed twice"),
            );
        } else {
            fields.push(f);
        }
    }
    let mut detectors = Vec::new();
    for (i, det) in raw.subjects.detectors.iter().enumerate() {
        if !DETECTORS.contains(&det.as_str()) {
            d.error(
                file,
                format!("inspection.subjects.detectors[{i}]"),
                format!("`{det}` is not one of: {}", DETECTORS.join(", ")),
            );
        } else if !detectors.contains(det) {
            detectors.push(det.clone());
        }
    }
    let mut headers = Vec::new();
    for (i, h) in raw.subjects.headers.iter().enumerate() {
        match http::HeaderName::from_bytes(h.trim().as_bytes()) {
            Ok(n) => headers.push(n.as_str().to_owned()),
            Err(_) => d.error(
                file,
                format!("inspection.subjects.headers[{i}]"),
                format!("`{h}` is not a header name"),
            ),
        }
    }
    let mut categories: Vec<(String, Category)> = Vec::new();
    for (cat, names) in &raw.categories {
        let Ok(c) = cat.parse::<Category>() else {
            d.error(
                file,
                format!("inspection.categories.{cat}"),
                format!(
                    "`{cat}` is not a category; use one of: {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ),
            );
            continue;
        };
        for (i, n) in names.iter().enumerate() {
            let n = n.trim().to_ascii_lowercase();
            if let Some((_, other)) = categories.iter().find(|(f, _)| *f == n) {
                d.error(
                    file,
                    format!("inspection.categories.{cat}[{i}]"),
                    format!("`{n}` is already in category {other}"),
                );
            } else {
                categories.push((n, c));
            }
        }
    }
    if fields.is_empty() && detectors.is_empty() {
        d.warn(
            file,
            "inspection.subjects",
            "no subject fields and no detectors: the gate will find no personal information",
        );
    }
    Inspection {
        max_body_bytes,
        atomic_body_bytes,
        max_record_bytes,
        max_buffered_bytes,
        max_depth,
        max_decoded_bytes: raw
            .max_decoded_bytes
            .unwrap_or(max_body_bytes.saturating_mul(4)),
        max_decompression_ratio: raw.max_decompression_ratio.unwrap_or(100),
        max_workbook_bytes,
        protobuf_descriptor_sets,
        protobuf_schemas,
        unreadable: unreadable(
            raw.unreadable.as_deref().unwrap_or("block"),
            file,
            "inspection.unreadable",
            d,
        ),
        resident_id_sensitive: raw.resident_id_sensitive,
        fields,
        detectors,
        headers,
        categories,
    }
}

/// `block` or `allow` (`inspection.unreadable`, `destination.unreadable`).
pub(super) fn unreadable(v: &str, file: &str, path: &str, d: &mut Diagnostics) -> Unreadable {
    match v {
        "block" => Unreadable::Block,
        "allow" => Unreadable::Allow,
        _ => {
            d.error(file, path, format!("`{v}` is not one of: block, allow"));
            Unreadable::Block
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: RawInspection) -> (Inspection, Diagnostics) {
        let mut d = Diagnostics::default();
        let i = validate(Path::new("gate.toml"), "gate.toml", raw, &mut d);
        (i, d)
    }

    #[test]
    fn max_workbook_bytes_defaults_to_64_mib_within_max_body_bytes() {
        let (i, d) = run(RawInspection::default());
        assert_eq!(i.max_workbook_bytes, 64 << 20);
        assert!(!d.has_errors());
        // A small max_body_bytes lowers the default instead of failing the configuration.
        let (i, d) = run(RawInspection {
            max_body_bytes: Some(4096),
            atomic_body_bytes: Some(1024),
            ..RawInspection::default()
        });
        assert_eq!(i.max_workbook_bytes, 4096);
        assert!(!d.has_errors());
        // Written: validated.
        for (v, key_errs) in [(Some(0), 1), (Some(2 << 30), 1), (Some(1 << 20), 0)] {
            let (_, d) = run(RawInspection {
                max_workbook_bytes: v,
                ..RawInspection::default()
            });
            let errs = d
                .errors()
                .filter(|e| e.path == "inspection.max_workbook_bytes")
                .count();
            assert_eq!(errs, key_errs, "{v:?}");
        }
        // Over half the budget: a warning (the workbook is held twice).
        let (_, d) = run(RawInspection {
            max_workbook_bytes: Some(200 << 20),
            ..RawInspection::default()
        });
        assert!(d
            .warnings()
            .any(|w| w.path == "inspection.max_workbook_bytes"));
    }
}
