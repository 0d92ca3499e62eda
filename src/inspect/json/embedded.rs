//! Documents inside values (SPEC §3): a value that is itself a JSON object or array — a JSON
//! string holding serialized JSON, a form or query value, a CSV cell, a multipart text part,
//! a header value — is read as JSON too, as if it sat where the value sits.
//!
//! The document is read by a [`JsonScanner`] of its own whose bottom frame stands for the
//! place of the value (`Embedded`): the records the document holds are records of the
//! request; what it holds outside them — detector hits, category fields and, when the value
//! is a subject field's, its scalars as subject values — is left in that frame for the
//! caller, which hands it to the record where the value sits (the enclosing JSON object, the
//! form, the CSV row). Depth counts from where the value sits: nesting past
//! `inspection.max_depth` through documents in values is as unreadable as in the body. A
//! value that only looks like a document (`{name} wrote`) and does not parse is text, read
//! by the detectors as before.

use super::records::Frame;
use super::JsonScanner;
use crate::inspect::config::FieldInfo;
use crate::inspect::error::Unreadable;
use crate::inspect::record::{trim, Namespace, Records};
use crate::inspect::Sink;
use crate::model::CategorySet;

/// Whether `s` may be a JSON document: an object or array, white space aside. Cheap enough for
/// every value; only values that pass are parsed.
#[inline]
pub(crate) fn looks_like_document(s: &[u8]) -> bool {
    // Most values start with neither a bracket nor white space: one compare rules them out.
    match s.first() {
        Some(b'{' | b'[') => {}
        Some(c) if c.is_ascii_whitespace() => {}
        _ => return false,
    }
    let t = s.trim_ascii();
    matches!(
        (t.first(), t.last()),
        (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
    )
}

/// A document read from a value, with what it left for the place where the value sits.
pub(crate) struct Embedded {
    scanner: JsonScanner,
    records: Records,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// Reads `s` as a JSON document sitting at nesting depth `depth`; `subjects` when the value is
/// a subject field's (or sits in a subject container), so that the document's scalars are
/// subject values. `None` when `s` is not a JSON document (it is text then).
///
/// # Errors
/// [`Unreadable::TooDeep`] when the document nests past `max_depth` counted from the body's
/// top (offsets are the document's own; the caller places them).
pub(crate) fn read(
    s: &[u8],
    depth: usize,
    subjects: bool,
    sink: &mut Sink<'_>,
) -> Result<Option<Embedded>, Unreadable> {
    if !looks_like_document(s) {
        return Ok(None);
    }
    let mut scanner = JsonScanner::new(false);
    scanner.depth_base = depth;
    // The bottom frame is the place of the value; it is never decided (the document is one
    // value, bounded by the record that holds it) and never closed.
    scanner.frames.push(Frame {
        start: 0,
        direct: false,
        subjs_start: 0,
        subj_base: 0,
        cats: CategorySet::EMPTY,
        hits_start: 0,
        hit_bytes_base: 0,
        decided: false,
    });
    scanner.first_undecided = 1;
    if subjects {
        scanner.val_info = FieldInfo {
            subject_rank: Some(0),
            ..FieldInfo::default()
        };
    }
    let mut records = Records::new(false);
    let mut inner = Sink {
        cfg: sink.cfg,
        det: sink.det,
        out: &mut records,
        watched: &mut *sink.watched,
    };
    let r = scanner
        .feed(s, &mut inner)
        .and_then(|()| scanner.finish(&mut inner));
    match r {
        Ok(()) if scanner.frames.len() == 1 => Ok(Some(Embedded { scanner, records })),
        Ok(()) => Ok(None),
        Err(e @ Unreadable::TooDeep { .. }) => Err(e),
        Err(_) => Ok(None),
    }
}

impl Embedded {
    /// The document's own records, placed at `span` of the body with release offset
    /// `release` (no later than the start of any record still open around the value).
    pub(crate) fn move_records(&self, out: &mut Records, span: std::ops::Range<u64>, release: u64) {
        for r in self.records.iter() {
            for s in r.subjects() {
                out.subject(s.namespace, s.id, s.categories);
            }
            out.end_record(span.clone(), release);
        }
    }

    fn place(&self) -> &Frame {
        &self.scanner.frames[0]
    }

    /// Categories of fields outside the document's records.
    pub(crate) fn categories(&self) -> CategorySet {
        self.place().cats
    }

    /// Subject values the document gives the place (its scalars, when it is a subject
    /// field's value).
    pub(crate) fn subject_values(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let s = &self.scanner;
        s.subjs
            .iter()
            .map(|&(a, b)| trim(&s.subj_bytes[a as usize..b as usize]))
    }

    /// Detector hits outside the document's records: they belong to the place.
    pub(crate) fn hits(&self) -> impl Iterator<Item = (Namespace, &[u8], CategorySet)> + '_ {
        let s = &self.scanner;
        s.hits
            .iter()
            .map(|h| (h.ns, &s.hit_bytes[h.id.0 as usize..h.id.1 as usize], h.cats))
    }
}
