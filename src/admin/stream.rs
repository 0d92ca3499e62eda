//! `GET /v1/decisions/stream` (SPEC §6): the records of `GET /v1/decisions`, as Server-Sent
//! Events while the decisions happen — `event: decision`, `id:` the decision's sequence number,
//! `data:` the audit record as one line of JSON (never an identifier). It owns the response
//! body that follows the audit feed ([`crate::audit::Audit::subscribe`]), the query filters,
//! and the limits that keep streams from costing the gate:
//! - filters `destination`, `client_name`, `decision`, `reason` (query parameters, decoded by
//!   the `application/x-www-form-urlencoded` rules, matched exactly; an empty value filters
//!   nothing, an unknown parameter is ignored; a `decision` other than `allow`, `block`,
//!   `would_block` gets 400);
//! - bounded per client: the feed holds [`crate::audit::FEED_CAPACITY`] decisions for a reader
//!   that does not keep up, and hyper stops polling the body while the socket does not drain,
//!   so a stalled reader costs a fixed amount; one that fell behind gets `event: dropped` with
//!   `{"dropped": n}` (decisions it missed, before its filter) and goes on from the newest;
//! - at most [`MAX_STREAMS`] open at once in the gate, so that streams cannot take the admin
//!   listener's connections from `/metrics` and the probes: beyond it 503 with
//!   `Retry-After: 5`, at once;
//! - a `: keep-alive` comment every [`KEEP_ALIVE`] (a dead client is found by the write, and
//!   proxies do not cut a quiet stream); `retry: 3000` and a comment first, so that a browser's
//!   `EventSource` opens at once;
//! - every stream ends when the admin listener drains ([`Streams::close`]), so open streams
//!   never hold up a shutdown;
//! - a reader that stops reading (not one keep-alive taken in [`STALLED`]) loses its slot, so
//!   stalled browsers cannot keep others from the live view; its stream ends when it reads
//!   again.
//!
//! An open stream is a response in flight, so the admin listener's idle deadline
//! ([`crate::listen`]) does not apply to it.

use crate::audit::Published;
use crate::policy::Decision;
use crate::proxy::Gate;
use crate::respond::{self, BoxError, Failure, GateBody};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

/// Open decision streams at most, in the whole gate (the admin listener takes 256
/// connections; the rest stay for `/metrics`, the probes and the API).
pub const MAX_STREAMS: usize = 64;

/// The interval of the `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a stream sends first: the browser's reconnection delay and a comment, so that
/// `EventSource` fires `open` before the first decision.
const OPENING: &[u8] = b"retry: 3000\n: transfer-gate decisions\n\n";

const KEEP_ALIVE_LINE: &[u8] = b": keep-alive\n\n";

/// A stream whose body has not been read this long (three keep-alives could not be sent) gives
/// its slot back.
pub const STALLED: Duration = Duration::from_secs(45);

/// A stream's slot, shared with its watchdog: taken back when the reader stalls.
#[derive(Debug)]
struct Slot {
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    opened: tokio::time::Instant,
    /// Milliseconds after `opened` when the body last handed a chunk to the connection.
    last_sent: std::sync::atomic::AtomicU64,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Arc<Slot> {
        Arc::new(Slot {
            permit: std::sync::Mutex::new(Some(permit)),
            opened: tokio::time::Instant::now(),
            last_sent: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn sent(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_sent
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn held(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn release(&self) {
        self.permit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// Gives the slot back once the body has not been read for [`STALLED`]; ends with the stream.
async fn watchdog(slot: std::sync::Weak<Slot>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        tick.tick().await;
        let Some(s) = slot.upgrade() else { return };
        let last = Duration::from_millis(s.last_sent.load(std::sync::atomic::Ordering::Relaxed));
        if s.opened.elapsed().saturating_sub(last) >= STALLED {
            s.release();
            return;
        }
    }
}

/// The open streams of a gate: their slots and the signal that ends them.
#[derive(Debug)]
pub struct Streams {
    slots: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams::new()
    }
}

impl Streams {
    /// [`MAX_STREAMS`] free slots; not closed.
    pub fn new() -> Self {
        Streams {
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop: watch::channel(false).0,
        }
    }

    /// Ends every open stream (after the event it is sending) and refuses new ones: the admin
    /// listener calls this when it drains.
    pub fn close(&self) {
        self.slots.close();
        self.stop.send_replace(true);
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        MAX_STREAMS.saturating_sub(self.slots.available_permits())
    }
}

/// Which decisions a stream carries; `None` matches every value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `destination`.
    pub destination: Option<String>,
    /// `client_name`.
    pub client_name: Option<String>,
    /// `decision`.
    pub decision: Option<Decision>,
    /// `reason`.
    pub reason: Option<String>,
}

impl Filter {
    /// Reads the filters from a query string (`None`: no filter).
    ///
    /// # Errors
    /// A message for the 400 when `decision` is not `allow`, `block` or `would_block`.
    pub fn parse(query: Option<&str>) -> Result<Filter, &'static str> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (super::form_decode(k), super::form_decode(v));
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "destination" => f.destination = Some(v),
                "client_name" => f.client_name = Some(v),
                "reason" => f.reason = Some(v),
                "decision" => {
                    f.decision = Some(
                        Decision::ALL
                            .into_iter()
                            .find(|d| d.as_str() == v)
                            .ok_or("`decision` must be allow, block or would_block")?,
                    );
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether the decision of `r` passes.
    pub fn matches(&self, r: &crate::audit::AuditRecord) -> bool {
        self.destination
            .as_deref()
            .is_none_or(|d| d == r.destination)
            && self
                .client_name
                .as_deref()
                .is_none_or(|c| c == r.client_name())
            && self.decision.is_none_or(|d| d == r.decision)
            && self
                .reason
                .as_deref()
                .is_none_or(|x| x == r.reason.as_str())
    }
}

/// One stream's state: what it follows, what it passes, its slot, and when it ends.
struct Feed {
    rx: broadcast::Receiver<Arc<Published>>,
    filter: Filter,
    keep_alive: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    opening: bool,
    slot: Arc<Slot>,
}

impl Feed {
    /// The next chunk of the stream; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        let chunk = self.produce().await;
        self.slot.sent();
        chunk
    }

    async fn produce(&mut self) -> Option<Bytes> {
        if !self.slot.held() {
            // The reader stalled and its slot went to others: end here.
            return None;
        }
        if std::mem::take(&mut self.opening) {
            return Some(Bytes::from_static(OPENING));
        }
        loop {
            tokio::select! {
                biased;
                _ = stop(&mut self.stop) => return None,
                r = self.rx.recv() => match r {
                    Ok(p) if self.filter.matches(&p.record) => return Some(event(&p)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        // Go on from the newest: what is still queued is dropped too.
                        let skipped = n.saturating_add(self.rx.len() as u64);
                        self.rx = self.rx.resubscribe();
                        return Some(dropped(skipped));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(KEEP_ALIVE_LINE)),
            }
        }
    }
}

/// Resolves once the streams are closed (or their owner is gone).
async fn stop(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// `event: decision` for `p`.
fn event(p: &Published) -> Bytes {
    use std::io::Write;
    let json = p.json();
    let mut b = Vec::with_capacity(json.len() + 48);
    let _ = write!(b, "event: decision\nid: {}\ndata: ", p.seq);
    b.extend_from_slice(json);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

/// `event: dropped` for `n` decisions the stream could not carry.
fn dropped(n: u64) -> Bytes {
    Bytes::from(format!("event: dropped\ndata: {{\"dropped\": {n}}}\n\n"))
}

/// Answers `GET /v1/decisions/stream`: 400 for a bad filter, 503 when [`MAX_STREAMS`] are
/// open (or the listener is draining), else the event stream.
pub fn serve<B>(gate: &Gate, req: &Request<B>) -> Response<GateBody> {
    let filter = match Filter::parse(req.uri().query()) {
        Ok(f) => f,
        Err(message) => return respond::failure(Failure::BadRequest(message), ""),
    };
    let streams = &gate.streams;
    let Ok(slot) = streams.slots.clone().try_acquire_owned() else {
        return respond::failure(Failure::TooManyStreams, "");
    };
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slot = Slot::new(slot);
    tokio::spawn(watchdog(Arc::downgrade(&slot)));
    let feed = Feed {
        rx: gate.audit.subscribe(),
        filter,
        keep_alive,
        stop: streams.stop.subscribe(),
        opening: true,
        slot,
    };
    let chunks = futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(chunk)), feed))
    });
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;
    use crate::policy::Reason;

    fn rec(dest: &str, client: Option<&str>, decision: Decision, reason: Reason) -> AuditRecord {
        let mut r = AuditRecord::new("r", "127.0.0.1:1".parse().unwrap(), dest, "POST", "/x");
        r.client_name = client.map(Arc::from);
        r.decision = decision;
        r.reason = reason;
        r
    }

    #[test]
    fn filters_are_decoded_and_exact() {
        let f = Filter::parse(Some(
            "destination=eu+analytics&client_name=bill%69ng&decision=block&reason=approval_required&other=1",
        ))
        .unwrap();
        let hit = rec(
            "eu analytics",
            Some("billing"),
            Decision::Block,
            Reason::ApprovalRequired,
        );
        assert!(f.matches(&hit));
        for miss in [
            rec(
                "eu",
                Some("billing"),
                Decision::Block,
                Reason::ApprovalRequired,
            ),
            rec(
                "eu analytics",
                None,
                Decision::Block,
                Reason::ApprovalRequired,
            ),
            rec(
                "eu analytics",
                Some("billing"),
                Decision::WouldBlock,
                Reason::ApprovalRequired,
            ),
            rec(
                "eu analytics",
                Some("billing"),
                Decision::Block,
                Reason::ApprovalExpired,
            ),
        ] {
            assert!(!f.matches(&miss), "{miss:?}");
        }
        let unidentified = Filter::parse(Some("client_name=unidentified")).unwrap();
        assert!(unidentified.matches(&rec("eu", None, Decision::Allow, Reason::NoPi)));
        assert!(!unidentified.matches(&hit));
        // No query, empty values and unknown parameters filter nothing.
        for q in [
            None,
            Some(""),
            Some("destination=&decision="),
            Some("x=y&limit"),
        ] {
            let f = Filter::parse(q).unwrap();
            assert_eq!(f, Filter::default());
            assert!(f.matches(&hit));
        }
        assert!(Filter::parse(Some("decision=blocked")).is_err());
        assert!(Filter::parse(Some("decision=would%5Fblock")).is_ok());
        assert_eq!(crate::admin::form_decode("a%2"), "a%2");
        assert_eq!(crate::admin::form_decode("%e4%b8%8a%zz+"), "上%zz ");
    }

    fn feed(rx: broadcast::Receiver<Arc<Published>>, streams: &Streams) -> Feed {
        Feed {
            rx,
            filter: Filter::default(),
            keep_alive: tokio::time::interval_at(
                tokio::time::Instant::now() + KEEP_ALIVE,
                KEEP_ALIVE,
            ),
            stop: streams.stop.subscribe(),
            opening: true,
            slot: Slot::new(streams.slots.clone().try_acquire_owned().unwrap()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_reader_gives_its_slot_back_and_a_reading_one_keeps_it() {
        let (_tx, rx) = broadcast::channel::<Arc<Published>>(4);
        let streams = Streams::new();
        let mut reading = feed(rx.resubscribe(), &streams);
        let stalled = feed(rx, &streams);
        for f in [&reading, &stalled] {
            tokio::spawn(watchdog(Arc::downgrade(&f.slot)));
        }
        assert_eq!(streams.open(), 2);
        // The reading one takes every keep-alive for two minutes; the other takes nothing.
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            assert!(reading.next().await.is_some());
        }
        assert_eq!(streams.open(), 1, "the stalled reader's slot is back");
        assert!(reading.slot.held());
        let mut stalled = stalled;
        assert!(
            stalled.next().await.is_none(),
            "a stream without its slot ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_keep_alive_every_15_seconds() {
        let (_tx, rx) = broadcast::channel::<Arc<Published>>(4);
        let streams = Streams::new();
        let mut feed = feed(rx, &streams);
        let start = tokio::time::Instant::now();
        assert_eq!(feed.next().await.unwrap(), OPENING);
        assert_eq!(start.elapsed(), Duration::ZERO, "the opening comes at once");
        for n in 1..=2 {
            assert_eq!(feed.next().await.unwrap(), KEEP_ALIVE_LINE);
            assert_eq!(start.elapsed(), KEEP_ALIVE * n);
        }
    }

    #[tokio::test]
    async fn a_lagging_reader_is_told_what_it_dropped_and_goes_on_from_the_newest() {
        let (tx, rx) = broadcast::channel::<Arc<Published>>(4);
        let streams = Streams::new();
        let mut feed = feed(rx, &streams);
        assert_eq!(streams.open(), 1);
        let publish = |seq: u64| {
            let r = rec("eu", None, Decision::Block, Reason::ApprovalRequired);
            let _ = tx.send(Arc::new(Published::new(seq, Arc::new(r))));
        };
        assert_eq!(feed.next().await.unwrap(), OPENING);
        for seq in 1..=10 {
            publish(seq);
        }
        // 6 lost by the channel, 4 still queued and skipped: the reader goes on from the newest.
        assert_eq!(
            feed.next().await.unwrap(),
            "event: dropped\ndata: {\"dropped\": 10}\n\n"
        );
        publish(11);
        let e = feed.next().await.unwrap();
        let text = std::str::from_utf8(&e).unwrap();
        assert!(
            text.starts_with("event: decision\nid: 11\ndata: {"),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4, "one data line: {text}");
        streams.close();
        assert!(feed.next().await.is_none());
        drop(feed);
        assert_eq!(streams.open(), 0);
        // Closed: no new stream gets a slot.
        assert!(streams.slots.clone().try_acquire_owned().is_err());
    }
}
