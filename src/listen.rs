//! The lifecycle of accepted connections, shared by the proxy and the admin listener (SPEC §9):
//! - a connection limit: at most `max` connections are open at once; beyond it the listener
//!   stops accepting (clients wait in the kernel's backlog) until one closes;
//! - accept backoff: when accepting fails for lack of descriptors or memory (EMFILE, ENFILE,
//!   ENOBUFS, ENOMEM) the listener pauses and retries, 10 ms doubling to 1 s, and logs at most
//!   one line per second (with the count of failures it held back); open connections go on;
//! - a header deadline from accept: a connection that has not delivered a complete request head
//!   within `client_header` of being accepted is closed, whatever it is stuck in (nothing sent,
//!   protocol detection, half an h2 preface, half a head). An HTTP/1.1 connection that starts a
//!   new head after being idle gets the same deadline again; an intercepted `CONNECT` re-arms it
//!   for its TLS handshake and first inner request ([`Activity::upgraded`]);
//! - an idle deadline: a connection with no request in flight for `idle` is closed (counted from
//!   the end of its last response, so h2 PINGs do not keep it open); an upgraded connection (a
//!   tunnel) is closed when no byte has moved in either direction for `idle`.
//!
//! The deadlines live in the connection's IO ([`GuardedIo`]): its reads fail with `TimedOut`
//! when one passes, which ends the HTTP connection, a tunnel's copy, or an intercepted session
//! alike. The IO also holds the connection's slot of the limit, so an upgraded tunnel keeps it.

use crate::respond::{BoxError, GateBody};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// From accept (or the start of a new head) to a complete request head.
    pub client_header: Duration,
    /// No request in flight (or, on a tunnel, no byte moving) for this long closes the connection.
    pub idle: Duration,
}

/// Accepts connections with the connection limit and the accept backoff.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: Limits,
    log: LogLimiter,
    name: &'static str,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Acceptor {
    /// An acceptor on `listener`; `name` names the listener in logs.
    pub fn new(listener: TcpListener, limits: Limits, name: &'static str) -> Self {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            log: LogLimiter::new(Duration::from_secs(1)),
            name,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections.max(1) - self.slots.available_permits()
    }

    /// The next connection, once a slot is free; accept errors are retried (with backoff when
    /// the process is out of descriptors or memory), never returned. Cancel-safe.
    pub async fn accept(&self) -> (GuardedIo, SocketAddr) {
        loop {
            let a = self.accept_detached().await;
            let peer = a.peer;
            // Registering a socket again fails only when it is already unusable: then it is
            // dropped and the next connection accepted.
            if let Ok(io) = a.into_io() {
                return (io, peer);
            }
        }
    }

    /// Like [`Acceptor::accept`], but the connection is not yet bound to a runtime: it is
    /// handed to a worker ([`crate::workers`]), which calls [`Accepted::into_io`] so that its
    /// socket and deadline timer belong to the worker's reactor. Cancel-safe.
    pub async fn accept_detached(&self) -> Accepted {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return std::future::pending().await;
        };
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match stream.into_std() {
                        Ok(stream) => {
                            return Accepted {
                                stream,
                                peer,
                                limits: self.limits,
                                slot,
                            }
                        }
                        Err(e) => {
                            tracing::debug!(listener = self.name, error = %e, "accepted socket could not be detached");
                        }
                    }
                }
                Err(e) => {
                    let exhausted = is_exhaustion(&e);
                    if let Some(suppressed) = self.log.admit() {
                        tracing::warn!(listener = self.name, error = %e, suppressed, open = self.open(), "accept failed; retrying");
                    }
                    if exhausted {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    } else {
                        tokio::time::sleep(BACKOFF_FIRST).await;
                    }
                }
            }
        }
    }
}

/// An accepted connection not yet bound to a runtime (see [`Acceptor::accept_detached`]); it
/// holds its slot of the connection limit.
pub struct Accepted {
    stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    limits: Limits,
    slot: OwnedSemaphorePermit,
}

impl Accepted {
    /// The connection's IO, registered with the current runtime's reactor; its header
    /// deadline starts now (microseconds after the accept).
    ///
    /// # Errors
    /// When the socket cannot be registered (it is closed).
    pub fn into_io(self) -> io::Result<GuardedIo> {
        let stream = TcpStream::from_std(self.stream)?;
        Ok(GuardedIo::new(
            stream,
            Activity::new(self.limits),
            self.slot,
        ))
    }
}

/// Whether an accept error means the process or system ran out of descriptors or memory.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// What a connection is doing, for its deadlines.
#[derive(Debug)]
struct State {
    limits: Limits,
    /// A complete request head is due by then.
    head_deadline: Option<Instant>,
    /// Requests whose response has not ended.
    in_flight: u32,
    /// When the last response ended (`None` before the first request).
    idle_since: Option<Instant>,
    /// Upgraded (a tunnel or an intercepted CONNECT): idle is measured on bytes.
    upgraded: bool,
    /// The last byte read or written.
    last_io: Instant,
    /// The first bytes were the h2 preface (`None`: nothing read yet).
    h2: Option<bool>,
    /// The task waiting in a read, woken when the deadlines change.
    reader: Option<Waker>,
}

impl State {
    fn deadline(&self) -> Option<Instant> {
        let idle = if self.upgraded {
            Some(self.last_io + self.limits.idle)
        } else if self.in_flight > 0 {
            None
        } else {
            self.idle_since.map(|t| t + self.limits.idle)
        };
        match (self.head_deadline, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The deadlines of one connection, shared by its IO and its request handlers (found in each
/// request's extensions).
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
}

impl Activity {
    fn new(limits: Limits) -> Arc<Activity> {
        let now = Instant::now();
        Arc::new(Activity {
            state: Mutex::new(State {
                limits,
                head_deadline: Some(now + limits.client_header),
                in_flight: 0,
                idle_since: None,
                upgraded: false,
                last_io: now,
                h2: None,
                reader: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(s: &mut State) {
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// A request head arrived: the header deadline is met; the request is in flight until the
    /// returned guard is dropped (attach it to the response with [`InFlight::attach`]).
    pub fn request(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.head_deadline = None;
        s.in_flight += 1;
        drop(s);
        InFlight {
            activity: self.clone(),
        }
    }

    /// The connection was upgraded (a tunnel): from now on it is idle when no byte moves.
    /// `awaiting_head`: an inner request head is due within `client_header` (an intercepted
    /// `CONNECT`, whose TLS handshake and first inner request must come in time).
    pub fn upgraded(&self, awaiting_head: bool) {
        let mut s = self.lock();
        s.upgraded = true;
        let now = Instant::now();
        s.last_io = now;
        if awaiting_head {
            s.head_deadline = Some(now + s.limits.client_header);
        }
        Self::changed(&mut s);
    }

    /// The protocol a TLS connection agreed on by ALPN (the first bytes read were the TLS
    /// handshake, not a request): h2 connections are not given a new header deadline when
    /// bytes arrive between requests.
    pub fn set_h2(&self, h2: bool) {
        self.lock().h2 = Some(h2);
    }

    /// An inner request head arrived on an upgraded connection.
    pub fn inner_request(&self) {
        self.lock().head_deadline = None;
    }

    fn finished(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Some(Instant::now());
            Self::changed(&mut s);
        }
    }

    fn on_read(&self, data: &[u8]) {
        let mut s = self.lock();
        let now = Instant::now();
        s.last_io = now;
        if s.h2.is_none() {
            s.h2 = Some(data.starts_with(b"PRI "));
        }
        // An HTTP/1.1 client starting a new head after an idle spell gets the header deadline.
        if !s.upgraded && s.in_flight == 0 && s.head_deadline.is_none() && s.h2 == Some(false) {
            s.head_deadline = Some(now + s.limits.client_header);
        }
    }

    fn on_write(&self) {
        self.lock().last_io = Instant::now();
    }

    /// The current deadline, registering `waker` to be woken when it changes.
    fn deadline(&self, waker: &Waker) -> Option<Instant> {
        let mut s = self.lock();
        match &mut s.reader {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        s.deadline()
    }
}

/// One request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.finished();
    }
}

impl InFlight {
    /// Keeps the request in flight until `resp`'s body has been sent (or dropped).
    pub fn attach(self, resp: Response<GateBody>) -> Response<GateBody> {
        resp.map(|body| {
            GuardedBody {
                inner: body,
                _flight: self,
            }
            .boxed_unsync()
        })
    }
}

struct GuardedBody {
    inner: GateBody,
    _flight: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An accepted connection's IO: reads fail with `TimedOut` once a deadline of its
/// [`Activity`] passes; holds the connection's slot of the limit until dropped.
pub struct GuardedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl GuardedIo {
    fn new(inner: TcpStream, activity: Arc<Activity>, slot: OwnedSemaphorePermit) -> Self {
        let first = activity.lock().deadline().unwrap_or_else(Instant::now);
        GuardedIo {
            inner,
            activity,
            timer: Box::pin(tokio::time::sleep_until(first)),
            _slot: slot,
        }
    }

    /// The connection's deadlines (for its request handlers).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// The gate's address the client connected to.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// What the connection's first bytes say it speaks, peeked: they stay unread, so the
    /// server chosen by them reads the client's first segment whole (a server that reads them
    /// to decide and hands them back sees a short first read and, in hyper's HTTP/1, doubles
    /// its read buffer on every connection). Waits for the first bytes under the connection's
    /// deadlines: `TimedOut` when one passes.
    ///
    /// # Errors
    /// The socket's error, or `TimedOut`.
    pub async fn first_bytes(&mut self) -> io::Result<FirstBytes> {
        let mut buf = [0u8; H2_PREFACE.len()];
        let n = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            match self.inner.poll_peek(cx, &mut rb) {
                Poll::Pending => self.poll_deadline(cx).map(Err),
                ready => ready,
            }
        })
        .await?;
        Ok(FirstBytes::of(buf.get(..n).unwrap_or_default()))
    }

    /// `Pending` until the connection's current deadline passes (the waker registered for it
    /// and for a change of the deadlines), then the `TimedOut` error.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.activity.deadline(cx.waker()) else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection deadline passed (client_header_seconds or idle_seconds)",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The client preface that opens an h2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain connection's first bytes say it speaks ([`GuardedIo::first_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// Not the h2 preface: HTTP/1.x (or bytes an HTTP/1 server refuses).
    Http1,
    /// The whole h2 preface.
    H2,
    /// Too few bytes to tell (the start of the preface, or the end of the stream): a server
    /// that reads until it can tell decides.
    Unsure,
}

impl FirstBytes {
    /// What `bytes`, the first of a connection, say.
    pub fn of(bytes: &[u8]) -> FirstBytes {
        if !H2_PREFACE.starts_with(bytes) {
            FirstBytes::Http1
        } else if bytes.len() == H2_PREFACE.len() {
            FirstBytes::H2
        } else {
            FirstBytes::Unsure
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = &buf.filled()[before..];
                if !filled.is_empty() {
                    this.activity.on_read(filled);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Lets at most one log line through per `every`, counting the ones it held back.
#[derive(Debug)]
pub struct LogLimiter {
    origin: Instant,
    every_ms: u64,
    /// Milliseconds since `origin` (plus `every_ms`) of the last admitted line; 0: none yet.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A limiter admitting one line per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            origin: Instant::now(),
            every_ms: every.as_millis().try_into().unwrap_or(u64::MAX).max(1),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last admitted one)` when a line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX - self.every_ms)
            + self.every_ms;
        let last = self.last.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < self.every_ms
            || self
                .last
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// The client connections of one listener, and what they start (the sessions inside
/// intercepted `CONNECT`s): one graceful drain for all of them. Each is watched while it is
/// served ([`Watcher::watch`]); the drain tells every watched one to finish its in-flight
/// requests and close, and waits until all have.
#[derive(Debug)]
pub struct Connections {
    /// `true` once the drain has begun; one receiver per watched connection.
    draining: tokio::sync::watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            draining: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Connections {
    /// A watcher for one more connection; `None` once the drain has begun.
    pub fn watcher(&self) -> Option<Watcher> {
        // Subscribed before the check: a drain that begins in between either sees this
        // receiver and waits for it, or set the value this check reads.
        let draining = self.draining.subscribe();
        if *draining.borrow() {
            return None;
        }
        Some(Watcher { draining })
    }

    /// Connections being watched now.
    pub fn count(&self) -> usize {
        self.draining.receiver_count()
    }

    /// Admits no more connections, tells every watched one to finish its in-flight requests
    /// and close, and waits until all have.
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        self.draining.closed().await;
    }
}

/// One connection's part in its listener's drain (from [`Connections::watcher`]); the
/// connection counts as open until it is dropped.
#[derive(Debug)]
pub struct Watcher {
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Watcher {
    /// Resolves once the drain has begun (at once if it has).
    pub async fn draining(&mut self) {
        // An error means the listener's `Connections` is gone: a drain too.
        let _ = self.draining.wait_for(|d| *d).await;
    }

    /// Runs `conn` (an HTTP server connection) to its end; once the drain begins,
    /// `graceful_shutdown` is called on it (finish the requests in flight, then close) and it
    /// runs on until it ends. The connection is held in place in the returned future (a
    /// struct, not an `async fn`, whose argument and pinned copy would each take the
    /// connection's size in the task).
    pub fn watch<C: Future, S: FnOnce(Pin<&mut C>)>(
        self,
        conn: C,
        graceful_shutdown: S,
    ) -> Watched<C, impl Future<Output = tokio::sync::watch::Receiver<bool>>, S> {
        let mut rx = self.draining;
        Watched {
            conn,
            draining: async move {
                // An error means the listener's `Connections` is gone: a drain too.
                let _ = rx.wait_for(|d| *d).await.map(drop);
                rx
            },
            shutdown: Some(graceful_shutdown),
            guard: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection watched by its listener's drain ([`Watcher::watch`]).
    pub struct Watched<C, D: Future, S> {
        #[pin]
        conn: C,
        #[pin]
        draining: D,
        // Called once, when the drain begins.
        shutdown: Option<S>,
        // The watcher's receiver once the drain began: held until the connection ends, so the
        // drain waits for it.
        guard: Option<D::Output>,
    }
}

impl<C: Future, D: Future, S: FnOnce(Pin<&mut C>)> Future for Watched<C, D, S> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.guard.is_none() {
            if let Poll::Ready(rx) = this.draining.poll(cx) {
                *this.guard = Some(rx);
                if let Some(shutdown) = this.shutdown.take() {
                    shutdown(this.conn.as_mut());
                }
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            client_header: Duration::from_secs(2),
            idle: Duration::from_secs(10),
        }
    }

    async fn pair(limits: Limits) -> (Acceptor, TcpStream, GuardedIo) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acc = Acceptor::new(l, limits, "test");
        let client = TcpStream::connect(addr).await.unwrap();
        let (io, _) = acc.accept().await;
        (acc, client, io)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_sent_is_closed_at_the_header_deadline() {
        let (_acc, _client, mut io) = pair(limits()).await;
        let t0 = Instant::now();
        let mut b = [0u8; 8];
        let e = io.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() - t0 <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn half_an_h2_preface_is_closed_at_the_header_deadline() {
        let (_acc, mut client, mut io) = pair(limits()).await;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut b = [0u8; 64];
        let n = io.read(&mut b).await.unwrap();
        assert_eq!(n, 16);
        let e = io.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn first_bytes_tell_http1_from_the_h2_preface() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(FirstBytes::of(preface), FirstBytes::H2);
        for n in 0..preface.len() {
            assert_eq!(FirstBytes::of(&preface[..n]), FirstBytes::Unsure, "{n}");
        }
        for http1 in [
            &b"POST http://a.test/ HTTP/1.1"[..],
            b"G",
            b"PRI * HTTP/1.1",
            b"\r\n",
        ] {
            assert_eq!(FirstBytes::of(http1), FirstBytes::Http1);
        }
    }

    #[tokio::test]
    async fn first_bytes_are_peeked_and_left_for_the_server() {
        let cases: [(&[u8], FirstBytes); 4] = [
            (
                b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
                FirstBytes::Http1,
            ),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04",
                FirstBytes::H2,
            ),
            (b"PRI * HTTP/2.0\r\n", FirstBytes::Unsure),
            (b"P", FirstBytes::Unsure),
        ];
        for (sent, want) in cases {
            let (_acc, mut client, mut io) = pair(limits()).await;
            client.write_all(sent).await.unwrap();
            assert_eq!(io.first_bytes().await.unwrap(), want, "{sent:?}");
            let mut got = vec![0u8; sent.len()];
            io.read_exact(&mut got).await.unwrap();
            assert_eq!(got, sent, "every byte is still there to read");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_bytes_never_sent_end_at_the_header_deadline() {
        let (_acc, _client, mut io) = pair(limits()).await;
        let t0 = Instant::now();
        let e = io.first_bytes().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() - t0 <= Duration::from_secs(2));
    }

    /// A watched connection is told to shut down when the drain begins, and the drain waits
    /// for it to end (it is still waiting while the connection, told, has not ended); no
    /// watcher is handed out once draining.
    #[tokio::test]
    async fn the_drain_shuts_watched_connections_down_and_waits_for_them() {
        let conns = Arc::new(Connections::default());
        let told = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (was_told_tx, was_told) = tokio::sync::oneshot::channel::<()>();
        let watcher = conns.watcher().unwrap();
        assert_eq!(conns.count(), 1);
        let conn = {
            let (told, release) = (told.clone(), release.clone());
            async move {
                told.notified().await;
                let _ = was_told_tx.send(());
                release.notified().await;
                7
            }
        };
        let served = tokio::spawn(watcher.watch(conn, move |_| told.notify_one()));
        let drain = tokio::spawn({
            let conns = conns.clone();
            async move { conns.drain().await }
        });
        was_told.await.unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !drain.is_finished(),
            "the drain ended before the connection"
        );
        assert!(conns.watcher().is_none());
        release.notify_one();
        drain.await.unwrap();
        assert_eq!(served.await.unwrap(), 7);
        assert_eq!(conns.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_have_no_deadline_then_idle_counts() {
        let (_acc, _client, mut io) = pair(limits()).await;
        let act = io.activity();
        let flight = act.request();
        let mut b = [0u8; 8];
        assert!(
            tokio::time::timeout(Duration::from_secs(60), io.read(&mut b))
                .await
                .is_err(),
            "no deadline while a request is in flight"
        );
        drop(flight);
        let t0 = Instant::now();
        let e = io.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(Instant::now() - t0, Duration::from_secs(10), "idle_seconds");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds_accepts_until_a_connection_closes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acc = Arc::new(Acceptor::new(
            l,
            Limits {
                max_connections: 1,
                ..limits()
            },
            "test",
        ));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (io1, _) = acc.accept().await;
        assert_eq!(acc.open(), 1);
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let a2 = acc.clone();
        let second = tokio::spawn(async move { a2.accept().await.1 });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(io1);
        second.await.unwrap();
    }

    #[test]
    fn the_log_limiter_admits_one_line_per_period() {
        let l = LogLimiter::new(Duration::from_secs(1));
        let t0 = l.origin;
        assert_eq!(l.admit_at(t0), Some(0));
        assert_eq!(l.admit_at(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.admit_at(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.admit_at(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(l.admit_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(l.admit_at(t0 + Duration::from_secs(5)), Some(1));
    }
}
