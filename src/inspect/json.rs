//! Streaming JSON (and NDJSON / JSON Lines / json-seq) scanner: a resumable byte state
//! machine that never builds a tree. Strings are found with `memchr2` and, when they hold no
//! escape and do not cross a chunk boundary, are inspected in place without a copy.
//!
//! Records (SPEC §3): every open object has a *frame* that collects its subject values, its
//! category fields and the detector hits of its non-record descendants. Every value counts: each
//! subject field (duplicate keys included), each element of an array held by a subject field
//! and each scalar inside an object held by one is a subject value (the container is a
//! *subject container*). An object that directly holds a subject field with a value is a record
//! when it closes; otherwise its hits, categories and container-derived subject values move to
//! the enclosing object, or, at the top, the hits become loose subjects and the categories apply
//! to the whole request ([`Records::add_outside`]). Object keys are inspected like values.
//! Frames, subject values and hits live in stacks (truncated on close), so nothing is allocated
//! per value.
//!
//! Memory bound: an object that grows past `max_record_bytes` without a subject field is
//! *decided* to be an envelope: its pending hits are emitted as loose subjects, later hits in
//! it are emitted at once, and a subject field appearing in it afterwards makes it a record over
//! the limit (unreadable). Only undecided objects hold the release frontier back, so the bytes
//! held never exceed `max_record_bytes` plus one chunk.

use super::config::FieldInfo;
use super::detect;
use super::error::Unreadable;
use super::json_lex::{find_quote_or_backslash, is_num_byte, valid_number};
use super::record::{trim, Namespace, Records};
use super::Sink;
use crate::model::CategorySet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value (top level or after `,` in an array or `:` in an object).
    Value,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjKey,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    After,
    /// Inside a string.
    Str { key: bool },
    /// Inside a number.
    Num,
    /// Inside `true`/`false`/`null`: which one and how many bytes matched.
    Lit { which: u8, got: u8 },
    /// After the single top-level value: only white space.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After a backslash.
    Backslash,
    /// Inside `\uXXXX`: digits read and value so far; `hi` is a pending high surrogate.
    Hex {
        n: u8,
        val: u32,
        hi: u32,
    },
    /// After a high surrogate: expecting `\`.
    LowBackslash {
        hi: u32,
    },
    /// After a high surrogate and `\`: expecting `u`.
    LowU {
        hi: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    start: u64,
    /// The object directly holds a subject field (with a non-`null` value).
    direct: bool,
    /// First of its subject values in `subjs` (later ones are its own or passed up).
    subjs_start: u32,
    /// Length of `subj_bytes` when the object opened.
    subj_base: u32,
    cats: CategorySet,
    hits_start: u32,
    hit_bytes_base: u32,
    decided: bool,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    ns: Namespace,
    id: (u32, u32),
    cats: CategorySet,
}

const LITS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// The streaming JSON scanner. `seq` accepts any number of top-level values (NDJSON etc.).
#[derive(Debug)]
pub(crate) struct JsonScanner {
    seq: bool,
    state: State,
    /// Open containers: `true` for an object.
    stack: Vec<bool>,
    frames: Vec<Frame>,
    first_undecided: usize,
    hits: Vec<Hit>,
    hit_bytes: Vec<u8>,
    /// Subject values of open objects: ranges of `subj_bytes`.
    subjs: Vec<(u32, u32)>,
    subj_bytes: Vec<u8>,
    /// Stack depth inside which every scalar is a subject value (a subject container).
    subj_container: Option<usize>,
    scratch: Vec<u8>,
    in_scratch: bool,
    esc: Esc,
    tok_start: u64,
    val_info: FieldInfo,
    /// Offset of the next byte to read.
    pos: u64,
    /// Bytes of a leading BOM matched so far.
    bom: u8,
}

impl JsonScanner {
    pub(crate) fn new(seq: bool) -> Self {
        JsonScanner {
            seq,
            state: State::Value,
            stack: Vec::with_capacity(16),
            frames: Vec::with_capacity(16),
            first_undecided: 0,
            hits: Vec::new(),
            hit_bytes: Vec::new(),
            subjs: Vec::new(),
            subj_bytes: Vec::new(),
            subj_container: None,
            scratch: Vec::new(),
            in_scratch: false,
            esc: Esc::None,
            tok_start: 0,
            val_info: FieldInfo::default(),
            pos: 0,
            bom: 0,
        }
    }

    /// Offset (decoded) up to which no byte belongs to an unjudged record or token.
    pub(crate) fn frontier(&self) -> u64 {
        let mut f = self.pos;
        if let Some(fr) = self.frames.get(self.first_undecided) {
            f = f.min(fr.start);
        }
        if matches!(
            self.state,
            State::Str { .. } | State::Num | State::Lit { .. }
        ) {
            f = f.min(self.tok_start);
        }
        f
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.state == State::Num && self.stack.is_empty() {
            // A top-level number ends at the end of the body.
            let s = std::mem::take(&mut self.scratch);
            let r = self.number_done(&s, sink);
            self.scratch = s;
            r?;
            self.value_done(sink);
        }
        match self.state {
            State::Done => Ok(()),
            State::Value if self.stack.is_empty() => Ok(()),
            _ => Err(Unreadable::Truncated { offset: self.pos }),
        }
    }

    /// Scans `data`, whose first byte is at offset `self.pos`.
    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let base = self.pos;
        let r = self.run(data, base, sink);
        self.pos = base + data.len() as u64;
        r?;
        self.check_size(sink)
    }

    fn run(&mut self, data: &[u8], base: u64, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let n = data.len();
        let mut i = 0usize;
        // A leading byte-order mark is skipped.
        while self.bom < 3 && base + (i as u64) == u64::from(self.bom) && i < n {
            if data[i] == [0xEF, 0xBB, 0xBF][self.bom as usize] {
                self.bom += 1;
                i += 1;
            } else {
                self.bom = 3;
            }
        }
        while i < n {
            match self.state {
                State::Str { key } => {
                    i = self.string(data, i, base, key, sink)?;
                    // Fast path for the common `"key":"value","key":` chain: no trip through
                    // the general dispatch between the tokens.
                    while i < n {
                        let c = data[i];
                        match self.state {
                            State::Colon if c == b':' => self.state = State::Value,
                            State::After if c == b',' => {
                                self.state = if self.stack.last() == Some(&true) {
                                    State::ObjKey
                                } else {
                                    State::Value
                                };
                            }
                            State::ObjKey | State::Value if c == b'"' => {
                                let key = self.state == State::ObjKey;
                                self.tok_start = base + i as u64;
                                self.scratch.clear();
                                self.in_scratch = false;
                                self.state = State::Str { key };
                                i = self.string(data, i + 1, base, key, sink)?;
                                continue;
                            }
                            _ => break,
                        }
                        i += 1;
                    }
                }
                State::Num => {
                    let s = i;
                    while i < n && is_num_byte(data[i]) {
                        i += 1;
                    }
                    self.push_scratch(&data[s..i], sink)?;
                    if i < n {
                        self.pos = base + i as u64;
                        let tok = std::mem::take(&mut self.scratch);
                        let r = self.number_done(&tok, sink);
                        self.scratch = tok;
                        r?;
                        self.value_done(sink);
                    }
                }
                State::Lit { which, got } => {
                    let lit = LITS[which as usize];
                    let mut g = got as usize;
                    while i < n && g < lit.len() {
                        if data[i] != lit[g] {
                            return Err(Unreadable::Malformed {
                                offset: base + i as u64,
                            });
                        }
                        g += 1;
                        i += 1;
                    }
                    if g == lit.len() {
                        self.pos = base + i as u64;
                        self.value_done(sink);
                    } else {
                        self.state = State::Lit {
                            which,
                            got: g as u8,
                        };
                    }
                }
                _ => {
                    let c = data[i];
                    if matches!(c, b' ' | b'\n' | b'\r' | b'\t') || (self.seq && c == 0x1E) {
                        i += 1;
                        continue;
                    }
                    self.pos = base + i as u64;
                    i = self.structural(data, i, base, c, sink)?;
                }
            }
        }
        Ok(())
    }

    /// Handles one non-white-space byte outside strings, numbers and literals.
    fn structural(
        &mut self,
        data: &[u8],
        i: usize,
        base: u64,
        c: u8,
        sink: &mut Sink<'_>,
    ) -> Result<usize, Unreadable> {
        let at = base + i as u64;
        let bad = Err(Unreadable::Malformed { offset: at });
        match self.state {
            State::Value | State::ArrFirst => {
                if c == b']' && self.state == State::ArrFirst {
                    self.pop();
                    self.pos = at + 1;
                    self.value_done(sink);
                    return Ok(i + 1);
                }
                let info = std::mem::take(&mut self.val_info);
                match c {
                    b'{' | b'[' => {
                        if !info.categories.is_empty() {
                            self.add_cats(info.categories, sink.out);
                        }
                        if self.stack.len() >= sink.cfg.max_depth() {
                            return Err(Unreadable::TooDeep { offset: at });
                        }
                        if info.subject_rank.is_some() && self.subj_container.is_none() {
                            if let Some(f) = self.frames.last_mut() {
                                if f.decided {
                                    return Err(Unreadable::RecordTooLarge { offset: f.start });
                                }
                                f.direct = true;
                            }
                            self.subj_container = Some(self.stack.len() + 1);
                        }
                        if c == b'{' {
                            self.stack.push(true);
                            self.frames.push(Frame {
                                start: at,
                                direct: false,
                                subjs_start: self.subjs.len() as u32,
                                subj_base: self.subj_bytes.len() as u32,
                                cats: CategorySet::EMPTY,
                                hits_start: self.hits.len() as u32,
                                hit_bytes_base: self.hit_bytes.len() as u32,
                                decided: false,
                            });
                            self.state = State::ObjFirst;
                            self.pos = at + 1;
                            self.check_size(sink)?;
                        } else {
                            self.stack.push(false);
                            self.state = State::ArrFirst;
                        }
                        Ok(i + 1)
                    }
                    b'"' => {
                        self.val_info = info;
                        self.tok_start = at;
                        self.scratch.clear();
                        self.in_scratch = false;
                        self.esc = Esc::None;
                        self.state = State::Str { key: false };
                        self.string(data, i + 1, base, false, sink)
                    }
                    b'-' | b'0'..=b'9' => {
                        self.val_info = info;
                        self.tok_start = at;
                        let n = data.len();
                        let mut j = i + 1;
                        while j < n && is_num_byte(data[j]) {
                            j += 1;
                        }
                        if j < n {
                            self.pos = base + j as u64;
                            self.number_done(&data[i..j], sink)?;
                            self.value_done(sink);
                        } else {
                            self.scratch.clear();
                            self.push_scratch(&data[i..j], sink)?;
                            self.state = State::Num;
                        }
                        Ok(j)
                    }
                    b't' | b'f' | b'n' => {
                        if c != b'n' && !info.categories.is_empty() {
                            self.add_cats(info.categories, sink.out);
                        }
                        self.tok_start = at;
                        let which = match c {
                            b't' => 0,
                            b'f' => 1,
                            _ => 2,
                        };
                        self.state = State::Lit { which, got: 1 };
                        Ok(i + 1)
                    }
                    _ => bad,
                }
            }
            State::ObjFirst | State::ObjKey => match c {
                b'"' => {
                    self.tok_start = at;
                    self.scratch.clear();
                    self.in_scratch = false;
                    self.esc = Esc::None;
                    self.state = State::Str { key: true };
                    self.string(data, i + 1, base, true, sink)
                }
                b'}' if self.state == State::ObjFirst => {
                    self.pos = at + 1;
                    self.close_object(sink)?;
                    Ok(i + 1)
                }
                _ => bad,
            },
            State::Colon => {
                if c == b':' {
                    self.state = State::Value;
                    Ok(i + 1)
                } else {
                    bad
                }
            }
            State::After => {
                let obj = self.stack.last().copied().unwrap_or(false);
                match (c, obj) {
                    (b',', true) => self.state = State::ObjKey,
                    (b',', false) => self.state = State::Value,
                    (b'}', true) => {
                        self.pos = at + 1;
                        self.close_object(sink)?;
                    }
                    (b']', false) => {
                        self.pop();
                        self.pos = at + 1;
                        self.value_done(sink);
                    }
                    _ => return bad,
                }
                Ok(i + 1)
            }
            State::Done | State::Str { .. } | State::Num | State::Lit { .. } => bad,
        }
    }

    /// Closes the innermost container (and a subject container that ends with it).
    fn pop(&mut self) {
        self.stack.pop();
        if self.subj_container.is_some_and(|d| self.stack.len() < d) {
            self.subj_container = None;
        }
    }

    /// Adds categories to the innermost object; in an envelope already decided (or outside any
    /// object) they are outside every record and apply to the whole request.
    fn add_cats(&mut self, cats: CategorySet, out: &mut Records) {
        match self.frames.last_mut() {
            Some(f) => {
                f.cats = f.cats.union(cats);
                if f.decided {
                    out.add_outside(cats);
                }
            }
            None => out.add_outside(cats),
        }
    }

    /// After any complete value: decide what comes next.
    fn value_done(&mut self, _sink: &mut Sink<'_>) {
        self.val_info = FieldInfo::default();
        self.state = if !self.stack.is_empty() {
            State::After
        } else if self.seq {
            State::Value
        } else {
            State::Done
        };
    }

    fn push_scratch(&mut self, bytes: &[u8], sink: &Sink<'_>) -> Result<(), Unreadable> {
        if self.scratch.len() + bytes.len() > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge {
                offset: self.tok_start,
            });
        }
        self.scratch.extend_from_slice(bytes);
        Ok(())
    }

    /// Continues a string from `data[i..]`; returns the index after what it consumed.
    fn string(
        &mut self,
        data: &[u8],
        mut i: usize,
        base: u64,
        key: bool,
        sink: &mut Sink<'_>,
    ) -> Result<usize, Unreadable> {
        let n = data.len();
        loop {
            if self.esc != Esc::None {
                if i >= n {
                    return Ok(i);
                }
                i = self.escape(data, i, base, sink)?;
                continue;
            }
            match find_quote_or_backslash(&data[i..]) {
                None => {
                    self.in_scratch = true;
                    self.push_scratch(&data[i..], sink)?;
                    return Ok(n);
                }
                Some(k) if data[i + k] == b'"' => {
                    let end = i + k + 1;
                    self.pos = base + end as u64;
                    if self.in_scratch {
                        self.push_scratch(&data[i..i + k], sink)?;
                        let s = std::mem::take(&mut self.scratch);
                        let r = self.string_done(&s, key, sink);
                        self.scratch = s;
                        r?;
                    } else {
                        self.string_done(&data[i..i + k], key, sink)?;
                    }
                    return Ok(end);
                }
                Some(k) => {
                    self.in_scratch = true;
                    self.push_scratch(&data[i..i + k], sink)?;
                    self.esc = Esc::Backslash;
                    i += k + 1;
                }
            }
        }
    }

    /// Consumes escape bytes from `data[i..]` (at least one byte is available).
    fn escape(
        &mut self,
        data: &[u8],
        mut i: usize,
        base: u64,
        sink: &mut Sink<'_>,
    ) -> Result<usize, Unreadable> {
        let n = data.len();
        while i < n && self.esc != Esc::None {
            let c = data[i];
            let bad = Unreadable::Malformed {
                offset: base + i as u64,
            };
            i += 1;
            self.esc = match self.esc {
                Esc::Backslash => {
                    let out = match c {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.esc = Esc::Hex {
                                n: 0,
                                val: 0,
                                hi: 0,
                            };
                            continue;
                        }
                        _ => return Err(bad),
                    };
                    self.push_scratch(&[out], sink)?;
                    Esc::None
                }
                Esc::Hex { n, val, hi } => {
                    let d = match (c as char).to_digit(16) {
                        Some(d) => d,
                        None => return Err(bad),
                    };
                    let val = val * 16 + d;
                    if n < 3 {
                        Esc::Hex { n: n + 1, val, hi }
                    } else if hi != 0 {
                        if !(0xDC00..0xE000).contains(&val) {
                            return Err(bad);
                        }
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (val - 0xDC00);
                        self.push_char(cp, bad, sink)?;
                        Esc::None
                    } else if (0xD800..0xDC00).contains(&val) {
                        Esc::LowBackslash { hi: val }
                    } else if (0xDC00..0xE000).contains(&val) {
                        return Err(bad);
                    } else {
                        self.push_char(val, bad, sink)?;
                        Esc::None
                    }
                }
                Esc::LowBackslash { hi } => {
                    if c != b'\\' {
                        return Err(bad);
                    }
                    Esc::LowU { hi }
                }
                Esc::LowU { hi } => {
                    if c != b'u' {
                        return Err(bad);
                    }
                    Esc::Hex { n: 0, val: 0, hi }
                }
                Esc::None => Esc::None,
            };
        }
        Ok(i)
    }

    fn push_char(&mut self, cp: u32, bad: Unreadable, sink: &Sink<'_>) -> Result<(), Unreadable> {
        let ch = char::from_u32(cp).ok_or(bad)?;
        let mut b = [0u8; 4];
        let s = ch.encode_utf8(&mut b);
        self.push_scratch(s.as_bytes(), sink)
    }

    /// A complete string (unescaped bytes).
    fn string_done(&mut self, s: &[u8], key: bool, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if !s.is_ascii() && std::str::from_utf8(s).is_err() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.tok_start,
            });
        }
        if key {
            let info = match sink.cfg.lookup(s) {
                Some(info) => info,
                None => {
                    // A key is data too (`{"<id>": {...}}`); a configured name is not an
                    // identifier.
                    self.detect(s, sink);
                    FieldInfo::default()
                }
            };
            if let Some(w) = info.watched {
                sink.saw_watched(w);
            }
            self.val_info = info;
            self.state = State::Colon;
            return Ok(());
        }
        let info = self.val_info;
        if info.subject_rank.is_some()
            || !info.categories.is_empty()
            || self.subj_container.is_some()
        {
            let t = trim(s);
            if !t.is_empty() {
                self.field_value(info, t, sink.out)?;
            }
        }
        self.detect(s, sink);
        self.value_done(sink);
        Ok(())
    }

    fn number_done(&mut self, s: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if !valid_number(s) {
            return Err(Unreadable::Malformed {
                offset: self.tok_start,
            });
        }
        let info = self.val_info;
        if info.subject_rank.is_some()
            || !info.categories.is_empty()
            || self.subj_container.is_some()
        {
            self.field_value(info, s, sink.out)?;
        }
        if s.len() >= 11 && s.iter().all(u8::is_ascii_digit) {
            self.detect(s, sink);
        }
        Ok(())
    }

    /// A non-empty scalar that is the value of a subject or category field, or sits in a
    /// subject container: its categories and subject value go to the innermost object.
    fn field_value(
        &mut self,
        info: FieldInfo,
        v: &[u8],
        out: &mut Records,
    ) -> Result<(), Unreadable> {
        if !info.categories.is_empty() {
            self.add_cats(info.categories, out);
        }
        let direct = info.subject_rank.is_some() && self.subj_container.is_none();
        if !direct && self.subj_container.is_none() {
            return Ok(());
        }
        let Some(f) = self.frames.last_mut() else {
            return Ok(());
        };
        if f.decided {
            return Err(Unreadable::RecordTooLarge { offset: f.start });
        }
        f.direct |= direct;
        // Children truncate their values on close (or pass them up), so the arena's top
        // belongs to the innermost object.
        let a = self.subj_bytes.len() as u32;
        self.subj_bytes.extend_from_slice(v);
        self.subjs.push((a, self.subj_bytes.len() as u32));
        Ok(())
    }

    /// Runs the detectors over a value; hits go to the innermost undecided object, or out.
    fn detect(&mut self, s: &[u8], sink: &mut Sink<'_>) {
        let from = self.hits.len();
        let hits = &mut self.hits;
        let bytes = &mut self.hit_bytes;
        detect::scan(s, &sink.det, &mut |ns, id, cats| {
            let a = bytes.len() as u32;
            bytes.extend_from_slice(id);
            hits.push(Hit {
                ns,
                id: (a, bytes.len() as u32),
                cats,
            });
        });
        if self.hits.len() == from {
            return;
        }
        match self.frames.last() {
            Some(f) if !f.decided => {}
            other => {
                // Loose: no enclosing object, or an envelope already decided.
                let extra = other.map_or(CategorySet::EMPTY, |f| f.cats);
                let start = self.tok_start;
                self.emit_hits(from, extra, sink);
                // The token is complete: the frontier may pass it.
                let rel = self
                    .frames
                    .get(self.first_undecided)
                    .map_or(self.pos, |f| f.start.min(self.pos));
                sink.out.end_record(start..self.pos, rel);
                self.truncate_hits(from);
            }
        }
    }

    fn emit_hits(&self, from: usize, extra: CategorySet, sink: &mut Sink<'_>) {
        for h in &self.hits[from..] {
            let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
            sink.out.subject(h.ns, id, h.cats.union(extra));
        }
    }

    fn truncate_hits(&mut self, from: usize) {
        if let Some(h) = self.hits.get(from) {
            self.hit_bytes.truncate(h.id.0 as usize);
        }
        self.hits.truncate(from);
    }

    fn close_object(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        self.pop();
        let Some(f) = self.frames.pop() else {
            return Err(Unreadable::Malformed { offset: self.pos });
        };
        self.first_undecided = self.first_undecided.min(self.frames.len());
        let from = f.hits_start as usize;
        let values = f.subjs_start as usize;
        let has_values = self.subjs.len() > values;
        if f.direct && has_values {
            let mut cats = f.cats;
            for h in &self.hits[from..] {
                cats = cats.union(h.cats);
            }
            for &(a, b) in &self.subjs[values..] {
                let id = &self.subj_bytes[a as usize..b as usize];
                sink.out.subject(Namespace::Field, id, cats);
            }
            self.truncate_hits(from);
            self.subjs.truncate(values);
            self.subj_bytes.truncate(f.subj_base as usize);
            let rel = self.frontier();
            sink.out.end_record(f.start..self.pos, rel);
        } else {
            if !has_values {
                self.subj_bytes.truncate(f.subj_base as usize);
            }
            match self.frames.last_mut() {
                Some(p) if !p.decided => {
                    // Not a record: hits, categories and the values of a subject container
                    // belong to the enclosing object.
                    p.cats = p.cats.union(f.cats);
                }
                Some(p) if has_values => {
                    return Err(Unreadable::RecordTooLarge { offset: p.start });
                }
                parent => {
                    // Outside every record: the categories apply to the whole request.
                    sink.out.add_outside(f.cats);
                    let extra = f.cats.union(parent.map_or(CategorySet::EMPTY, |p| p.cats));
                    if self.hits.len() > from {
                        self.emit_hits(from, extra, sink);
                        self.truncate_hits(from);
                        let rel = self.frontier();
                        sink.out.end_record(f.start..self.pos, rel);
                    }
                }
            }
        }
        let _ = f.hit_bytes_base;
        self.value_done(sink);
        Ok(())
    }

    /// Decides objects that grew past `max_record_bytes` (see the module docs).
    fn check_size(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let max = sink.cfg.max_record_bytes() as u64;
        while let Some(f) = self.frames.get(self.first_undecided).copied() {
            if self.pos.saturating_sub(f.start) <= max {
                break;
            }
            let idx = self.first_undecided;
            let own_values = self
                .frames
                .get(idx + 1)
                .map_or(self.subjs.len(), |g| g.subjs_start as usize)
                > f.subjs_start as usize;
            if f.direct || own_values {
                return Err(Unreadable::RecordTooLarge { offset: f.start });
            }
            // An envelope: its categories are outside every record.
            sink.out.add_outside(f.cats);
            let from = f.hits_start as usize;
            let to = self
                .frames
                .get(idx + 1)
                .map_or(self.hits.len(), |g| g.hits_start as usize);
            if to > from {
                for h in &self.hits[from..to] {
                    let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
                    sink.out.subject(h.ns, id, h.cats.union(f.cats));
                }
                // The bytes stay in the arena until the frame closes; only the entries go.
                self.hits.drain(from..to);
                let gone = (to - from) as u32;
                for g in &mut self.frames[idx + 1..] {
                    g.hits_start -= gone;
                }
            }
            self.frames[idx].decided = true;
            self.first_undecided += 1;
            let rel = self.frontier();
            if to > from {
                sink.out.end_record(f.start..self.pos, rel);
            }
        }
        Ok(())
    }
}
