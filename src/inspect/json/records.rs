//! Records (SPEC §3): every open object has a *frame* that collects its subject values, its
//! category fields and the detector hits of its non-record descendants. Every value counts: each
//! subject field (duplicate keys included), each element of an array held by a subject field
//! and each scalar inside an object held by one is a subject value (the container is a
//! *subject container*). An object that directly holds a subject field with a value is a record
//! when it closes; otherwise its hits, categories and container-derived subject values move to
//! the enclosing object, or, at the top, the hits become loose subjects and the categories apply
//! to the whole request ([`Records::add_outside`]). Object keys are inspected like values.
//! Frames, subject values and hits live in stacks (truncated on close), so nothing is allocated
//! per value.
//!
//! Memory bound: an object that grows past `max_record_bytes` without a subject field is
//! *decided* to be an envelope: its pending hits are emitted as loose subjects, later hits in
//! it are emitted at once, and a subject field appearing in it afterwards makes it a record over
//! the limit (unreadable). Only undecided objects hold the release frontier back, so the bytes
//! held never exceed `max_record_bytes` plus one chunk. The identifiers of the hits a decision
//! emits stay in the hit arena until the envelope closes (at most `max_record_bytes` plus one
//! chunk of them per open envelope), not until the body ends.
//!
//! The grammar that drives these frames is the parent module.

use super::{Embedded, JsonScanner};
use crate::inspect::config::FieldInfo;
use crate::inspect::detect;
use crate::inspect::error::Unreadable;
use crate::inspect::record::{Namespace, Records};
use crate::inspect::Sink;
use crate::model::CategorySet;

#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub(super) start: u64,
    /// The object directly holds a subject field (with a non-`null` value).
    pub(super) direct: bool,
    /// First of its subject values in `subjs` (later ones are its own or passed up).
    pub(super) subjs_start: u32,
    /// Length of `subj_bytes` when the object opened.
    pub(super) subj_base: u32,
    pub(super) cats: CategorySet,
    pub(super) hits_start: u32,
    /// Length of `hit_bytes` when the object opened: the arena is cut back to it on close.
    pub(super) hit_bytes_base: u32,
    pub(super) decided: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Hit {
    pub(super) ns: Namespace,
    pub(super) id: (u32, u32),
    pub(super) cats: CategorySet,
}

impl JsonScanner {
    /// Closes the innermost container (and a subject container that ends with it).
    pub(super) fn pop(&mut self) {
        self.stack.pop();
        if self.subj_container.is_some_and(|d| self.stack.len() < d) {
            self.subj_container = None;
        }
    }

    /// Adds categories to the innermost object; in an envelope already decided (or outside any
    /// object) they are outside every record and apply to the whole request.
    pub(super) fn add_cats(&mut self, cats: CategorySet, out: &mut Records) {
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

    /// A non-empty scalar that is the value of a subject or category field, or sits in a
    /// subject container: its categories and subject value go to the innermost object.
    pub(super) fn field_value(
        &mut self,
        info: FieldInfo,
        v: &[u8],
        out: &mut Records,
    ) -> Result<(), Unreadable> {
        if !info.categories.is_empty() {
            self.add_cats(info.categories, out);
        }
        let direct = info.subject_rank.is_some() && self.subj_container.is_none();
        if !direct && self.subj_container.is_none() {
            return Ok(());
        }
        let Some(f) = self.frames.last_mut() else {
            return Ok(());
        };
        if f.decided {
            return Err(Unreadable::RecordTooLarge { offset: f.start });
        }
        f.direct |= direct;
        // Children truncate their values on close (or pass them up), so the arena's top
        // belongs to the innermost object.
        let a = self.subj_bytes.len() as u32;
        self.subj_bytes.extend_from_slice(v);
        self.subjs.push((a, self.subj_bytes.len() as u32));
        Ok(())
    }

    /// A value that is a JSON document (SPEC §3 "Documents inside values"), read: its records
    /// go out (placed at the value, released no later than any open record allows), and what
    /// it holds outside them goes to the innermost object as a value of `info`'s field would.
    pub(super) fn take_embedded(
        &mut self,
        doc: &Embedded,
        info: FieldInfo,
        sink: &mut Sink<'_>,
    ) -> Result<(), Unreadable> {
        let span = self.tok_start..self.pos;
        let release = self
            .frames
            .get(self.first_undecided)
            .map_or(self.tok_start, |f| f.start.min(self.tok_start));
        doc.move_records(sink.out, span.clone(), release);
        let cats = info.categories.union(doc.categories());
        if !cats.is_empty() {
            self.add_cats(cats, sink.out);
        }
        let has_values = doc.subject_values().next().is_some();
        let direct = has_values && info.subject_rank.is_some() && self.subj_container.is_none();
        match self.frames.last_mut() {
            Some(f) if !f.decided => {
                f.direct |= direct;
                for v in doc.subject_values() {
                    let a = self.subj_bytes.len() as u32;
                    self.subj_bytes.extend_from_slice(v);
                    self.subjs.push((a, self.subj_bytes.len() as u32));
                }
                for (ns, id, cats) in doc.hits() {
                    let a = self.hit_bytes.len() as u32;
                    self.hit_bytes.extend_from_slice(id);
                    self.hits.push(Hit {
                        ns,
                        id: (a, self.hit_bytes.len() as u32),
                        cats,
                    });
                }
            }
            Some(f) if has_values => {
                return Err(Unreadable::RecordTooLarge { offset: f.start });
            }
            other => {
                // Loose, as a detector hit here would be.
                let extra = other.map_or(CategorySet::EMPTY, |f| f.cats);
                let mut any = false;
                for (ns, id, cats) in doc.hits() {
                    sink.out.subject(ns, id, cats.union(extra));
                    any = true;
                }
                if any {
                    sink.out.end_record(span, release);
                }
            }
        }
        Ok(())
    }

    /// Runs the detectors over a value (with stage 1's prefilter when given); hits go to the
    /// innermost undecided object, or out.
    #[inline]
    pub(super) fn detect(&mut self, s: &[u8], profile: Option<(usize, bool)>, sink: &mut Sink<'_>) {
        if let Some((digits, at)) = profile {
            // The prefilter of `detect::scan_profiled`, without a call: most values have
            // neither an `@` nor enough digits for any detector.
            if !at && digits < detect::MIN_DIGITS {
                #[cfg(test)]
                detect::trace::record(s);
                return;
            }
        }
        self.detect_all(s, profile, sink);
    }

    /// [`Self::detect`] past the prefilter.
    fn detect_all(&mut self, s: &[u8], profile: Option<(usize, bool)>, sink: &mut Sink<'_>) {
        let from = self.hits.len();
        let hits = &mut self.hits;
        let bytes = &mut self.hit_bytes;
        let mut hit = |ns, id: &[u8], cats| {
            let a = bytes.len() as u32;
            bytes.extend_from_slice(id);
            hits.push(Hit {
                ns,
                id: (a, bytes.len() as u32),
                cats,
            });
        };
        match profile {
            Some((digits, at)) => detect::scan_profiled(s, &sink.det, digits, at, &mut hit),
            None => detect::scan(s, &sink.det, &mut hit),
        }
        if self.hits.len() == from {
            return;
        }
        match self.frames.last() {
            Some(f) if !f.decided => {}
            other => {
                // Loose: no enclosing object, or an envelope already decided.
                let extra = other.map_or(CategorySet::EMPTY, |f| f.cats);
                let start = self.tok_start;
                self.emit_hits(from, extra, sink);
                // The token is complete: the frontier may pass it.
                let rel = self
                    .frames
                    .get(self.first_undecided)
                    .map_or(self.pos, |f| f.start.min(self.pos));
                sink.out.end_record(start..self.pos, rel);
                self.truncate_hits(from);
            }
        }
    }

    pub(super) fn emit_hits(&self, from: usize, extra: CategorySet, sink: &mut Sink<'_>) {
        for h in &self.hits[from..] {
            let id = &self.hit_bytes[h.id.0 as usize..h.id.1 as usize];
            sink.out.subject(h.ns, id, h.cats.union(extra));
        }
    }

    pub(super) fn truncate_hits(&mut self, from: usize) {
        if let Some(h) = self.hits.get(from) {
            self.hit_bytes.truncate(h.id.0 as usize);
        }
        self.hits.truncate(from);
    }

    pub(super) fn close_object(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        self.pop();
        let Some(f) = self.frames.pop() else {
            return Err(Unreadable::Malformed { offset: self.pos });
        };
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
            let rel = self.frontier();
            sink.out.end_record(f.start..self.pos, rel);
        } else {
            if !has_values {
                self.subj_bytes.truncate(f.subj_base as usize);
            }
            match self.frames.last_mut() {
                Some(p) if !p.decided => {
                    // Not a record: hits, categories and the values of a subject container
                    // belong to the enclosing object.
                    p.cats = p.cats.union(f.cats);
                }
                Some(p) if has_values => {
                    return Err(Unreadable::RecordTooLarge { offset: p.start });
                }
                parent => {
                    // Outside every record: the categories apply to the whole request.
                    sink.out.add_outside(f.cats);
                    let extra = f.cats.union(parent.map_or(CategorySet::EMPTY, |p| p.cats));
                    if self.hits.len() > from {
                        self.emit_hits(from, extra, sink);
                        self.truncate_hits(from);
                        let rel = self.frontier();
                        sink.out.end_record(f.start..self.pos, rel);
                    }
                }
            }
        }
        // Every hit of the frame and its descendants is now emitted or passed up. When none
        // was passed up, no hit left has bytes past the frame's base: the arena goes back to
        // it, dropping the bytes of hits an envelope's decision drained ([`Self::check_size`]).
        if self.hits.len() == from {
            self.hit_bytes.truncate(f.hit_bytes_base as usize);
        }
        self.value_done(sink);
        Ok(())
    }

    /// Decides objects that grew past `max_record_bytes` (see the module docs).
    pub(super) fn check_size(&mut self, sink: &mut Sink<'_>) -> Result<(), Unreadable> {
        let max = sink.cfg.max_record_bytes() as u64;
        while let Some(f) = self.frames.get(self.first_undecided).copied() {
            if self.pos.saturating_sub(f.start) <= max {
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
            // An envelope: its categories are outside every record.
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
                // The bytes stay in the arena until the frame closes; only the entries go.
                self.hits.drain(from..to);
                let gone = (to - from) as u32;
                for g in &mut self.frames[idx + 1..] {
                    g.hits_start -= gone;
                }
            }
            self.frames[idx].decided = true;
            self.first_undecided += 1;
            let rel = self.frontier();
            if to > from {
                sink.out.end_record(f.start..self.pos, rel);
            }
        }
        Ok(())
    }
}
