//! The gate's own pool of upstream connections, over hyper's connection-level client
//! (`hyper::client::conn::http1` and `http2`): one pool per destination and worker
//! ([`super::Route`]), so a request, its upstream connection and the pool it came from live on
//! one thread.
//!
//! What it keeps of hyper-util's legacy client, which it replaces on the request path:
//! HTTP/1 connections reused after their response has been read to the end (and only then);
//! one multiplexed HTTP/2 connection per upstream (ALPN `h2` from a TLS upstream, or prior
//! knowledge with `upstream_http2`); a request that a reused connection could not start (the
//! upstream closed it while idle) sent again on a new connection, as it never left; idle
//! connections closed after `timeouts.idle_seconds` (to one and a half times that) by a sweeper
//! task, which also keeps the pool's clock, so a request reads no clock here; at most
//! `max_idle` idle connections per upstream. What it leaves out: the legacy client's background task per
//! request that waits for the connection to become idle again, its `want` handshake, and its
//! key hashing on every checkout and return (about 8,000 instructions a request, see
//! BENCHMARKS.md "Instructions per request").

use super::upstream::{ConnectError, UpstreamConnector, UpstreamStream};
use crate::respond::GateBody;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// Why a request could not be exchanged with its upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (see [`ConnectError`]).
    #[error("connect: {0}")]
    Connect(#[source] ConnectError),
    /// The HTTP handshake on a new connection failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The exchange failed (the request body's own error, the upstream closing, a malformed
    /// response).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// Whether the connection timed out (504 rather than 502).
    pub fn is_connect_timeout(&self) -> bool {
        matches!(self, UpstreamError::Connect(ConnectError::Timeout))
    }

    /// Whether the target rules refused every address of the host (403 `forbidden_target`).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, UpstreamError::Connect(ConnectError::Forbidden))
    }
}

/// An upstream: its scheme and authority, as the request URL names them.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    authority: Authority,
}

/// An idle HTTP/1 connection.
struct Idle {
    tx: http1::SendRequest<GateBody>,
    /// The sweeper's tick when it went idle.
    since: u64,
}

/// The multiplexed HTTP/2 connection to one upstream.
struct Multiplexed {
    tx: http2::SendRequest<GateBody>,
    /// The sweeper's tick when a request last used it.
    used: u64,
}

/// A connection idle for this many of the sweeper's ticks (each half the idle timeout) is
/// closed: it has been idle for at least the idle timeout, and at most one and a half times it.
const IDLE_TICKS: u64 = 3;

#[derive(Default)]
struct State {
    h1: HashMap<Key, Vec<Idle>>,
    h2: HashMap<Key, Multiplexed>,
    /// The pool's clock: the sweeper's ticks, one every half idle timeout.
    tick: u64,
    /// Whether a sweeper task is running for this pool.
    sweeping: bool,
}

impl State {
    fn is_empty(&self) -> bool {
        self.h1.is_empty() && self.h2.is_empty()
    }

    /// Advances the clock one tick and drops every connection idle for [`IDLE_TICKS`], and
    /// the closed ones.
    fn tick(&mut self) {
        self.tick += 1;
        let now = self.tick;
        self.h1.retain(|_, list| {
            list.retain(|c| now - c.since < IDLE_TICKS && !c.tx.is_closed());
            !list.is_empty()
        });
        self.h2
            .retain(|_, c| now - c.used < IDLE_TICKS && !c.tx.is_closed());
    }
}

struct Shared {
    state: Mutex<State>,
    idle: Duration,
    max_idle: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the lists consistent (each change is one
        // push, pop or retain), so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a connection whose response has been read to the end back in the pool.
    fn give_back(self: &Arc<Self>, key: Key, tx: http1::SendRequest<GateBody>) {
        if tx.is_closed() {
            return;
        }
        let start_sweeper = {
            let mut state = self.lock();
            let since = state.tick;
            let list = state.h1.entry(key).or_default();
            if list.len() >= self.max_idle {
                return;
            }
            list.push(Idle { tx, since });
            !std::mem::replace(&mut state.sweeping, true)
        };
        if start_sweeper {
            self.sweep_later();
        }
    }

    /// Starts the task that keeps the pool's clock and closes connections idle for longer
    /// than `idle`; it ends when the pool is empty or dropped. (Outside a runtime nothing
    /// expires: unit tests only.)
    fn sweep_later(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.lock().sweeping = false;
            return;
        };
        let weak: Weak<Shared> = Arc::downgrade(self);
        let every = (self.idle / 2).max(Duration::from_millis(50));
        rt.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let mut state = shared.lock();
                state.tick();
                if state.is_empty() {
                    state.sweeping = false;
                    return;
                }
            }
        });
    }
}

/// A connection a request goes out on.
enum Conn {
    H1 {
        tx: http1::SendRequest<GateBody>,
        reused: bool,
    },
    H2 {
        tx: http2::SendRequest<GateBody>,
        reused: bool,
    },
}

/// The connections of one destination (or the domestic route) on one worker.
pub struct Pool {
    connector: UpstreamConnector,
    /// Plain-HTTP upstreams speak HTTP/2 with prior knowledge (`upstream_http2 = true`).
    h2c: bool,
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool connecting with `connector`; idle connections close after `idle`, and at most
    /// `max_idle` are kept per upstream. With `h2c`, plain-HTTP upstreams are spoken to in
    /// HTTP/2 with prior knowledge; TLS upstreams choose by ALPN either way.
    pub fn new(connector: UpstreamConnector, idle: Duration, max_idle: usize, h2c: bool) -> Self {
        Pool {
            connector,
            h2c,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                idle,
                max_idle: max_idle.max(1),
            }),
        }
    }

    /// Sends `req` (absolute URL) to its upstream on a pooled or new connection and returns
    /// the response head; the body is read from the returned response, and an HTTP/1
    /// connection goes back to the pool once it has been read to the end.
    ///
    /// # Errors
    /// [`UpstreamError`]: the connection, its handshake or the exchange failed.
    pub async fn request(
        &self,
        mut req: Request<GateBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let uri = req.uri().clone();
        let key = Key {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: uri
                .authority()
                .cloned()
                .ok_or(UpstreamError::Connect(ConnectError::NoHost))?,
        };
        loop {
            let conn = match self.checkout(&key) {
                Some(c) => c,
                None => self.connect(&key, &uri).await?,
            };
            match conn {
                Conn::H1 { mut tx, reused } => {
                    http1_form(&mut req, &uri);
                    let upgrade = req.method() == Method::CONNECT;
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let keep = !upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                            let back = keep.then(|| GiveBack {
                                tx,
                                key,
                                pool: Arc::downgrade(&self.shared),
                            });
                            return Ok(resp.map(|body| PooledBody::new(body, back)));
                        }
                        Err(mut e) => match e.take_message() {
                            // Never started on a connection the upstream had closed while
                            // idle: the request has not left, so it goes on a new one. (A
                            // close that arrives after the request was written is an error
                            // like any other: the body may not be sent twice. On a worker
                            // the close is seen at checkout instead, `is_closed`; this is
                            // for a pool used from several threads, as the ICAP service's.)
                            Some(r) if reused => req = r,
                            _ => return Err(UpstreamError::Http(e.into_error())),
                        },
                    }
                }
                Conn::H2 { mut tx, reused } => {
                    http2_form(&mut req, &uri);
                    match tx.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(|body| PooledBody::new(body, None))),
                        Err(mut e) => match e.take_message() {
                            Some(r) if reused => {
                                self.forget_h2(&key);
                                req = r;
                            }
                            _ => return Err(UpstreamError::Http(e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// An idle HTTP/1 connection ready for a request (the most recently used first), or the
    /// upstream's HTTP/2 connection; `None` when a new one is needed.
    fn checkout(&self, key: &Key) -> Option<Conn> {
        let mut state = self.shared.lock();
        let now = state.tick;
        if let Some(m) = state.h2.get_mut(key) {
            if !m.tx.is_closed() {
                m.used = now;
                return Some(Conn::H2 {
                    tx: m.tx.clone(),
                    reused: true,
                });
            }
            state.h2.remove(key);
        }
        let list = state.h1.get_mut(key)?;
        // Closed connections go (expired ones are the sweeper's); one not ready yet (its
        // connection task has not yet seen the end of the last response) stays for a later
        // request.
        list.retain(|c| !c.tx.is_closed());
        let found = list.iter().rposition(|c| c.tx.is_ready());
        let conn = found.map(|i| Conn::H1 {
            tx: list.swap_remove(i).tx,
            reused: true,
        });
        if list.is_empty() {
            state.h1.remove(key);
        }
        conn
    }

    /// A new connection to `key`'s upstream, its HTTP handshake done and its connection task
    /// spawned; an HTTP/2 one is kept in the pool for the requests that follow.
    async fn connect(&self, key: &Key, uri: &Uri) -> Result<Conn, UpstreamError> {
        let stream = self
            .connector
            .connect(uri)
            .await
            .map_err(UpstreamError::Connect)?;
        let h2 = match &stream {
            UpstreamStream::Plain(_) => self.h2c,
            UpstreamStream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        };
        let io = TokioIo::new(stream);
        if h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            let start_sweeper = {
                let mut state = self.shared.lock();
                let used = state.tick;
                let m = Multiplexed {
                    tx: tx.clone(),
                    used,
                };
                state.h2.insert(key.clone(), m);
                !std::mem::replace(&mut state.sweeping, true)
            };
            if start_sweeper {
                self.shared.sweep_later();
            }
            return Ok(Conn::H2 { tx, reused: false });
        }
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(Conn::H1 { tx, reused: false })
    }

    fn forget_h2(&self, key: &Key) {
        let mut state = self.shared.lock();
        if state.h2.get(key).is_some_and(|m| m.tx.is_closed()) {
            state.h2.remove(key);
        }
    }

    /// Idle HTTP/1 connections and HTTP/2 connections held (for tests and diagnostics).
    pub fn held(&self) -> usize {
        let state = self.shared.lock();
        state.h1.values().map(Vec::len).sum::<usize>() + state.h2.len()
    }
}

/// An HTTP/1 request goes in origin form (`/path?query`, authority form for `CONNECT`) with a
/// `Host` header naming the upstream, as hyper-util's client wrote it.
fn http1_form(req: &mut Request<GateBody>, uri: &Uri) {
    if !req.headers().contains_key(header::HOST) {
        if let Some(a) = uri.authority() {
            let default_port = match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            };
            let host = match a.port_u16() {
                Some(p) if p != default_port => HeaderValue::from_str(a.as_str()),
                _ => HeaderValue::from_str(a.host()),
            };
            if let Ok(v) = host {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    let form = if req.method() == Method::CONNECT {
        uri.authority().and_then(|a| Uri::try_from(a.as_str()).ok())
    } else {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::from_parts({
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(pq);
            p
        })
        .ok()
    };
    if let Some(u) = form {
        *req.uri_mut() = u;
    }
}

/// An HTTP/2 request keeps the absolute URL (its `:scheme` and `:authority`) and no `Host`.
fn http2_form(req: &mut Request<GateBody>, uri: &Uri) {
    req.headers_mut().remove(header::HOST);
    *req.uri_mut() = uri.clone();
}

/// What puts an HTTP/1 connection back once its response has been read.
struct GiveBack {
    tx: http1::SendRequest<GateBody>,
    key: Key,
    pool: Weak<Shared>,
}

impl GiveBack {
    fn give(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(self.key, self.tx);
        }
    }
}

/// An upstream response's body; reading it to the end returns its HTTP/1 connection to the
/// pool, dropping it earlier closes the connection (what remains of the response cannot be
/// skipped safely).
pub struct PooledBody {
    body: Incoming,
    back: Option<GiveBack>,
}

impl PooledBody {
    fn new(body: Incoming, back: Option<GiveBack>) -> Self {
        let mut b = PooledBody { body, back };
        b.check_end();
        b
    }

    fn check_end(&mut self) {
        if self.body.is_end_stream() {
            if let Some(back) = self.back.take() {
                back.give();
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) => this.check_end(),
            None => {
                if let Some(back) = this.back.take() {
                    back.give();
                }
            }
            // The connection failed: it is not given back.
            Some(Err(_)) => this.back = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.check_end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// How an upstream of these tests treats its connections.
    #[derive(Clone, Copy)]
    enum Upstream {
        /// Keep-alive: every request on a connection answered `200 ok`.
        KeepAlive,
        /// Answers the first request of a connection, then closes it without saying so.
        CloseAfterOne,
    }

    /// A loopback upstream; returns its address and how many connections it has accepted.
    async fn upstream(kind: Upstream) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Requests without a body: each ends at its blank line.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                            if matches!(kind, Upstream::CloseAfterOne) {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(addr: SocketAddr, idle: Duration, max_idle: usize) -> Pool {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = crate::tls::client::client_config(Arc::new(rustls::RootCertStore::empty()), true)
            .unwrap();
        let connector = UpstreamConnector::new(
            Some(&addr.to_string()),
            Arc::new(super::super::target::TargetRules::refusing_nothing()),
            tls,
            Duration::from_secs(5),
        );
        Pool::new(connector, idle, max_idle, false)
    }

    fn get() -> Request<GateBody> {
        let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
        Request::get("http://upstream.test/x").body(body).unwrap()
    }

    async fn read(resp: Response<PooledBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_carries_the_next_request() {
        let (addr, accepted) = upstream(Upstream::KeepAlive).await;
        let p = pool(addr, Duration::from_secs(60), 8);
        for _ in 0..5 {
            let r = p.request(get()).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(read(r).await, "ok");
            // The connection task sees the end of the response on its next turn.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(p.held(), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_closes_its_connection() {
        let (addr, accepted) = upstream(Upstream::KeepAlive).await;
        let p = pool(addr, Duration::from_secs(60), 8);
        let first = p.request(get()).await.unwrap();
        // Two connections at once: the first is still busy with its response.
        let second = p.request(get()).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(first.into_body());
        assert_eq!(read(second).await, "ok");
        tokio::task::yield_now().await;
        assert_eq!(p.held(), 1, "only the connection read to the end is kept");
        let r = p.request(get()).await.unwrap();
        assert_eq!(read(r).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_unseen() {
        let (addr, accepted) = upstream(Upstream::CloseAfterOne).await;
        let p = pool(addr, Duration::from_secs(60), 8);
        for i in 1..=4 {
            let r = p
                .request(get())
                .await
                .expect("a closed idle connection is not an error");
            assert_eq!(read(r).await, "ok");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, _) = upstream(Upstream::KeepAlive).await;
        let p = pool(addr, Duration::from_millis(200), 8);
        let r = p.request(get()).await.unwrap();
        assert_eq!(read(r).await, "ok");
        assert_eq!(p.held(), 1);
        let gone = async {
            while p.held() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the sweeper closes the idle connection");
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept_per_upstream() {
        let (addr, accepted) = upstream(Upstream::KeepAlive).await;
        let p = pool(addr, Duration::from_secs(60), 2);
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(p.request(get()).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        for r in open {
            assert_eq!(read(r).await, "ok");
        }
        assert_eq!(p.held(), 2);
    }

    #[tokio::test]
    async fn http1_requests_go_in_origin_form_with_the_upstream_as_host() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            // The socket stays open (returned) so the connection can go back to the pool.
            (String::from_utf8(buf).unwrap(), s)
        });
        let p = pool(addr, Duration::from_secs(60), 8);
        let body = Full::new(Bytes::from_static(b"{}"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let req = Request::post("http://upstream.test:8080/a/b?c=d")
            .body(body)
            .unwrap();
        let r = p.request(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let (head, _open) = seen.await.unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /a/b?c=d http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nhost: upstream.test:8080\r\n"), "{head}");
        // A 204 has no body: the connection is back at once.
        tokio::task::yield_now().await;
        assert_eq!(p.held(), 1);
    }
}
