//! `Content-Encoding` decoding for inspection (gzip, deflate, br, zstd), pushed chunk by chunk
//! with a bounded output buffer, under the decoded-size and ratio limits (bomb protection).
//! The original bytes are what goes upstream; this module also answers *how many original
//! bytes may be released* when the decoded stream is judged up to some offset.
//!
//! Release rule: a prefix of `e` encoded bytes can only determine decoded bytes that the
//! decoder has produced once it has consumed `e + LOOKAHEAD` bytes (every decoder here emits
//! output eagerly; the one that buffers most is zstd, whose blocks are at most 128 KiB, and a
//! deflate symbol spans a few bytes). So with checkpoints `(encoded consumed, decoded produced)`
//! taken after each decoder step, the largest `e` such that some checkpoint has
//! `encoded ≥ e + LOOKAHEAD` and `decoded ≤ judged frontier` is safe: upstream can recover no
//! byte past the frontier from it, not even the first bits of one.

use std::collections::VecDeque;

use flate2::{Decompress, FlushDecompress, Status};

use super::config::DecodeLimits;
use super::error::Unreadable;

/// Output buffer per decoder step.
const STEP_OUT: usize = 32 * 1024;
/// See the module docs.
const LOOKAHEAD_DEFLATE: u64 = 64 * 1024;
const LOOKAHEAD_BLOCK: u64 = 256 * 1024;
const MAX_GZIP_HEADER: usize = 64 * 1024;

/// A supported content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` / `x-gzip` (several members allowed).
    Gzip,
    /// `deflate` (zlib-wrapped, or raw deflate as some clients send).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Coding {
    /// Parses a `Content-Encoding` value: `Ok(None)` for none/identity, `Err` when unsupported
    /// (including several stacked codings).
    ///
    /// # Errors
    /// [`Unreadable::UnknownEncoding`].
    pub fn parse(value: Option<&str>) -> Result<Option<Coding>, Unreadable> {
        let Some(v) = value else { return Ok(None) };
        let v = v.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            "zstd" => Ok(Some(Coding::Zstd)),
            _ => Err(Unreadable::UnknownEncoding),
        }
    }
}

type Brotli = brotli::BrotliState<
    brotli::HeapAlloc<u8>,
    brotli::HeapAlloc<u32>,
    brotli::HeapAlloc<brotli::HuffmanCode>,
>;

enum Kind {
    Gzip {
        stage: GzStage,
        hdr: Vec<u8>,
        inflate: Decompress,
    },
    /// Deflate before the first two bytes tell zlib from raw.
    DeflateSniff(Vec<u8>),
    Inflate {
        inflate: Decompress,
        done: bool,
    },
    Brotli {
        state: Box<Brotli>,
        done: bool,
    },
    Zstd {
        dec: zstd::stream::raw::Decoder<'static>,
        /// The last frame ended (no partial frame pending).
        at_frame_end: bool,
        started: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzStage {
    Header,
    Body,
    Trailer(u8),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Gzip { .. } => "Gzip",
            Kind::DeflateSniff(_) => "DeflateSniff",
            Kind::Inflate { .. } => "Inflate",
            Kind::Brotli { .. } => "Brotli",
            Kind::Zstd { .. } => "Zstd",
        })
    }
}

/// A streaming decoder with release bookkeeping.
#[derive(Debug)]
pub(crate) struct Decoder {
    kind: Kind,
    limits: DecodeLimits,
    lookahead: u64,
    enc: u64,
    dec: u64,
    checkpoints: VecDeque<(u64, u64)>,
    released: u64,
    out: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new(coding: Coding, limits: DecodeLimits) -> Result<Self, Unreadable> {
        let (kind, lookahead) = match coding {
            Coding::Gzip => (
                Kind::Gzip {
                    stage: GzStage::Header,
                    hdr: Vec::new(),
                    inflate: Decompress::new(false),
                },
                LOOKAHEAD_DEFLATE,
            ),
            Coding::Deflate => (Kind::DeflateSniff(Vec::new()), LOOKAHEAD_DEFLATE),
            Coding::Brotli => (
                Kind::Brotli {
                    state: Box::new(brotli::BrotliState::new(
                        brotli::HeapAlloc::new(0),
                        brotli::HeapAlloc::new(0),
                        brotli::HeapAlloc::new(brotli::HuffmanCode::default()),
                    )),
                    done: false,
                },
                LOOKAHEAD_BLOCK,
            ),
            Coding::Zstd => (
                Kind::Zstd {
                    dec: zstd_decoder()?,
                    at_frame_end: true,
                    started: false,
                },
                LOOKAHEAD_BLOCK,
            ),
        };
        Ok(Decoder {
            kind,
            limits,
            lookahead,
            enc: 0,
            dec: 0,
            checkpoints: VecDeque::new(),
            released: 0,
            out: vec![0; STEP_OUT],
        })
    }

    /// Encoded bytes consumed so far.
    pub(crate) fn encoded_len(&self) -> u64 {
        self.enc
    }

    /// Decodes `input`, handing every piece of output to `sink`.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        loop {
            let (consumed, produced) = self.step(input)?;
            input = &input[consumed..];
            self.enc += consumed as u64;
            self.dec += produced as u64;
            let l = self.limits;
            if self.dec > l.max_decoded_bytes
                || (self.dec > l.ratio_grace_bytes
                    && self.dec > self.enc.max(1).saturating_mul(u64::from(l.max_ratio)))
            {
                return Err(Unreadable::Bomb);
            }
            let last = self.checkpoints.back().copied().unwrap_or((0, 0));
            if self.enc - last.0 >= 512 || self.dec - last.1 >= 16 * 1024 {
                self.checkpoints.push_back((self.enc, self.dec));
            }
            if produced > 0 {
                let out = std::mem::take(&mut self.out);
                let r = sink(&out[..produced]);
                self.out = out;
                r?;
            }
            if consumed == 0 && produced == 0 {
                if input.is_empty() {
                    return Ok(());
                }
                // Input left but no progress: the stream ended with trailing garbage.
                return Err(Unreadable::Corrupt { offset: self.enc });
            }
        }
    }

    /// One decoder step: `(input consumed, output produced)`.
    fn step(&mut self, input: &[u8]) -> Result<(usize, usize), Unreadable> {
        let corrupt = Unreadable::Corrupt { offset: self.enc };
        let out = &mut self.out[..];
        match &mut self.kind {
            Kind::DeflateSniff(buf) => {
                let take = (2 - buf.len()).min(input.len());
                buf.extend_from_slice(&input[..take]);
                if buf.len() < 2 {
                    return Ok((take, 0));
                }
                let (a, b) = (u16::from(buf[0]), u16::from(buf[1]));
                let zlib = a & 0x0F == 8 && (a << 8 | b) % 31 == 0;
                let mut inflate = Decompress::new(zlib);
                let prefix = std::mem::take(buf);
                let (c, p, end) = inflate_step(&mut inflate, &prefix, out, &corrupt)?;
                if c != prefix.len() {
                    return Err(corrupt);
                }
                self.kind = Kind::Inflate { inflate, done: end };
                Ok((take, p))
            }
            Kind::Inflate { inflate, done } => {
                if *done {
                    return Ok((0, 0));
                }
                let (c, p, end) = inflate_step(inflate, input, out, &corrupt)?;
                *done = end;
                Ok((c, p))
            }
            Kind::Gzip {
                stage,
                hdr,
                inflate,
            } => match *stage {
                GzStage::Header => {
                    if input.is_empty() {
                        return Ok((0, 0));
                    }
                    let old = hdr.len();
                    let take = input.len().min(MAX_GZIP_HEADER + 16 - old);
                    hdr.extend_from_slice(&input[..take]);
                    match gzip_header_len(hdr) {
                        Err(()) => Err(corrupt),
                        Ok(None) if hdr.len() > MAX_GZIP_HEADER => Err(corrupt),
                        Ok(None) => Ok((take, 0)),
                        Ok(Some(l)) => {
                            hdr.clear();
                            *stage = GzStage::Body;
                            *inflate = Decompress::new(false);
                            Ok((l - old, 0))
                        }
                    }
                }
                GzStage::Body => {
                    let (c, p, end) = inflate_step(inflate, input, out, &corrupt)?;
                    if end {
                        *stage = GzStage::Trailer(0);
                    }
                    Ok((c, p))
                }
                GzStage::Trailer(got) => {
                    let take = (8 - got as usize).min(input.len());
                    let got = got as usize + take;
                    *stage = if got == 8 {
                        GzStage::Header
                    } else {
                        GzStage::Trailer(got as u8)
                    };
                    Ok((take, 0))
                }
            },
            Kind::Brotli { state, done } => {
                if *done {
                    return Ok((0, 0));
                }
                if self.enc == 0 {
                    if let Some(&first) = input.first() {
                        if brotli_window_bits(first) > MAX_BROTLI_WINDOW_BITS {
                            return Err(Unreadable::WindowTooLarge);
                        }
                    }
                }
                let mut avail_in = input.len();
                let mut in_off = 0;
                let mut avail_out = out.len();
                let mut out_off = 0;
                let mut total = 0;
                let r = brotli::BrotliDecompressStream(
                    &mut avail_in,
                    &mut in_off,
                    input,
                    &mut avail_out,
                    &mut out_off,
                    out,
                    &mut total,
                    state,
                );
                match r {
                    brotli::BrotliResult::ResultFailure => Err(corrupt),
                    brotli::BrotliResult::ResultSuccess => {
                        *done = true;
                        Ok((in_off, out_off))
                    }
                    _ => Ok((in_off, out_off)),
                }
            }
            Kind::Zstd {
                dec,
                at_frame_end,
                started,
            } => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                let hint = dec.run(&mut inb, &mut outb).map_err(|_| corrupt)?;
                let (c, p) = (inb.pos(), outb.pos());
                if c > 0 || p > 0 {
                    *started = true;
                    *at_frame_end = hint == 0;
                }
                Ok((c, p))
            }
        }
    }

    /// Finishes the stream: it must have ended cleanly.
    pub(crate) fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        // Drain anything still buffered.
        self.feed(&[], sink)?;
        let truncated = Unreadable::Truncated { offset: self.dec };
        let clean = match &self.kind {
            Kind::Gzip { stage, hdr, .. } => {
                *stage == GzStage::Header && hdr.is_empty() && self.enc > 0
            }
            Kind::DeflateSniff(buf) => buf.is_empty() && self.enc == 0,
            Kind::Inflate { done, .. } => *done,
            Kind::Brotli { done, .. } => *done,
            Kind::Zstd {
                at_frame_end,
                started,
                ..
            } => *at_frame_end && *started,
        };
        if clean || self.enc == 0 {
            Ok(())
        } else {
            Err(truncated)
        }
    }

    /// Encoded offset that may be released when the decoded stream is judged up to `frontier`.
    pub(crate) fn release_for(&mut self, frontier: u64) -> u64 {
        // The last checkpoint whose output is all judged.
        let mut best = None;
        while let Some(&(e, d)) = self.checkpoints.front() {
            if d > frontier {
                break;
            }
            best = Some(e);
            if self.checkpoints.len() > 1 && self.checkpoints[1].1 <= frontier {
                self.checkpoints.pop_front();
            } else {
                break;
            }
        }
        if let Some(e) = best {
            self.released = self.released.max(e.saturating_sub(self.lookahead));
        }
        self.released
    }
}

/// The largest brotli window the gate decodes, in bits (4 MiB: the default of the reference
/// encoder and of every common library, `lgwin` 22). The brotli decoder's window cannot be
/// capped once a stream declares it, so a stream declaring more (up to 16 MiB; large-window
/// brotli is never enabled) is unreadable before any of it is decoded.
pub const MAX_BROTLI_WINDOW_BITS: u32 = 22;

/// Decoder memory charged to the process's buffered-bytes budget per content-coding layer
/// (`inspection.max_buffered_bytes`): the largest window the decoder may allocate, plus its
/// tables and the output step.
pub const fn decoder_cost(coding: Coding) -> u64 {
    const SLACK: u64 = 128 * 1024;
    match coding {
        Coding::Gzip | Coding::Deflate => SLACK,
        Coding::Brotli => (1 << MAX_BROTLI_WINDOW_BITS) + SLACK,
        Coding::Zstd => (1 << ZSTD_WINDOW_LOG_MAX) + SLACK,
    }
}

/// The window size (bits) a brotli stream declares in its first byte (RFC 7932 §9.1); 30 for
/// the large-window extension's escape.
pub(crate) fn brotli_window_bits(first: u8) -> u32 {
    if first & 1 == 0 {
        return 16;
    }
    let n = u32::from((first >> 1) & 7);
    if n != 0 {
        return 17 + n;
    }
    match u32::from((first >> 4) & 7) {
        0 => 17,
        1 => 30,
        m => 8 + m,
    }
}

/// The zstd window limit, in bits.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A zstd decoder limited to an 8 MiB window (RFC 9659 §3: the limit for the HTTP `zstd`
/// content coding), so a frame cannot make the gate allocate a huge window per request.
fn zstd_decoder() -> Result<zstd::stream::raw::Decoder<'static>, Unreadable> {
    let mut d = zstd::stream::raw::Decoder::new().map_err(|_| Unreadable::UnknownEncoding)?;
    d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
        ZSTD_WINDOW_LOG_MAX,
    ))
    .map_err(|_| Unreadable::UnknownEncoding)?;
    Ok(d)
}

/// One inflate call: `(consumed, produced, stream ended)`.
fn inflate_step(
    inflate: &mut Decompress,
    input: &[u8],
    out: &mut [u8],
    corrupt: &Unreadable,
) -> Result<(usize, usize, bool), Unreadable> {
    let (bi, bo) = (inflate.total_in(), inflate.total_out());
    let st = inflate
        .decompress(input, out, FlushDecompress::None)
        .map_err(|_| corrupt.clone())?;
    Ok((
        (inflate.total_in() - bi) as usize,
        (inflate.total_out() - bo) as usize,
        st == Status::StreamEnd,
    ))
}

/// Length of a complete gzip member header at the start of `h`; `Ok(None)` when more bytes
/// are needed.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, ()> {
    if h.len() < 10 {
        if h.first().is_some_and(|b| *b != 0x1f) || h.get(1).is_some_and(|b| *b != 0x8b) {
            return Err(());
        }
        return Ok(None);
    }
    if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
        return Err(());
    }
    let flg = h[3];
    let mut i = 10;
    if flg & 0x04 != 0 {
        if h.len() < i + 2 {
            return Ok(None);
        }
        i += 2 + usize::from(u16::from_le_bytes([h[i], h[i + 1]]));
    }
    for bit in [0x08u8, 0x10] {
        if flg & bit != 0 {
            match h.get(i..).and_then(|r| memchr::memchr(0, r)) {
                Some(z) => i += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flg & 0x02 != 0 {
        i += 2;
    }
    Ok((h.len() >= i).then_some(i))
}
