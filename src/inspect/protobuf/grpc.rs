//! gRPC (and gRPC-Web) request bodies de-framed (SPEC §3 "gRPC and protobuf"): each frame is
//! one flag byte (bit 0: compressed; in a gRPC-Web request bit 7 marks a trailer frame, which a
//! client never sends), a four-byte big-endian length and the message. Each message is held
//! whole (at most `max_record_bytes`: a longer length prefix is a record over the limit),
//! decoded by the request's `grpc-encoding` when its flag says so (gzip, deflate, zstd, under
//! the content-coding limits and never past `max_record_bytes`), and read as one record by
//! [`super::MessageReader`]. The frontier is the start of the frame not yet read whole, so no
//! byte of a message is released before the message is judged. A body that ends inside a frame
//! is truncated; reserved flag bits, a trailer frame, a compressed message without a
//! `grpc-encoding` (or with `identity` or one the gate does not decode) are unreadable.

use super::super::config::DecodeLimits;
use super::super::decode::{Coding, Decoder};
use super::super::error::Unreadable;
use super::super::Sink;
use super::MessageReader;

/// The `grpc-encoding` of a call: `Ok(None)` for none or `identity`.
///
/// # Errors
/// [`Unreadable::UnknownEncoding`] for any other value (reported only if a compressed message
/// arrives: a call may name an encoding and send every message uncompressed).
pub(crate) fn parse_encoding(value: Option<&str>) -> Result<Option<Coding>, Unreadable> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("identity") => Ok(None),
        Some("gzip") => Ok(Some(Coding::Gzip)),
        Some("deflate") => Ok(Some(Coding::Deflate)),
        Some("zstd") => Ok(Some(Coding::Zstd)),
        Some(_) => Err(Unreadable::UnknownEncoding),
    }
}

/// The gRPC de-framer (see the module docs).
#[derive(Debug)]
pub(crate) struct GrpcScanner {
    web: bool,
    coding: Result<Option<Coding>, Unreadable>,
    /// The frame header read so far.
    head: [u8; 5],
    head_len: usize,
    /// The message of the current frame (once its header is read) and its length.
    msg: Vec<u8>,
    need: usize,
    compressed: bool,
    /// A compressed message, decoded.
    decoded: Vec<u8>,
    /// Decoded bytes of every compressed message so far (bounded like a content coding).
    decoded_total: u64,
    /// Offset of the start of the frame being read.
    frame_start: u64,
    /// Offset of the next byte.
    pos: u64,
    reader: MessageReader,
    /// The message type the call's messages are read as, if known.
    message_type: Option<String>,
}

impl GrpcScanner {
    /// A de-framer; `coding` is the call's `grpc-encoding` as [`parse_encoding`] read it.
    pub(crate) fn new(
        web: bool,
        coding: Result<Option<Coding>, Unreadable>,
        message_type: Option<String>,
    ) -> Self {
        GrpcScanner {
            web,
            coding,
            head: [0; 5],
            head_len: 0,
            msg: Vec::new(),
            need: 0,
            compressed: false,
            decoded: Vec::new(),
            decoded_total: 0,
            frame_start: 0,
            pos: 0,
            reader: MessageReader::default(),
            message_type,
        }
    }

    /// The message being assembled (held beyond the body bytes the proxy holds).
    pub(crate) fn held_bytes(&self) -> u64 {
        (self.msg.len() + self.decoded.len()) as u64
    }

    /// Offset before which every frame was read whole and judged.
    pub(crate) fn frontier(&self) -> u64 {
        self.frame_start
    }

    pub(crate) fn feed(&mut self, mut data: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        while !data.is_empty() {
            if self.head_len < 5 {
                let n = (5 - self.head_len).min(data.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
                self.head_len += n;
                self.pos += n as u64;
                data = &data[n..];
                if self.head_len == 5 {
                    self.start_frame(sink)?;
                }
                continue;
            }
            let n = (self.need - self.msg.len()).min(data.len());
            self.msg.extend_from_slice(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.msg.len() == self.need {
                self.end_frame(sink)?;
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, _sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        if self.head_len > 0 {
            return Err(Unreadable::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// A frame header is complete.
    fn start_frame(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let flags = self.head[0];
        let at = self.frame_start;
        if self.web && flags & 0x80 != 0 {
            // A trailer frame: only a server sends one.
            return Err(Unreadable::Malformed { offset: at });
        }
        if flags & !1 != 0 {
            return Err(Unreadable::Malformed { offset: at });
        }
        self.compressed = flags & 1 == 1;
        let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]);
        let len = usize::try_from(len).map_err(|_| Unreadable::RecordTooLarge { offset: at })?;
        if len > sink.cfg.max_record_bytes() {
            return Err(Unreadable::RecordTooLarge { offset: at });
        }
        self.need = len;
        self.msg.clear();
        if len == 0 {
            self.end_frame(sink)?;
        }
        Ok(())
    }

    /// A frame is complete: its message is read and judged.
    fn end_frame(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let span = self.frame_start..self.pos;
        let msg = std::mem::take(&mut self.msg);
        let r = if self.compressed {
            self.decode(&msg, sink).and_then(|()| {
                let d = std::mem::take(&mut self.decoded);
                let r = self
                    .reader
                    .read(&d, span.start, span.clone(), span.end, sink);
                self.decoded = d;
                r
            })
        } else {
            self.reader
                .read(&msg, span.start + 5, span.clone(), span.end, sink)
        };
        self.msg = msg;
        self.msg.clear();
        self.decoded.clear();
        r?;
        self.head_len = 0;
        self.need = 0;
        self.frame_start = self.pos;
        Ok(())
    }

    /// Decodes a compressed message into `self.decoded`.
    fn decode(&mut self, msg: &[u8], sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let coding = match &self.coding {
            Ok(Some(c)) => *c,
            // A compressed message in a call that names no encoding (or `identity`).
            Ok(None) => return Err(Unreadable::UnknownEncoding),
            Err(e) => return Err(e.clone()),
        };
        let l = sink.cfg.decode_limits();
        let max = sink.cfg.max_record_bytes() as u64;
        let left = l.max_decoded_bytes.saturating_sub(self.decoded_total);
        let limits = DecodeLimits {
            max_decoded_bytes: left.min(max),
            ..l
        };
        let mut d = Decoder::new(coding, limits)?;
        self.decoded.clear();
        let out = &mut self.decoded;
        let mut push = |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        };
        d.feed(msg, &mut push)?;
        d.finish(&mut push)?;
        if msg.is_empty() || d.encoded_len() == 0 {
            // A compressed frame must hold a compressed stream.
            return Err(Unreadable::Corrupt { offset: 0 });
        }
        self.decoded_total += self.decoded.len() as u64;
        let _ = &self.message_type;
        Ok(())
    }
}
