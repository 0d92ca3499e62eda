//! Records of an XML body (SPEC §3), with the frame rules of the JSON scanner: every open
//! element has a *frame* that collects its subject values, its categories and the detector
//! hits of its non-record descendants.
//!
//! - An element whose local name is a subject field is a *subject element*: the character
//!   data inside it (at any depth) are subject values, and the element that holds it is the
//!   record (its parent; a root subject element is a record of its own per value). Attributes
//!   inside a subject element are metadata (`xsi:type="xsd:string"` names nobody): their values
//!   go to the detectors only.
//! - An attribute whose local name is a subject field makes the element carrying it a record.
//! - A category element's non-empty content (text, or a child element) and a category
//!   attribute's non-empty value add the category to the element holding it; a frame that is
//!   not a record passes its categories and hits up on close; at the top, hits become loose
//!   subjects and categories apply to the whole request ([`Records::add_outside`]).
//! - An element that grows past `max_record_bytes` without a subject is decided to be an
//!   envelope (its pending hits are emitted as loose subjects, later hits in it at once); a
//!   subject arriving in it afterwards is a record over the limit (unreadable). Only undecided
//!   elements hold the release frontier back.

use super::super::config::FieldInfo;
use super::super::detect;
use super::super::error::Unreadable;
use super::super::json::Embedded;
use super::super::record::{trim, Namespace, Records};
use super::super::Sink;
use crate::model::CategorySet;

#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Offset of the start tag's `<`.
    start: u64,
    /// What the element's local name means.
    info: FieldInfo,
    /// The element directly holds a subject value (a subject child or attribute).
    direct: bool,
    /// First of its subject values in `subjs`.
    subjs_start: u32,
    subj_base: u32,
    cats: CategorySet,
    hits_start: u32,
    hit_bytes_base: u32,
    decided: bool,
    /// Start of its qualified name in `names`.
    name_start: u32,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    ns: Namespace,
    id: (u32, u32),
    cats: CategorySet,
}

/// The open elements and what they collected.
#[derive(Debug, Default)]
pub(super) struct Frames {
    frames: Vec<Frame>,
    first_undecided: usize,
    hits: Vec<Hit>,
    hit_bytes: Vec<u8>,
    subjs: Vec<(u32, u32)>,
    subj_bytes: Vec<u8>,
    /// Index of the outermost open subject element.
    subj_elem: Option<usize>,
    /// Qualified names of the open elements, back to back (for end-tag matching).
    names: Vec<u8>,
}

impl Frames {
    pub(super) fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The start of the first element that may still become a record.
    pub(super) fn held_from(&self) -> Option<u64> {
        self.frames.get(self.first_undecided).map(|f| f.start)
    }

    /// Opens an element: `info` from its local name, `qname` as written.
    pub(super) fn open(&mut self, start: u64, qname: &[u8], info: FieldInfo, out: &mut Records) {
        if let Some(p) = self.frames.last() {
            if !p.info.categories.is_empty() {
                let c = p.info.categories;
                self.add_cats(c, out);
            }
        }
        if info.subject_rank.is_some() && self.subj_elem.is_none() {
            self.subj_elem = Some(self.frames.len());
        }
        self.frames.push(Frame {
            start,
            info,
            direct: false,
            subjs_start: self.subjs.len() as u32,
            subj_base: self.subj_bytes.len() as u32,
            cats: CategorySet::EMPTY,
            hits_start: self.hits.len() as u32,
            hit_bytes_base: self.hit_bytes.len() as u32,
            decided: false,
            name_start: self.names.len() as u32,
        });
        self.names.extend_from_slice(qname);
    }

    /// Whether `qname` closes the innermost element.
    pub(super) fn closes(&self, qname: &[u8]) -> bool {
        self.frames
            .last()
            .is_some_and(|f| &self.names[f.name_start as usize..] == qname)
    }

    /// An attribute of the innermost element (`v` unescaped, not empty after trimming).
    pub(super) fn attribute(
        &mut self,
        info: FieldInfo,
        v: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if !info.categories.is_empty() {
            self.add_cats(info.categories, sink.out);
        }
        if info.subject_rank.is_some() && self.subj_elem.is_none() {
            let holder = self.frames.len().saturating_sub(1);
            self.subject_value(holder, v)?;
        }
        Ok(())
    }

    /// Character data directly inside the innermost element (not empty after trimming).
    pub(super) fn text(
        &mut self,
        v: &[u8],
        at: u64,
        pos: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        if let Some(e) = self.subj_elem {
            return match e.checked_sub(1) {
                Some(holder) => self.subject_value(holder, v),
                None => {
                    // The root is a subject element: each value is a record of its own.
                    sink.out.subject(Namespace::Field, v, CategorySet::EMPTY);
                    let rel = self.frontier(pos);
                    sink.out.end_record(at..pos, rel);
                    Ok(())
                }
            };
        }
        if let Some(f) = self.frames.last() {
            if !f.info.categories.is_empty() {
                let c = f.info.categories;
                self.add_cats(c, sink.out);
            }
        }
        Ok(())
    }

    /// Whether character data here is a subject value (it sits in a subject element).
    pub(super) fn in_subject_element(&self) -> bool {
        self.subj_elem.is_some()
    }

    /// Character data that is a JSON document, read (spanning `at..pos`): its records go out,
    /// released no later than any open element allows; its subject values (in a subject
    /// element), hits and categories are the innermost element's, as its text's would be.
    pub(super) fn document(
        &mut self,
        doc: &Embedded,
        at: u64,
        pos: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let release = self.frontier(at);
        doc.move_records(sink.out, at..pos, release);
        let own = self
            .frames
            .last()
            .map_or(CategorySet::EMPTY, |f| f.info.categories);
        let cats = own.union(doc.categories());
        if !cats.is_empty() {
            self.add_cats(cats, sink.out);
        }
        if let Some(e) = self.subj_elem {
            for v in doc.subject_values() {
                match e.checked_sub(1) {
                    Some(holder) => self.subject_value(holder, v)?,
                    None => {
                        sink.out.subject(Namespace::Field, v, CategorySet::EMPTY);
                        sink.out.end_record(at..pos, release);
                    }
                }
            }
        }
        let from = self.hits.len();
        for (ns, id, cats) in doc.hits() {
            let a = self.hit_bytes.len() as u32;
            self.hit_bytes.extend_from_slice(id);
            self.hits.push(Hit {
                ns,
                id: (a, self.hit_bytes.len() as u32),
                cats,
            });
        }
        if self.hits.len() > from {
            match self.frames.last() {
                Some(f) if !f.decided => {}
                other => {
                    let extra = other.map_or(CategorySet::EMPTY, |f| f.cats);
                    self.emit_hits(from, extra, sink);
                    sink.out.end_record(at..pos, release);
                    self.truncate_hits(from);
                }
            }
        }
        Ok(())
    }

    fn subject_value(&mut self, holder: usize, v: &[u8]) -> Result<(), Unreadable> {
        let Some(h) = self.frames.get_mut(holder) else {
            return Ok(());
        };
        if h.decided {
            return Err(Unreadable::RecordTooLarge { offset: h.start });
        }
        h.direct = true;
        // Children truncate their values on close (or pass them up): the arena's top belongs
        // to the innermost element.
        let a = self.subj_bytes.len() as u32;
        self.subj_bytes.extend_from_slice(trim(v));
        self.subjs.push((a, self.subj_bytes.len() as u32));
        Ok(())
    }

    /// Categories for the innermost element; in a decided envelope (or outside every
    /// element) they apply to the whole request.
    fn add_cats(&mut self, cats: CategorySet, out: &mut Records) {
        match self.frames.last_mut() {
            Some(f) => {
                f.cats = f.cats.union(cats);
                if f.decided {
                    out.add_outside(cats);
                }
            }
            None => out.add_outside(cats),
        }
    }

    /// Offset up to which nothing belongs to an undecided element, capped at `pos`.
    pub(super) fn frontier(&self, pos: u64) -> u64 {
        self.held_from().map_or(pos, |s| s.min(pos))
    }

    /// Runs the detectors over `s` (a value, name, comment or instruction spanning
    /// `at..pos`); hits go to the innermost undecided element, or out as loose subjects.
    pub(super) fn detect(&mut self, s: &[u8], at: u64, pos: u64, sink: &mut Sink<'_>) {
        let from = self.hits.len();
        let hits = &mut self.hits;
        let bytes = &mut self.hit_bytes;
        detect::scan(s, &sink.det, &mut |ns, id: &[u8], cats| {
            let a = bytes.len() as u32;
            bytes.extend_from_slice(id);
            hits.push(Hit {
                ns,
                id: (a, bytes.len() as u32),
                cats,
            });
        });
        if self.hits.len() == from {
            return;
        }
        match self.frames.last() {
            Some(f) if !f.decided => {}
            other => {
                let extra = other.map_or(CategorySet::EMPTY, |f| f.cats);
                self.emit_hits(from, extra, sink);
                let rel = self.frontier(pos);
                sink.out.end_record(at..pos, rel);
                self.truncate_hits(from);
            }
        }
    }

    fn emit_hits(&self, from: usize, extra: CategorySet, sink: &mut Sink<'_>) {
        for h in &self.hits[from..] {
            let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
            sink.out.subject(h.ns, id, h.cats.union(extra));
        }
    }

    fn truncate_hits(&mut self, from: usize) {
        if let Some(h) = self.hits.get(from) {
            self.hit_bytes.truncate(h.id.0 as usize);
        }
        self.hits.truncate(from);
    }

    /// Closes the innermost element; `pos` is just past its end.
    pub(super) fn close(&mut self, pos: u64, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let Some(f) = self.frames.pop() else {
            return Err(Unreadable::Malformed { offset: pos });
        };
        self.names.truncate(f.name_start as usize);
        if self.subj_elem.is_some_and(|e| e >= self.frames.len()) {
            self.subj_elem = None;
        }
        self.first_undecided = self.first_undecided.min(self.frames.len());
        let from = f.hits_start as usize;
        let values = f.subjs_start as usize;
        let has_values = self.subjs.len() > values;
        if f.direct && has_values {
            let mut cats = f.cats;
            for h in &self.hits[from..] {
                cats = cats.union(h.cats);
            }
            for &(a, b) in &self.subjs[values..] {
                let id = &self.subj_bytes[a as usize..b as usize];
                sink.out.subject(Namespace::Field, id, cats);
            }
            self.truncate_hits(from);
            self.subjs.truncate(values);
            self.subj_bytes.truncate(f.subj_base as usize);
            let rel = self.frontier(pos);
            sink.out.end_record(f.start..pos, rel);
        } else {
            if !has_values {
                self.subj_bytes.truncate(f.subj_base as usize);
            }
            match self.frames.last_mut() {
                Some(p) if !p.decided => p.cats = p.cats.union(f.cats),
                Some(p) if has_values => {
                    return Err(Unreadable::RecordTooLarge { offset: p.start });
                }
                parent => {
                    sink.out.add_outside(f.cats);
                    let extra = f.cats.union(parent.map_or(CategorySet::EMPTY, |p| p.cats));
                    if self.hits.len() > from {
                        self.emit_hits(from, extra, sink);
                        self.truncate_hits(from);
                        let rel = self.frontier(pos);
                        sink.out.end_record(f.start..pos, rel);
                    }
                    if self.frames.is_empty() {
                        self.subjs.clear();
                        self.subj_bytes.clear();
                    }
                }
            }
        }
        if self.hits.len() == from {
            self.hit_bytes.truncate(f.hit_bytes_base as usize);
        }
        Ok(())
    }

    /// Decides elements that grew past `max` bytes by `pos` (see the module docs).
    pub(super) fn check_size(
        &mut self,
        pos: u64,
        max: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        while let Some(f) = self.frames.get(self.first_undecided).copied() {
            if pos.saturating_sub(f.start) <= max {
                break;
            }
            let idx = self.first_undecided;
            let own_values = self
                .frames
                .get(idx + 1)
                .map_or(self.subjs.len(), |g| g.subjs_start as usize)
                > f.subjs_start as usize;
            if f.direct || own_values {
                return Err(Unreadable::RecordTooLarge { offset: f.start });
            }
            sink.out.add_outside(f.cats);
            let from = f.hits_start as usize;
            let to = self
                .frames
                .get(idx + 1)
                .map_or(self.hits.len(), |g| g.hits_start as usize);
            if to > from {
                for h in &self.hits[from..to] {
                    let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
                    sink.out.subject(h.ns, id, h.cats.union(f.cats));
                }
                self.hits.drain(from..to);
                let gone = (to - from) as u32;
                for g in &mut self.frames[idx + 1..] {
                    g.hits_start -= gone;
                }
            }
            self.frames[idx].decided = true;
            self.first_undecided += 1;
            let rel = self.frontier(pos);
            if to > from {
                sink.out.end_record(f.start..pos, rel);
            }
        }
        Ok(())
    }
}
