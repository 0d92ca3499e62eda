//! The streaming body gate (SPEC §3 "Streaming and what before means"): a request body that is
//! too large (or too open-ended) to judge whole is inspected while it streams; the bytes of a
//! record are released upstream only after its subjects are durably reserved. At the first
//! refused record the body fails, so the upstream sees a broken body and never a clean end,
//! and the refusal is left in [`Shared`] for the handler to answer with (when no response has
//! started). Memory stays bounded by `max_record_bytes` plus buffers: bytes are held only
//! between the last released offset and the scanner's position.
//!
//! Head and body are one request (SPEC §3): categories seen outside every record of the head
//! apply to every body record; categories seen outside every record of the body apply to the
//! records judged from then on, and when one is sensitive the head's subjects are re-reserved
//! as sensitive. Body records already released before such a late category was seen cannot be
//! recalled and stay counted as they were judged (see `docs/inspection.md`).

use super::budget::{Budget, Charge};
use super::enforce::{self, Batch, Outcome, Verdict};
use super::head::Head;
use super::{Gate, Snapshot};
use crate::config::Unreadable as UnreadablePolicy;
use crate::inspect::{InspectConfig, Scanner, Unreadable};
use crate::model::CategorySet;
use crate::policy::{Reason, Refusal};
use crate::respond::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// What the request handler learns from the gate: the accumulated decision of a streamed body.
#[derive(Debug, Default)]
pub struct Summary {
    /// The first refusal (or, in observe mode, would-be refusal).
    pub refusal: Option<Refusal>,
    /// Whether the refusal was only recorded (observe mode): the body went on.
    pub observed: bool,
    /// At least one batch was reserved.
    pub reserved: bool,
    /// The reason of the last reservation (`allowed` or `exempt`).
    pub reason: Option<Reason>,
    /// The id of the approval relied on (by the last batch that relied on one).
    pub approval: Option<String>,
    /// The mechanism the counts required.
    pub required: Option<crate::policy::Mechanism>,
    /// New subjects over all batches.
    pub new: crate::policy::Counts,
    /// New subjects at the destination (its own scope) over all batches.
    pub new_here: crate::policy::Counts,
    /// Entity counts after the last batch judged with PI, as the ledger gave them.
    pub entity_after: Option<crate::policy::Counts>,
    /// The body could not be inspected (and `unreadable = "allow"` let it through).
    pub unreadable_allowed: bool,
    /// Bytes released upstream.
    pub released: u64,
    /// The body is waiting for room in the buffered-bytes budget, or failed for want of it
    /// (the client gets 503 `gate_busy`).
    pub busy: bool,
    /// The important-data rule that matched.
    pub important_rule: Option<String>,
    /// The categories of the request's subjects (over all batches).
    pub categories: CategorySet,
    /// The body failed as a workbook over `max_workbook_bytes` (the client gets 413).
    pub too_large: bool,
}

impl Summary {
    /// Notes what a batch carries (before it is judged).
    pub fn note_batch(&mut self, b: &Batch) {
        if !b.subjects.is_empty() {
            self.categories = self.categories.union(b.categories);
        }
    }

    /// Folds one batch verdict in.
    pub fn absorb(&mut self, v: &Verdict) {
        match v.outcome {
            Outcome::Pass => {}
            Outcome::Allow | Outcome::WouldBlock => {
                self.reserved = true;
                self.new = self.new.plus(v.new);
                self.new_here = self.new_here.plus(v.new_here);
                self.entity_after = Some(v.entity_after);
                if v.approval.is_some() {
                    self.approval.clone_from(&v.approval);
                }
                self.required = Some(v.required);
                if v.outcome == Outcome::Allow {
                    self.reason = Some(v.reason);
                }
                if v.outcome == Outcome::WouldBlock && self.refusal.is_none() {
                    self.refusal = v.refusal.clone();
                    self.observed = true;
                }
            }
            Outcome::Block | Outcome::Unavailable => {
                if v.outcome == Outcome::Block {
                    self.entity_after = Some(v.entity_after);
                }
                self.required = Some(v.required);
                if self.refusal.is_none() {
                    self.refusal = Some(
                        v.refusal
                            .clone()
                            .unwrap_or_else(|| Refusal::new(v.reason, String::new())),
                    );
                }
            }
        }
    }
}

/// The state shared between the body (writer) and the handler (reader).
pub type Shared = Arc<Mutex<Summary>>;

/// Why the gate failed the body.
#[derive(Debug, thiserror::Error)]
#[error("request body refused by the gate: {0}")]
pub struct Refused(&'static str);

type Judging = Pin<Box<dyn Future<Output = (Verdict, Batch)> + Send>>;
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// Per-request context the body needs to judge batches on its own.
pub struct Ctx {
    /// The gate.
    pub gate: Arc<Gate>,
    /// The snapshot the request started with (its destination; each batch is judged under
    /// the snapshot current when it completes).
    pub snap: Arc<Snapshot>,
    /// The destination index.
    pub dest: usize,
    /// What the head carried: its subjects, outside categories and important-data rules.
    pub head: Head,
    /// What to do with an unreadable body.
    pub unreadable: UnreadablePolicy,
    /// Whether refusals are enforced (not observe mode, neither the gate's nor the client's).
    pub enforce: bool,
    /// Whether the request's client is in observe mode (`mode = "observe"`); `gate.mode` is
    /// read again under each batch's snapshot.
    pub client_observed: bool,
}

/// Judges a batch of a streaming request under the configuration in force *now* (SPEC §5 "A
/// reload reaches requests in flight"): an approval removed, revoked or narrowed by a reload
/// since the request started applies from this record on, and a destination the new
/// configuration no longer has refuses it (fail closed).
pub(crate) async fn judge_now(ctx: &Ctx, batch: &Batch) -> Verdict {
    let gate = &ctx.gate;
    let snap = gate.snapshot();
    let now = gate.clock.now();
    let observe = ctx.client_observed || !crate::policy::enforce(&snap.config);
    if Arc::ptr_eq(&snap, &ctx.snap) {
        return enforce::judge(gate, &snap, ctx.dest, batch, now, observe).await;
    }
    let name = &ctx.snap.config.destinations[ctx.dest].name;
    match snap
        .config
        .destinations
        .iter()
        .position(|d| &d.name == name)
    {
        Some(i) => enforce::judge(gate, &snap, i, batch, now, observe).await,
        None => {
            let refusal = Refusal::new(Reason::UnknownDestination, name.clone());
            enforce::refuse_uncounted(gate, &snap, refusal, now, observe).await
        }
    }
}

/// Room asked of the budget beyond what is held, so that small chunks do not each take the
/// semaphore.
const GROW_STEP: u64 = 64 * 1024;

/// A wait for room in the budget.
type BudgetWait =
    Pin<Box<dyn Future<Output = Option<tokio::sync::OwnedSemaphorePermit>> + Send + 'static>>;

/// The gated body.
pub struct GatedBody<B> {
    inner: B,
    ctx: Arc<Ctx>,
    scanner: Option<Scanner<Arc<InspectConfig>>>,
    held: VecDeque<Bytes>,
    held_start: u64,
    /// What the body holds in the process's buffered-bytes budget: `base` (the decoder's
    /// window) plus the held bytes, charged before more are read.
    charge: Charge,
    base: u64,
    waiting: Option<BudgetWait>,
    fed: u64,
    ready: VecDeque<Bytes>,
    batch: Option<Batch>,
    judging: Option<Judging>,
    inner_done: bool,
    done: bool,
    shared: Shared,
    finished: Option<oneshot::Sender<()>>,
    /// Outside categories already applied to judged batches.
    outside: CategorySet,
    /// An important-data rule matched (head or body).
    important: bool,
    /// A failure waiting for released bytes to leave (see [`SETTLE`]).
    settle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The error returned once `settle` has run out.
    failure: Option<BoxError>,
}

/// How long a failing body waits before its error, so that the bytes it released before
/// (messages judged and counted) leave the upstream connection's send queue ahead of the
/// reset the error causes (h2 drops a stream's queued frames when it is reset). A bound, not a
/// condition: hyper and h2 do not tell when a stream's queue is drained (docs/grpc.md); 50 ms
/// lost clean messages in 2 of about 100 test runs on a loaded machine.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

impl<B> GatedBody<B> {
    /// Wraps `inner`; `finished` fires when the body is dropped (complete, failed or abandoned).
    /// `charge` is what the request already holds in the budget (its decoder's window); the
    /// body charges its held bytes on top of it.
    pub fn new(
        inner: B,
        ctx: Arc<Ctx>,
        scanner: Scanner<Arc<InspectConfig>>,
        shared: Shared,
        finished: oneshot::Sender<()>,
        charge: Charge,
    ) -> Self {
        GatedBody {
            inner,
            scanner: Some(scanner),
            held: VecDeque::new(),
            held_start: 0,
            base: charge.bytes(),
            charge,
            waiting: None,
            fed: 0,
            ready: VecDeque::new(),
            batch: Some(Batch::default()),
            judging: None,
            inner_done: false,
            done: false,
            shared,
            finished: Some(finished),
            outside: ctx.head.outside,
            important: ctx.head.important_rule.is_some(),
            settle: None,
            failure: None,
            ctx,
        }
    }

    /// Moves held bytes before `offset` to the ready queue.
    fn release_to(&mut self, offset: u64) {
        while self.held_start < offset {
            let Some(front) = self.held.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            if self.held_start + len <= offset {
                let b = self.held.pop_front().unwrap_or_default();
                self.held_start += len;
                self.ready.push_back(b);
            } else {
                let n = (offset - self.held_start) as usize;
                let part = front.split_to(n);
                self.held_start += n as u64;
                self.ready.push_back(part);
            }
        }
        let keep = self.base + self.held_bytes() + GROW_STEP;
        self.charge.shrink_to(keep);
    }

    /// Bytes held (read from the client, not yet released).
    fn held_bytes(&self) -> u64 {
        self.fed - self.held_start
    }

    /// Makes sure the budget covers what is held before more is read: `Ready(true)` when it
    /// does, `Pending` while waiting for room, `Ready(false)` when the held bytes can never fit.
    fn charge_held(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let budget: &Budget = &self.ctx.gate.budget;
        // A workbook the scanner holds (as decoded) is held memory too.
        let inside = self.scanner.as_mut().map_or(0, Scanner::buffered_bytes);
        loop {
            let want = self.base + self.held_bytes() + inside;
            let have = self.charge.bytes();
            if want <= have {
                return Poll::Ready(true);
            }
            let Some(wait) = self.waiting.as_mut() else {
                let more = want - have + GROW_STEP;
                if !budget.try_grow(&mut self.charge, more) {
                    self.waiting = Some(Box::pin(budget.grow(more)));
                    self.lock().busy = true;
                }
                continue;
            };
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.waiting = None;
                    return Poll::Ready(false);
                }
                Poll::Ready(Some(p)) => {
                    self.waiting = None;
                    Budget::add(&mut self.charge, p);
                    self.lock().busy = false;
                }
            }
        }
    }

    fn release_all(&mut self) {
        let end = self.fed;
        self.release_to(end);
    }

    /// Gathers the scanner's completed records into the batch; true when there is work to judge.
    fn collect(&mut self) -> bool {
        let (Some(scanner), Some(batch)) = (self.scanner.as_mut(), self.batch.as_mut()) else {
            return false;
        };
        for r in scanner.records().iter() {
            batch.add_record(&self.ctx.gate.hasher, r);
        }
        scanner.clear_records();
        let outside = self.outside.union(scanner.outside_categories());
        if outside.is_sensitive() && !self.outside.is_sensitive() {
            // A sensitive category seen late: the head's subjects (already reserved) are
            // re-reserved as sensitive; the ledger upgrades them.
            for s in &self.ctx.head.batch.subjects {
                batch.subjects.push(crate::ledger::Subject {
                    key: s.key,
                    sensitive: true,
                });
            }
        }
        self.outside = outside;
        batch.apply_outside(outside);
        if !self.important && !self.ctx.head.important_fields.is_empty() {
            if let Some(rule) = self.ctx.head.rule_for_fields(scanner.watched_fields_seen()) {
                self.important = true;
                let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                s.important_rule.get_or_insert(rule);
            }
        }
        batch.important |= self.important;
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note_batch(batch);
        !batch.is_empty()
    }

    fn start_judging(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let ctx = self.ctx.clone();
        self.judging = Some(Box::pin(async move {
            let v = judge_now(&ctx, &batch).await;
            (v, batch)
        }));
    }

    /// Handles an unreadable body: stop inspecting and pass it on (allowed), or refuse.
    fn unreadable(&mut self, e: &Unreadable) -> Option<Polled> {
        self.scanner = None;
        if *e == Unreadable::WorkbookTooLarge {
            // Not unreadable: too large to judge (413), whatever `unreadable` says.
            tracing::info!(kind = e.kind(), "streamed workbook too large");
            self.lock().too_large = true;
            return Some(self.fail("workbook too large"));
        }
        tracing::info!(kind = e.kind(), "streamed body is unreadable");
        if self.ctx.unreadable == UnreadablePolicy::Allow {
            self.lock().unreadable_allowed = true;
            self.release_all();
            return None;
        }
        let dest = self.ctx.snap.config.destinations[self.ctx.dest]
            .name
            .clone();
        let refusal = Refusal::new(Reason::UnreadableBody, dest);
        if self.ctx.enforce {
            self.lock().refusal = Some(refusal);
            return Some(self.fail("unreadable body"));
        }
        {
            let mut s = self.lock();
            if s.refusal.is_none() {
                s.refusal = Some(refusal);
                s.observed = true;
            }
        }
        self.release_all();
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Summary> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Bytes released before this failure may still wait in the upstream connection's
        // send queue, and an h2 stream's reset drops what is queued for it: the failure waits
        // a moment so that what was judged and counted is sent first (see `poll_frame`).
        if self.lock().released > 0 {
            self.settle = Some(Box::pin(tokio::time::sleep(SETTLE)));
        }
        self.done = true;
        self.held.clear();
        self.ready.clear();
        self.waiting = None;
        self.charge = Charge::default();
        Poll::Ready(Some(Err(Box::new(Refused(why)))))
    }
}

impl<B> Drop for GatedBody<B> {
    fn drop(&mut self) {
        if let Some(tx) = self.finished.take() {
            let _ = tx.send(());
        }
    }
}

impl<B> Body for GatedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.settle.is_none() {
            match this.poll_gate(cx) {
                Poll::Ready(Some(Err(e))) if this.settle.is_some() => {
                    this.failure = Some(e);
                }
                other => return other,
            }
        }
        if let Some(t) = this.settle.as_mut() {
            if t.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.settle = None;
        Poll::Ready(this.failure.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty() && self.settle.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The gate forwards exactly the client's bytes, unless it aborts.
        self.inner.size_hint()
    }
}

impl<B> GatedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The gate's work on one poll: release judged bytes, judge completed records, read more.
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Polled {
        let this = self;
        loop {
            if let Some(b) = this.ready.pop_front() {
                this.lock().released += b.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(fut) = this.judging.as_mut() {
                let (verdict, mut batch) = match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(x) => x,
                };
                this.judging = None;
                this.lock().absorb(&verdict);
                batch.clear();
                this.batch = Some(batch);
                match verdict.outcome {
                    Outcome::Block | Outcome::Unavailable => return this.fail("refused record"),
                    Outcome::Pass | Outcome::Allow | Outcome::WouldBlock => {
                        let to = match this.scanner.as_mut() {
                            Some(s) if !this.inner_done => s.release_offset(),
                            _ => this.fed,
                        };
                        this.release_to(to);
                    }
                }
                continue;
            }
            if this.inner_done {
                this.release_all();
                this.done = this.ready.is_empty();
                continue;
            }
            // Nothing more is read from the client until the budget covers what is held.
            match this.charge_held(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => return this.fail("buffered-bytes budget"),
                Poll::Ready(true) => {}
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.inner_done = true;
                    if let Some(s) = this.scanner.as_mut() {
                        if let Err(e) = s.finish() {
                            if let Some(p) = this.unreadable(&e) {
                                return p;
                            }
                            continue;
                        }
                    }
                    if this.collect() {
                        this.start_judging();
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers could carry identifiers the gate does not inspect: dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.fed += data.len() as u64;
                    let fed = match this.scanner.as_mut() {
                        Some(s) => s.feed(&data),
                        None => Ok(()),
                    };
                    this.held.push_back(data);
                    if let Err(e) = fed {
                        if let Some(p) = this.unreadable(&e) {
                            return p;
                        }
                        continue;
                    }
                    if this.scanner.is_none() {
                        this.release_all();
                    } else if this.collect() {
                        this.start_judging();
                    } else if let Some(s) = this.scanner.as_mut() {
                        let to = s.release_offset();
                        this.release_to(to);
                    }
                }
            }
        }
    }
}

/// Whether a gated body is waiting for (or failed for want of) room in the budget.
pub(crate) fn is_busy(shared: &Shared) -> bool {
    shared.lock().unwrap_or_else(|p| p.into_inner()).busy
}

/// Whether a gated body failed as a workbook over `max_workbook_bytes` (413).
pub(crate) fn is_too_large(shared: &Shared) -> bool {
    shared.lock().unwrap_or_else(|p| p.into_inner()).too_large
}

/// The refusal recorded by a gated body that failed before the upstream answered.
pub(crate) fn refusal_now(shared: &Shared) -> Option<Refusal> {
    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
    if s.observed {
        None
    } else {
        s.refusal.clone()
    }
}
