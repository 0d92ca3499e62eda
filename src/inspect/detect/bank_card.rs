//! `bank_card`: 13–19 digits passing the Luhn check; normalised to its digits only.
//! Category `financial`. A number starting with `0` or `1` is not taken for a card: the
//! schemes in use (UnionPay, Visa, Mastercard, JCB, American Express, older domestic cards
//! starting with 9) start with 2–9 — only airline UATP numbers start with 1 — while that is
//! exactly where millisecond, microsecond and nanosecond timestamps live.

/// Whether `digits` (ASCII digits only) is a plausible card number.
pub(super) fn check(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) || !(b'2'..=b'9').contains(&digits[0]) {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}
