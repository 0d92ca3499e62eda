//! The built-in identifier detectors (SPEC §3): they find identifiers inside any string value
//! or query value, with boundaries, and hand each normalised hit to a callback (no allocation).
//!
//! Digit-based detectors (`cn_resident_id`, `cn_mobile`, `bank_card`) share one pass that cuts
//! the text into *digit groups*: maximal runs of digits in which single spaces or dashes may
//! separate digits. A group is tried whole (so `138 0013 8000` and `+86 139-0013-9000` match),
//! and, when it has separators and matched nothing, each contiguous run inside it is tried
//! alone (so two phone numbers separated by one space are both found). A run is never cut: a
//! phone number inside a longer digit run is not a phone number.

mod bank_card;
mod email;
mod mobile;
mod resident_id;

pub use resident_id::{resident_id_birth_date, resident_id_check_char, resident_id_valid};

use crate::inspect::config::{Detector, DetectorSet};
use crate::inspect::record::Namespace;
use crate::model::{Category, CategorySet};

/// Per-request context of the detectors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetectCtx {
    pub detectors: DetectorSet,
    pub transfer_date: time::Date,
    pub resident_id_sensitive: bool,
}

/// The smallest text that can hold any identifier (`a@b.c`).
const MIN_LEN: usize = 5;

/// Runs the enabled detectors over `text`, calling `hit(namespace, normalised id, categories)`.
#[inline]
pub(crate) fn scan(
    text: &[u8],
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    #[cfg(test)]
    trace::record(text);
    if text.len() < MIN_LEN || ctx.detectors.is_empty() {
        return;
    }
    let (digit_count, has_at) = profile(text);
    if has_at && ctx.detectors.contains(Detector::Email) {
        email::scan(text, hit);
    }
    let digits = ctx.detectors.contains(Detector::CnMobile)
        || ctx.detectors.contains(Detector::BankCard)
        || ctx.detectors.contains(Detector::CnResidentId);
    // Every digit identifier has at least 11 digits: most text is skipped without the group
    // pass.
    if digits && digit_count >= 11 {
        scan_digit_groups(text, ctx, hit);
    }
}

/// Test-only record of every text handed to the detectors (for the differential tests: what
/// a reference parser extracts must be among what the gate inspected).
#[cfg(test)]
pub(crate) mod trace {
    use std::cell::RefCell;

    thread_local! {
        static SEEN: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
    }

    /// Starts recording on this thread.
    pub(crate) fn start() {
        SEEN.with(|s| *s.borrow_mut() = Some(Vec::new()));
    }

    /// Stops recording and returns what was seen.
    pub(crate) fn take() -> Vec<Vec<u8>> {
        SEEN.with(|s| s.borrow_mut().take().unwrap_or_default())
    }

    pub(super) fn record(text: &[u8]) {
        SEEN.with(|s| {
            if let Some(v) = s.borrow_mut().as_mut() {
                v.push(text.to_vec());
            }
        });
    }
}

/// Counts ASCII digits and looks for `@` in one pass written so that it vectorises
/// (byte-wide lanes over 32-byte blocks).
#[inline]
fn profile(text: &[u8]) -> (usize, bool) {
    let mut digits = 0usize;
    let mut at = false;
    let mut blocks = text.chunks_exact(32);
    for b in &mut blocks {
        let mut d = 0u8;
        let mut a = 0u8;
        for c in b {
            d += u8::from(c.wrapping_sub(b'0') < 10);
            a |= u8::from(*c == b'@');
        }
        digits += usize::from(d);
        at |= a != 0;
    }
    // The remainder (all of most strings) is under 32 bytes: byte-wide counters again.
    let mut d = 0u8;
    let mut a = 0u8;
    for c in blocks.remainder() {
        d += u8::from(c.wrapping_sub(b'0') < 10);
        a |= u8::from(*c == b'@');
    }
    (digits + usize::from(d), at || a != 0)
}

/// Largest digit group considered (longer groups are tried only as contiguous runs).
const MAX_GROUP_DIGITS: usize = 24;

fn scan_digit_groups(
    text: &[u8],
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    let n = text.len();
    let mut i = 0;
    while i < n {
        // Skip to the next digit; most text has few digits.
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = [0u8; MAX_GROUP_DIGITS];
        let mut nd = 0usize;
        let mut separated = false;
        let mut j = i;
        loop {
            if j < n && text[j].is_ascii_digit() {
                if nd < MAX_GROUP_DIGITS {
                    digits[nd] = text[j];
                }
                nd += 1;
                j += 1;
            } else if j + 1 < n
                && (text[j] == b' ' || text[j] == b'-')
                && text[j + 1].is_ascii_digit()
            {
                separated = true;
                j += 1;
            } else {
                break;
            }
        }
        let end = j;
        let mut found = false;
        if nd <= MAX_GROUP_DIGITS {
            let after = text.get(end).copied();
            let plus = start > 0 && text[start - 1] == b'+';
            found = try_group(&digits[..nd], !separated, after, plus, ctx, hit);
        }
        if separated && !found {
            // Try each contiguous run alone.
            let mut k = start;
            while k < end {
                let rs = k;
                while k < end && text[k].is_ascii_digit() {
                    k += 1;
                }
                let run = &text[rs..k];
                if run.len() >= 11 && run.len() <= MAX_GROUP_DIGITS {
                    let after = text.get(k).copied();
                    let plus = rs > 0 && text[rs - 1] == b'+';
                    try_group(run, true, after, plus, ctx, hit);
                }
                k += 1; // skip the separator
            }
        }
        i = end.max(i + 1);
    }
}

/// Tries one digit group; returns whether anything matched.
fn try_group(
    digits: &[u8],
    contiguous: bool,
    after: Option<u8>,
    _plus: bool,
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) -> bool {
    let mut found = false;
    let d = ctx.detectors;
    if d.contains(Detector::CnResidentId) && contiguous {
        if let Some((id, cats)) = resident_id::check(digits, after, ctx) {
            hit(Namespace::CnResidentId, &id, cats);
            // A resident ID is not also tried as a card or phone.
            return true;
        }
    }
    if d.contains(Detector::CnMobile) {
        if let Some(p) = mobile::check(digits) {
            hit(Namespace::CnMobile, p, CategorySet::of(Category::Contact));
            found = true;
        }
    }
    if d.contains(Detector::BankCard) && bank_card::check(digits) {
        hit(
            Namespace::BankCard,
            digits,
            CategorySet::of(Category::Financial),
        );
        found = true;
    }
    found
}

#[cfg(test)]
mod tests;
