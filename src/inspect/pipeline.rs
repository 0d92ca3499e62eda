//! The chain that turns a body (or a multipart part) as sent into the text a format scanner
//! reads: transfer decoding (base64, quoted-printable; parts only), content decoding (gzip,
//! deflate, br, zstd), charset decoding, then the text check and the format scanner.
//!
//! Every stage maps offsets back: the format's frontier (how far its output is judged) is
//! carried through each stage's `release_for` to an offset of the bytes as sent, and so are
//! the release offsets of the records the format completes. A stage never releases an input
//! byte whose output is not judged yet.
//!
//! The text check: a format reads text, and a NUL byte is never text. UTF-16 of ASCII digits
//! is valid UTF-8 (`1\0 3\0 8\0 …`), so a body sent in UTF-16 without saying so would
//! otherwise pass as readable and hide its digits from the detectors; with the check it is
//! unreadable.

use super::charset::Transcoder;
use super::decode::Decoder;
use super::error::Unreadable;
use super::transfer::TransferDecoder;
use super::xml::XmlDecoder;
use super::{Format, Sink};

/// One decoding stage.
#[derive(Debug)]
pub(crate) enum Stage {
    /// `Content-Transfer-Encoding` of a multipart part.
    Transfer(TransferDecoder),
    /// `Content-Encoding`.
    Content(Decoder),
    /// `charset`.
    Charset(Transcoder),
    /// An XML body's charset: the declaration settled with `charset`.
    Xml(XmlDecoder),
}

type Out<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), Unreadable>;

impl Stage {
    fn feed(&mut self, input: &[u8], out: Out<'_>) -> Result<(), Unreadable> {
        match self {
            Stage::Transfer(d) => d.feed(input, out),
            Stage::Content(d) => d.feed(input, out),
            Stage::Charset(d) => d.feed(input, out),
            Stage::Xml(d) => d.feed(input, out),
        }
    }

    fn finish(&mut self, out: Out<'_>) -> Result<(), Unreadable> {
        match self {
            Stage::Transfer(d) => d.finish(out),
            Stage::Content(d) => d.finish(out),
            Stage::Charset(d) => d.finish(out),
            Stage::Xml(d) => d.finish(out),
        }
    }

    fn release_for(&mut self, frontier: u64) -> u64 {
        match self {
            Stage::Transfer(d) => d.release_for(frontier),
            Stage::Content(d) => d.release_for(frontier).min(d.encoded_len()),
            Stage::Charset(d) => d.release_for(frontier).min(d.input_len()),
            Stage::Xml(d) => d.release_for(frontier),
        }
    }
}

/// Stages in order from the bytes as sent, then the format.
#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<Stage>,
    format: Format,
    /// Bytes handed to the format (for the offset of a NUL).
    text_len: u64,
    /// Refuse NUL bytes (every format but multipart, whose parts check their own text).
    text_check: bool,
}

impl Pipeline {
    pub(crate) fn new(stages: Vec<Stage>, format: Format) -> Self {
        // Multipart parts check their own text; a workbook and protobuf are binary.
        let text_check = !matches!(
            format,
            Format::Multipart(_) | Format::Xlsx(_) | Format::Protobuf(_) | Format::Grpc(_)
        );
        Pipeline {
            stages,
            format,
            text_len: 0,
            text_check,
        }
    }

    /// Whether any stage decodes (offsets of the format differ from the bytes as sent).
    pub(crate) fn decodes(&self) -> bool {
        !self.stages.is_empty()
    }

    /// The format at the end of the chain.
    pub(crate) fn format_mut(&mut self) -> &mut Format {
        &mut self.format
    }

    /// Feeds bytes as sent; the records completed meanwhile get release offsets of the bytes
    /// as sent (relative to this pipeline's input).
    pub(crate) fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let before = sink.out.len();
        let mut tail = Tail {
            format: &mut self.format,
            text_len: &mut self.text_len,
            text_check: self.text_check,
        };
        let r = feed_chain(&mut self.stages, &mut tail, data, sink);
        self.map_release(before, sink);
        r
    }

    /// Ends the input: every stage must end cleanly, then the format.
    pub(crate) fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let before = sink.out.len();
        let mut tail = Tail {
            format: &mut self.format,
            text_len: &mut self.text_len,
            text_check: self.text_check,
        };
        let r = finish_chain(&mut self.stages, &mut tail, sink);
        self.map_release(before, sink);
        r
    }

    /// How far the input may be released when every record so far is judged.
    pub(crate) fn frontier(&mut self) -> u64 {
        let mut f = self.format.frontier();
        for s in self.stages.iter_mut().rev() {
            f = s.release_for(f);
        }
        f
    }

    fn map_release(&mut self, before: usize, sink: &mut Sink<'_>) {
        if self.stages.is_empty() || sink.out.len() == before {
            return;
        }
        let stages = &mut self.stages;
        sink.out.map_release(before, |mut f| {
            for s in stages.iter_mut().rev() {
                f = s.release_for(f);
            }
            f
        });
    }
}

struct Tail<'a> {
    format: &'a mut Format,
    text_len: &'a mut u64,
    text_check: bool,
}

impl Tail<'_> {
    fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.text_check {
            if let Some(k) = memchr::memchr(0, data) {
                return Err(Unreadable::NotText {
                    offset: *self.text_len + k as u64,
                });
            }
        }
        *self.text_len += data.len() as u64;
        self.format.feed(data, sink)
    }
}

fn feed_chain(
    stages: &mut [Stage],
    tail: &mut Tail<'_>,
    data: &[u8],
    sink: &mut Sink<'_>,
) -> Result<(), Unreadable> {
    match stages.split_first_mut() {
        None => tail.feed(data, sink),
        Some((s, rest)) => s.feed(data, &mut |o| feed_chain(rest, tail, o, sink)),
    }
}

fn finish_chain(
    stages: &mut [Stage],
    tail: &mut Tail<'_>,
    sink: &mut Sink<'_>,
) -> Result<(), Unreadable> {
    match stages.split_first_mut() {
        None => tail.format.finish(sink),
        Some((s, rest)) => {
            s.finish(&mut |o| feed_chain(rest, tail, o, sink))?;
            finish_chain(rest, tail, sink)
        }
    }
}
