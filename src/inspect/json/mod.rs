//! Streaming JSON (and NDJSON / JSON Lines / json-seq) scanner that never builds a tree, in two
//! stages (simdjson style). Stage 1 ([`super::json_index`]) indexes each window of the body
//! (at most 16 KiB) 64 bytes at a time: structural bytes, real quotes, starts of numbers and
//! literals, plus per-block bits that stage 2 asks about per string (backslashes, non-ASCII,
//! digits and `@` for the detector prefilter). Stage 2 (here) walks those positions with the
//! grammar's state machine instead of dispatching on every byte; a string is the bytes between
//! two consecutive entries and, when it holds no escape and lies in one window, is inspected in
//! place without a copy. Resumable: a token cut by a chunk (or window) boundary is carried in
//! `scratch` (strings as sent, unescaped when they close), and stage 1 carries its escape and
//! in-string state, so results never depend on where the body is cut.
//!
//! The records (SPEC §3) are kept by `records`: the frame of every open object and what
//! becomes of it when it closes.

mod embedded;
mod keys;
mod records;

pub(crate) use embedded::{looks_like_document, read as read_embedded, Embedded};

use super::config::FieldInfo;
use super::detect;
use super::error::Unreadable;
use super::json_index::{JsonIndex, WINDOW};
use super::json_lex::{is_num_byte, unescape, valid_number};
use super::record::trim;
use super::Sink;
use crate::model::CategorySet;
use keys::KeyMemo;
use records::{Frame, Hit};

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

const LITS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// One window of the body as stage 2 walks it: its bytes, stage 1's index of them, and the
/// offset of its first byte.
#[derive(Clone, Copy)]
struct Win<'a> {
    data: &'a [u8],
    ix: &'a JsonIndex,
    base: u64,
}

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
    /// The bytes so far of a token that crosses a window (a string as sent, escapes included).
    scratch: Vec<u8>,
    /// A string with escapes, unescaped.
    unescaped: Vec<u8>,
    /// Stage 1: the index of the current window and the carries between windows.
    index: JsonIndex,
    tok_start: u64,
    val_info: FieldInfo,
    /// Offset of the next byte to read.
    pos: u64,
    /// Bytes of a leading BOM matched so far.
    bom: u8,
    /// Containers open around the body (a document inside a value: those around the value).
    depth_base: usize,
    /// Field-name lookups of the keys seen so far.
    keys: KeyMemo,
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
            unescaped: Vec::new(),
            index: JsonIndex::default(),
            tok_start: 0,
            val_info: FieldInfo::default(),
            pos: 0,
            bom: 0,
            depth_base: 0,
            keys: KeyMemo::default(),
        }
    }

    /// Bytes held in the hit arena (for the test of its bound).
    #[cfg(test)]
    pub(crate) fn held_hit_bytes(&self) -> usize {
        self.hit_bytes.len()
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
        let (data, base) = (&data[i..], base + i as u64);
        let mut ix = std::mem::take(&mut self.index);
        let mut r = Ok(());
        for (w, data) in data.chunks(WINDOW).enumerate() {
            ix.index(data, self.seq);
            let win = Win {
                data,
                ix: &ix,
                base: base + (w * WINDOW) as u64,
            };
            r = self.walk(win, sink);
            if r.is_err() {
                break;
            }
        }
        self.index = ix;
        r
    }

    /// Stage 2: walks the index of one window.
    fn walk(&mut self, win: Win<'_>, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let Win { data, ix, base } = win;
        let pos = ix.pos();
        let mut k = 0usize;
        if matches!(
            self.state,
            State::Str { .. } | State::Num | State::Lit { .. }
        ) {
            match self.carried(win, sink)? {
                Some(next) => k = next,
                None => return Ok(()),
            }
        }
        while let Some(&p) = pos.get(k) {
            let p = p as usize;
            k += 1;
            let c = data[p];
            let at = base + p as u64;
            self.pos = at;
            match self.state {
                State::ObjFirst | State::ObjKey => {
                    if c == b'"' {
                        // The common `"key":"value","key":…` chain without a trip through the
                        // dispatch per token: anything else falls back to it.
                        let mut p = p;
                        loop {
                            self.tok_start = base + p as u64;
                            let Some(&q) = pos.get(k) else {
                                return self.string_open(data, p, true, sink);
                            };
                            k += 1;
                            self.string_in(win, p..q as usize, true, sink)?;
                            match (pos.get(k), pos.get(k + 1), pos.get(k + 2)) {
                                (Some(&colon), Some(&v), Some(&vq))
                                    if data[colon as usize] == b':' && data[v as usize] == b'"' =>
                                {
                                    k += 3;
                                    self.state = State::Value;
                                    let v = v as usize;
                                    self.pos = base + v as u64;
                                    self.tok_start = self.pos;
                                    self.string_in(win, v..vq as usize, false, sink)?;
                                }
                                _ => break,
                            }
                            match (pos.get(k), pos.get(k + 1)) {
                                (Some(&comma), Some(&next))
                                    if data[comma as usize] == b','
                                        && data[next as usize] == b'"' =>
                                {
                                    k += 2;
                                    self.state = State::ObjKey;
                                    p = next as usize;
                                }
                                _ => break,
                            }
                        }
                    } else if c == b'}' && self.state == State::ObjFirst {
                        self.pos = at + 1;
                        self.close_object(sink)?;
                    } else {
                        return Err(Unreadable::Malformed { offset: at });
                    }
                }
                State::Colon => {
                    if c != b':' {
                        return Err(Unreadable::Malformed { offset: at });
                    }
                    self.state = State::Value;
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
                        _ => return Err(Unreadable::Malformed { offset: at }),
                    }
                }
                State::Value | State::ArrFirst => match self.value(win, p, k, sink)? {
                    Some(next) => k = next,
                    None => return Ok(()),
                },
                State::Done | State::Str { .. } | State::Num | State::Lit { .. } => {
                    return Err(Unreadable::Malformed { offset: at });
                }
            }
        }
        Ok(())
    }

    /// Completes a string, number or literal carried over from the previous window; returns
    /// the first index entry after it, or `None` when it goes on past this window.
    fn carried(&mut self, win: Win<'_>, sink: &mut Sink<'_>) -> Result<Option<usize>, Unreadable> {
        let Win { data, ix, base } = win;
        let n = data.len();
        let mut i = 0usize;
        match self.state {
            State::Str { key } => {
                // Stage 1 knows the window starts inside a string: its first entry closes it.
                let Some(&q) = ix.pos().first() else {
                    self.push_scratch(data, sink)?;
                    return Ok(None);
                };
                let q = q as usize;
                self.push_scratch(&data[..q], sink)?;
                self.pos = base + q as u64 + 1;
                let raw = std::mem::take(&mut self.scratch);
                let r = self.string_raw(&raw, key, sink);
                self.scratch = raw;
                r?;
                return Ok(Some(1));
            }
            State::Num => {
                while i < n && is_num_byte(data[i]) {
                    i += 1;
                }
                self.push_scratch(&data[..i], sink)?;
                if i == n {
                    return Ok(None);
                }
                self.pos = base + i as u64;
                let tok = std::mem::take(&mut self.scratch);
                let r = self.number_done(&tok, sink);
                self.scratch = tok;
                r?;
                self.value_done(sink);
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
                if g < lit.len() {
                    self.state = State::Lit {
                        which,
                        got: g as u8,
                    };
                    return Ok(None);
                }
                self.pos = base + i as u64;
                self.value_done(sink);
            }
            _ => return Ok(Some(0)),
        }
        // The entries of the token's bytes in this window (its run restarted here) are done.
        let mut k = ix.pos().partition_point(|p| (*p as usize) < i);
        if i < n && !self.delimiter(data[i]) {
            if !(self.seq && self.stack.is_empty()) {
                return Err(Unreadable::Malformed {
                    offset: base + i as u64,
                });
            }
            // json-seq: the next top-level value follows at once, inside the same run.
            match self.value(win, i, k, sink)? {
                Some(next) => k = next,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// Whether `c` may follow a number or literal: white space, structural or a quote (what
    /// is not allowed there is refused by the state machine).
    #[inline]
    fn delimiter(&self, c: u8) -> bool {
        matches!(
            c,
            b' ' | b'\n' | b'\r' | b'\t' | b',' | b']' | b'}' | b':' | b'{' | b'[' | b'"'
        ) || (self.seq && c == 0x1E)
    }

    /// A value starting at byte `p` of the window (`k` is the next index entry); returns the
    /// entry after the value's tokens, or `None` when the window ends inside it.
    fn value(
        &mut self,
        win: Win<'_>,
        mut p: usize,
        k: usize,
        sink: &mut Sink<'_>,
    ) -> Result<Option<usize>, Unreadable> {
        let Win { data, ix, base } = win;
        let n = data.len();
        loop {
            let at = base + p as u64;
            let c = data[p];
            if c == b']' && self.state == State::ArrFirst {
                self.pop();
                self.pos = at + 1;
                self.value_done(sink);
                return Ok(Some(k));
            }
            let info = std::mem::take(&mut self.val_info);
            // The end of a number or literal inside this window.
            let end = match c {
                b'{' | b'[' => {
                    self.open(c, info, at, sink)?;
                    return Ok(Some(k));
                }
                b'"' => {
                    self.val_info = info;
                    self.tok_start = at;
                    return match ix.pos().get(k) {
                        Some(&q) => {
                            self.string_in(win, p..q as usize, false, sink)?;
                            Ok(Some(k + 1))
                        }
                        None => {
                            self.string_open(data, p, false, sink)?;
                            Ok(None)
                        }
                    };
                }
                b'-' | b'0'..=b'9' => {
                    self.val_info = info;
                    self.tok_start = at;
                    let mut j = p + 1;
                    while j < n && is_num_byte(data[j]) {
                        j += 1;
                    }
                    if j == n {
                        self.scratch.clear();
                        self.push_scratch(&data[p..j], sink)?;
                        self.state = State::Num;
                        return Ok(None);
                    }
                    self.pos = base + j as u64;
                    self.number_done(&data[p..j], sink)?;
                    self.value_done(sink);
                    j
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
                    let lit = LITS[which as usize];
                    let have = (n - p).min(lit.len());
                    for g in 1..have {
                        if data[p + g] != lit[g] {
                            return Err(Unreadable::Malformed {
                                offset: at + g as u64,
                            });
                        }
                    }
                    if have < lit.len() {
                        self.state = State::Lit {
                            which,
                            got: have as u8,
                        };
                        return Ok(None);
                    }
                    let j = p + lit.len();
                    self.pos = base + j as u64;
                    self.value_done(sink);
                    j
                }
                _ => return Err(Unreadable::Malformed { offset: at }),
            };
            if end == n || self.delimiter(data[end]) {
                return Ok(Some(k));
            }
            // Bytes glued to a scalar belong to its run and have no index entry: in json-seq
            // they start the next top-level value, anywhere else they are malformed.
            if !(self.seq && self.stack.is_empty()) {
                return Err(Unreadable::Malformed {
                    offset: base + end as u64,
                });
            }
            p = end;
        }
    }

    /// `{` or `[` as a value.
    fn open(
        &mut self,
        c: u8,
        info: FieldInfo,
        at: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if !info.categories.is_empty() {
            self.add_cats(info.categories, sink.out);
        }
        if self.depth_base + self.stack.len() >= sink.cfg.max_depth() {
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
        Ok(())
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

    /// A string whose quotes are at `quotes.start` and `quotes.end` of the window: inspected
    /// in place unless it holds a backslash; the detector prefilter comes from stage 1's masks.
    #[inline]
    fn string_in(
        &mut self,
        win: Win<'_>,
        quotes: std::ops::Range<usize>,
        key: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let Win { data, ix, base } = win;
        let (p, q) = (quotes.start, quotes.end);
        let raw = &data[p + 1..q];
        self.pos = base + q as u64 + 1;
        let bits = ix.string_bits(p + 1, q, detect::MIN_DIGITS);
        if bits.escapes {
            return self.string_raw(raw, key, sink);
        }
        if bits.high && std::str::from_utf8(raw).is_err() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.tok_start,
            });
        }
        self.string_checked(raw, key, Some((bits.digits, bits.at)), sink)
    }

    /// A string opened at `p` that goes on past the window: its bytes so far go to `scratch`.
    fn string_open(
        &mut self,
        data: &[u8],
        p: usize,
        key: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        self.state = State::Str { key };
        self.scratch.clear();
        self.push_scratch(&data[p + 1..], sink)
    }

    /// A complete string as sent (between its quotes): unescaped if it needs to be.
    fn string_raw(&mut self, raw: &[u8], key: bool, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if memchr::memchr(b'\\', raw).is_none() {
            return self.string_done(raw, key, None, sink);
        }
        let mut u = std::mem::take(&mut self.unescaped);
        u.clear();
        let r = match unescape(raw, &mut u) {
            Ok(()) => self.string_done(&u, key, None, sink),
            Err(at) => Err(Unreadable::Malformed {
                offset: self.tok_start + 1 + at as u64,
            }),
        };
        self.unescaped = u;
        r
    }

    /// A complete string (unescaped bytes); `profile` is the detector prefilter when stage 1
    /// counted it.
    fn string_done(
        &mut self,
        s: &[u8],
        key: bool,
        profile: Option<(usize, bool)>,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if !s.is_ascii() && std::str::from_utf8(s).is_err() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.tok_start,
            });
        }
        self.string_checked(s, key, profile, sink)
    }

    /// A complete string whose UTF-8 is known to be valid. Always inlined and the two paths
    /// never: otherwise the inliner's choice, which moves with unrelated code, decides whether
    /// every key pays the large value function's prologue (±0.5 M instructions per MiB).
    #[inline(always)]
    fn string_checked(
        &mut self,
        s: &[u8],
        key: bool,
        profile: Option<(usize, bool)>,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if key {
            self.key_checked(s, profile, sink);
            Ok(())
        } else {
            self.value_checked(s, profile, sink)
        }
    }

    /// A complete key (see [`Self::string_checked`]).
    #[inline(never)]
    fn key_checked(&mut self, s: &[u8], profile: Option<(usize, bool)>, sink: &mut Sink<'_>) {
        let info = match self.keys.lookup(sink.cfg, s) {
            Some(info) => info,
            None => {
                // A key is data too (`{"<id>": {...}}`); a configured name is not an
                // identifier.
                self.detect(s, profile, sink);
                FieldInfo::default()
            }
        };
        if let Some(w) = info.watched {
            sink.saw_watched(w);
        }
        self.val_info = info;
        self.state = State::Colon;
    }

    /// A complete string value (see [`Self::string_checked`]).
    #[inline(never)]
    fn value_checked(
        &mut self,
        s: &[u8],
        profile: Option<(usize, bool)>,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let info = self.val_info;
        if looks_like_document(s) {
            let subjects = info.subject_rank.is_some() || self.subj_container.is_some();
            let at = self.tok_start;
            let doc = embedded::read(s, self.stack.len(), subjects, sink)
                .map_err(|_| Unreadable::TooDeep { offset: at })?;
            if let Some(doc) = doc {
                self.take_embedded(&doc, info, sink)?;
                self.value_done(sink);
                return Ok(());
            }
        }
        if info.subject_rank.is_some()
            || !info.categories.is_empty()
            || self.subj_container.is_some()
        {
            let t = trim(s);
            if !t.is_empty() {
                self.field_value(info, t, sink.out)?;
            }
        }
        self.detect(s, profile, sink);
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
            self.detect(s, None, sink);
        }
        Ok(())
    }
}
