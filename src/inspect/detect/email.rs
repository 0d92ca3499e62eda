//! `email`: addresses `local@domain.tld` found around each `@` (memchr), with ASCII local
//! parts and dotted domains whose last label has at least two letters. Normalised to lower
//! case. Category `contact`.

use crate::inspect::record::Namespace;
use crate::model::{Category, CategorySet};

/// Longest address considered (RFC 5321 path limit).
const MAX_EMAIL: usize = 254;

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

pub(super) fn scan(text: &[u8], hit: &mut impl FnMut(Namespace, &[u8], CategorySet)) {
    let mut from = 0;
    while let Some(rel) = memchr::memchr(b'@', &text[from..]) {
        let at = from + rel;
        from = at + 1;
        let mut s = at;
        while s > 0 && is_local(text[s - 1]) && at - s < 64 {
            s -= 1;
        }
        while s < at && text[s] == b'.' {
            s += 1;
        }
        let mut e = at + 1;
        while e < text.len() && is_domain(text[e]) && e - at < 255 {
            e += 1;
        }
        while e > at + 1 && matches!(text[e - 1], b'.' | b'-') {
            e -= 1;
        }
        if s == at || e <= at + 1 || e - s > MAX_EMAIL {
            continue;
        }
        let domain = &text[at + 1..e];
        let Some(dot) = memchr::memrchr(b'.', domain) else {
            continue;
        };
        let tld = &domain[dot + 1..];
        if tld.len() < 2
            || !tld.iter().all(u8::is_ascii_alphabetic)
            || domain.split(|c| *c == b'.').any(<[u8]>::is_empty)
        {
            continue;
        }
        let mut buf = [0u8; MAX_EMAIL];
        let out = &mut buf[..e - s];
        out.copy_from_slice(&text[s..e]);
        out.make_ascii_lowercase();
        hit(Namespace::Email, out, CategorySet::of(Category::Contact));
        from = e;
    }
}
