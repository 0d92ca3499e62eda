//! The validated, plain settings of the inspection engine ([`InspectConfig`]) and the lookup
//! structures built from them once (field names → subject rank, categories, watched names), so
//! that a request never builds or lower-cases anything per key beyond a stack copy.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{Category, CategorySet};

/// A built-in identifier detector (`inspection.subjects.detectors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// 18-character PRC resident ID with a valid birth date and MOD 11-2 check character.
    CnResidentId,
    /// Mainland mobile number `1[3-9]` + 9 digits, optional `+86`/`0086`/`86-` prefix.
    CnMobile,
    /// E-mail address.
    Email,
    /// 13–19 digit bank card number passing the Luhn check.
    BankCard,
}

impl Detector {
    /// Every detector.
    pub const ALL: [Detector; 4] = [
        Detector::CnResidentId,
        Detector::CnMobile,
        Detector::Email,
        Detector::BankCard,
    ];

    /// The exact config string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Detector::CnResidentId => "cn_resident_id",
            Detector::CnMobile => "cn_mobile",
            Detector::Email => "email",
            Detector::BankCard => "bank_card",
        }
    }

    /// Parses a config string.
    pub fn parse(s: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A set of enabled detectors (bitmask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetectorSet(u8);

impl DetectorSet {
    /// No detector.
    pub const NONE: DetectorSet = DetectorSet(0);
    /// Every detector.
    pub const ALL: DetectorSet = DetectorSet(0b1111);

    /// Adds a detector.
    pub fn insert(&mut self, d: Detector) {
        self.0 |= 1 << d as u8;
    }

    /// Whether `d` is enabled.
    pub const fn contains(self, d: Detector) -> bool {
        self.0 & (1 << d as u8) != 0
    }

    /// Whether no detector is enabled.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Detector> for DetectorSet {
    fn from_iter<I: IntoIterator<Item = Detector>>(iter: I) -> Self {
        let mut s = DetectorSet::NONE;
        for d in iter {
            s.insert(d);
        }
        s
    }
}

/// Limits on decoding a `Content-Encoding` (bomb protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest decoded size of one body, in bytes.
    pub max_decoded_bytes: u64,
    /// Largest ratio decoded ÷ encoded, checked once more than `ratio_grace_bytes` are decoded.
    pub max_ratio: u32,
    /// Decoded bytes allowed before the ratio is enforced (tiny bodies compress very well).
    pub ratio_grace_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decoded_bytes: 1 << 30,
            max_ratio: 100,
            ratio_grace_bytes: 1 << 20,
        }
    }
}

/// What a (lower-cased) field name means to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FieldInfo {
    /// Position in `fields` (0 = highest priority) when this is a subject field.
    pub subject_rank: Option<u16>,
    /// Categories the field's value carries.
    pub categories: CategorySet,
    /// Index in the watched-name list, when watched.
    pub watched: Option<u16>,
}

/// FNV-1a: keys are short and not attacker-controlled in the map (only config names are
/// stored), so a tiny non-keyed hash is fine and much faster than SipHash on 5–20 bytes.
#[derive(Default)]
pub(crate) struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FieldMap = HashMap<Box<[u8]>, FieldInfo, BuildHasherDefault<FnvHasher>>;

/// One slot of the field-name table (open addressing, linear probing): the hash of a
/// canonical name and its index in `InspectConfig::names`; `idx == EMPTY` marks a free slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    idx: u32,
}

const EMPTY: u32 = u32::MAX;

/// What a byte contributes to a canonical name, by byte value: 0 for a separator (skipped),
/// otherwise `0x100 |` the ASCII-lower-cased byte; `BRACKET` is also set on `[`.
const CANON: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if !is_separator(b) {
            t[c] = 0x100 | b.to_ascii_lowercase() as u16;
        }
        if b == b'[' {
            t[c] |= BRACKET;
        }
        c += 1;
    }
    t
};

/// Set in [`CANON`] (and so in [`Canon::flags`]) for `[`.
const BRACKET: u16 = 0x200;

/// The hash of a canonical name, its length and the OR of its bytes' [`CANON`] entries,
/// computed in one pass over the name as written (see [`canonical`]).
#[derive(Debug, Clone, Copy)]
struct Canon {
    hash: u64,
    len: usize,
    flags: u16,
}

/// One pass over `name`: FNV-1a over the canonical bytes (separators skipped, ASCII lower
/// case) — the same value as over `canonical(name)`, without building it.
#[inline]
fn canon_hash(name: &[u8]) -> Canon {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut len = 0usize;
    let mut flags = 0u16;
    for &c in name {
        let t = CANON[usize::from(c)];
        flags |= t;
        if t != 0 {
            hash = (hash ^ u64::from(t & 0xff)).wrapping_mul(0x0100_0000_01b3);
            len += 1;
        }
    }
    Canon { hash, len, flags }
}

/// The slot a hash probes first in a table of `mask + 1` slots (the high bits of a
/// multiplicative mix: FNV's low bits alone cluster on short names).
#[inline]
fn home(hash: u64, mask: usize) -> usize {
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

/// Longest field name the engine looks up; longer configured names are rejected by `new`.
pub const MAX_FIELD_NAME: usize = 128;

/// A configuration problem found by [`InspectConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field name is empty or longer than [`MAX_FIELD_NAME`].
    #[error("field name #{index} in `{list}` is empty, only separators, or longer than 128 bytes")]
    BadFieldName {
        /// Which list (`fields`, `headers`, `categories`, `watched`).
        list: &'static str,
        /// Position in that list.
        index: usize,
    },
    /// A limit is zero.
    #[error("`{0}` must be greater than zero")]
    ZeroLimit(&'static str),
}

/// The default of `inspection.max_workbook_bytes` (SPEC §12): 64 MiB.
pub const DEFAULT_MAX_WORKBOOK_BYTES: u64 = 64 << 20;

/// The engine's bounds on one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting deeper than this is unreadable.
    pub max_depth: usize,
    /// A record larger than this is unreadable.
    pub max_record_bytes: usize,
    /// Decompression limits.
    pub decode: DecodeLimits,
}

/// The validated settings of the inspection engine, with lookup tables built once.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    fields: Vec<String>,
    headers: Vec<String>,
    watched: Vec<String>,
    detectors: DetectorSet,
    max_depth: usize,
    max_record_bytes: usize,
    decode: DecodeLimits,
    resident_id_sensitive: bool,
    /// An xlsx workbook larger than this is 413 (`inspection.max_workbook_bytes`).
    max_workbook_bytes: u64,
    map: FieldMap,
    /// The canonical names and what they mean, indexed by [`Slot::idx`].
    names: Vec<(Box<[u8]>, FieldInfo)>,
    /// Open-addressing table over `names` (a power of two, at most half full).
    slots: Vec<Slot>,
    /// `inspection.protobuf_descriptor_sets`, loaded.
    protobuf: Option<super::ProtobufSchemas>,
    /// Tells apart every table [`InspectConfig::lookup`] ever answered from (a new value each
    /// time `names` and `slots` are built; a clone shares it with identical tables): memos of
    /// lookups that outlive one configuration are keyed by it, never by an address a later
    /// configuration may reuse.
    generation: u64,
}

/// The source of [`InspectConfig::generation`] values.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for InspectConfig {
    /// The SPEC §12 example settings: fields `user_id, uid, customer_id, member_id`, every
    /// detector, header `x-user-id`, the example category map, depth 64, records up to 1 MiB.
    fn default() -> Self {
        let cats: Vec<(String, Category)> = [
            ("diagnosis", Category::Health),
            ("medical_record", Category::Health),
            ("prescription", Category::Health),
            ("bank_account", Category::Financial),
            ("credit_card", Category::Financial),
            ("gps", Category::Location),
            ("latitude", Category::Location),
            ("longitude", Category::Location),
            ("face_image", Category::Biometric),
            ("fingerprint", Category::Biometric),
            ("voiceprint", Category::Biometric),
            ("religion", Category::Religion),
            ("id_card", Category::Identity),
            ("passport_no", Category::Identity),
            ("phone", Category::Contact),
            ("email", Category::Contact),
            ("address", Category::Contact),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
        let mut c = InspectConfig::empty();
        c.fields = ["user_id", "uid", "customer_id", "member_id"]
            .map(str::to_owned)
            .to_vec();
        c.headers = vec!["x-user-id".to_owned()];
        c.detectors = DetectorSet::ALL;
        c.rebuild(&cats);
        c
    }
}

impl InspectConfig {
    fn empty() -> Self {
        InspectConfig {
            fields: Vec::new(),
            headers: Vec::new(),
            watched: Vec::new(),
            detectors: DetectorSet::NONE,
            max_depth: 64,
            max_record_bytes: 1 << 20,
            decode: DecodeLimits::default(),
            resident_id_sensitive: true,
            max_workbook_bytes: DEFAULT_MAX_WORKBOOK_BYTES,
            map: FieldMap::default(),
            names: Vec::new(),
            slots: Vec::new(),
            protobuf: None,
            generation: next_generation(),
        }
    }

    /// Builds a configuration. `fields` are the subject fields in priority order,
    /// `categories` maps field names to categories; names match case-insensitively.
    ///
    /// # Errors
    /// A field name that is empty or longer than [`MAX_FIELD_NAME`], or a zero limit.
    pub fn new<S: AsRef<str>>(
        fields: &[S],
        detectors: DetectorSet,
        headers: &[S],
        categories: &[(S, Category)],
        limits: Limits,
        resident_id_sensitive: bool,
    ) -> Result<Self, ConfigError> {
        let Limits {
            max_depth,
            max_record_bytes,
            decode,
        } = limits;
        check_names("fields", fields.iter().map(AsRef::as_ref))?;
        check_names("headers", headers.iter().map(AsRef::as_ref))?;
        check_names("categories", categories.iter().map(|(n, _)| n.as_ref()))?;
        if max_depth == 0 {
            return Err(ConfigError::ZeroLimit("max_depth"));
        }
        if max_record_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_record_bytes"));
        }
        if decode.max_decoded_bytes == 0 || decode.max_ratio == 0 {
            return Err(ConfigError::ZeroLimit("decode limits"));
        }
        let mut c = InspectConfig::empty();
        c.fields = fields.iter().map(|s| s.as_ref().to_owned()).collect();
        c.headers = headers.iter().map(|s| s.as_ref().to_owned()).collect();
        c.detectors = detectors;
        c.max_depth = max_depth;
        c.max_record_bytes = max_record_bytes;
        c.decode = decode;
        c.resident_id_sensitive = resident_id_sensitive;
        let cats: Vec<(String, Category)> = categories
            .iter()
            .map(|(n, cat)| (n.as_ref().to_owned(), *cat))
            .collect();
        c.rebuild(&cats);
        Ok(c)
    }

    /// A small configuration for tests: the given subject fields and detectors, categories
    /// as `(name, category)`, other settings as in [`Default`].
    pub fn for_tests(
        fields: &[&str],
        detectors: &[Detector],
        categories: &[(&str, Category)],
    ) -> Self {
        let mut c = InspectConfig::empty();
        c.fields = fields.iter().map(|s| (*s).to_owned()).collect();
        c.detectors = detectors.iter().copied().collect();
        let cats: Vec<(String, Category)> = categories
            .iter()
            .map(|(n, cat)| ((*n).to_owned(), *cat))
            .collect();
        c.rebuild(&cats);
        c
    }

    /// Sets the names whose presence anywhere in a body the scanner reports
    /// ([`super::Scanner::watched_fields_seen`]); used by the important-data rules.
    ///
    /// # Errors
    /// A name that is empty or too long.
    pub fn with_watched_fields<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self, ConfigError> {
        check_names("watched", names.iter().map(AsRef::as_ref))?;
        self.watched = names.iter().map(|s| s.as_ref().to_owned()).collect();
        let cats = self.category_list();
        self.rebuild(&cats);
        Ok(self)
    }

    /// Replaces `max_record_bytes` (builder style, for tests and the config module).
    #[must_use]
    pub fn with_max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n.max(1);
        self
    }

    /// Replaces `max_depth`.
    #[must_use]
    pub fn with_max_depth(mut self, n: usize) -> Self {
        self.max_depth = n.max(1);
        self
    }

    /// Replaces `resident_id_sensitive`.
    #[must_use]
    pub fn with_resident_id_sensitive(mut self, on: bool) -> Self {
        self.resident_id_sensitive = on;
        self
    }

    /// Replaces `max_workbook_bytes` (the largest xlsx body judged whole).
    #[must_use]
    pub fn with_max_workbook_bytes(mut self, n: u64) -> Self {
        self.max_workbook_bytes = n.max(1);
        self
    }

    /// With the message types of `inspection.protobuf_descriptor_sets`: protobuf and gRPC
    /// bodies of a type they describe are read with field names.
    pub fn with_protobuf_schemas(mut self, schemas: Option<super::ProtobufSchemas>) -> Self {
        self.protobuf = schemas;
        self
    }

    /// The loaded descriptor sets, if any.
    pub fn protobuf_schemas(&self) -> Option<&super::ProtobufSchemas> {
        self.protobuf.as_ref()
    }

    /// The largest xlsx workbook judged whole (`inspection.max_workbook_bytes`).
    pub fn max_workbook_bytes(&self) -> u64 {
        self.max_workbook_bytes
    }

    /// Replaces the decode limits.
    #[must_use]
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.decode = limits;
        self
    }

    /// Replaces the configured subject headers.
    #[must_use]
    pub fn with_headers(mut self, headers: &[&str]) -> Self {
        self.headers = headers.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn category_list(&self) -> Vec<(String, Category)> {
        let mut out = Vec::new();
        for (k, v) in &self.map {
            for c in v.categories.iter() {
                out.push((String::from_utf8_lossy(k).into_owned(), c));
            }
        }
        out
    }

    fn rebuild(&mut self, categories: &[(String, Category)]) {
        let mut map = FieldMap::default();
        let key = |name: &str| -> Box<[u8]> { canonical(name.as_bytes()).into_boxed_slice() };
        for (rank, f) in self.fields.iter().enumerate() {
            let e = map.entry(key(f)).or_insert_with(FieldInfo::default);
            if e.subject_rank.is_none() {
                e.subject_rank = Some(u16::try_from(rank).unwrap_or(u16::MAX));
            }
        }
        for (name, cat) in categories {
            map.entry(key(name))
                .or_insert_with(FieldInfo::default)
                .categories
                .insert(*cat);
        }
        for (i, name) in self.watched.iter().enumerate() {
            let e = map.entry(key(name)).or_insert_with(FieldInfo::default);
            if e.watched.is_none() {
                e.watched = Some(u16::try_from(i).unwrap_or(u16::MAX));
            }
        }
        let names: Vec<(Box<[u8]>, FieldInfo)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        // At most half full, so that a miss ends at a free slot after a probe or two.
        let size = (names.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![
            Slot {
                hash: 0,
                idx: EMPTY,
            };
            size
        ];
        for (i, (k, _)) in names.iter().enumerate() {
            let hash = canon_hash(k).hash;
            let mut at = home(hash, size - 1);
            while slots[at].idx != EMPTY {
                at = (at + 1) & (size - 1);
            }
            slots[at] = Slot {
                hash,
                idx: u32::try_from(i).unwrap_or(EMPTY - 1),
            };
        }
        self.names = names;
        self.slots = slots;
        self.map = map;
        self.generation = next_generation();
    }

    /// Which lookup table this configuration answers from: equal generations answer every
    /// [`InspectConfig::lookup`] alike.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Looks a field name up across the spellings programs use (SPEC §3: case, the separators
    /// `_`, `-`, `.` and space, camelCase boundaries — `user_id`, `userId`, `UserID`,
    /// `user-id`, `USER ID` are one name); `None` when it means nothing. A bracket suffix is
    /// removed (`user_id[]`, `user_id[0]` are `user_id`), and a PHP-style nested name also
    /// matches by its bracketed parts (`data[user_id]`).
    #[inline]
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<FieldInfo> {
        if name.len() > MAX_FIELD_NAME {
            return self.lookup_long(name);
        }
        let c = canon_hash(name);
        if let Some(info) = self.probe(c, name) {
            return Some(info);
        }
        if c.flags & BRACKET == 0 {
            return None;
        }
        // Names are short: a plain loop beats `memchr`'s set-up.
        let open = name.iter().position(|c| *c == b'[')?;
        self.lookup_brackets(name, open)
    }

    /// [`InspectConfig::lookup`] of a name longer than [`MAX_FIELD_NAME`]: no name that long
    /// is configured, only its bracketed parts can match.
    #[cold]
    fn lookup_long(&self, name: &[u8]) -> Option<FieldInfo> {
        let open = name.iter().position(|c| *c == b'[')?;
        self.lookup_brackets(name, open)
    }

    #[cold]
    fn lookup_brackets(&self, name: &[u8], open: usize) -> Option<FieldInfo> {
        merge_brackets(name, open, |part| self.lookup_exact(part))
    }

    /// Looks a name up by its canonical form without building it: one pass hashes the
    /// canonical bytes (see [`canon_hash`]), one probe of the table finds the only candidate
    /// in all but rare collisions, and the candidate is compared skipping separators.
    #[inline]
    fn lookup_exact(&self, name: &[u8]) -> Option<FieldInfo> {
        if name.len() > MAX_FIELD_NAME {
            return None;
        }
        self.probe(canon_hash(name), name)
    }

    /// The table probe of [`InspectConfig::lookup_exact`] with the name's hash already
    /// computed.
    #[inline]
    fn probe(&self, c: Canon, name: &[u8]) -> Option<FieldInfo> {
        if c.len == 0 || self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = home(c.hash, mask);
        loop {
            let slot = self.slots.get(at)?;
            if slot.idx == EMPTY {
                return None;
            }
            if slot.hash == c.hash {
                if let Some((k, v)) = self.names.get(slot.idx as usize) {
                    if k.len() == c.len && same_name(k, name) {
                        return Some(*v);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Subject fields, in priority order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Header names whose values identify a subject.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Watched field names (see [`InspectConfig::with_watched_fields`]).
    pub fn watched_fields(&self) -> &[String] {
        &self.watched
    }

    /// Enabled detectors.
    pub fn detectors(&self) -> DetectorSet {
        self.detectors
    }

    /// Deepest nesting accepted.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Largest record accepted, in decoded bytes.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Decode limits.
    pub fn decode_limits(&self) -> DecodeLimits {
        self.decode
    }

    /// Whether a resident ID number alone makes its subject sensitive.
    pub fn resident_id_sensitive(&self) -> bool {
        self.resident_id_sensitive
    }
}

/// The separators that spellings of one name differ by (`user_id`, `user-id`, `user.id`,
/// `user id`).
#[inline]
const fn is_separator(c: u8) -> bool {
    matches!(c, b'_' | b'-' | b'.' | b' ')
}

/// The canonical form of a field name: ASCII lower case without separators, so that every
/// spelling of one name (SPEC §3) is one key. A camelCase boundary needs nothing more:
/// `userId` folds to `userid` like `user_id`.
pub(crate) fn canonical(name: &[u8]) -> Vec<u8> {
    name.iter()
        .filter(|c| !is_separator(**c))
        .map(u8::to_ascii_lowercase)
        .collect()
}

/// Whether two names are spellings of one name (see [`canonical`]).
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    let (mut x, mut y) = (
        a.iter().filter(|c| !is_separator(**c)),
        b.iter().filter(|c| !is_separator(**c)),
    );
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p.eq_ignore_ascii_case(q) => {}
            _ => return false,
        }
    }
}

fn check_names<'a>(
    list: &'static str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    for (index, n) in names.enumerate() {
        if canonical(n.as_bytes()).is_empty() || n.len() > MAX_FIELD_NAME {
            return Err(ConfigError::BadFieldName { list, index });
        }
    }
    Ok(())
}

/// A bracketed name (`data[uid]`, `a[b][c]`): what the part before the first `[` (at `open`)
/// and every bracketed part are, merged (categories united, the first subject rank and watched
/// mark kept), by `exact` for each part.
fn merge_brackets(
    name: &[u8],
    open: usize,
    exact: impl Fn(&[u8]) -> Option<FieldInfo>,
) -> Option<FieldInfo> {
    let mut found: Option<FieldInfo> = exact(name.get(..open).unwrap_or_default());
    for part in name
        .get(open..)
        .unwrap_or_default()
        .split(|c| *c == b'[' || *c == b']')
    {
        if let Some(i) = exact(part) {
            let f = found.get_or_insert_with(FieldInfo::default);
            f.categories = f.categories.union(i.categories);
            f.subject_rank = f.subject_rank.or(i.subject_rank);
            f.watched = f.watched.or(i.watched);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How many bytes of `name` are separators, eight at a time (SWAR: a byte equal to a
    /// separator becomes zero after the XOR, and the zero-byte test marks it with its high bit).
    #[inline]
    fn separators(name: &[u8]) -> usize {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let word_count = |w: u64| -> usize {
            let mut marks = 0u64;
            for sep in [b'_', b'-', b'.', b' '] {
                let x = w ^ (LO * u64::from(sep));
                // Exact zero-byte marks (no false positives from borrows): high bit of
                // `!(((x & 0x7f..) + 0x7f..) | x)`.
                marks |= !(((x & !HI).wrapping_add(!HI)) | x) & HI;
            }
            ((marks >> 7).wrapping_mul(LO) >> 56) as usize
        };
        let mut chunks = name.chunks_exact(8);
        let mut count = 0;
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            count += word_count(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Zero padding is not a separator.
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            count += word_count(u64::from_le_bytes(b));
        }
        count
    }

    /// The lookup of issue 27 (buckets by canonical length and first byte, candidates compared
    /// skipping separators), kept as the reference of the hashed table.
    struct Buckets {
        table: Vec<Vec<(Box<[u8]>, FieldInfo)>>,
        len_mask: u128,
    }

    const BUCKETS: usize = 64 * 32;

    fn bucket(name: &[u8]) -> usize {
        let first = name.first().map_or(0, |c| c.to_ascii_lowercase());
        ((name.len() & 63) << 5) | usize::from(first & 31)
    }

    impl Buckets {
        fn new(cfg: &InspectConfig) -> Self {
            let mut table = vec![Vec::new(); BUCKETS];
            let mut len_mask = 0u128;
            for (k, v) in &cfg.map {
                len_mask |= 1u128 << k.len().min(127);
                table[bucket(k)].push((k.clone(), *v));
            }
            Buckets { table, len_mask }
        }

        fn lookup(&self, name: &[u8]) -> Option<FieldInfo> {
            if let Some(info) = self.lookup_exact(name) {
                return Some(info);
            }
            let open = name.iter().position(|c| *c == b'[')?;
            super::merge_brackets(name, open, |part| self.lookup_exact(part))
        }

        fn lookup_exact(&self, name: &[u8]) -> Option<FieldInfo> {
            if name.len() > MAX_FIELD_NAME {
                return None;
            }
            let n = name.len() - separators(name);
            let first = name
                .iter()
                .copied()
                .find(|c| !is_separator(*c))
                .unwrap_or(0);
            if n == 0 || self.len_mask & (1u128 << n.min(127)) == 0 {
                return None;
            }
            let bucket = ((n & 63) << 5) | usize::from(first.to_ascii_lowercase() & 31);
            self.table
                .get(bucket)?
                .iter()
                .find(|(k, _)| k.len() == n && same_name(k, name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn canon_hash_is_the_hash_of_the_canonical_form() {
        for name in [
            &b"User_ID"[..],
            b"_-. ",
            b"",
            b"a\0b",
            b"\xc3\x84_x",
            b"[0]",
        ] {
            let c = canon_hash(name);
            let k = canonical(name);
            assert_eq!(c.len, k.len());
            assert_eq!(c.hash, canon_hash(&k).hash);
        }
    }

    /// Bytes names are made of: letters of both cases, digits, every separator, brackets,
    /// NUL, non-ASCII (UTF-8 pieces and stray bytes, incl. bytes whose low five bits equal a
    /// letter's).
    fn name_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"abcdeiruIDUSERxyz019".to_vec()),
            3 => prop::sample::select(b"_-. ".to_vec()),
            1 => prop::sample::select(b"[]\0/\tAZ@`{".to_vec()),
            1 => prop::sample::select(vec![0x80u8, 0xc3, 0x84, 0xe4, 0xb8, 0xad, 0xc1, 0xe1, 0xff]),
        ]
    }

    /// A name near a configured one: its bytes with separators put in or taken out and the
    /// case of letters changed, sometimes with bytes added or bracket parts around it.
    fn near(names: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(names),
            prop::collection::vec((0u8..8, name_byte()), 0..40),
            0u8..4,
        )
            .prop_map(|(base, edits, wrap)| {
                let mut out = Vec::new();
                let mut e = edits.iter();
                for &c in base.as_bytes() {
                    match e.next() {
                        Some((0, _)) => out.push(c.to_ascii_uppercase()),
                        Some((1, b)) => {
                            out.push(c);
                            out.push(*b);
                        }
                        Some((2, _)) if is_separator(c) => {}
                        Some((3, _)) => {
                            out.push(b"_-. "[usize::from(c) % 4]);
                            out.push(c);
                        }
                        _ => out.push(c),
                    }
                }
                match wrap {
                    1 => [b"data[".as_slice(), &out, b"]"].concat(),
                    2 => [out.as_slice(), b"[]"].concat(),
                    3 => [out.as_slice(), b"[0]"].concat(),
                    _ => out,
                }
            })
    }

    const NAMES: &[&str] = &[
        "user_id",
        "uid",
        "customer_id",
        "member_id",
        "diagnosis",
        "gps",
        "id_card",
        "passport_no",
        "a",
        "x.y-z w",
        "\u{4e2d}\u{6587}_name",
        "Ärger",
        "data[0]",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];

    fn configs() -> Vec<InspectConfig> {
        let cats: Vec<(&str, Category)> =
            NAMES[4..].iter().map(|n| (*n, Category::Health)).collect();
        vec![
            InspectConfig::default(),
            InspectConfig::for_tests(&NAMES[..4], &[], &cats)
                .with_watched_fields(&["phone", "Ärger", "a"])
                .unwrap_or_else(|e| panic!("{e}")),
            InspectConfig::for_tests(&["uid"], &[], &[]),
            InspectConfig::for_tests(&[], &[], &[]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The hashed table finds exactly what the bucket lookup of issue 27 finds, on names
        /// close to the configured ones and on arbitrary ones (long ones included).
        #[test]
        fn hashed_lookup_equals_the_bucket_lookup(
            near_name in near(NAMES),
            any_name in prop::collection::vec(name_byte(), 0..140),
        ) {
            for cfg in configs() {
                let old = Buckets::new(&cfg);
                for name in [&near_name, &any_name] {
                    prop_assert_eq!(cfg.lookup(name), old.lookup(name), "{:?}", name);
                    prop_assert_eq!(cfg.lookup_exact(name), old.lookup_exact(name), "{:?}", name);
                }
            }
        }
    }

    #[test]
    fn separators_are_counted_in_every_position() {
        let bytes = [
            b'_', b'-', b'.', b' ', b'a', b'Z', 0, 0x80, 0xdf, 0xae, 0xa0, b'/',
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..200 {
                let name: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        bytes[(seed % bytes.len() as u64) as usize]
                    })
                    .collect();
                let want = name.iter().filter(|c| is_separator(**c)).count();
                assert_eq!(separators(&name), want, "{name:?}");
            }
        }
    }
}
