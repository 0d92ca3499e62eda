//! `Content-Transfer-Encoding` of multipart parts (RFC 2045 §6): `base64` and
//! `quoted-printable` are decoded before the part is inspected; `7bit`, `8bit` and `binary`
//! are identity; anything else is *unreadable*.
//!
//! Strict, so that no reader can decode more than the gate sees: base64 allows only its
//! alphabet and line breaks, padding only at the very end; quoted-printable allows `=XX` and
//! soft line breaks, nothing else after `=`. Both only shrink their input (no bomb). Release
//! checkpoints sit on unit boundaries (a whole base64 quantum, a whole `=XX` escape), so no
//! bit of an unjudged byte is released.

use base64::Engine;

use super::checkpoints::Checkpoints;
use super::error::Unreadable;

/// A transfer encoding that needs decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// `base64`.
    Base64,
    /// `quoted-printable`.
    QuotedPrintable,
}

impl TransferEncoding {
    /// Parses a part's `Content-Transfer-Encoding`: `Ok(None)` for identity encodings.
    ///
    /// # Errors
    /// [`Unreadable::UnknownEncoding`] for any other value.
    pub fn parse(value: &[u8]) -> Result<Option<TransferEncoding>, Unreadable> {
        let v = value.trim_ascii().to_ascii_lowercase();
        match v.as_slice() {
            b"7bit" | b"8bit" | b"binary" => Ok(None),
            b"base64" => Ok(Some(TransferEncoding::Base64)),
            b"quoted-printable" => Ok(Some(TransferEncoding::QuotedPrintable)),
            _ => Err(Unreadable::UnknownEncoding),
        }
    }
}

/// A streaming transfer decoder.
#[derive(Debug)]
pub(crate) struct TransferDecoder {
    kind: TransferEncoding,
    /// Pending base64 characters (less than a quantum) or a pending QP escape.
    pend: [u8; 4],
    npend: usize,
    /// Base64 padding seen: only line breaks may follow.
    ended: bool,
    enc: u64,
    dec: u64,
    checkpoints: Checkpoints,
    out: Vec<u8>,
}

impl TransferDecoder {
    pub(crate) fn new(kind: TransferEncoding) -> Self {
        TransferDecoder {
            kind,
            pend: [0; 4],
            npend: 0,
            ended: false,
            enc: 0,
            dec: 0,
            checkpoints: Checkpoints::new(0),
            out: Vec::new(),
        }
    }

    fn bad(&self, k: usize) -> Unreadable {
        Unreadable::Corrupt {
            offset: self.enc + k as u64,
        }
    }

    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        self.out.clear();
        // Input offset (relative to `input`) after the last complete unit.
        let mut unit_end = None;
        for (k, &c) in input.iter().enumerate() {
            match self.kind {
                TransferEncoding::Base64 => {
                    if c == b'\r' || c == b'\n' {
                        if self.npend == 0 {
                            unit_end = Some(k + 1);
                        }
                        continue;
                    }
                    let alphabet = c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
                    if self.ended || !(alphabet || c == b'=') {
                        return Err(self.bad(k));
                    }
                    self.pend[self.npend] = c;
                    self.npend += 1;
                    if self.npend == 4 {
                        let mut three = [0u8; 3];
                        let n = base64::engine::general_purpose::STANDARD
                            .decode_slice(self.pend, &mut three)
                            .map_err(|_| self.bad(k))?;
                        self.out.extend_from_slice(&three[..n]);
                        self.ended = n < 3;
                        self.npend = 0;
                        unit_end = Some(k + 1);
                    }
                }
                TransferEncoding::QuotedPrintable => {
                    if self.npend == 0 {
                        if c == b'=' {
                            self.pend[0] = c;
                            self.npend = 1;
                        } else {
                            self.out.push(c);
                            unit_end = Some(k + 1);
                        }
                        continue;
                    }
                    self.pend[self.npend] = c;
                    self.npend += 1;
                    if self.npend < 3 {
                        continue;
                    }
                    let (a, b) = (self.pend[1], self.pend[2]);
                    if a == b'\r' && b == b'\n' {
                        // Soft line break.
                    } else if let (Some(h), Some(l)) = (hex(a), hex(b)) {
                        self.out.push(h << 4 | l);
                    } else {
                        return Err(self.bad(k));
                    }
                    self.npend = 0;
                    unit_end = Some(k + 1);
                }
            }
        }
        let produced = self.out.len() as u64;
        if let Some(u) = unit_end {
            self.checkpoints
                .push(self.enc + u as u64, self.dec + produced);
        }
        self.enc += input.len() as u64;
        self.dec += produced;
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let r = sink(&out);
            self.out = out;
            r?;
        }
        Ok(())
    }

    pub(crate) fn finish(
        &mut self,
        _sink: &mut dyn FnMut(&[u8]) -> Result<(), Unreadable>,
    ) -> Result<(), Unreadable> {
        if self.npend != 0 {
            return Err(Unreadable::Truncated { offset: self.enc });
        }
        Ok(())
    }

    pub(crate) fn release_for(&mut self, frontier: u64) -> u64 {
        self.checkpoints.release_for(frontier)
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(kind: TransferEncoding, body: &[u8], chunk: usize) -> Result<Vec<u8>, Unreadable> {
        let mut d = TransferDecoder::new(kind);
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            d.feed(c, &mut |o| {
                out.extend_from_slice(o);
                Ok(())
            })?;
        }
        d.finish(&mut |_| Ok(()))?;
        Ok(out)
    }

    #[test]
    fn base64_in_any_chunking() {
        let b = b"MTM4MDAxMzgwMDA=\r\nbW9yZQ==";
        // Padding in the middle: unreadable (a lenient reader would go on).
        assert!(decode(TransferEncoding::Base64, b, 3).is_err());
        let b = b"MTM4MDAx\r\nMzgwMDA=\r\n";
        for chunk in [1, 2, 5, 100] {
            assert_eq!(
                decode(TransferEncoding::Base64, b, chunk).unwrap(),
                b"13800138000"
            );
        }
        for bad in [&b"MTM4 MDAx"[..], b"MTM4MDA", b"MTM4MDAx*", b"MQ==MQ=="] {
            assert!(decode(TransferEncoding::Base64, bad, 4).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoted_printable_in_any_chunking() {
        let b = b"phone=3D138=\r\n0013=38000\r\n";
        for chunk in [1, 2, 3, 100] {
            assert_eq!(
                decode(TransferEncoding::QuotedPrintable, b, chunk).unwrap(),
                b"phone=13800138000\r\n"
            );
        }
        for bad in [&b"a=\nb"[..], b"a=G1", b"abc="] {
            assert!(
                decode(TransferEncoding::QuotedPrintable, bad, 1).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn identity_and_unknown() {
        assert_eq!(TransferEncoding::parse(b"7BIT"), Ok(None));
        assert_eq!(
            TransferEncoding::parse(b" Base64 "),
            Ok(Some(TransferEncoding::Base64))
        );
        assert!(TransferEncoding::parse(b"x-uuencode").is_err());
    }
}
