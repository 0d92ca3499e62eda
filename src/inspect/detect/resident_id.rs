//! `cn_resident_id`: the 18-character PRC resident ID (area code, birth date `YYYYMMDD`,
//! sequence, ISO 7064 MOD 11-2 check character). Category `identity` (or `basic` when
//! `resident_id_sensitive = false`), plus `minors` when the holder is under 14 on the transfer
//! date (Asia/Shanghai).

use super::DetectCtx;
use crate::model::{Category, CategorySet};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// The MOD 11-2 check character for the first 17 digits of an ID (`b'?'` when they are
/// not 17 digits).
pub fn resident_id_check_char(d17: &[u8]) -> u8 {
    if d17.len() != 17 || !d17.iter().all(u8::is_ascii_digit) {
        return b'?';
    }
    let sum: u32 = d17
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

/// Whether an 18-character ID (digits, last may be `X`/`x`) has a valid check character.
pub fn resident_id_valid(id: &[u8]) -> bool {
    if id.len() != 18 || !id[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = id[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize] == id[17].to_ascii_uppercase()
}

/// The birth date encoded in an ID, when it is a real calendar date.
pub fn resident_id_birth_date(id: &[u8]) -> Option<time::Date> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = id.get(r)?;
        s.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let y = i32::try_from(num(6..10)?).ok()?;
    let m = u8::try_from(num(10..12)?).ok()?;
    let d = u8::try_from(num(12..14)?).ok()?;
    let month = time::Month::try_from(m).ok()?;
    time::Date::from_calendar_date(y, month, d).ok()
}

/// Checks a contiguous digit group (17 digits followed by `X`, or 18 digits).
pub(super) fn check(
    digits: &[u8],
    after: Option<u8>,
    ctx: &DetectCtx,
) -> Option<([u8; 18], CategorySet)> {
    let mut id = [0u8; 18];
    match (digits.len(), after) {
        (18, _) => id.copy_from_slice(digits),
        (17, Some(b'X' | b'x')) => {
            id[..17].copy_from_slice(digits);
            id[17] = b'X';
        }
        _ => return None,
    }
    if !resident_id_valid(&id) {
        return None;
    }
    let birth = resident_id_birth_date(&id)?;
    if birth.year() < 1800 || birth > ctx.transfer_date {
        return None;
    }
    let mut cats = if ctx.resident_id_sensitive {
        CategorySet::of(Category::Identity)
    } else {
        CategorySet::of(Category::Basic)
    };
    if is_under_14(birth, ctx.transfer_date) {
        cats.insert(Category::Minors);
    }
    Some((id, cats))
}

/// Whether someone born on `birth` is younger than 14 on `on` (a 14th birthday on 29 February
/// falls on 1 March in common years).
fn is_under_14(birth: time::Date, on: time::Date) -> bool {
    let y = birth.year() + 14;
    let fourteenth = time::Date::from_calendar_date(y, birth.month(), birth.day())
        .or_else(|_| time::Date::from_calendar_date(y, time::Month::March, 1));
    match fourteenth {
        Ok(d) => on < d,
        Err(_) => false,
    }
}
