//! `[[important_data]]`: rules naming paths and fields that carry important data, and the
//! destinations they apply to.

use crate::config::raw::RawImportantData;
use crate::config::{Destination, Diagnostics, ImportantData, PathGlob};

/// Validates every `[[important_data]]` rule; destination names must exist in `dests`.
pub(super) fn validate(
    file: &str,
    raws: Vec<Option<RawImportantData>>,
    dests: &[Destination],
    d: &mut Diagnostics,
) -> Vec<ImportantData> {
    let mut out = Vec::new();
    let names: std::collections::HashSet<&str> = dests.iter().map(|x| x.name.as_str()).collect();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("important_data[{i}]");
        let destinations = if r.destinations.is_empty() || r.destinations.iter().any(|x| x == "*") {
            None
        } else {
            for (j, n) in r.destinations.iter().enumerate() {
                if !names.contains(n.as_str()) {
                    d.error(
                        file,
                        format!("{p}.destinations[{j}]"),
                        format!("no destination is named `{n}`"),
                    );
                }
            }
            Some(r.destinations)
        };
        let mut paths = Vec::new();
        for (j, g) in r.paths.iter().enumerate() {
            match PathGlob::parse(g) {
                Ok(g) => paths.push(g),
                Err(e) => d.error(file, format!("{p}.paths[{j}]"), e),
            }
        }
        if r.paths.is_empty() && r.fields.is_empty() {
            d.error(file, &p, "a rule needs paths or fields");
        }
        out.push(ImportantData {
            name: r.name,
            destinations,
            paths,
            fields: r
                .fields
                .iter()
                .map(|f| f.trim().to_ascii_lowercase())
                .collect(),
        });
    }
    out
}
