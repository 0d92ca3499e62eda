//! The body wrapper every forwarded body passes through: it counts bytes into
//! `transfer_gate_bytes_total`, aborts an exchange whose bodies go idle — no byte either way —
//! for `timeouts.idle_seconds` or that passes the whole-exchange deadline, and caps request
//! bodies at `inspection.max_body_bytes`.
//! It streams: frames are passed on as they arrive, never collected.
//!
//! This is also the seam where the streaming inspection gate plugs in: it sees every frame
//! before the upstream does.

use crate::respond::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a metered body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No bytes for longer than the idle timeout.
    #[error("body idle for longer than the idle timeout")]
    Idle,
    /// The whole-exchange deadline passed.
    #[error("exchange took longer than the total timeout")]
    Deadline,
    /// More bytes than allowed.
    #[error("body larger than inspection.max_body_bytes")]
    TooLarge,
    /// The gate gave up on the exchange (it answered the client itself).
    #[error("exchange abandoned by the gate")]
    Abandoned,
}

/// A streaming body that meters, times and caps its inner body.
pub struct MeteredBody<B> {
    inner: B,
    bytes: IntCounter,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
    remaining: u64,
    too_large: Option<Arc<AtomicBool>>,
    done: bool,
    ended: Option<tokio::sync::oneshot::Sender<()>>,
    progress: Option<Arc<Progress>>,
    /// The other direction of the exchange: while it moves, this body is not idle (a
    /// long-lived call whose client streams while the server's answer waits, or the reverse).
    peer: Option<Arc<Progress>>,
}

/// When a request body last moved on its way upstream, for the exchange's stall timer: a body
/// that the upstream stops reading is not polled, so its own idle timer cannot fire.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ms: std::sync::atomic::AtomicU64,
    abandoned: AtomicBool,
    /// The body's last poll found its source without a frame: it waits on the client (the
    /// upstream is reading). Otherwise it waits to be polled: on the upstream.
    on_client: AtomicBool,
}

impl Progress {
    /// Progress starting now.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            on_client: AtomicBool::new(false),
        })
    }

    /// Whether the body has not moved for `idle` because its client sent nothing (SPEC §9
    /// "slow client": 408 `client_timeout`), as opposed to an upstream that stopped reading
    /// it (504 `upstream_timeout`).
    pub fn client_stalled(&self, idle: Duration) -> bool {
        self.on_client.load(Ordering::Acquire) && Instant::now() >= self.last() + idle
    }

    /// The gate gave up on the exchange: the body fails at its next poll instead of going on
    /// or ending, so the upstream never sees a clean end of a request the gate answered
    /// itself (hyper reports the client's stream reset with `NO_ERROR` after that answer as
    /// a clean end of the body).
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the body last moved.
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the body has not moved for `idle`.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            let due = self.last() + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// The request body's [`Progress`] and the idle time it is held to, carried on the upstream's
/// response (an extension) for what answers a call cut after that response started
/// (`super::grpc::TailBody`): a client that stopped sending is told so.
#[derive(Debug, Clone)]
pub struct RequestProgress {
    /// The request body's progress.
    pub progress: Arc<Progress>,
    /// `timeouts.idle_seconds`.
    pub idle: Duration,
}

impl RequestProgress {
    /// See [`Progress::client_stalled`].
    pub fn client_stalled(&self) -> bool {
        self.progress.client_stalled(self.idle)
    }
}

impl<B> MeteredBody<B> {
    /// Wraps `inner`; `cap` is the byte cap and a flag set when it is hit.
    pub fn new(
        inner: B,
        bytes: IntCounter,
        idle: Duration,
        deadline: Option<Instant>,
        cap: Option<(u64, Arc<AtomicBool>)>,
    ) -> Self {
        let first = next_wake(idle, deadline);
        let (remaining, too_large) = match cap {
            Some((n, flag)) => (n, Some(flag)),
            None => (u64::MAX, None),
        };
        MeteredBody {
            inner,
            bytes,
            idle,
            timer: Box::pin(tokio::time::sleep_until(first)),
            deadline,
            remaining,
            too_large,
            done: false,
            ended: None,
            progress: None,
            peer: None,
        }
    }

    /// Records every frame in `progress` (without the end signal of [`Self::signal_end`]).
    pub fn track(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The idle time runs out only when `peer` (the other direction's progress) has not moved
    /// for as long either.
    pub fn idle_with(mut self, peer: Arc<Progress>) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Signals `tx` when the body has been read to its end (or is dropped, or fails): the
    /// upstream's response-head timer starts then, not while the body still flows.
    /// Every frame is recorded in `progress`.
    pub fn signal_end(
        mut self,
        tx: tokio::sync::oneshot::Sender<()>,
        progress: Arc<Progress>,
    ) -> Self {
        self.ended = Some(tx);
        self.progress = Some(progress);
        self
    }

    fn end(&mut self) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(());
        }
    }
}

fn next_wake(idle: Duration, deadline: Option<Instant>) -> Instant {
    let idle_at = Instant::now() + idle;
    match deadline {
        Some(d) if d < idle_at => d,
        _ => idle_at,
    }
}

impl<B> Body for MeteredBody<B>
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
        if this.done {
            return Poll::Ready(None);
        }
        let abandoned = |this: &Self| this.progress.as_ref().is_some_and(|p| p.is_abandoned());
        if abandoned(this) {
            this.done = true;
            this.end();
            return Poll::Ready(Some(Err(Box::new(BodyError::Abandoned))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.done = true;
                        if let Some(flag) = &this.too_large {
                            flag.store(true, Ordering::Release);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
                    }
                    this.remaining -= n;
                    this.bytes.inc_by(n);
                    let wake = next_wake(this.idle, this.deadline);
                    this.timer.as_mut().reset(wake);
                    if let Some(p) = &this.progress {
                        p.touch();
                    }
                }
                if let Some(p) = &this.progress {
                    p.on_client.store(false, Ordering::Release);
                }
                if this.inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.end();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.end();
                if abandoned(this) {
                    return Poll::Ready(Some(Err(Box::new(BodyError::Abandoned))));
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(p) = &this.progress {
                    p.on_client.store(true, Ordering::Release);
                }
                loop {
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    let past_deadline = this.deadline.is_some_and(|d| now >= d);
                    // The other direction moved within the idle time: not idle yet.
                    let peer_due = this.peer.as_ref().map(|p| p.last() + this.idle);
                    if let Some(due) = peer_due.filter(|d| !past_deadline && *d > now) {
                        let due = this.deadline.map_or(due, |d| d.min(due));
                        this.timer.as_mut().reset(due);
                        continue;
                    }
                    this.done = true;
                    let e = if past_deadline {
                        BodyError::Deadline
                    } else {
                        BodyError::Idle
                    };
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn counts_and_passes_through() {
        let c = IntCounter::new("t", "t").unwrap();
        let b = MeteredBody::new(
            Full::new(Bytes::from_static(b"hello")),
            c.clone(),
            Duration::from_secs(5),
            None,
            None,
        );
        let out = b.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(c.get(), 5);
    }

    #[tokio::test]
    async fn caps_the_size() {
        let c = IntCounter::new("t", "t").unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let b = MeteredBody::new(
            Full::new(Bytes::from_static(b"hello")),
            c,
            Duration::from_secs(5),
            None,
            Some((4, flag.clone())),
        );
        assert!(b.collect().await.is_err());
        assert!(flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn signals_the_end_of_the_body() {
        let c = IntCounter::new("t", "t").unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let mut b = MeteredBody::new(
            Full::new(Bytes::from_static(b"hello")),
            c,
            Duration::from_secs(5),
            None,
            None,
        )
        .signal_end(tx, Progress::new());
        assert!(rx.try_recv().is_err(), "not before the body is read");
        let _ = b.frame().await.unwrap().unwrap();
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_idle_only_when_its_peer_is_too() {
        let c = IntCounter::new("t", "t").unwrap();
        let never = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::convert::Infallible>,
        >());
        let peer = Progress::new();
        let mut b =
            MeteredBody::new(never, c, Duration::from_secs(2), None, None).idle_with(peer.clone());
        let start = Instant::now();
        // The peer moves every second for five seconds: the body waits on.
        let mover = {
            let peer = peer.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    peer.touch();
                }
            })
        };
        let err = b.frame().await.unwrap().err().unwrap();
        assert!(err.to_string().contains("idle"));
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
        mover.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_body_fails() {
        let c = IntCounter::new("t", "t").unwrap();
        let never = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::convert::Infallible>,
        >());
        let b = MeteredBody::new(never, c, Duration::from_secs(1), None, None);
        let err = b.collect().await.err().unwrap();
        assert!(err.to_string().contains("idle"));
    }
}
