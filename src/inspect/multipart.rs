//! Streaming `multipart/form-data` scanner (RFC 2046 §5.1, RFC 7578), exactly as strict as
//! the RFC wherever a lenient server could find other parts than the gate:
//! - a delimiter is `CRLF--boundary` (or `--boundary` at the very start), followed by optional
//!   transport padding and CRLF, or by `--` for the close delimiter; the boundary string
//!   anywhere else in the body (inside a part, mid-line in the preamble: what a JSON body
//!   labelled multipart holds) is *unreadable*, since some parsers split there;
//! - part headers are CRLF lines of `name: value`, no folding, each of `Content-Disposition`,
//!   `Content-Type`, `Content-Transfer-Encoding`, `Content-Encoding` at most once;
//!   `Content-Disposition` is `form-data` with RFC 9110 parameters, each name once (RFC 2231
//!   continuations are unreadable; `name*` / `filename*` ext-values are decoded).
//!
//! What is inspected: the preamble and the epilogue as free text (their detector hits are
//! subjects of their own); every part header value (raw, and each parameter unquoted) with
//! the detectors; text fields (parts without a `Content-Type`, or `text/plain`) as values of
//! one form record (SPEC §3: the whole form is a record), judged at the end of the body; every
//! other part by its own type with a nested pipeline (transfer encoding, content encoding,
//! charset, then JSON, NDJSON, CSV or form), whose records stream out with release offsets of
//! the body as sent. A part whose `filename` ends in `.xlsx` is read as an xlsx workbook
//! whatever its type, an `application/octet-stream` part is one when its content is (held
//! whole, like a workbook body); a `filename` ending in `.xlsm` or `.xls` (macro-enabled, or
//! the binary format) is unreadable. A part of any other type (or a nested multipart) is
//! unreadable.
//!
//! The boundary may be split across chunks: the scanner keeps the last `delimiter + 1` bytes
//! back until it knows they are not the start of a delimiter.

use super::charset::Charset;
use super::decode::Coding;
use super::error::Unreadable;
use super::form::FormRecord;
use super::mediatype::{self, MediaType};
use super::pipeline::Pipeline;
use super::transfer::TransferEncoding;
use super::{BodyKind, Format, Sink};

const MAX_HEADERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterDelimiter,
    Headers,
    Body,
    Epilogue,
}

/// A multipart text field's value, collected whole (bounded by `max_record_bytes`).
#[derive(Debug, Default)]
pub(crate) struct TextValue {
    value: Vec<u8>,
}

impl TextValue {
    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.value.len() + data.len() > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge { offset: 0 });
        }
        self.value.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<(), Unreadable> {
        match std::str::from_utf8(&self.value) {
            Ok(_) => Ok(()),
            Err(e) => Err(Unreadable::InvalidUtf8 {
                offset: e.valid_up_to() as u64,
            }),
        }
    }
}

#[derive(Debug)]
struct Part {
    name: Vec<u8>,
    pipe: Pipeline,
    text: bool,
}

/// The streaming multipart scanner.
#[derive(Debug)]
pub(crate) struct MultipartScanner {
    /// `--boundary`.
    dash: Vec<u8>,
    state: State,
    buf: Vec<u8>,
    /// Offset of `buf[0]`.
    buf_start: u64,
    part: Option<Part>,
    /// Where the current part's header block and its data start.
    head_start: u64,
    part_start: u64,
    form: FormRecord,
    /// Start of the first part that made the form record interesting (held until the end).
    held_from: Option<u64>,
    /// Preamble or epilogue text collected so far, and where it starts.
    text: Vec<u8>,
    text_start: u64,
}

impl MultipartScanner {
    /// Bytes the current part's format holds inside the scanner (a workbook part).
    pub(crate) fn held_bytes(&mut self) -> u64 {
        self.part
            .as_mut()
            .map_or(0, |p| p.pipe.format_mut().held_bytes())
    }

    pub(crate) fn new(boundary: &[u8]) -> Self {
        let mut dash = b"--".to_vec();
        dash.extend_from_slice(boundary);
        MultipartScanner {
            dash,
            state: State::Preamble,
            buf: Vec::new(),
            buf_start: 0,
            part: None,
            head_start: 0,
            part_start: 0,
            form: FormRecord::default(),
            held_from: None,
            text: Vec::new(),
            text_start: 0,
        }
    }

    pub(crate) fn frontier(&mut self) -> u64 {
        let mut f = self.buf_start;
        if let Some(h) = self.held_from {
            f = f.min(h);
        }
        if matches!(self.state, State::Preamble | State::Epilogue) {
            f = f.min(self.text_start);
        }
        if let Some(p) = &mut self.part {
            f = f.min(if p.text {
                self.head_start
            } else {
                self.part_start + p.pipe.frontier()
            });
        }
        f
    }

    fn bad(&self) -> Unreadable {
        Unreadable::BadMultipart {
            offset: self.buf_start,
        }
    }

    fn consume(&mut self, k: usize) {
        self.buf.drain(..k);
        self.buf_start += k as u64;
    }

    /// Bytes kept back at the end of the buffer while no delimiter is found: enough that a
    /// later match has its two preceding bytes in the buffer.
    fn keep(&self) -> usize {
        (self.dash.len() + 1).min(self.buf.len())
    }

    /// Where the next `--boundary` is, and whether it is a delimiter (at the very start, or
    /// after CRLF). Anything else is unreadable.
    fn find_delimiter(&self) -> Result<Option<usize>, Unreadable> {
        match memchr::memmem::find(&self.buf, &self.dash) {
            None => Ok(None),
            Some(0) if self.buf_start == 0 => Ok(Some(0)),
            Some(k) if k >= 2 && &self.buf[k - 2..k] == b"\r\n" => Ok(Some(k)),
            Some(k) => Err(Unreadable::BadMultipart {
                offset: self.buf_start + k as u64,
            }),
        }
    }

    fn collect_text(&mut self, upto: usize, sink: &Sink<'_>) -> Result<(), Unreadable> {
        if self.text.len() + upto > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge {
                offset: self.text_start,
            });
        }
        self.text.extend_from_slice(&self.buf[..upto]);
        Ok(())
    }

    /// Emits the preamble or epilogue: its detector hits are subjects of their own.
    fn emit_text(&mut self, end: u64, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let text = std::mem::take(&mut self.text);
        if let Some(k) = memchr::memchr(0, &text) {
            return Err(Unreadable::NotText {
                offset: self.text_start + k as u64,
            });
        }
        if let Err(e) = std::str::from_utf8(&text) {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.text_start + e.valid_up_to() as u64,
            });
        }
        let mut rec = FormRecord::default();
        rec.free_text(&text, sink);
        rec.emit(sink, self.text_start..end);
        sink.out.end_record(self.text_start..end, end);
        Ok(())
    }

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                State::Preamble => match self.find_delimiter()? {
                    Some(k) => {
                        self.collect_text(k.saturating_sub(2), sink)?;
                        let end = self.buf_start + k as u64;
                        self.emit_text(end, sink)?;
                        let l = self.dash.len();
                        self.consume(k + l);
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        let upto = self.buf.len() - self.keep();
                        self.collect_text(upto, sink)?;
                        self.consume(upto);
                        return Ok(());
                    }
                },
                State::AfterDelimiter => {
                    let b = &self.buf;
                    let mut k = 0;
                    while k < b.len() && (b[k] == b' ' || b[k] == b'\t') {
                        k += 1;
                    }
                    if k > 256 {
                        return Err(self.bad());
                    }
                    if b.len() < k + 2 {
                        return Ok(());
                    }
                    if k == 0 && &b[..2] == b"--" {
                        self.consume(2);
                        self.state = State::Epilogue;
                        self.text_start = self.buf_start;
                        continue;
                    }
                    if &b[k..k + 2] != b"\r\n" {
                        return Err(self.bad());
                    }
                    self.consume(k + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    let (hlen, skip) = if self.buf.starts_with(b"\r\n") {
                        (0, 2)
                    } else if let Some(k) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                        (k + 2, k + 4)
                    } else if self.buf.len() > MAX_HEADERS {
                        return Err(self.bad());
                    } else {
                        return Ok(());
                    };
                    if hlen > MAX_HEADERS {
                        return Err(self.bad());
                    }
                    let head = self.buf[..hlen].to_vec();
                    self.head_start = self.buf_start;
                    let part = self.start_part(&head, sink)?;
                    if self.held_from.is_none() && self.form.is_interesting() {
                        self.held_from = Some(self.head_start);
                    }
                    self.consume(skip);
                    self.part = Some(part);
                    self.part_start = self.buf_start;
                    self.state = State::Body;
                }
                State::Body => match self.find_delimiter()? {
                    Some(k) => {
                        if k < 2 {
                            return Err(self.bad());
                        }
                        let data = self.buf[..k - 2].to_vec();
                        self.part_data(&data, sink)?;
                        self.consume(k - 2);
                        self.end_part(sink)?;
                        let l = self.dash.len();
                        self.consume(2 + l);
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        let upto = self.buf.len() - self.keep();
                        if upto > 0 {
                            let data = self.buf[..upto].to_vec();
                            self.part_data(&data, sink)?;
                            self.consume(upto);
                        }
                        return Ok(());
                    }
                },
                State::Epilogue => {
                    let n = self.buf.len();
                    self.collect_text(n, sink)?;
                    self.consume(n);
                    return Ok(());
                }
            }
        }
    }

    /// Reads a part's header block (CRLF-terminated lines) into a part to scan.
    fn start_part(&mut self, head: &[u8], sink: &mut Sink<'_>) -> Result<Part, Unreadable> {
        let bad = self.bad();
        if std::str::from_utf8(head).is_err() {
            return Err(Unreadable::InvalidUtf8 {
                offset: self.buf_start,
            });
        }
        let mut disposition: Option<&[u8]> = None;
        let mut ctype: Option<&[u8]> = None;
        let mut cte: Option<&[u8]> = None;
        let mut ce: Option<&[u8]> = None;
        let mut rest = head;
        while !rest.is_empty() {
            let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
                return Err(bad);
            };
            let line = &rest[..eol];
            rest = &rest[eol + 2..];
            let n = mediatype::token_len(line);
            if n == 0
                || line.get(n) != Some(&b':')
                || line.contains(&b'\r')
                || line.contains(&b'\n')
            {
                return Err(bad);
            }
            let value = line[n + 1..].trim_ascii();
            // Every header value is text a server may keep: the detectors see it raw.
            self.form.free_text(value, sink);
            let slot = match line[..n].to_ascii_lowercase().as_slice() {
                b"content-disposition" => &mut disposition,
                b"content-type" => &mut ctype,
                b"content-transfer-encoding" => &mut cte,
                b"content-encoding" => &mut ce,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(bad);
            }
        }
        let (name, filename) = match disposition {
            Some(d) => self.disposition(d, sink)?,
            None => (Vec::new(), None),
        };
        let workbook = match filename.as_deref().map(<[u8]>::to_ascii_lowercase) {
            Some(f) if f.ends_with(b".xlsx") => true,
            Some(f) if f.ends_with(b".xlsm") || f.ends_with(b".xls") => {
                return Err(Unreadable::BadWorkbook(
                    "a macro-enabled or binary workbook part",
                ))
            }
            _ => false,
        };
        let (text, kind, charset) = match ctype {
            // Named a workbook: read as one, whatever the type says.
            _ if workbook => (
                false,
                Some(BodyKind::Xlsx { sniffed: false }),
                Charset::Utf8,
            ),
            None => (true, None, Charset::Utf8),
            Some(t) => {
                let mt = MediaType::parse(t).map_err(|_| Unreadable::BadContentType)?;
                let charset = match mt.param("charset") {
                    None => Charset::Utf8,
                    Some(l) => Charset::from_label(l).ok_or(Unreadable::UnsupportedCharset)?,
                };
                if mt.essence() == "text/plain" {
                    (true, None, charset)
                } else {
                    match super::body_type(t)? {
                        super::BodyType {
                            kind: BodyKind::Multipart(_),
                            ..
                        } => return Err(Unreadable::UnknownContentType),
                        bt => (false, Some(bt.kind), bt.charset),
                    }
                }
            }
        };
        let transfer = cte.map(TransferEncoding::parse).transpose()?.flatten();
        let coding = match ce {
            Some(v) => Coding::parse(Some(
                std::str::from_utf8(v).map_err(|_| Unreadable::UnknownEncoding)?,
            ))?,
            None => None,
        };
        let format = match &kind {
            Some(k) => Format::with_protobuf(
                k,
                Ok(None),
                super::protobuf::message_descriptor(k, None, sink.cfg),
            ),
            None => Format::Text(TextValue::default()),
        };
        let pipe = super::pipeline(format, charset, coding, sink.cfg.decode_limits(), transfer)?;
        Ok(Part { name, pipe, text })
    }

    /// Parses `form-data; name=…; filename=…`: returns the field name and the file name (the
    /// `filename*` one when both are sent); every parameter value goes to the detectors.
    fn disposition(
        &mut self,
        d: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), Unreadable> {
        let bad = self.bad();
        let n = mediatype::token_len(d);
        if !d[..n].eq_ignore_ascii_case(b"form-data") {
            return Err(bad);
        }
        let params = mediatype::parse_params(d, n).map_err(|_| bad.clone())?;
        let mut name: Option<Vec<u8>> = None;
        let mut ext_name: Option<Vec<u8>> = None;
        let mut filenames: Vec<Vec<u8>> = Vec::new();
        for (k, v) in &params {
            let v = match k.strip_suffix('*') {
                Some("name" | "filename") => ext_value(v).ok_or_else(|| bad.clone())?,
                Some(_) => return Err(bad),
                None if k.contains('*') => return Err(bad),
                None => v.clone(),
            };
            self.form.free_text(&v, sink);
            match k.as_str() {
                "name" => name = Some(v),
                "name*" => ext_name = Some(v),
                "filename" | "filename*" => filenames.push(v),
                _ => {}
            }
        }
        // With `filename` and `filename*` both sent, servers pick either: a workbook by
        // either name is read as one, so the one naming a workbook kind wins.
        let filename = filenames
            .iter()
            .find(|f| {
                let f = f.to_ascii_lowercase();
                f.ends_with(b".xlsx") || f.ends_with(b".xlsm") || f.ends_with(b".xls")
            })
            .or(filenames.first())
            .cloned();
        match (name, ext_name) {
            (Some(a), Some(b)) if a != b => Err(bad),
            (a, b) => Ok((a.or(b).unwrap_or_default(), filename)),
        }
    }

    fn part_data(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if let Some(p) = &mut self.part {
            let before = sink.out.len();
            let r = p.pipe.feed(data, sink);
            sink.out.shift(before, self.part_start);
            if let Some(h) = self.held_from {
                sink.out.clamp_release(before, h);
            }
            r?;
        }
        if let Some(h) = self.held_from {
            if self.buf_start.saturating_sub(h) > sink.cfg.max_record_bytes() as u64 {
                return Err(Unreadable::RecordTooLarge { offset: h });
            }
        }
        Ok(())
    }

    fn end_part(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let Some(mut p) = self.part.take() else {
            return Ok(());
        };
        let before = sink.out.len();
        let r = p.pipe.finish(sink);
        sink.out.shift(before, self.part_start);
        if let Some(h) = self.held_from {
            sink.out.clamp_release(before, h);
        }
        r?;
        if p.text {
            if let Format::Text(t) = p.pipe.format_mut() {
                let value = std::mem::take(&mut t.value);
                self.form.field(&p.name, &value, sink);
                self.form.failure()?;
            }
        }
        // Text fields are the form record's: hold from this part's headers on.
        if self.held_from.is_none() && self.form.is_interesting() {
            self.held_from = Some(self.head_start);
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.state != State::Epilogue {
            return Err(Unreadable::BadMultipart {
                offset: self.buf_start + self.buf.len() as u64,
            });
        }
        let end = self.buf_start;
        if !self.text.is_empty() {
            self.emit_text(end, sink)?;
        }
        if self.form.is_interesting() {
            let span = self.held_from.unwrap_or(0)..end;
            self.form.emit(sink, span.clone());
            sink.out.end_record(span, end);
        }
        Ok(())
    }
}

/// Decodes an RFC 8187 ext-value (`UTF-8''%e5%90%8d`); only UTF-8 (and its ASCII subset).
fn ext_value(v: &[u8]) -> Option<Vec<u8>> {
    let mut it = v.splitn(3, |c| *c == b'\'');
    let charset = it.next()?;
    let _lang = it.next()?;
    let pct = it.next()?;
    if !(charset.eq_ignore_ascii_case(b"utf-8") || charset.eq_ignore_ascii_case(b"us-ascii")) {
        return None;
    }
    let mut out = Vec::with_capacity(pct.len());
    let mut i = 0;
    while i < pct.len() {
        if pct[i] == b'%' {
            let h = std::str::from_utf8(pct.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(pct[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(String::into_bytes)
}
