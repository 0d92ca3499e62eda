//! `application/x-www-form-urlencoded` bodies and URL query strings. Each is one record
//! (SPEC §3): the whole form, the whole query. A form body is buffered (it is one record, so
//! it is bounded by `max_record_bytes`) and judged at its end; the same pair parser serves the
//! query string. Every name and every value of every pair goes to the [`FormRecord`].
//!
//! A JSON document labelled as a form (its first non-blank byte `{` or `[`, which a form
//! encoder never leaves raw) is what a server that ignores the label would read as JSON: it is
//! inspected as JSON as well as a form, and if it is not valid JSON either it is unreadable.

use super::error::Unreadable;
use super::json::{looks_like_document, Embedded, JsonScanner};
use super::record::{trim, Hits, Namespace};
use super::Sink;
use crate::model::CategorySet;

/// Accumulates one form-like record: every subject value, categories, detector hits.
#[derive(Debug, Default)]
pub(crate) struct FormRecord {
    /// Subject values: ranges of `subject_bytes` (every value counts).
    subjects: Vec<(u32, u32)>,
    subject_bytes: Vec<u8>,
    cats: CategorySet,
    hits: Hits,
    /// Documents read from values: their own records go out before the form record's.
    docs: Vec<Embedded>,
    /// A document in a value nested past `max_depth` (the body is unreadable; the head,
    /// which cannot be, reads such a value as text).
    failed: Option<Unreadable>,
}

impl FormRecord {
    /// Whether the record holds anything that needs judging.
    pub(crate) fn is_interesting(&self) -> bool {
        !self.subjects.is_empty()
            || !self.hits.is_empty()
            || !self.cats.is_empty()
            || !self.docs.is_empty()
    }

    /// One named value of the record. The name is inspected like the value (`?<id>`,
    /// `<id>=1`); a repeated or bracketed subject name (`user_id[]`) adds every value.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8], sink: &mut Sink<'_>) {
        let t = trim(value);
        match sink.cfg.lookup(trim(name)) {
            Some(info) => {
                if let Some(w) = info.watched {
                    sink.saw_watched(w);
                }
                if !t.is_empty() {
                    self.cats = self.cats.union(info.categories);
                    if self.document(t, info.subject_rank.is_some(), sink) {
                        return;
                    }
                    if info.subject_rank.is_some() {
                        self.push_subject(t);
                    }
                }
            }
            None => self.detect(name, sink),
        }
        if !self.document(value, false, sink) {
            self.detect(value, sink);
        }
    }

    /// Reads `value` as a JSON document when it is one (SPEC §3 "Documents inside values"):
    /// what it holds outside its own records belongs to this record — its scalars are
    /// subject values when `subject` (the value is a subject field's). Returns whether it was
    /// a document (the value is then read).
    pub(crate) fn document(&mut self, value: &[u8], subject: bool, sink: &mut Sink<'_>) -> bool {
        if !looks_like_document(value) {
            return false;
        }
        let doc = match super::json::read_embedded(value, 0, subject, sink) {
            Ok(Some(doc)) => doc,
            Ok(None) => return false,
            Err(e) => {
                self.failed.get_or_insert(e);
                return false;
            }
        };
        self.cats = self.cats.union(doc.categories());
        for v in doc.subject_values() {
            self.push_subject(v);
        }
        for (ns, id, c) in doc.hits() {
            self.hits.push(ns, id, c);
        }
        self.docs.push(doc);
        true
    }

    /// The first failure of a document in a value, if any (see [`FormRecord::document`]).
    pub(crate) fn failure(&mut self) -> Result<(), Unreadable> {
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Text that is neither a name nor a value of a field (a multipart part's header
    /// parameters): only the detectors run on it, and their hits belong to the record.
    pub(crate) fn free_text(&mut self, text: &[u8], sink: &mut Sink<'_>) {
        self.detect(text, sink);
    }

    /// A value that identifies the subject by itself (a configured header).
    pub(crate) fn subject_value(&mut self, value: &[u8], sink: &mut Sink<'_>) {
        let t = trim(value);
        if self.document(t, true, sink) {
            return;
        }
        if !t.is_empty() {
            self.push_subject(t);
        }
        self.detect(value, sink);
    }

    /// Categories that a field outside the body's structure carries (a category header).
    pub(crate) fn add_categories(&mut self, cats: CategorySet) {
        self.cats = self.cats.union(cats);
    }

    /// Runs the detectors over text of the record that is not a subject value.
    pub(crate) fn detect(&mut self, text: &[u8], sink: &mut Sink<'_>) {
        self.hits.scan(text, &sink.det);
    }

    fn push_subject(&mut self, v: &[u8]) {
        let a = self.subject_bytes.len() as u32;
        self.subject_bytes.extend_from_slice(v);
        self.subjects.push((a, self.subject_bytes.len() as u32));
    }

    /// Adds the record's subjects to the sink (without closing the record; the caller closes
    /// it at `span`). Without a subject field, each detector hit is a subject of its own and
    /// the categories are outside every record (they apply to the whole request). The
    /// records of documents in its values go first, each closed at `span` and released no
    /// later than its start.
    pub(crate) fn emit(&self, sink: &mut Sink<'_>, span: std::ops::Range<u64>) {
        for d in &self.docs {
            d.move_records(sink.out, span.clone(), span.start);
        }
        if self.subjects.is_empty() {
            sink.out.add_outside(self.cats);
            self.hits.emit_loose(sink.out, self.cats);
            return;
        }
        let cats = self.cats.union(self.hits.categories());
        for (a, b) in &self.subjects {
            sink.out.subject(
                Namespace::Field,
                &self.subject_bytes[*a as usize..*b as usize],
                cats,
            );
        }
    }
}

/// Percent-decodes `s` into `out` (`+` is a space).
pub(crate) fn percent_decode(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if c == b'+' { b' ' } else { c });
        i += 1;
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses `a=b&c=d` pairs into `rec`.
pub(crate) fn parse_pairs(body: &[u8], rec: &mut FormRecord, sink: &mut Sink<'_>) {
    let mut name = Vec::new();
    let mut value = Vec::new();
    for pair in body.split(|c| *c == b'&' || *c == b';') {
        if pair.is_empty() {
            continue;
        }
        let (n, v) = match memchr::memchr(b'=', pair) {
            Some(k) => (&pair[..k], &pair[k + 1..]),
            None => (pair, &b""[..]),
        };
        percent_decode(n, &mut name);
        percent_decode(v, &mut value);
        rec.field(&name, &value, sink);
    }
}

/// The form body scanner: buffers the body (one record) and judges it at the end.
#[derive(Debug, Default)]
pub(crate) struct FormScanner {
    buf: Vec<u8>,
}

impl FormScanner {
    pub(crate) fn frontier(&self) -> u64 {
        0
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.buf.len() + data.len() > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge { offset: 0 });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if let Err(e) = std::str::from_utf8(&self.buf) {
            return Err(Unreadable::InvalidUtf8 {
                offset: e.valid_up_to() as u64,
            });
        }
        let body = std::mem::take(&mut self.buf);
        if matches!(body.trim_ascii_start().first(), Some(b'{' | b'[')) {
            let mut json = JsonScanner::new(false);
            json.feed(&body, sink)?;
            json.finish(sink)?;
        }
        let mut rec = FormRecord::default();
        parse_pairs(&body, &mut rec, sink);
        rec.failure()?;
        let end = body.len() as u64;
        rec.emit(sink, 0..end);
        sink.out.end_record(0..end, end);
        Ok(())
    }
}
