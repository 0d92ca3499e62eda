//! Streaming `multipart/form-data` scanner. Text fields (parts without a `Content-Type`, or
//! `text/plain`) are values of one form record (SPEC §3: the whole form is a record), judged at
//! the end of the body. Every other part is inspected by its own type with a nested scanner
//! (JSON, NDJSON, CSV, form), whose records stream out shifted to body offsets; a part of any
//! other type (or a nested multipart) is unreadable.
//!
//! The boundary may be split across chunks: the scanner keeps the last `delimiter - 1` bytes of
//! a part back until it knows they are not the start of the delimiter.

use super::error::Unreadable;
use super::form::FormRecord;
use super::{BodyKind, Format, Sink};

const MAX_HEADERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterBoundary,
    Headers,
    Body,
    End,
}

#[derive(Debug)]
enum Part {
    Text { name: Vec<u8>, value: Vec<u8> },
    File(Box<Format>),
}

/// The streaming multipart scanner.
#[derive(Debug)]
pub(crate) struct MultipartScanner {
    /// `\r\n--boundary`.
    delim: Vec<u8>,
    state: State,
    buf: Vec<u8>,
    /// Offset of `buf[0]`.
    buf_start: u64,
    part: Option<Part>,
    part_start: u64,
    form: FormRecord,
    held_from: Option<u64>,
}

impl MultipartScanner {
    pub(crate) fn new(boundary: &[u8]) -> Self {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary);
        MultipartScanner {
            delim,
            state: State::Preamble,
            buf: Vec::new(),
            buf_start: 0,
            part: None,
            part_start: 0,
            form: FormRecord::default(),
            held_from: None,
        }
    }

    pub(crate) fn frontier(&self) -> u64 {
        let mut f = self.buf_start;
        if let Some(h) = self.held_from {
            f = f.min(h);
        }
        match &self.part {
            Some(Part::Text { .. }) => f = f.min(self.part_start),
            Some(Part::File(sub)) => f = f.min(self.part_start + sub.frontier()),
            None => {}
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

    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.state == State::End {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                State::Preamble => {
                    let first = &self.delim[2..];
                    match memchr::memmem::find(&self.buf, first) {
                        Some(k) => {
                            let l = first.len();
                            self.consume(k + l);
                            self.state = State::AfterBoundary;
                        }
                        None => {
                            let keep = first.len().saturating_sub(1).min(self.buf.len());
                            self.consume(self.buf.len() - keep);
                            return Ok(());
                        }
                    }
                }
                State::AfterBoundary => {
                    let b = &self.buf;
                    let mut k = 0;
                    while k < b.len() && (b[k] == b' ' || b[k] == b'\t') {
                        k += 1;
                    }
                    if b.len() < k + 2 {
                        if b.len() > 256 {
                            return Err(self.bad());
                        }
                        return Ok(());
                    }
                    if &b[k..k + 2] == b"--" {
                        self.consume(k + 2);
                        self.state = State::End;
                        self.buf.clear();
                        return Ok(());
                    }
                    if &b[k..k + 2] == b"\r\n" {
                        self.consume(k + 2);
                    } else if b[k] == b'\n' {
                        self.consume(k + 1);
                    } else {
                        return Err(self.bad());
                    }
                    self.state = State::Headers;
                }
                State::Headers => {
                    let (hlen, skip) = if self.buf.starts_with(b"\r\n") {
                        (0, 2)
                    } else if let Some(k) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                        (k, k + 4)
                    } else if self.buf.len() > MAX_HEADERS {
                        return Err(self.bad());
                    } else {
                        return Ok(());
                    };
                    if hlen > MAX_HEADERS {
                        return Err(self.bad());
                    }
                    let part = self.start_part(hlen)?;
                    self.consume(skip);
                    self.part = Some(part);
                    self.part_start = self.buf_start;
                    self.state = State::Body;
                }
                State::Body => match memchr::memmem::find(&self.buf, &self.delim) {
                    Some(k) => {
                        let data = self.buf[..k].to_vec();
                        self.part_data(&data, sink)?;
                        self.consume(k);
                        self.end_part(sink)?;
                        let l = self.delim.len();
                        self.consume(l);
                        self.state = State::AfterBoundary;
                    }
                    None => {
                        let keep = (self.delim.len() - 1).min(self.buf.len());
                        let upto = self.buf.len() - keep;
                        if upto > 0 {
                            let data = self.buf[..upto].to_vec();
                            self.part_data(&data, sink)?;
                            self.consume(upto);
                        }
                        return Ok(());
                    }
                },
                State::End => return Ok(()),
            }
        }
    }

    fn start_part(&self, hlen: usize) -> Result<Part, Unreadable> {
        let head = &self.buf[..hlen];
        let mut name: Option<Vec<u8>> = None;
        let mut ctype: Option<String> = None;
        for line in head.split(|c| *c == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = memchr::memchr(b':', line) else {
                if line.is_empty() {
                    continue;
                }
                return Err(self.bad());
            };
            let hname = line[..colon].trim_ascii().to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii();
            if hname == b"content-disposition" {
                name = param(value, b"name");
            } else if hname == b"content-type" {
                ctype = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        let text = match &ctype {
            None => true,
            Some(t) => {
                let essence = t
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "text/plain"
            }
        };
        if text {
            return Ok(Part::Text {
                name: name.unwrap_or_default(),
                value: Vec::new(),
            });
        }
        match super::classify_content_type(ctype.as_deref()) {
            Some(BodyKind::Multipart(_)) | None => Err(Unreadable::UnknownContentType),
            Some(kind) => Ok(Part::File(Box::new(Format::new(&kind)))),
        }
    }

    fn part_data(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        match &mut self.part {
            Some(Part::Text { value, .. }) => {
                if value.len() + data.len() > sink.cfg.max_record_bytes() {
                    return Err(Unreadable::RecordTooLarge {
                        offset: self.part_start,
                    });
                }
                value.extend_from_slice(data);
            }
            Some(Part::File(sub)) => {
                let before = sink.out.len();
                let r = sub.feed(data, sink);
                sink.out.shift(before, self.part_start);
                if let Some(h) = self.held_from {
                    sink.out.clamp_release(before, h);
                }
                r?;
            }
            None => {}
        }
        if let Some(h) = self.held_from {
            if self.buf_start.saturating_sub(h) > sink.cfg.max_record_bytes() as u64 {
                return Err(Unreadable::RecordTooLarge { offset: h });
            }
        }
        Ok(())
    }

    fn end_part(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        match self.part.take() {
            Some(Part::Text { name, value }) => {
                if std::str::from_utf8(&value).is_err() {
                    return Err(Unreadable::InvalidUtf8 {
                        offset: self.part_start,
                    });
                }
                self.form.field(&name, &value, sink);
                if self.held_from.is_none() && self.form.is_interesting() {
                    self.held_from = Some(self.part_start);
                }
            }
            Some(Part::File(mut sub)) => {
                let before = sink.out.len();
                let r = sub.finish(sink);
                sink.out.shift(before, self.part_start);
                if let Some(h) = self.held_from {
                    sink.out.clamp_release(before, h);
                }
                r?;
            }
            None => {}
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.state != State::End {
            return Err(Unreadable::BadMultipart {
                offset: self.buf_start + self.buf.len() as u64,
            });
        }
        if self.form.is_interesting() {
            let end = self.buf_start;
            self.form.emit(sink);
            sink.out.end_record(self.held_from.unwrap_or(0)..end, end);
        }
        Ok(())
    }
}

/// The value of parameter `key` (`name="x"` or `name=x`) in a header value.
fn param(value: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    for p in value.split(|c| *c == b';').skip(1) {
        let p = p.trim_ascii();
        let Some(eq) = memchr::memchr(b'=', p) else {
            continue;
        };
        if p[..eq].trim_ascii().eq_ignore_ascii_case(key) {
            let v = p[eq + 1..].trim_ascii();
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            return Some(v.to_vec());
        }
    }
    None
}
