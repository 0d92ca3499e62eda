//! The built-in identifier detectors (SPEC §3): they find identifiers inside any string value
//! or query value, with boundaries, and hand each normalised hit to a callback (no allocation).
//!
//! Digit-based detectors (`cn_resident_id`, `cn_mobile`, `bank_card`) share one pass
//! ([`digits`]) that finds identifiers as people write them: full-width digits, groups in the
//! usual shapes with any run of separators between them, several per string, never a piece of
//! a longer digit run.

mod bank_card;
mod digits;
mod email;
mod mobile;
mod resident_id;

pub use resident_id::{resident_id_birth_date, resident_id_check_char, resident_id_valid};

use crate::inspect::config::{Detector, DetectorSet};
use crate::inspect::record::Namespace;
use crate::model::CategorySet;

/// Per-request context of the detectors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetectCtx {
    pub detectors: DetectorSet,
    pub transfer_date: time::Date,
    pub resident_id_sensitive: bool,
}

/// Whether any detector finds an identifier in `text` (all detectors, today's date in
/// Asia/Shanghai). For deciding what client-chosen text may rest in logs
/// ([`crate::redact`]), not for counting.
pub fn holds_identifier(text: &[u8]) -> bool {
    let ctx = DetectCtx {
        detectors: DetectorSet::ALL,
        transfer_date: crate::model::shanghai_date(std::time::SystemTime::now()),
        resident_id_sensitive: true,
    };
    let mut found = false;
    scan(text, &ctx, &mut |_, _, _| found = true);
    found
}

/// The smallest text that can hold any identifier (`a@b.c`).
const MIN_LEN: usize = 5;

/// The fewest digits of a digit identifier (a mobile number): the digit pass is skipped below.
pub(crate) const MIN_DIGITS: usize = 11;

/// Runs the enabled detectors over `text`, calling `hit(namespace, normalised id, categories)`.
#[inline]
pub(crate) fn scan(
    text: &[u8],
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    if text.len() < MIN_LEN || ctx.detectors.is_empty() {
        #[cfg(test)]
        trace::record(text);
        return;
    }
    let (digit_count, has_at) = profile(text);
    scan_profiled(text, ctx, digit_count, has_at, hit);
}

/// [`scan`] with the prefilter already computed by the caller (the JSON scanner counts digits
/// and `@` in its SIMD pass): `digit_count` ASCII digits plus `0xEF` bytes, `has_at` an `@`.
#[inline]
pub(crate) fn scan_profiled(
    text: &[u8],
    ctx: &DetectCtx,
    digit_count: usize,
    has_at: bool,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    #[cfg(test)]
    trace::record(text);
    if text.len() < MIN_LEN || ctx.detectors.is_empty() {
        return;
    }
    if has_at && ctx.detectors.contains(Detector::Email) {
        email::scan(text, hit);
    }
    let wants_digits = ctx.detectors.contains(Detector::CnMobile)
        || ctx.detectors.contains(Detector::BankCard)
        || ctx.detectors.contains(Detector::CnResidentId);
    // Every digit identifier has at least 11 digits: most text is skipped without the digit
    // pass.
    if wants_digits && digit_count >= MIN_DIGITS {
        digits::scan(text, ctx, hit);
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

    pub(crate) fn record(text: &[u8]) {
        SEEN.with(|s| {
            if let Some(v) = s.borrow_mut().as_mut() {
                v.push(text.to_vec());
            }
        });
    }
}

/// Counts ASCII digits and full-width lead bytes (`0xEF`, an upper bound of full-width
/// digits) and looks for `@` in one pass written so that it vectorises
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
            d += u8::from(c.wrapping_sub(b'0') < 10) | u8::from(*c == 0xEF);
            a |= u8::from(*c == b'@');
        }
        digits += usize::from(d);
        at |= a != 0;
    }
    // The remainder (all of most strings) is under 32 bytes: byte-wide counters again.
    let mut d = 0u8;
    let mut a = 0u8;
    for c in blocks.remainder() {
        d += u8::from(c.wrapping_sub(b'0') < 10) | u8::from(*c == 0xEF);
        a |= u8::from(*c == b'@');
    }
    (digits + usize::from(d), at || a != 0)
}

#[cfg(test)]
mod tests;
