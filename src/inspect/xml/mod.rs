//! Streaming XML scanner (SPEC §3) on `quick-xml`'s pull parser, fed chunk by chunk; never a
//! tree, no DTD processing.
//!
//! What is read: element and attribute *local* names are field names (namespace prefixes are
//! ignored for matching; `xmlns` / `xmlns:*` attributes are bindings, not fields, their values
//! go to the detectors); text, CDATA and attribute values are values, with character
//! references and the five predefined entities decoded (any other entity reference is
//! unreadable); adjacent text, references and CDATA are one value (as a tree parser joins
//! them); comments and processing instructions go to the detectors. Names that mean nothing
//! to the configuration go to the detectors too. Records are built by [`records`].
//!
//! DTDs: a `DOCTYPE` with an internal subset or an external identifier is unreadable
//! ([`Unreadable::Doctype`]); nothing is fetched and no entity is ever expanded. A bare
//! `<!DOCTYPE root>` is fine.
//!
//! Encoding: the declaration's `encoding` is settled with the `Content-Type` charset by the
//! XML charset stage of the pipeline ([`decl`]); this scanner reads UTF-8 (a leading BOM is
//! skipped) and checks it as it comes.
//!
//! Streaming: a fresh `quick-xml` reader runs over each chunk (or over the bytes held from the
//! previous one, plus the chunk). Markup or a reference cut by the end of a chunk is held, at
//! most `max_record_bytes` of it, until the rest arrives; character data is collected across
//! chunks (also bounded) and judged when the next markup starts, so results never depend on
//! where the body is cut. End tags are matched here (the reader restarts mid-document).

mod decl;
mod records;

pub(crate) use decl::XmlDecoder;

use quick_xml::errors::{Error as XmlError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::charset::Charset;
use super::config::FieldInfo;
use super::error::Unreadable;
use super::json::{looks_like_document, read_embedded};
use super::record::trim;
use super::Sink;
use records::Frames;

const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Before,
    In,
    After,
}

/// The streaming XML scanner. `Debug` shows positions, never body bytes.
pub(crate) struct XmlScanner {
    /// The `Content-Type` charset (for the charset stage).
    named: Option<Charset>,
    frames: Frames,
    /// Offset of the first byte not yet read (the start of `held`).
    pos: u64,
    /// Bytes of markup or a reference cut by the end of the last chunk.
    held: Vec<u8>,
    /// Character data collected so far (text, resolved references, CDATA).
    val: Vec<u8>,
    val_start: Option<u64>,
    /// Bytes fed so far, and an unfinished UTF-8 sequence at their end.
    fed: u64,
    carry: Vec<u8>,
    /// Any event seen (a declaration must come first).
    seen: bool,
    root: Root,
    doctype: bool,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for XmlScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmlScanner")
            .field("pos", &self.pos)
            .field("depth", &self.frames.depth())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl XmlScanner {
    /// `named`: the `Content-Type` charset when the type names one.
    pub(crate) fn new(named: Option<Charset>) -> Self {
        XmlScanner {
            named,
            frames: Frames::default(),
            pos: 0,
            held: Vec::new(),
            val: Vec::new(),
            val_start: None,
            fed: 0,
            carry: Vec::new(),
            seen: false,
            root: Root::Before,
            doctype: false,
            scratch: Vec::new(),
        }
    }

    /// The charset stage for this body.
    pub(crate) fn decoder(&self) -> XmlDecoder {
        XmlDecoder::new(self.named)
    }

    /// Offset up to which no byte belongs to an unjudged record or value.
    pub(crate) fn frontier(&self) -> u64 {
        let mut f = self.frames.frontier(self.pos);
        if let Some(v) = self.val_start {
            f = f.min(v);
        }
        f
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        self.check_utf8(data)?;
        self.fed += data.len() as u64;
        let max = sink.cfg.max_record_bytes();
        if self.held.is_empty() {
            let k = self.run(data, self.pos, false, sink)?;
            self.pos += k as u64;
            self.held.extend_from_slice(&data[k..]);
        } else {
            let resumes = [b'>', b';', b'<', b'&']
                .iter()
                .any(|c| memchr::memchr(*c, data).is_some());
            self.held.extend_from_slice(data);
            // Held bytes shorter than a BOM at the start may be one: look again.
            if resumes || self.held.len() - data.len() < BOM.len() {
                let held = std::mem::take(&mut self.held);
                let r = self.run(&held, self.pos, false, sink);
                self.held = held;
                let k = r?;
                self.held.drain(..k);
                self.pos += k as u64;
            }
        }
        if self.held.len() > max {
            return Err(Unreadable::RecordTooLarge { offset: self.pos });
        }
        if self.val.len() > max {
            return Err(Unreadable::RecordTooLarge {
                offset: self.val_start.unwrap_or(self.pos),
            });
        }
        self.frames.check_size(self.pos, max as u64, sink)
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if !self.carry.is_empty() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.fed - self.carry.len() as u64,
            });
        }
        let held = std::mem::take(&mut self.held);
        let k = self.run(&held, self.pos, true, sink)?;
        self.pos += k as u64;
        let end = self.pos;
        self.flush(None, end, sink)?;
        if self.frames.depth() > 0 {
            return Err(Unreadable::Truncated { offset: end });
        }
        Ok(())
    }

    /// Checks that the text is UTF-8, carrying a sequence cut by the end of a chunk.
    fn check_utf8(&mut self, mut data: &[u8]) -> Result<(), Unreadable> {
        let bad = |at: u64| Unreadable::InvalidUtf8 { offset: at };
        if let Some(&lead) = self.carry.first() {
            let want = match lead {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (want - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            let at = self.fed + take as u64 - self.carry.len() as u64;
            match std::str::from_utf8(&self.carry) {
                Ok(_) => self.carry.clear(),
                Err(e) if e.error_len().is_none() && data.is_empty() => return Ok(()),
                Err(_) => return Err(bad(at)),
            }
        }
        if let Err(e) = std::str::from_utf8(data) {
            let at = self.fed + (self.carry.len() + e.valid_up_to()) as u64;
            match e.error_len() {
                None => self.carry.extend_from_slice(&data[e.valid_up_to()..]),
                Some(_) => return Err(bad(at)),
            }
        }
        Ok(())
    }

    /// Reads the events of `input` (at offset `base`); returns how many bytes were consumed
    /// (the rest is markup or a reference cut by the end of the input, unless `last`).
    fn run(
        &mut self,
        input: &[u8],
        base: u64,
        last: bool,
        sink: &mut Sink<'_>,
    ) -> Result<usize, Unreadable> {
        let mut start = 0;
        if input.starts_with(BOM) {
            if base == 0 {
                start = BOM.len();
            } else {
                // U+FEFF inside the text (the reader would drop it as a byte order mark).
                self.chars(0, BOM.len(), input, base);
                start = BOM.len();
            }
        } else if base == 0 && !last && input.len() < BOM.len() && BOM.starts_with(input) {
            return Ok(0);
        }
        let mut reader = Reader::from_reader(&input[start..]);
        let c = reader.config_mut();
        c.check_end_names = false;
        c.allow_unmatched_ends = true;
        c.expand_empty_elements = false;
        // Text not yet judged that lies in `input` (not copied): its range.
        let mut pend: Option<(usize, usize)> = None;
        loop {
            let off = start + reader.buffer_position() as usize;
            let at = base + off as u64;
            let ev = reader.read_event();
            let end = start + reader.buffer_position() as usize;
            let pos = base + end as u64;
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    if !last && cut_by_end(&e, &input[off..]) {
                        self.keep(pend, input, base);
                        return Ok(off);
                    }
                    return Err(match e {
                        XmlError::Syntax(_) if last => Unreadable::Truncated { offset: at },
                        _ => Unreadable::Malformed { offset: at },
                    });
                }
            };
            self.seen |= !matches!(ev, Event::Eof | Event::Decl(_));
            match ev {
                Event::Text(t) => {
                    if pend.is_none() && self.val_start.is_none() {
                        pend = Some((off, off + t.len()));
                    } else {
                        self.keep(pend.take(), input, base);
                        self.val.extend_from_slice(&t);
                    }
                }
                Event::GeneralRef(r) => {
                    self.keep(pend.take(), input, base);
                    self.val_start.get_or_insert(at);
                    resolve_ref(&r, &mut self.val).ok_or(Unreadable::Malformed { offset: at })?;
                }
                Event::CData(t) => {
                    self.keep(pend.take(), input, base);
                    self.val_start.get_or_insert(at);
                    self.val.extend_from_slice(&t);
                }
                Event::Eof => break,
                ev => {
                    let v = pend.take().map(|(a, b)| (&input[a..b], base + a as u64));
                    self.flush(v, at, sink)?;
                    self.markup(ev, at, pos, sink)?;
                }
            }
        }
        self.keep(pend, input, base);
        Ok(input.len())
    }

    /// Moves text not yet judged from the input into `val`.
    fn keep(&mut self, pend: Option<(usize, usize)>, input: &[u8], base: u64) {
        if let Some((a, b)) = pend {
            self.chars(a, b, input, base);
        }
    }

    fn chars(&mut self, a: usize, b: usize, input: &[u8], base: u64) {
        self.val_start.get_or_insert(base + a as u64);
        self.val.extend_from_slice(&input[a..b]);
    }

    /// Judges the character data before markup at `end`: `v` when it lies in the input
    /// (with its offset), else what `val` collected.
    fn flush(
        &mut self,
        v: Option<(&[u8], u64)>,
        end: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let (text, at, owned) = match (v, self.val_start.take()) {
            (Some((t, at)), None) => (t, at, None),
            (None, Some(at)) => (&[][..], at, Some(std::mem::take(&mut self.val))),
            (Some((t, _)), Some(at)) => {
                // Not reached (text joins `val` once it is open); kept total.
                self.val.extend_from_slice(t);
                (&[][..], at, Some(std::mem::take(&mut self.val)))
            }
            (None, None) => return Ok(()),
        };
        let text = owned.as_deref().unwrap_or(text);
        let r = self.judge_chars(text, at, end, sink);
        if let Some(mut o) = owned {
            o.clear();
            self.val = o;
        }
        r
    }

    fn judge_chars(
        &mut self,
        text: &[u8],
        at: u64,
        end: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let blank = trim(text).is_empty();
        if self.frames.depth() == 0 {
            return if blank {
                Ok(())
            } else {
                Err(Unreadable::Malformed { offset: at })
            };
        }
        if looks_like_document(text) {
            // A JSON document as the value (SPEC §3 "Documents inside values").
            let subject = self.frames.in_subject_element();
            let doc = read_embedded(text, self.frames.depth(), subject, sink)
                .map_err(|_| Unreadable::TooDeep { offset: at })?;
            if let Some(doc) = doc {
                return self.frames.document(&doc, at, end, sink);
            }
        }
        if !blank {
            self.frames.text(text, at, end, sink)?;
        }
        self.frames.detect(text, at, end, sink);
        Ok(())
    }

    /// Markup other than character data: `at..pos` is its span.
    fn markup(
        &mut self,
        ev: Event<'_>,
        at: u64,
        pos: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let bad = Unreadable::Malformed { offset: at };
        match ev {
            Event::Start(e) => self.element(&e, at, pos, false, sink)?,
            Event::Empty(e) => self.element(&e, at, pos, true, sink)?,
            Event::End(e) => {
                if !self.frames.closes(e.name().as_ref()) {
                    return Err(bad);
                }
                self.frames.close(pos, sink)?;
                if self.frames.depth() == 0 {
                    self.root = Root::After;
                }
            }
            Event::Comment(t) => self.frames.detect(&t, at, pos, sink),
            Event::PI(t) => self.frames.detect(&t, at, pos, sink),
            Event::Decl(_) if self.seen => return Err(bad),
            Event::Decl(_) => self.seen = true,
            Event::DocType(t) => {
                if self.root != Root::Before || self.doctype {
                    return Err(bad);
                }
                self.doctype = true;
                let t = t.trim_ascii();
                let name = t
                    .iter()
                    .position(|c| c.is_ascii_whitespace() || *c == b'[')
                    .unwrap_or(t.len());
                if !t[name..].trim_ascii().is_empty() {
                    return Err(Unreadable::Doctype { offset: at });
                }
                self.frames.detect(t, at, pos, sink);
            }
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) | Event::Eof => {}
        }
        Ok(())
    }

    fn element(
        &mut self,
        e: &BytesStart<'_>,
        at: u64,
        pos: u64,
        empty: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if self.frames.depth() == 0 {
            if self.root == Root::After {
                return Err(Unreadable::Malformed { offset: at });
            }
            self.root = Root::In;
        }
        if self.frames.depth() >= sink.cfg.max_depth() {
            return Err(Unreadable::TooDeep { offset: at });
        }
        let qname = e.name();
        let info = lookup(e.local_name().as_ref(), sink);
        self.frames
            .open(at, qname.as_ref(), info.unwrap_or_default(), sink.out);
        if info.is_none() {
            self.frames.detect(qname.as_ref(), at, pos, sink);
        }
        let mut v = std::mem::take(&mut self.scratch);
        let r = self.attributes(e, &mut v, at, pos, sink);
        self.scratch = v;
        r?;
        if empty {
            self.frames.close(pos, sink)?;
            if self.frames.depth() == 0 {
                self.root = Root::After;
            }
        }
        Ok(())
    }

    fn attributes(
        &mut self,
        e: &BytesStart<'_>,
        v: &mut Vec<u8>,
        at: u64,
        pos: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        for a in e.attributes() {
            let a = a.map_err(|_| Unreadable::Malformed { offset: at })?;
            v.clear();
            unescape(&a.value, v).ok_or(Unreadable::Malformed { offset: at })?;
            if a.key.as_namespace_binding().is_none() {
                let info = lookup(a.key.local_name().as_ref(), sink);
                if info.is_none() {
                    self.frames.detect(a.key.as_ref(), at, pos, sink);
                }
                let info = info.unwrap_or_default();
                if !trim(v).is_empty() {
                    self.frames.attribute(info, v, sink)?;
                }
            }
            self.frames.detect(v, at, pos, sink);
        }
        Ok(())
    }
}

/// What a local name means to the configuration (a watched name is noted as seen).
fn lookup(local: &[u8], sink: &mut Sink<'_>) -> Option<FieldInfo> {
    let info = sink.cfg.lookup(local)?;
    if let Some(w) = info.watched {
        sink.saw_watched(w);
    }
    Some(info)
}

/// Whether a reader error only means that the input ended inside markup or a reference.
fn cut_by_end(e: &XmlError, rest: &[u8]) -> bool {
    match e {
        // `<!` followed by something else than a comment, CDATA or DOCTYPE opener.
        XmlError::Syntax(SyntaxError::InvalidBangMarkup) => rest.len() < b"<![CDATA[".len(),
        XmlError::Syntax(_) => true,
        XmlError::IllFormed(IllFormedError::UnclosedReference) => rest
            .get(1..)
            .is_some_and(|r| !r.iter().any(|c| matches!(c, b';' | b'<' | b'&'))),
        _ => false,
    }
}

/// Appends the character a reference names (`name` between `&` and `;`); `None` for an
/// undefined entity or a reference to a character XML does not allow.
fn resolve_ref(name: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let c = match name {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"apos" => '\'',
        b"quot" => '"',
        [b'#', b'x', hex @ ..] => char_ref(hex, 16)?,
        [b'#', dec @ ..] => char_ref(dec, 10)?,
        _ => return None,
    };
    let mut b = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    Some(())
}

fn char_ref(digits: &[u8], radix: u32) -> Option<char> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let n = u32::from_str_radix(s, radix).ok()?;
    let c = char::from_u32(n)?;
    // XML 1.0 `Char`: no NUL and no other C0 control but tab, LF and CR.
    (n >= 0x20 || matches!(n, 0x9 | 0xA | 0xD)).then_some(c)
}

/// Unescapes an attribute value into `out`; `None` for a bad or undefined reference.
fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'&', rest) {
        out.extend_from_slice(&rest[..i]);
        let r = &rest[i + 1..];
        let j = memchr::memchr(b';', r)?;
        resolve_ref(&r[..j], out)?;
        rest = &r[j + 1..];
    }
    out.extend_from_slice(rest);
    Some(())
}
