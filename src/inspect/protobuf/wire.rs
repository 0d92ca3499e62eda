//! The protobuf wire format, read without a schema: fields as (number, wire type, value) over
//! a buffer holding one whole message. Varint (0), 64-bit (1), length-delimited (2) and 32-bit
//! (5) fields are read; groups (3, 4), wire types 6 and 7, field number 0, a varint longer
//! than ten bytes (or overflowing 64 bits), a tag over 32 bits and a length past the end of the
//! message are malformed. Nothing here allocates.

/// The value of one field as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (fixed64, sfixed64, double).
    Fixed64(u64),
    /// Wire type 2 (string, bytes, a nested message, a packed repeated scalar).
    Bytes(&'a [u8]),
    /// Wire type 5 (fixed32, sfixed32, float).
    Fixed32(u32),
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field number (1 to 2²⁹ − 1).
    pub number: u32,
    /// Offset of the field's tag in the message.
    pub at: usize,
    /// Its value.
    pub value: Value<'a>,
}

/// Largest field number protobuf allows.
pub(crate) const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// Reads a varint at `*i`, advancing past it; `None` when it is truncated, longer than ten
/// bytes or overflows 64 bits.
#[inline]
pub(crate) fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for k in 0..10 {
        let c = *b.get(*i + k)?;
        if k == 9 && c > 1 {
            return None;
        }
        v |= u64::from(c & 0x7F) << (7 * k);
        if c & 0x80 == 0 {
            *i += k + 1;
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in wire order. After an `Err` (the offset of the malformed
/// field) the iterator ends.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// The fields of `buf`, a whole message.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Option<Field<'a>> {
        let b = self.buf;
        let at = self.pos;
        let mut i = at;
        let tag = varint(b, &mut i)?;
        let tag = u32::try_from(tag).ok()?;
        let number = tag >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return None;
        }
        let value = match tag & 7 {
            0 => Value::Varint(varint(b, &mut i)?),
            1 => {
                let s: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
                i += 8;
                Value::Fixed64(u64::from_le_bytes(s))
            }
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let end = i.checked_add(len)?;
                let v = b.get(i..end)?;
                i = end;
                Value::Bytes(v)
            }
            5 => {
                let s: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
                i += 4;
                Value::Fixed32(u32::from_le_bytes(s))
            }
            // Groups (3, 4; deprecated, and nothing a current encoder writes without a
            // schema that says so) and the undefined wire types 6 and 7.
            _ => return None,
        };
        self.pos = i;
        Some(Field { number, at, value })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, usize>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match self.next_field() {
            Some(f) => Some(Ok(f)),
            None => {
                self.failed = true;
                Some(Err(self.pos))
            }
        }
    }
}

/// Whether `buf` is a well-formed message at its top level (its nested length-delimited fields
/// are not looked into). The empty buffer is the empty message.
pub(crate) fn is_message(buf: &[u8]) -> bool {
    Fields::new(buf).all(|f| f.is_ok())
}

/// Writes `v` in decimal into `out` (at most 20 digits), returning the digits.
#[inline]
pub(crate) fn decimal(mut v: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // 1: varint 150; 2: "hi"; 3: fixed32 1; 4: fixed64 2.
        let m = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1D, 1, 0, 0, 0, 0x21, 2, 0, 0, 0, 0, 0, 0,
            0,
        ];
        let f: Vec<_> = Fields::new(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            f.iter().map(|f| (f.number, f.value)).collect::<Vec<_>>(),
            vec![
                (1, Value::Varint(150)),
                (2, Value::Bytes(b"hi")),
                (3, Value::Fixed32(1)),
                (4, Value::Fixed64(2)),
            ]
        );
        assert_eq!(f[1].at, 3);
    }

    #[test]
    fn malformed_wire_data_is_refused() {
        for bad in [
            &[0x08, 0x96][..], // truncated varint
            &[
                0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ], // > 64 bits
            &[0x12, 0x05, b'a'], // length past the end
            &[0x0B, 0x0C],     // group start / end
            &[0x0E, 0x00],     // wire type 6
            &[0x0F, 0x00],     // wire type 7
            &[0x00, 0x00],     // field number 0
            &[0x1D, 1, 2],     // truncated fixed32
            &[0x09, 1, 2, 3],  // truncated fixed64
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00], // tag over 32 bits
        ] {
            assert!(!is_message(bad), "{bad:?}");
        }
        assert!(is_message(&[]));
        let mut i = 0;
        assert_eq!(
            varint(
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                &mut i
            ),
            Some(u64::MAX)
        );
        assert_eq!(i, 10);
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(13_812_345_678, &mut b), b"13812345678");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
