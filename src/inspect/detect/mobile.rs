//! `cn_mobile`: mainland mobile numbers `1[3-9]` + 9 digits, with an optional `86` / `0086`
//! country prefix (the `+` or separators are already stripped by the digit grouping).
//! Normalised to the 11 national digits. Category `contact`.

/// Returns the 11-digit national number when `digits` is a mobile number.
pub(super) fn check(digits: &[u8]) -> Option<&[u8]> {
    let national = match digits.len() {
        11 => digits,
        13 if digits.starts_with(b"86") => &digits[2..],
        15 if digits.starts_with(b"0086") => &digits[4..],
        _ => return None,
    };
    (national[0] == b'1' && (b'3'..=b'9').contains(&national[1])).then_some(national)
}
