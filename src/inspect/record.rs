//! What inspection produces: subjects (namespace + normalised identifier + categories) grouped
//! in records, each record with the offset up to which the body may be released once its
//! subjects are reserved. Records are collected into flat arenas ([`Records`]) so that a
//! request allocates nothing per record or per identifier once its buffers have grown; a
//! dropped `Records` leaves its buffers to the next request on the same thread (a spare pool of
//! at most 64 sets, none over 64 KiB, so at most 12 MiB per thread).

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use crate::model::CategorySet;

/// The identity namespace of a subject: all subject fields and headers share `field`; a
/// loose detector hit is namespaced by its detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// A configured subject field (JSON key, form field, CSV column, query parameter, header).
    Field,
    /// A `cn_resident_id` detector hit.
    CnResidentId,
    /// A `cn_mobile` detector hit.
    CnMobile,
    /// An `email` detector hit.
    Email,
    /// A `bank_card` detector hit.
    BankCard,
}

impl Namespace {
    /// The exact string (`field` or the detector name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Namespace::Field => "field",
            Namespace::CnResidentId => "cn_resident_id",
            Namespace::CnMobile => "cn_mobile",
            Namespace::Email => "email",
            Namespace::BankCard => "bank_card",
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An owned subject. `Debug` never shows the identifier (only its length).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// Identity namespace.
    pub namespace: Namespace,
    /// Normalised identifier bytes (to be hashed by the ledger; never logged).
    pub id: Vec<u8>,
    /// Categories the subject's records carry in this request.
    pub categories: CategorySet,
    /// Whether the subject is sensitive (a sensitive category, or a sensitive destination).
    pub sensitive: bool,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("namespace", &self.namespace)
            .field("id_len", &self.id.len())
            .field("categories", &self.categories)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

/// A borrowed subject, as found in [`Records`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SubjectRef<'a> {
    /// Identity namespace.
    pub namespace: Namespace,
    /// Normalised identifier bytes.
    pub id: &'a [u8],
    /// Categories.
    pub categories: CategorySet,
    /// Whether the subject is sensitive.
    pub sensitive: bool,
}

impl fmt::Debug for SubjectRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectRef")
            .field("namespace", &self.namespace)
            .field("id_len", &self.id.len())
            .field("categories", &self.categories)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl SubjectRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Subject {
        Subject {
            namespace: self.namespace,
            id: self.id.to_vec(),
            categories: self.categories,
            sensitive: self.sensitive,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SubjectEntry {
    namespace: Namespace,
    id: (u32, u32),
    categories: CategorySet,
    sensitive: bool,
}

#[derive(Debug, Clone)]
struct RecordEntry {
    subjects: Range<u32>,
    span: Range<u64>,
    release: u64,
}

/// One completed record.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    recs: &'a Records,
    entry: &'a RecordEntry,
}

impl<'a> RecordRef<'a> {
    /// The record's subjects (usually one; several for loose detector hits).
    pub fn subjects(&self) -> impl ExactSizeIterator<Item = SubjectRef<'a>> + 'a {
        let recs = self.recs;
        let r = self.entry.subjects.start as usize..self.entry.subjects.end as usize;
        recs.subjects[r].iter().map(move |s| recs.subject_ref(s))
    }

    /// The record's span in the *decoded* body (equal to the original body when it has no
    /// `Content-Encoding`).
    pub fn decoded_span(&self) -> Range<u64> {
        self.entry.span.clone()
    }

    /// Offset in the original (possibly compressed) body up to which bytes may be forwarded
    /// once this record's subjects (and those of every earlier record) are reserved.
    pub fn release(&self) -> u64 {
        self.entry.release
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        Record {
            subjects: self.subjects().map(|s| s.to_owned()).collect(),
            decoded_span: self.decoded_span(),
            release: self.release(),
        }
    }
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("subjects", &self.subjects().collect::<Vec<_>>())
            .field("decoded_span", &self.entry.span)
            .field("release", &self.entry.release)
            .finish()
    }
}

/// An owned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its subjects.
    pub subjects: Vec<Subject>,
    /// Span in the decoded body.
    pub decoded_span: Range<u64>,
    /// Release offset in the original body (see [`RecordRef::release`]).
    pub release: u64,
}

/// Completed records, in body order, in flat buffers reused across drains. `Debug` shows
/// counts only.
#[derive(Default, Clone)]
pub struct Records {
    ids: Vec<u8>,
    subjects: Vec<SubjectEntry>,
    records: Vec<RecordEntry>,
    /// Subjects added since the last `end_record`.
    open_from: u32,
    dest_sensitive: bool,
    /// Categories of fields outside every record (SPEC §3: they apply to every subject of the
    /// request); cumulative, not reset by [`Records::clear`].
    outside: CategorySet,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("records", &self.records.len())
            .field("subjects", &self.subjects.len())
            .finish_non_exhaustive()
    }
}

/// The buffers of dropped [`Records`], kept per thread so that a request reuses the capacity
/// an earlier request on the same worker grew instead of growing its own from nothing.
#[derive(Default)]
struct Spare {
    ids: Vec<u8>,
    subjects: Vec<SubjectEntry>,
    records: Vec<RecordEntry>,
}

/// Sets of buffers kept per thread.
const SPARE_SETS: usize = 64;
/// A buffer that grew past this many bytes is freed rather than kept (one large request must
/// not pin its memory on the worker).
const SPARE_MAX_BYTES: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

impl Drop for Records {
    fn drop(&mut self) {
        let small = self.ids.capacity() <= SPARE_MAX_BYTES
            && self.subjects.capacity() * std::mem::size_of::<SubjectEntry>() <= SPARE_MAX_BYTES
            && self.records.capacity() * std::mem::size_of::<RecordEntry>() <= SPARE_MAX_BYTES;
        if !small {
            return;
        }
        let mut spare = Spare {
            ids: std::mem::take(&mut self.ids),
            subjects: std::mem::take(&mut self.subjects),
            records: std::mem::take(&mut self.records),
        };
        spare.ids.clear();
        spare.subjects.clear();
        spare.records.clear();
        // During thread teardown the pool may be gone: the buffers are then simply freed.
        let _ = SPARE.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < SPARE_SETS {
                    p.push(spare);
                }
            }
        });
    }
}

impl Records {
    pub(crate) fn new(dest_sensitive: bool) -> Self {
        let spare = SPARE
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        Records {
            ids: spare.ids,
            subjects: spare.subjects,
            records: spare.records,
            open_from: 0,
            dest_sensitive,
            outside: CategorySet::default(),
        }
    }

    fn subject_ref<'a>(&'a self, s: &SubjectEntry) -> SubjectRef<'a> {
        SubjectRef {
            namespace: s.namespace,
            id: &self.ids[s.id.0 as usize..s.id.1 as usize],
            categories: s.categories,
            sensitive: s.sensitive,
        }
    }

    /// Categories seen outside every record so far (they apply to every subject of the
    /// request, the head's included).
    pub fn outside(&self) -> CategorySet {
        self.outside
    }

    /// Adds categories seen outside every record.
    pub(crate) fn add_outside(&mut self, cats: CategorySet) {
        self.outside = self.outside.union(cats);
    }

    /// Number of completed records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no completed record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The completed records, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> {
        self.records
            .iter()
            .map(move |entry| RecordRef { recs: self, entry })
    }

    /// Forgets the completed records (keeps the buffers).
    pub fn clear(&mut self) {
        // Subjects of a record still being assembled stay.
        let keep = self.open_from as usize;
        if keep == self.subjects.len() {
            self.subjects.clear();
            self.ids.clear();
        } else {
            let first = self.subjects[keep].id.0 as usize;
            self.ids.drain(..first);
            self.subjects.drain(..keep);
            for s in &mut self.subjects {
                s.id.0 -= first as u32;
                s.id.1 -= first as u32;
            }
        }
        self.open_from = 0;
        self.records.clear();
    }

    /// Adds a subject to the record being assembled.
    pub(crate) fn subject(&mut self, namespace: Namespace, id: &[u8], categories: CategorySet) {
        let id = trim(id);
        if id.is_empty() {
            return;
        }
        // Any identified person's data is at least basic PI.
        let categories = if categories.is_empty() {
            CategorySet::of(crate::model::Category::Basic)
        } else {
            categories
        };
        let start = self.ids.len() as u32;
        self.ids.extend_from_slice(id);
        self.subjects.push(SubjectEntry {
            namespace,
            id: (start, self.ids.len() as u32),
            categories,
            sensitive: self.dest_sensitive || categories.is_sensitive(),
        });
    }

    /// Closes the record being assembled; a record without subjects is dropped.
    pub(crate) fn end_record(&mut self, span: Range<u64>, release: u64) {
        let to = self.subjects.len() as u32;
        if to > self.open_from {
            self.records.push(RecordEntry {
                subjects: self.open_from..to,
                span,
                release,
            });
        }
        self.open_from = to;
    }

    /// Maps the release offsets of records from `from` on (decoded offsets) through `f`.
    pub(crate) fn map_release(&mut self, from: usize, mut f: impl FnMut(u64) -> u64) {
        for r in self.records.iter_mut().skip(from) {
            r.release = f(r.release);
        }
    }

    /// Caps the release offsets of records from `from` on at `max`.
    pub(crate) fn clamp_release(&mut self, from: usize, max: u64) {
        for r in self.records.iter_mut().skip(from) {
            r.release = r.release.min(max);
        }
    }

    /// Shifts the spans and release offsets of records from `from` on by `by` bytes.
    pub(crate) fn shift(&mut self, from: usize, by: u64) {
        for r in self.records.iter_mut().skip(from) {
            r.span = r.span.start + by..r.span.end + by;
            r.release += by;
        }
    }
}

/// Trims ASCII and Unicode-ideographic white space from both ends (SPEC: "trim").
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    loop {
        match s {
            [c, rest @ ..] if c.is_ascii_whitespace() => s = rest,
            [0xE3, 0x80, 0x80, rest @ ..] => s = rest,
            [0xC2, 0xA0, rest @ ..] => s = rest,
            _ => break,
        }
    }
    loop {
        match s {
            [rest @ .., c] if c.is_ascii_whitespace() => s = rest,
            [rest @ .., 0xE3, 0x80, 0x80] => s = rest,
            [rest @ .., 0xC2, 0xA0] => s = rest,
            _ => break,
        }
    }
    s
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    fn fill(r: &mut Records, n: usize) {
        for i in 0..n {
            r.subject(
                Namespace::Field,
                format!("id-{i}").as_bytes(),
                CategorySet::default(),
            );
            r.end_record(0..1, 1);
        }
    }

    /// A request's records start empty but reuse the buffers an earlier request on the same
    /// thread grew; buffers grown past the bound are freed, not kept.
    #[test]
    fn records_reuse_a_dropped_records_buffers_and_start_empty() {
        std::thread::spawn(|| {
            let mut a = Records::new(false);
            fill(&mut a, 100);
            let grown = (
                a.ids.capacity(),
                a.subjects.capacity(),
                a.records.capacity(),
            );
            drop(a);
            let b = Records::new(true);
            assert!(b.is_empty());
            assert!(b.subjects.is_empty() && b.ids.is_empty());
            assert_eq!(
                (
                    b.ids.capacity(),
                    b.subjects.capacity(),
                    b.records.capacity()
                ),
                grown
            );
            assert_eq!(b.outside, CategorySet::default());
            assert!(b.dest_sensitive);
            drop(b);
            // The next one takes that set and grows it past the bound: it is freed on drop.
            let mut big = Records::new(false);
            assert_eq!(big.ids.capacity(), grown.0);
            fill(&mut big, 20_000);
            drop(big);
            let c = Records::new(false);
            assert_eq!(c.ids.capacity(), 0);
        })
        .join()
        .unwrap();
    }
}

/// Detector hits of a record being read (a form, a CSV or sheet row): namespace, identifier
/// and categories, the identifiers back to back in one buffer reused across records.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    list: Vec<(Namespace, (u32, u32), CategorySet)>,
    bytes: Vec<u8>,
}

impl Hits {
    /// Forgets every hit (keeps the buffers).
    pub(crate) fn clear(&mut self) {
        self.list.clear();
        self.bytes.clear();
    }

    /// Whether there is no hit.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Adds one hit.
    pub(crate) fn push(&mut self, ns: Namespace, id: &[u8], cats: CategorySet) {
        let a = self.bytes.len() as u32;
        self.bytes.extend_from_slice(id);
        self.list.push((ns, (a, self.bytes.len() as u32), cats));
    }

    /// Runs the detectors over `text`, adding what they find.
    pub(crate) fn scan(&mut self, text: &[u8], det: &super::detect::DetectCtx) {
        super::detect::scan(text, det, &mut |ns, id, c| self.push(ns, id, c));
    }

    /// The hits, in the order found.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Namespace, &[u8], CategorySet)> + '_ {
        self.list
            .iter()
            .map(|(ns, (a, b), c)| (*ns, &self.bytes[*a as usize..*b as usize], *c))
    }

    /// The union of the hits' categories.
    pub(crate) fn categories(&self) -> CategorySet {
        self.list
            .iter()
            .fold(CategorySet::EMPTY, |acc, h| acc.union(h.2))
    }

    /// Each hit as a subject of its own with `extra` categories added (a record without a
    /// subject field).
    pub(crate) fn emit_loose(&self, out: &mut Records, extra: CategorySet) {
        for (ns, id, c) in self.iter() {
            out.subject(ns, id, c.union(extra));
        }
    }
}
