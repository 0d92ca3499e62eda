//! The digit pass shared by `cn_resident_id`, `cn_mobile` and `bank_card` (SPEC §3 "Digits as
//! people write them").
//!
//! The text is cut into *atoms*: maximal runs of digits, ASCII or full-width (U+FF10–FF19),
//! normalised to ASCII. Atoms separated only by a *separator run* (spaces, tab, NBSP, U+3000,
//! `-`, `.`, `/` and their full-width forms, in any number, with `)`/`(` around a group that
//! opened with `(`) form a *chain*. Within a chain, identifiers are matched left to right in the
//! groupings people write them in — a phone as 3-4-4 or 3-8 (optionally after an `86`/`0086`
//! group, the first group possibly in parentheses), an ID number as 6-8-4 or 6-4-4-4 (last group
//! may end in `X`), a card as groups of four (the last one shorter) making 13–19 digits — and
//! any atom not used by a grouping is tried alone. An atom is never cut: a phone number inside a
//! longer digit run is not a phone number, and groups in other shapes (`131.0.6778.139`) are
//! never joined. Nothing here allocates: atoms live in a fixed window.

use super::{bank_card, mobile, resident_id, DetectCtx};
use crate::inspect::config::Detector;
use crate::inspect::record::Namespace;
use crate::model::{Category, CategorySet};

/// Digits kept per atom: no identifier is longer (a 19-digit card); longer atoms only count.
const ATOM_DIGITS: usize = 19;

/// Atoms a grouping can span (card 4-4-4-4-3 plus one to see that the fours stop).
const LOOK: usize = 6;

/// Atoms held at once; a longer chain is matched in windows.
const WINDOW: usize = 24;

#[derive(Debug, Clone, Copy)]
struct Atom {
    digits: [u8; ATOM_DIGITS],
    /// The real number of digits (may exceed `ATOM_DIGITS`).
    len: usize,
    /// Preceded by `(` (or `(+`).
    open: bool,
    /// Directly followed by `X`/`x` (ASCII or full-width).
    x_after: bool,
}

impl Atom {
    fn digits(&self) -> &[u8] {
        &self.digits[..self.len.min(ATOM_DIGITS)]
    }
}

/// A chain being assembled.
struct Chain {
    atoms: [Atom; WINDOW],
    n: usize,
    /// Length of the atom just before `atoms[0]` in the same chain (0 at a chain start).
    before: usize,
}

/// Reads a digit at `i`: its ASCII value and byte width.
#[inline]
fn digit_at(text: &[u8], i: usize) -> Option<(u8, usize)> {
    let c = text[i];
    if c.is_ascii_digit() {
        return Some((c, 1));
    }
    if c == 0xEF
        && i + 2 < text.len()
        && text[i + 1] == 0xBC
        && (0x90..=0x99).contains(&text[i + 2])
    {
        return Some((b'0' + (text[i + 2] - 0x90), 3));
    }
    None
}

/// Width of a separator character at the start of `s` (0 when none).
#[inline]
fn separator(s: &[u8]) -> usize {
    match s {
        [b' ' | b'\t' | b'-' | b'.' | b'/', ..] => 1,
        [0xC2, 0xA0, ..] => 2,
        // U+3000 ideographic space; U+2010–U+2015 dashes.
        [0xE3, 0x80, 0x80, ..] | [0xE2, 0x80, 0x90..=0x95, ..] => 3,
        // Full-width `-`, `.`, `/`.
        [0xEF, 0xBC, 0x8D..=0x8F, ..] => 3,
        _ => 0,
    }
}

fn strip_close(s: &[u8]) -> Option<&[u8]> {
    match s {
        [b')', rest @ ..] => Some(rest),
        [0xEF, 0xBC, 0x89, rest @ ..] => Some(rest),
        _ => None,
    }
}

fn strip_open(s: &[u8]) -> Option<&[u8]> {
    match s {
        [b'(', rest @ ..] => Some(rest),
        [0xEF, 0xBC, 0x88, rest @ ..] => Some(rest),
        _ => None,
    }
}

/// Whether the bytes between two atoms join them into one chain.
fn joins(mut gap: &[u8], prev_open: bool) -> bool {
    let mut any = false;
    if prev_open {
        if let Some(r) = strip_close(gap) {
            gap = r;
            any = true;
        }
    }
    loop {
        let w = separator(gap);
        if w == 0 {
            break;
        }
        gap = &gap[w..];
        any = true;
    }
    if let Some(r) = strip_open(gap) {
        gap = r;
        any = true;
    }
    any && gap.is_empty()
}

/// Whether the atom starting at `start` opens with a parenthesis (`(138)`, `(+86)`).
fn opened(text: &[u8], start: usize) -> bool {
    let mut s = &text[..start];
    if let [rest @ .., b'+'] | [rest @ .., 0xEF, 0xBC, 0x8B] = s {
        s = rest;
    }
    matches!(s, [.., b'('] | [.., 0xEF, 0xBC, 0x88])
}

fn x_at(text: &[u8], i: usize) -> bool {
    matches!(
        text.get(i..).unwrap_or(&[]),
        [b'X' | b'x', ..] | [0xEF, 0xBC, 0xB8, ..] | [0xEF, 0xBD, 0x98, ..]
    )
}

/// Runs the digit detectors over `text` (after [`may_match`], which rules most text out).
#[inline]
pub(super) fn scan(
    text: &[u8],
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    if may_match(text) {
        scan_all(text, ctx, hit);
    }
}

/// Whether `text` holds the atoms some identifier needs: the prefilter of [`scan`], one pass
/// that only measures atoms, conservative by construction. Every hit of [`scan_all`] comes
/// from an atom of 11–19 digits tried alone ([`single`]) or from a grouping ([`grouping`]),
/// and every grouping starts at an atom of 6 digits (a resident ID, 6-8-4 or 6-4-4-4), at an
/// atom of 3 (a phone, 3-4-4 or 3-8, perhaps after an `86`/`0086` atom) or at three atoms of
/// 4 (a card). Atoms are cut here exactly as [`scan_all`] cuts them ([`digit_at`], one byte on
/// after anything else), so a text with none of these shapes has no hit: an order number
/// `O-2026123456-1` (10 and 1 digits) or a timestamp `2026-03-01T08:00:00+08:00` (one 4 and
/// 2s) is ruled out before the atoms are built.
///
/// An ASCII text of 8 to 64 bytes (most) is measured on a mask of its digits, eight bytes at a
/// time ([`ascii_digit_mask`], [`runs_may_match`]); others byte by byte ([`may_match_bytes`]).
#[inline]
pub(super) fn may_match(text: &[u8]) -> bool {
    match ascii_digit_mask(text) {
        Some(m) => runs_may_match(m),
        None => may_match_bytes(text),
    }
}

/// Whether an atom of `run` digits can start an identifier (see [`may_match`]); `fours`
/// counts the atoms of four seen so far.
#[inline]
fn shape(run: usize, fours: &mut u32) -> bool {
    match run {
        3 | 6 | 11..=19 => true,
        4 => {
            *fours += 1;
            *fours >= 3
        }
        _ => false,
    }
}

/// Bit `i` set when byte `i` of `text` is an ASCII digit, for an ASCII text of 8 to 64 bytes;
/// `None` otherwise (a non-ASCII byte may be part of a full-width digit). SWAR, eight bytes a
/// word: for a byte under 0x80, adding 0x50 sets its high bit when it is at least `0`, adding
/// 0x46 when it is above `9` (no carry leaves the byte); the eight high bits are gathered by
/// one multiplication.
#[inline]
fn ascii_digit_mask(text: &[u8]) -> Option<u64> {
    const HI: u64 = 0x8080_8080_8080_8080;
    const LO: u64 = 0x0101_0101_0101_0101;
    let n = text.len();
    if !(8..=64).contains(&n) {
        return None;
    }
    let word = |at: usize| -> u64 {
        text.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let digits = |w: u64| -> u64 {
        let d = w.wrapping_add(0x50 * LO) & !w.wrapping_add(0x46 * LO) & HI;
        // Bits 7, 15, …, 63 to bits 0–7.
        ((d >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
    };
    let mut mask = 0u64;
    let mut high = 0u64;
    let full = n / 8;
    for k in 0..full {
        let w = word(8 * k);
        high |= w;
        mask |= digits(w) << (8 * k);
    }
    let rest = n % 8;
    if rest > 0 {
        // The last eight bytes; the bits of the bytes already counted are shifted out.
        let w = word(n - 8);
        high |= w;
        mask |= (digits(w) >> (8 - rest)) << (8 * full);
    }
    (high & HI == 0).then_some(mask)
}

/// [`may_match`] on a digit mask: the atoms are its runs of ones, taken lowest first.
#[inline]
fn runs_may_match(mut m: u64) -> bool {
    let mut fours = 0u32;
    while m != 0 {
        let start = m.trailing_zeros();
        let run = (!(m >> start)).trailing_zeros() as usize;
        if shape(run, &mut fours) {
            return true;
        }
        // Adding the lowest set bit clears the lowest run (and sets the zero bit after it,
        // which the AND removes).
        m &= m.wrapping_add(m & m.wrapping_neg());
    }
    false
}

/// [`may_match`] byte by byte, with [`digit_at`] (full-width digits included).
pub(super) fn may_match_bytes(text: &[u8]) -> bool {
    let n = text.len();
    let mut fours = 0u32;
    let mut run = 0usize;
    let mut i = 0usize;
    while i < n {
        let c = text[i];
        if c.is_ascii_digit() {
            run += 1;
            i += 1;
            continue;
        }
        if c == 0xEF {
            if let Some((_, w)) = digit_at(text, i) {
                run += 1;
                i += w;
                continue;
            }
        }
        if shape(run, &mut fours) {
            return true;
        }
        run = 0;
        i += 1;
    }
    shape(run, &mut fours)
}

/// The digit detectors over `text` without the prefilter (what [`scan`] runs when
/// [`may_match`] lets the text through).
pub(super) fn scan_all(
    text: &[u8],
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    let n = text.len();
    let mut chain = Chain {
        atoms: [Atom {
            digits: [0; ATOM_DIGITS],
            len: 0,
            open: false,
            x_after: false,
        }; WINDOW],
        n: 0,
        before: 0,
    };
    let mut prev_end = 0usize;
    let mut i = 0usize;
    while i < n {
        let Some((d0, w0)) = digit_at(text, i) else {
            i += 1;
            continue;
        };
        let start = i;
        let mut atom = Atom {
            digits: [0; ATOM_DIGITS],
            len: 0,
            open: opened(text, start),
            x_after: false,
        };
        atom.digits[0] = d0;
        atom.len = 1;
        i += w0;
        while i < n {
            let Some((d, w)) = digit_at(text, i) else {
                break;
            };
            if atom.len < ATOM_DIGITS {
                atom.digits[atom.len] = d;
            }
            atom.len += 1;
            i += w;
        }
        atom.x_after = x_at(text, i);
        if chain.n > 0 {
            let prev = &chain.atoms[chain.n - 1];
            if prev.x_after || !joins(&text[prev_end..start], prev.open) {
                flush(&mut chain, true, ctx, hit);
            }
        }
        if chain.n == WINDOW {
            flush(&mut chain, false, ctx, hit);
        }
        chain.atoms[chain.n] = atom;
        chain.n += 1;
        prev_end = i;
    }
    flush(&mut chain, true, ctx, hit);
}

/// Matches the atoms of `chain`; at the end of a chain all of them, otherwise only those whose
/// groupings are fully visible (the rest stay for the next window).
fn flush(
    chain: &mut Chain,
    end: bool,
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    let atoms = &chain.atoms[..chain.n];
    let mut i = 0;
    while i < atoms.len() {
        if !end && i + LOOK > atoms.len() {
            break;
        }
        let prev_len = if i == 0 {
            chain.before
        } else {
            atoms[i - 1].len
        };
        if let Some(k) = grouping(&atoms[i..], prev_len, ctx, hit) {
            i += k;
            continue;
        }
        let a = &atoms[i];
        if a.len <= ATOM_DIGITS {
            let after = a.x_after.then_some(b'X');
            single(a.digits(), after, ctx, hit);
        }
        i += 1;
    }
    if end {
        chain.n = 0;
        chain.before = 0;
    } else {
        chain.before = if i > 0 {
            chain.atoms[i - 1].len
        } else {
            chain.before
        };
        chain.atoms.copy_within(i..chain.n, 0);
        chain.n -= i;
    }
}

/// Concatenates the digits of `atoms` into `buf`; returns the length.
fn concat(atoms: &[Atom], buf: &mut [u8; 24]) -> usize {
    let mut k = 0;
    for a in atoms {
        let d = a.digits();
        if k + d.len() > buf.len() {
            return 0;
        }
        buf[k..k + d.len()].copy_from_slice(d);
        k += d.len();
    }
    k
}

/// Tries the written groupings at the start of `a`; returns how many atoms one consumed.
fn grouping(
    a: &[Atom],
    prev_len: usize,
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) -> Option<usize> {
    let d = ctx.detectors;
    let lens = |k: usize| a.get(k).map_or(0, |x| x.len);
    let closed = |from: usize, to: usize| a[from..to].iter().all(|x| !x.open);
    let mut buf = [0u8; 24];
    if d.contains(Detector::CnResidentId) && lens(0) == 6 && !a[0].open {
        // 6-8-4 or 6-4-4-4, the last group possibly 3 digits + X.
        let last_ok = |k: usize| lens(k) == 4 || (lens(k) == 3 && a[k].x_after);
        let k = if lens(1) == 8 && last_ok(2) {
            3
        } else if lens(1) == 4 && lens(2) == 4 && last_ok(3) {
            4
        } else {
            0
        };
        if k > 0 && closed(0, k) {
            let m = concat(&a[..k], &mut buf);
            let after = a[k - 1].x_after.then_some(b'X');
            if let Some((id, cats)) = resident_id::check(&buf[..m], after, ctx) {
                hit(Namespace::CnResidentId, &id, cats);
                return Some(k);
            }
        }
    }
    if d.contains(Detector::CnMobile) {
        let prefixed = matches!(a[0].digits(), b"86" | b"0086") && a[0].len <= 4;
        let starts: &[usize] = if prefixed { &[1, 0] } else { &[0] };
        for &p in starts {
            let k = if lens(p) == 3 && lens(p + 1) == 4 && lens(p + 2) == 4 {
                p + 3
            } else if lens(p) == 3 && lens(p + 1) == 8 {
                p + 2
            } else {
                continue;
            };
            // Parentheses only around the first group (or the prefix and the first group).
            if !closed(p + 1, k) {
                continue;
            }
            let m = concat(&a[p..k], &mut buf);
            if let Some(phone) = mobile::check(&buf[..m]) {
                hit(
                    Namespace::CnMobile,
                    phone,
                    CategorySet::of(Category::Contact),
                );
                return Some(k);
            }
        }
    }
    if d.contains(Detector::BankCard) && prev_len != 4 {
        // A run of fours (the last group may be shorter), 13–19 digits in all.
        let fours = a.iter().take_while(|x| x.len == 4 && !x.open).count();
        if fours >= 3 {
            let tail = usize::from(
                a.get(fours)
                    .is_some_and(|x| (1..4).contains(&x.len) && !x.open),
            );
            let k = fours + tail;
            let m = concat(&a[..k], &mut buf);
            if (13..=19).contains(&m) && bank_card::check(&buf[..m]) {
                hit(
                    Namespace::BankCard,
                    &buf[..m],
                    CategorySet::of(Category::Financial),
                );
                return Some(k);
            }
        }
    }
    None
}

/// Tries one contiguous digit run alone.
fn single(
    digits: &[u8],
    after: Option<u8>,
    ctx: &DetectCtx,
    hit: &mut impl FnMut(Namespace, &[u8], CategorySet),
) {
    if digits.len() < 11 {
        return;
    }
    let d = ctx.detectors;
    if d.contains(Detector::CnResidentId) {
        if let Some((id, cats)) = resident_id::check(digits, after, ctx) {
            hit(Namespace::CnResidentId, &id, cats);
            // A resident ID is not also tried as a card or phone.
            return;
        }
    }
    if d.contains(Detector::CnMobile) {
        if let Some(p) = mobile::check(digits) {
            hit(Namespace::CnMobile, p, CategorySet::of(Category::Contact));
        }
    }
    if d.contains(Detector::BankCard) && bank_card::check(digits) {
        hit(
            Namespace::BankCard,
            digits,
            CategorySet::of(Category::Financial),
        );
    }
}
