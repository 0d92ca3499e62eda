//! The XML body's charset stage: reads the XML declaration's `encoding` from the first bytes
//! as sent, settles the body's encoding with the `Content-Type` charset, then decodes like the
//! charset stage of every text body ([`Transcoder`]).
//!
//! Settling (SPEC §3): the first bytes tell the family — a UTF-16 byte order mark, or `<?` as
//! UTF-16 code units, is UTF-16; anything else is ASCII-compatible (UTF-8, GB18030, GBK, Big5).
//! The declaration is read in that family. Its label and the `Content-Type` charset are
//! resolved with `encoding_rs` (`us-ascii`, read as UTF-8 by the gate, counts as UTF-8); when
//! both are given and name different encodings the body is unreadable (the generic `utf-16`
//! agrees with either byte order, the BOM decides). A label outside the supported set
//! ([`Charset`]) is unreadable; a label of the other family than the bytes is unreadable. No
//! declaration: the `Content-Type` charset, else UTF-8 (UTF-16 when the bytes say so).
//!
//! The stage holds at most [`MAX_DECL`] bytes while the declaration is incomplete and
//! releases nothing until it is settled; afterwards it maps offsets like the transcoder (or
//! one to one for UTF-8, which passes through).

use encoding_rs::Encoding;

use super::super::charset::{Charset, Transcoder};
use super::super::error::Unreadable;

/// The longest XML declaration read (bytes as sent, UTF-16 included).
pub(crate) const MAX_DECL: usize = 1024;

/// The family of the first bytes: how the declaration is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ascii,
    /// UTF-16, little-endian when true; with a BOM when `bom`.
    Utf16 {
        le: bool,
        bom: bool,
    },
}

/// The XML charset stage of the decoding pipeline.
#[derive(Debug)]
pub(crate) struct XmlDecoder {
    /// The `Content-Type` charset, when the type names one.
    named: Option<Charset>,
    /// The first bytes, until the encoding is settled.
    head: Vec<u8>,
    /// `None` until settled; then the transcoder, or `Pass` for UTF-8.
    out: Option<Out>,
    /// Input bytes passed on so far (UTF-8 pass-through).
    passed: u64,
}

#[derive(Debug)]
enum Out {
    Pass,
    Decode(Box<Transcoder>),
}

type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), Unreadable>;

impl XmlDecoder {
    /// `named`: the `Content-Type` charset when the type has a `charset` parameter.
    pub(crate) fn new(named: Option<Charset>) -> Self {
        XmlDecoder {
            named,
            head: Vec::new(),
            out: None,
            passed: 0,
        }
    }

    /// Decodes `input`, handing UTF-8 text on.
    pub(crate) fn feed(&mut self, input: &[u8], sink: Sink<'_>) -> Result<(), Unreadable> {
        if self.out.is_none() {
            self.head.extend_from_slice(input);
            match sniff(&self.head, false)? {
                None => {
                    if self.head.len() > MAX_DECL {
                        return Err(Unreadable::Malformed { offset: 0 });
                    }
                    return Ok(());
                }
                Some(s) => return self.settle(s, sink),
            }
        }
        self.pass(input, false, sink)
    }

    /// Ends the input.
    pub(crate) fn finish(&mut self, sink: Sink<'_>) -> Result<(), Unreadable> {
        if self.out.is_none() {
            if self.head.is_empty() {
                return Ok(());
            }
            let s = sniff(&self.head, true)?.unwrap_or((Family::Ascii, None));
            self.settle(s, sink)?;
        }
        self.pass(&[], true, sink)
    }

    fn settle(&mut self, (fam, label): Sniffed, sink: Sink<'_>) -> Result<(), Unreadable> {
        let declared = label.map(|l| charset_of_label(&l)).transpose()?;
        let charset = resolve(fam, declared, self.named)?;
        self.out = Some(if charset.needs_decoding() {
            Out::Decode(Box::new(Transcoder::new(charset)))
        } else {
            Out::Pass
        });
        let head = std::mem::take(&mut self.head);
        self.pass(&head, false, sink)
    }

    fn pass(&mut self, input: &[u8], last: bool, sink: Sink<'_>) -> Result<(), Unreadable> {
        match &mut self.out {
            Some(Out::Decode(t)) if last => t.finish(sink),
            Some(Out::Decode(t)) => t.feed(input, sink),
            Some(Out::Pass) => {
                self.passed += input.len() as u64;
                if input.is_empty() {
                    Ok(())
                } else {
                    sink(input)
                }
            }
            None => Ok(()),
        }
    }

    /// Input offset that may be released when the output is judged up to `frontier`.
    pub(crate) fn release_for(&mut self, frontier: u64) -> u64 {
        match &mut self.out {
            None => 0,
            Some(Out::Pass) => frontier.min(self.passed),
            Some(Out::Decode(t)) => t.release_for(frontier).min(t.input_len()),
        }
    }
}

/// The family and the declaration's `encoding` label (if any).
type Sniffed = (Family, Option<Vec<u8>>);

/// Reads the family and the declaration from the first bytes; `None` while more bytes could
/// change the answer (unless `at_end`).
fn sniff(h: &[u8], at_end: bool) -> Result<Option<Sniffed>, Unreadable> {
    let fam = match h {
        [0xFF, 0xFE, ..] => Family::Utf16 {
            le: true,
            bom: true,
        },
        [0xFE, 0xFF, ..] => Family::Utf16 {
            le: false,
            bom: true,
        },
        [b'<', 0, b'?', 0, ..] => Family::Utf16 {
            le: true,
            bom: false,
        },
        [0, b'<', 0, b'?', ..] => Family::Utf16 {
            le: false,
            bom: false,
        },
        _ if h.len() < 4 && !at_end => return Ok(None),
        _ => Family::Ascii,
    };
    // The declaration as ASCII: UTF-16 code units above 0x7F end it.
    let mut text = Vec::with_capacity(64);
    match fam {
        Family::Ascii => {
            let h = h.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(h);
            text.extend(h.iter().take_while(|c| c.is_ascii()).copied());
        }
        Family::Utf16 { le, bom } => {
            let h = if bom { &h[2..] } else { h };
            for u in h.chunks_exact(2) {
                let (lo, hi) = if le { (u[0], u[1]) } else { (u[1], u[0]) };
                if hi != 0 || !lo.is_ascii() {
                    break;
                }
                text.push(lo);
            }
        }
    }
    const OPEN: &[u8] = b"<?xml";
    let n = text.len().min(OPEN.len());
    if text[..n] != OPEN[..n] {
        return Ok(Some((fam, None)));
    }
    if text.len() <= OPEN.len() {
        return if at_end {
            Ok(Some((fam, None)))
        } else {
            Ok(None)
        };
    }
    if !matches!(text[OPEN.len()], b' ' | b'\t' | b'\r' | b'\n') {
        // `<?xml-stylesheet …?>` and the like: a processing instruction, not a declaration.
        return Ok(Some((fam, None)));
    }
    let Some(end) = memchr::memmem::find(&text, b"?>") else {
        return if at_end {
            Err(Unreadable::Truncated {
                offset: h.len() as u64,
            })
        } else {
            Ok(None)
        };
    };
    let label = pseudo_attr(&text[OPEN.len()..end], b"encoding")?;
    Ok(Some((fam, label)))
}

/// The value of pseudo-attribute `want` in a declaration's body (`version="1.0" …`).
fn pseudo_attr(mut s: &[u8], want: &[u8]) -> Result<Option<Vec<u8>>, Unreadable> {
    let bad = Unreadable::Malformed { offset: 0 };
    let mut found = None;
    loop {
        s = s.trim_ascii_start();
        if s.is_empty() {
            return Ok(found);
        }
        let n = s
            .iter()
            .position(|c| !c.is_ascii_alphanumeric() && *c != b'_' && *c != b'-')
            .unwrap_or(s.len());
        if n == 0 {
            return Err(bad);
        }
        let (name, rest) = s.split_at(n);
        let rest = rest.trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b"=") else {
            return Err(bad);
        };
        let rest = rest.trim_ascii_start();
        let (q, rest) = rest.split_first().ok_or_else(|| bad.clone())?;
        if *q != b'"' && *q != b'\'' {
            return Err(bad);
        }
        let close = memchr::memchr(*q, rest).ok_or_else(|| bad.clone())?;
        if name == want {
            if found.is_some() {
                return Err(bad);
            }
            found = Some(rest[..close].to_vec());
        }
        s = &rest[close + 1..];
    }
}

/// The charset an `encoding` label names, as `encoding_rs` resolves it.
fn charset_of_label(label: &[u8]) -> Result<Charset, Unreadable> {
    let l = label.trim_ascii();
    if l.eq_ignore_ascii_case(b"us-ascii") || l.eq_ignore_ascii_case(b"ascii") {
        // Read as UTF-8, like the same `charset` label.
        return Ok(Charset::Utf8);
    }
    if l.eq_ignore_ascii_case(b"utf-16") {
        return Ok(Charset::Utf16);
    }
    let e = Encoding::for_label(l).ok_or(Unreadable::UnsupportedCharset)?;
    charset_of(e).ok_or(Unreadable::UnsupportedCharset)
}

fn charset_of(e: &'static Encoding) -> Option<Charset> {
    Some(if e == encoding_rs::UTF_8 {
        Charset::Utf8
    } else if e == encoding_rs::UTF_16LE {
        Charset::Utf16Le
    } else if e == encoding_rs::UTF_16BE {
        Charset::Utf16Be
    } else if e == encoding_rs::GB18030 {
        Charset::Gb18030
    } else if e == encoding_rs::GBK {
        Charset::Gbk
    } else if e == encoding_rs::BIG5 {
        Charset::Big5
    } else {
        return None;
    })
}

fn is_utf16(c: Charset) -> bool {
    matches!(c, Charset::Utf16 | Charset::Utf16Le | Charset::Utf16Be)
}

/// Whether two labels name the same encoding (the generic `utf-16` is either byte order).
fn agree(a: Charset, b: Charset) -> bool {
    a == b || (is_utf16(a) && is_utf16(b) && (a == Charset::Utf16 || b == Charset::Utf16))
}

/// The charset the body is decoded with (see the module docs).
fn resolve(
    fam: Family,
    declared: Option<Charset>,
    named: Option<Charset>,
) -> Result<Charset, Unreadable> {
    if let (Some(d), Some(n)) = (declared, named) {
        if !agree(d, n) {
            return Err(Unreadable::EncodingConflict);
        }
    }
    let fam16 = matches!(fam, Family::Utf16 { .. });
    if declared.is_some_and(|d| is_utf16(d) != fam16) {
        return Err(Unreadable::EncodingConflict);
    }
    // The most specific of the two labels (a generic `utf-16` defers to the other).
    let label = match (declared, named) {
        (Some(Charset::Utf16), Some(n)) => Some(n),
        (Some(d), _) => Some(d),
        (None, n) => n,
    };
    Ok(match (label, fam) {
        (Some(Charset::Utf16), Family::Utf16 { le, bom: false }) => {
            if le {
                Charset::Utf16Le
            } else {
                Charset::Utf16Be
            }
        }
        (Some(c), _) => c,
        (None, Family::Utf16 { bom: true, .. }) => Charset::Utf16,
        (None, Family::Utf16 { le: true, .. }) => Charset::Utf16Le,
        (None, Family::Utf16 { le: false, .. }) => Charset::Utf16Be,
        (None, Family::Ascii) => Charset::Utf8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(named: Option<Charset>, body: &[u8], chunk: usize) -> Result<Vec<u8>, Unreadable> {
        let mut d = XmlDecoder::new(named);
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            d.feed(c, &mut |o| {
                out.extend_from_slice(o);
                Ok(())
            })?;
        }
        d.finish(&mut |o| {
            out.extend_from_slice(o);
            Ok(())
        })?;
        Ok(out)
    }

    fn utf16(s: &str, le: bool, bom: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if bom {
            v.extend_from_slice(if le { &[0xFF, 0xFE] } else { &[0xFE, 0xFF] });
        }
        for u in s.encode_utf16() {
            v.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        v
    }

    #[test]
    fn declaration_and_content_type_settle_the_encoding() {
        let doc = "<?xml version=\"1.0\" encoding=\"GB18030\"?><a>张三 13800138000</a>";
        let gb = encoding_rs::GB18030.encode(doc).0.into_owned();
        for chunk in [1, 2, 7, 4096] {
            assert_eq!(run(None, &gb, chunk).unwrap(), doc.as_bytes());
            assert_eq!(
                run(Some(Charset::Gb18030), &gb, chunk).unwrap(),
                doc.as_bytes()
            );
            assert_eq!(
                run(Some(Charset::Utf8), &gb, chunk),
                Err(Unreadable::EncodingConflict)
            );
            assert_eq!(
                run(Some(Charset::Gbk), &gb, chunk),
                Err(Unreadable::EncodingConflict)
            );
        }
        // `gb2312` and `GBK` are one encoding to encoding_rs.
        let d = "<?xml version='1.0' encoding='gb2312'?><a>张三</a>";
        let b = encoding_rs::GBK.encode(d).0.into_owned();
        assert_eq!(run(Some(Charset::Gbk), &b, 3).unwrap(), d.as_bytes());
        // No declaration: the Content-Type charset, else UTF-8.
        let plain = "<a>张三</a>";
        let b = encoding_rs::GBK.encode(plain).0.into_owned();
        assert_eq!(run(Some(Charset::Gbk), &b, 2).unwrap(), plain.as_bytes());
        assert!(run(None, &b, 2).unwrap() != plain.as_bytes());
        // `<?xml-stylesheet` is no declaration.
        let pi = b"<?xml-stylesheet href='a'?><a/>";
        assert_eq!(run(None, pi, 1).unwrap(), pi);
        // A label the gate does not decode is unreadable.
        let latin = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>";
        assert_eq!(run(None, latin, 5), Err(Unreadable::UnsupportedCharset));
        // An unfinished declaration is truncated; an endless one malformed.
        assert!(run(None, b"<?xml version=\"1.0\"", 3).is_err());
        let mut long = b"<?xml version=\"1.0\" ".to_vec();
        long.extend(std::iter::repeat_n(b' ', 2 * MAX_DECL));
        assert!(run(None, &long, 64).is_err());
        assert_eq!(run(None, b"", 1).unwrap(), b"");
        assert_eq!(run(None, b"<a", 1).unwrap(), b"<a");
    }

    #[test]
    fn utf16_with_and_without_bom() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>13800138000</a>";
        for (le, bom) in [(true, true), (false, true), (true, false), (false, false)] {
            let b = utf16(doc, le, bom);
            for chunk in [1, 3, 4096] {
                assert_eq!(run(None, &b, chunk).unwrap(), doc.as_bytes(), "{le} {bom}");
            }
            let specific = if le {
                Charset::Utf16Le
            } else {
                Charset::Utf16Be
            };
            assert_eq!(run(Some(specific), &b, 5).unwrap(), doc.as_bytes());
            assert_eq!(
                run(Some(Charset::Utf8), &b, 5),
                Err(Unreadable::EncodingConflict)
            );
        }
        // Declared UTF-16 but sent in single bytes: unreadable.
        assert_eq!(
            run(None, doc.as_bytes(), 4),
            Err(Unreadable::EncodingConflict)
        );
    }
}
