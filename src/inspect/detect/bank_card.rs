//! `bank_card`: 13–19 digits passing the Luhn check; normalised to its digits only.
//! Category `financial`.

/// Whether `digits` (ASCII digits only) is a plausible card number.
pub(super) fn check(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == b'0') {
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
    sum % 10 == 0
}
