//! Inspection of a request's head for a destination (SPEC §3): host labels, path segments,
//! query, every header value but framing, and the important-data rules that apply — by the
//! normalised path, and by field names later seen in the query or the body. The result is the
//! head's [`Batch`] plus what the body phase needs to treat head and body as one request.

use super::enforce::Batch;
use super::{Gate, Snapshot};
use crate::config::{Destination, ImportantData};
use crate::inspect;
use crate::model::CategorySet;

/// What the head of a request carries.
#[derive(Debug, Default)]
pub struct Head {
    /// The head's subjects (categories outside every record of the head already applied).
    pub batch: Batch,
    /// Categories seen outside every record of the head (they apply to the body's subjects).
    pub outside: CategorySet,
    /// The important-data rule that matched (by path or by a query field).
    pub important_rule: Option<String>,
    /// Important-data field names that apply to this destination, with their rule's name.
    pub important_fields: Vec<(String, String)>,
}

impl Head {
    /// The rule of the first watched field in `seen` that is an important-data field.
    pub fn rule_for_fields<'a>(&self, mut seen: impl Iterator<Item = &'a str>) -> Option<String> {
        seen.find_map(|w| {
            self.important_fields
                .iter()
                .find(|(f, _)| f == w)
                .map(|(_, r)| r.clone())
        })
    }
}

/// Inspects the head of a request to `dest` (`host` without port).
pub fn inspect_head<B>(
    gate: &Gate,
    snap: &Snapshot,
    dest: &Destination,
    host: &str,
    req: &http::Request<B>,
    request_id: &str,
    today: time::Date,
) -> Head {
    let (uri, headers) = (req.uri(), req.headers());
    let inspect_cfg = &*snap.inspect;
    let rules: Vec<&ImportantData> = snap
        .config
        .important_data
        .iter()
        .filter(|r| {
            r.destinations
                .as_ref()
                .is_none_or(|ds| ds.iter().any(|d| d == &dest.name))
        })
        .collect();
    let mut head = Head {
        important_fields: rules
            .iter()
            .flat_map(|r| r.fields.iter().map(|f| (f.clone(), r.name.clone())))
            .collect(),
        ..Head::default()
    };
    let path = uri.path();
    head.important_rule = rules
        .iter()
        .find(|r| r.paths.iter().any(|g| g.matches_request(path)))
        .map(|r| r.name.clone());
    let sens = dest.sensitive;
    let mut f = inspect::inspect_url(inspect_cfg, host, path, today, sens);
    if let Some(q) = uri.query() {
        f.extend(inspect::inspect_query(inspect_cfg, q, today, sens));
    }
    // The request id the gate created carries no client data (its digits could look like a
    // card number); one the client sent is inspected like any header.
    let skip: &[&str] = if gate.ids.is_own(request_id) {
        &[super::headers::REQUEST_ID]
    } else {
        &[]
    };
    f.extend(inspect::inspect_headers_except(
        inspect_cfg,
        headers,
        skip,
        today,
        sens,
    ));
    if head.important_rule.is_none() {
        head.important_rule = head.rule_for_fields(f.watched_seen.iter().map(String::as_str));
    }
    for s in f.subjects() {
        head.batch.add_owned(&gate.hasher, &s);
    }
    head.outside = f.outside();
    head.batch.important = head.important_rule.is_some();
    head
}
