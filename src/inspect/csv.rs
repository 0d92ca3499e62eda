//! Streaming `text/csv` scanner (RFC 4180): quoted fields with `""` escapes and line breaks,
//! CRLF or LF rows, an optional BOM. The header row gives the field names (looked up once)
//! unless the type says `header=absent`; every later row is a record, emitted as soon as its
//! line ends. The header row's cells are values too: the detectors run on them, and their hits
//! are subjects of their own (a one-line body is all header).
//!
//! Lenient where leniency cannot hide PI: a quote inside an unquoted field, or text after a
//! closing quote, is kept as data. Invalid UTF-8 in a row is unreadable; an unterminated quote
//! at the end of the body is a truncated body.

use super::config::FieldInfo;
use super::detect;
use super::error::Unreadable;
use super::json::{looks_like_document, read_embedded};
use super::record::{trim, Hits, Namespace};
use super::Sink;
use crate::model::CategorySet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    FieldStart,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// After a quote inside a quoted field: `"` (escape), `,`, or end of row.
    QuoteInQuoted,
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// The streaming CSV scanner.
#[derive(Debug)]
pub(crate) struct CsvScanner {
    state: State,
    /// Bytes of the current row's fields, back to back.
    row: Vec<u8>,
    /// End offsets (in `row`) of the fields completed in the current row.
    ends: Vec<u32>,
    /// Column meanings from the header row; `None` until it is read.
    header: Option<Vec<FieldInfo>>,
    row_start: u64,
    in_row: bool,
    /// A `\r` ended the last row: skip one `\n`.
    skip_lf: bool,
    pos: u64,
    /// Whether the question of a leading UTF-8 byte order mark is settled.
    bom_settled: bool,
    /// The first bytes while they could still be a byte order mark (fewer than three).
    head: Vec<u8>,
    hits: Hits,
}

impl CsvScanner {
    /// `header`: whether the first row names the columns (`header=absent` says it does not).
    pub(crate) fn new(header: bool) -> Self {
        CsvScanner {
            state: State::FieldStart,
            row: Vec::new(),
            ends: Vec::new(),
            header: if header { None } else { Some(Vec::new()) },
            row_start: 0,
            in_row: false,
            skip_lf: false,
            pos: 0,
            bom_settled: false,
            head: Vec::new(),
            hits: Hits::default(),
        }
    }

    pub(crate) fn frontier(&self) -> u64 {
        if self.in_row {
            self.row_start
        } else {
            self.pos
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.bom_settled {
            return self.scan(data, sink);
        }
        // A leading UTF-8 BOM is skipped; bytes that only begin like one are data (they are
        // held, not consumed, until the question is settled).
        if self.head.is_empty() && data.len() >= BOM.len() {
            return self.settle_bom(data, sink);
        }
        self.head.extend_from_slice(data);
        if self.head.len() < BOM.len() && BOM.starts_with(&self.head) {
            return Ok(());
        }
        let head = std::mem::take(&mut self.head);
        self.settle_bom(&head, sink)
    }

    fn settle_bom(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        self.bom_settled = true;
        match data.strip_prefix(BOM) {
            Some(rest) => {
                self.pos = BOM.len() as u64;
                self.scan(rest, sink)
            }
            None => self.scan(data, sink),
        }
    }

    fn scan(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let base = self.pos;
        let mut i = 0usize;
        let n = data.len();
        while i < n {
            let c = data[i];
            if !self.in_row {
                if self.skip_lf && c == b'\n' {
                    self.skip_lf = false;
                    i += 1;
                    continue;
                }
                self.skip_lf = false;
                if c == b'\n' || c == b'\r' {
                    // Blank line.
                    self.skip_lf = c == b'\r';
                    i += 1;
                    continue;
                }
                self.in_row = true;
                self.row_start = base + i as u64;
            }
            match self.state {
                State::FieldStart | State::Unquoted => {
                    if self.state == State::FieldStart && c == b'"' {
                        self.state = State::Quoted;
                        i += 1;
                        continue;
                    }
                    // Copy the run of plain bytes at once.
                    let s = i;
                    while i < n && !matches!(data[i], b',' | b'\n' | b'\r') {
                        i += 1;
                    }
                    self.row.extend_from_slice(&data[s..i]);
                    self.state = State::Unquoted;
                    if i < n {
                        let c = data[i];
                        i += 1;
                        self.pos = base + i as u64;
                        self.end_field();
                        if c != b',' {
                            self.skip_lf = c == b'\r';
                            self.end_row(sink)?;
                        }
                    }
                }
                State::Quoted => match memchr::memchr(b'"', &data[i..]) {
                    Some(k) => {
                        self.row.extend_from_slice(&data[i..i + k]);
                        i += k + 1;
                        self.state = State::QuoteInQuoted;
                    }
                    None => {
                        self.row.extend_from_slice(&data[i..]);
                        i = n;
                    }
                },
                State::QuoteInQuoted => {
                    i += 1;
                    match c {
                        b'"' => {
                            self.row.push(b'"');
                            self.state = State::Quoted;
                        }
                        b',' => self.end_field(),
                        b'\n' | b'\r' => {
                            self.pos = base + i as u64;
                            self.end_field();
                            self.skip_lf = c == b'\r';
                            self.end_row(sink)?;
                        }
                        other => {
                            self.row.push(other);
                            self.state = State::Unquoted;
                        }
                    }
                }
            }
            // Bytes of the row so far (not just its data: separators cost memory in `ends`).
            if self.in_row && base + i as u64 - self.row_start > sink.cfg.max_record_bytes() as u64
            {
                return Err(Unreadable::RecordTooLarge {
                    offset: self.row_start,
                });
            }
        }
        self.pos = base + n as u64;
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if !self.bom_settled {
            // A body shorter than a BOM that began like one: its bytes are data.
            let head = std::mem::take(&mut self.head);
            self.bom_settled = true;
            self.scan(&head, sink)?;
        }
        match self.state {
            State::Quoted => Err(Unreadable::Truncated { offset: self.pos }),
            _ if self.in_row => {
                self.end_field();
                self.end_row(sink)
            }
            _ => Ok(()),
        }
    }

    fn end_field(&mut self) {
        self.ends.push(self.row.len() as u32);
        self.state = State::FieldStart;
    }

    fn field(&self, k: usize) -> &[u8] {
        field_of(&self.row, &self.ends, k)
    }

    fn end_row(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if std::str::from_utf8(&self.row).is_err() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.row_start,
            });
        }
        match &self.header {
            None => {
                let mut cols = Vec::with_capacity(self.ends.len());
                for k in 0..self.ends.len() {
                    let cell = field_of(&self.row, &self.ends, k);
                    let info = sink.cfg.lookup(trim(cell)).unwrap_or_default();
                    if let Some(w) = info.watched {
                        sink.saw_watched(w);
                    }
                    cols.push(info);
                    let out = &mut *sink.out;
                    detect::scan(cell, &sink.det, &mut |ns, id, c| out.subject(ns, id, c));
                }
                sink.out.end_record(self.row_start..self.pos, self.pos);
                self.header = Some(cols);
            }
            Some(cols) => {
                let mut best: Option<(u16, usize)> = None;
                let mut cats = CategorySet::EMPTY;
                self.hits.clear();
                // Subject values of cells that are JSON documents: (column, range of bytes).
                let mut doc_values: Vec<(usize, (u32, u32))> = Vec::new();
                let mut doc_bytes = Vec::new();
                for k in 0..self.ends.len() {
                    let v = field_of(&self.row, &self.ends, k);
                    let t = trim(v);
                    let info = cols.get(k).copied().unwrap_or_default();
                    let mut doc = None;
                    if looks_like_document(t) {
                        let subject = info.subject_rank.is_some();
                        doc = read_embedded(t, 0, subject, sink).map_err(|_| {
                            Unreadable::TooDeep {
                                offset: self.row_start,
                            }
                        })?;
                    }
                    if let Some(doc) = &doc {
                        doc.move_records(sink.out, self.row_start..self.pos, self.row_start);
                        cats = cats.union(doc.categories());
                        for v in doc.subject_values() {
                            let a = doc_bytes.len() as u32;
                            doc_bytes.extend_from_slice(v);
                            doc_values.push((k, (a, doc_bytes.len() as u32)));
                        }
                        for (ns, id, c) in doc.hits() {
                            self.hits.push(ns, id, c);
                        }
                    }
                    // A document cell without subject values names nobody by itself.
                    let names = doc.is_none() || doc_values.last().is_some_and(|d| d.0 == k);
                    if !t.is_empty() {
                        cats = cats.union(info.categories);
                        if let (Some(r), true) = (info.subject_rank, names) {
                            if best.is_none_or(|(b, _)| r < b) {
                                best = Some((r, k));
                            }
                        }
                    }
                    if doc.is_some() {
                        continue;
                    }
                    self.hits.scan(v, &sink.det);
                }
                if let Some((_, k)) = best {
                    cats = cats.union(self.hits.categories());
                    let mut from_doc = false;
                    for (_, (a, b)) in doc_values.iter().filter(|d| d.0 == k) {
                        sink.out.subject(
                            Namespace::Field,
                            &doc_bytes[*a as usize..*b as usize],
                            cats,
                        );
                        from_doc = true;
                    }
                    if !from_doc {
                        sink.out
                            .subject(Namespace::Field, trim(self.field(k)), cats);
                    }
                } else {
                    self.hits.emit_loose(sink.out, cats);
                }
                sink.out.end_record(self.row_start..self.pos, self.pos);
            }
        }
        self.row.clear();
        self.ends.clear();
        self.in_row = false;
        Ok(())
    }
}

fn field_of<'a>(row: &'a [u8], ends: &[u32], k: usize) -> &'a [u8] {
    let s = if k == 0 { 0 } else { ends[k - 1] as usize };
    &row[s..ends[k] as usize]
}
