//! Charsets of text bodies (SPEC §3 "Charsets"): UTF-8 and US-ASCII are read as they are;
//! UTF-16LE/BE, GB18030, GBK, GB2312 and Big5 are decoded to UTF-8 with `encoding_rs` before a
//! format scanner sees them; any other label is *unreadable*.
//!
//! Byte order marks are handled so that no reader can see another text than the gate: a BOM
//! that contradicts the label (or any BOM on a GB or Big5 body, which a WHATWG decoder would
//! follow instead of the label) is unreadable, and plain `utf-16` without a BOM is unreadable
//! because readers disagree on its byte order (RFC 2781 says big-endian, WHATWG little-endian).
//! Malformed sequences are unreadable, never replaced.
//!
//! Release mapping: like the content decoders, the transcoder keeps checkpoints `(input
//! consumed, output produced)` every few KiB; an input prefix may be released when all its
//! output is judged. A decoder holds at most 3 input bytes of an unfinished character, so the
//! released prefix stops 3 bytes before the checkpoint: no part of an unjudged character leaves.

use encoding_rs::{DecoderResult, Encoding};

use super::checkpoints::Checkpoints;
use super::error::Unreadable;

/// Input bytes decoded per step (the checkpoint granularity).
const STEP_IN: usize = 4 * 1024;
/// Input bytes an `encoding_rs` decoder may hold of an unfinished character.
const PENDING_MAX: u64 = 3;

/// A text body's charset, from the `charset` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8, US-ASCII, or no `charset`: read as UTF-8, no decoding.
    Utf8,
    /// `utf-16`: the BOM decides the byte order (required).
    Utf16,
    /// `utf-16le`.
    Utf16Le,
    /// `utf-16be`.
    Utf16Be,
    /// `gb18030`.
    Gb18030,
    /// `gbk` and `gb2312` (decoded as GBK, the superset real senders use).
    Gbk,
    /// `big5`.
    Big5,
}

impl Charset {
    /// The charset named by a `charset` parameter value (case-insensitive); `None` when the
    /// gate does not read it.
    pub fn from_label(label: &[u8]) -> Option<Charset> {
        let l = label.trim_ascii().to_ascii_lowercase();
        Some(match l.as_slice() {
            b"utf-8" | b"utf8" | b"us-ascii" => Charset::Utf8,
            b"utf-16" => Charset::Utf16,
            b"utf-16le" => Charset::Utf16Le,
            b"utf-16be" => Charset::Utf16Be,
            b"gb18030" => Charset::Gb18030,
            b"gbk" | b"gb2312" => Charset::Gbk,
            b"big5" => Charset::Big5,
            _ => return None,
        })
    }

    /// Whether the body needs decoding before inspection.
    pub fn needs_decoding(self) -> bool {
        self != Charset::Utf8
    }
}

const BOM_UTF8: &[u8] = &[0xEF, 0xBB, 0xBF];
const BOM_LE: &[u8] = &[0xFF, 0xFE];
const BOM_BE: &[u8] = &[0xFE, 0xFF];

/// A streaming charset decoder with release bookkeeping.
pub(crate) struct Transcoder {
    charset: Charset,
    /// Created once the BOM question is settled.
    dec: Option<encoding_rs::Decoder>,
    /// The first bytes while the BOM is undecided.
    head: Vec<u8>,
    enc: u64,
    out_len: u64,
    checkpoints: Checkpoints,
    out: Vec<u8>,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("charset", &self.charset)
            .field("consumed", &self.enc)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    pub(crate) fn new(charset: Charset) -> Self {
        Transcoder {
            charset,
            dec: None,
            head: Vec::new(),
            enc: 0,
            out_len: 0,
            checkpoints: Checkpoints::new(PENDING_MAX),
            out: Vec::new(),
        }
    }

    /// Input bytes consumed so far.
    pub(crate) fn input_len(&self) -> u64 {
        self.enc
    }

    /// Settles the BOM once enough bytes are there (or at the end): the decoder to use and
    /// how many leading bytes are a BOM to skip.
    fn settle(&self, at_end: bool) -> Result<Option<(&'static Encoding, usize)>, Unreadable> {
        let h = &self.head;
        let starts = |bom: &[u8]| h.starts_with(bom);
        // Undecided while the head is a proper prefix of some BOM.
        let undecided = [BOM_UTF8, BOM_LE, BOM_BE]
            .iter()
            .any(|b| h.len() < b.len() && b.starts_with(h));
        if undecided && !at_end {
            return Ok(None);
        }
        let contradicts = Unreadable::UnsupportedCharset;
        let r = match self.charset {
            Charset::Utf8 => (encoding_rs::UTF_8, 0),
            Charset::Utf16 if starts(BOM_LE) => (encoding_rs::UTF_16LE, 2),
            Charset::Utf16 if starts(BOM_BE) => (encoding_rs::UTF_16BE, 2),
            Charset::Utf16 if h.is_empty() => (encoding_rs::UTF_16LE, 0),
            Charset::Utf16 => return Err(contradicts),
            Charset::Utf16Le if starts(BOM_BE) || starts(BOM_UTF8) => return Err(contradicts),
            Charset::Utf16Le => (encoding_rs::UTF_16LE, if starts(BOM_LE) { 2 } else { 0 }),
            Charset::Utf16Be if starts(BOM_LE) || starts(BOM_UTF8) => return Err(contradicts),
            Charset::Utf16Be => (encoding_rs::UTF_16BE, if starts(BOM_BE) { 2 } else { 0 }),
            _ if starts(BOM_UTF8) || starts(BOM_LE) || starts(BOM_BE) => return Err(contradicts),
            Charset::Gb18030 => (encoding_rs::GB18030, 0),
            Charset::Gbk => (encoding_rs::GBK, 0),
            Charset::Big5 => (encoding_rs::BIG5, 0),
        };
        Ok(Some(r))
    }

    /// Decodes `input`, handing UTF-8 output to `sink`.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        self.run(input, false, sink)
    }

    /// Ends the input: an unfinished character is unreadable.
    pub(crate) fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        self.run(&[], true, sink)
    }

    fn run(
        &mut self,
        mut input: &[u8],
        last: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        if self.dec.is_none() {
            let take = 3usize.saturating_sub(self.head.len()).min(input.len());
            self.head.extend_from_slice(&input[..take]);
            input = &input[take..];
            let Some((encoding, skip)) = self.settle(last && input.is_empty())? else {
                self.enc += take as u64;
                return Ok(());
            };
            let mut dec = encoding.new_decoder_without_bom_handling();
            let head = std::mem::take(&mut self.head);
            // The head bytes were counted as consumed only when taken now.
            self.enc += take as u64;
            let tail_last = last && input.is_empty();
            let at = self.enc;
            self.decode(&mut dec, &head[skip..], tail_last, sink, at)?;
            self.dec = Some(dec);
            if tail_last {
                return Ok(());
            }
        }
        let Some(mut dec) = self.dec.take() else {
            return Ok(());
        };
        let mut r = Ok(());
        if input.is_empty() && last {
            let at = self.enc;
            r = self.decode(&mut dec, &[], true, sink, at);
        }
        while r.is_ok() && !input.is_empty() {
            let n = input.len().min(STEP_IN);
            let (step, rest) = input.split_at(n);
            input = rest;
            self.enc += n as u64;
            let at = self.enc;
            r = self.decode(&mut dec, step, last && input.is_empty(), sink, at);
        }
        self.dec = Some(dec);
        r
    }

    /// Decodes one step whose input ends at original offset `at_end`.
    fn decode(
        &mut self,
        dec: &mut encoding_rs::Decoder,
        mut src: &[u8],
        last: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
        at_end: u64,
    ) -> Result<(), Unreadable> {
        loop {
            let need = dec
                .max_utf8_buffer_length_without_replacement(src.len())
                .unwrap_or(STEP_IN * 3)
                .max(16);
            if self.out.len() < need {
                self.out.resize(need, 0);
            }
            let (res, read, written) =
                dec.decode_to_utf8_without_replacement(src, &mut self.out, last);
            src = &src[read..];
            if let DecoderResult::Malformed(..) = res {
                return Err(Unreadable::InvalidCharset {
                    offset: at_end - src.len() as u64,
                });
            }
            if written > 0 {
                self.out_len += written as u64;
                sink(&self.out[..written])?;
            }
            if let DecoderResult::InputEmpty = res {
                break;
            }
        }
        self.checkpoints.push(at_end, self.out_len);
        Ok(())
    }

    /// Input offset that may be released when the output is judged up to `frontier`.
    pub(crate) fn release_for(&mut self, frontier: u64) -> u64 {
        self.checkpoints.release_for(frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(cs: Charset, body: &[u8], chunk: usize) -> Result<Vec<u8>, Unreadable> {
        let mut t = Transcoder::new(cs);
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            t.feed(c, &mut |o| {
                out.extend_from_slice(o);
                Ok(())
            })?;
        }
        t.finish(&mut |o| {
            out.extend_from_slice(o);
            Ok(())
        })?;
        Ok(out)
    }

    fn utf16(s: &str, be: bool, bom: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if bom {
            v.extend_from_slice(if be { BOM_BE } else { BOM_LE });
        }
        for u in s.encode_utf16() {
            v.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        v
    }

    #[test]
    fn labels() {
        assert_eq!(Charset::from_label(b"UTF-8"), Some(Charset::Utf8));
        assert_eq!(Charset::from_label(b"US-ASCII"), Some(Charset::Utf8));
        assert_eq!(Charset::from_label(b"GB2312"), Some(Charset::Gbk));
        assert_eq!(Charset::from_label(b"Big5"), Some(Charset::Big5));
        for l in [
            "latin1",
            "iso-8859-1",
            "utf-7",
            "utf-32",
            "shift_jis",
            "x-user-defined",
        ] {
            assert_eq!(Charset::from_label(l.as_bytes()), None, "{l}");
        }
    }

    #[test]
    fn decodes_every_supported_charset_in_any_chunking() {
        let text = "手机,13800138000\n姓名,张三\n";
        let cases: Vec<(Charset, Vec<u8>)> = vec![
            (Charset::Utf16Le, utf16(text, false, false)),
            (Charset::Utf16Le, utf16(text, false, true)),
            (Charset::Utf16Be, utf16(text, true, false)),
            (Charset::Utf16Be, utf16(text, true, true)),
            (Charset::Utf16, utf16(text, false, true)),
            (Charset::Utf16, utf16(text, true, true)),
            (
                Charset::Gb18030,
                encoding_rs::GB18030.encode(text).0.into_owned(),
            ),
            (Charset::Gbk, encoding_rs::GBK.encode(text).0.into_owned()),
            (
                Charset::Big5,
                encoding_rs::BIG5
                    .encode("手機,13800138000\n")
                    .0
                    .into_owned(),
            ),
        ];
        for (cs, body) in cases {
            for chunk in [1, 2, 3, 5, 4096, body.len()] {
                let out = decode_all(cs, &body, chunk).unwrap();
                let s = String::from_utf8(out).unwrap();
                assert!(s.contains("13800138000"), "{cs:?} chunk {chunk}: {s}");
                assert!(!s.starts_with('\u{feff}'), "BOM kept: {cs:?}");
            }
        }
    }

    #[test]
    fn ambiguous_or_malformed_is_unreadable() {
        let text = "a,13800138000";
        // utf-16 without BOM: readers disagree on the byte order.
        assert_eq!(
            decode_all(Charset::Utf16, &utf16(text, false, false), 7),
            Err(Unreadable::UnsupportedCharset)
        );
        // A BOM that contradicts the label.
        assert!(decode_all(Charset::Utf16Le, &utf16(text, true, true), 3).is_err());
        assert!(decode_all(Charset::Utf16Be, &utf16(text, false, true), 3).is_err());
        let mut gbk_bom = BOM_UTF8.to_vec();
        gbk_bom.extend_from_slice(text.as_bytes());
        assert!(decode_all(Charset::Gbk, &gbk_bom, 1).is_err());
        // Odd length, unpaired surrogate: malformed, not replaced.
        let mut odd = utf16(text, false, false);
        odd.push(b'1');
        assert!(matches!(
            decode_all(Charset::Utf16Le, &odd, 4),
            Err(Unreadable::InvalidCharset { .. })
        ));
        assert!(decode_all(Charset::Utf16Le, &[0x00, 0xD8, b'1', 0], 4).is_err());
        // The empty body is fine.
        assert_eq!(decode_all(Charset::Utf16, b"", 1), Ok(Vec::new()));
    }

    #[test]
    fn release_never_passes_an_unjudged_character() {
        let text = "x".repeat(10_000) + "13800138000";
        let body = utf16(&text, false, false);
        let mut t = Transcoder::new(Charset::Utf16Le);
        t.feed(&body, &mut |_| Ok(())).unwrap();
        // Judged up to the first digit: the original bytes of that digit stay.
        let r = t.release_for(10_000);
        assert!(r <= 20_000, "{r}");
        assert!(r > 0);
        assert_eq!(t.release_for(u64::MAX), body.len() as u64 - PENDING_MAX);
    }
}
