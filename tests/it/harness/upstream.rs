//! Loopback upstream servers (HTTP/1.1 and h2, plain or TLS) that record exactly what they
//! received: method, target, headers, body bytes, and whether the body ended cleanly.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body (empty in sink mode).
    pub body: Vec<u8>,
    pub body_len: u64,
    /// The body ended with a clean end of stream (not an error or reset).
    pub complete: bool,
}

#[derive(Clone)]
struct Behavior {
    delay: Duration,
    status: u16,
    sink: bool,
    response: Bytes,
}

pub struct UpstreamBuilder {
    b: Behavior,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl UpstreamBuilder {
    /// Wait this long before answering (after reading the body).
    pub fn delay(mut self, d: Duration) -> Self {
        self.b.delay = d;
        self
    }
    pub fn status(mut self, s: u16) -> Self {
        self.b.status = s;
        self
    }
    /// Count body bytes without keeping them.
    pub fn sink(mut self) -> Self {
        self.b.sink = true;
        self
    }
    pub fn response(mut self, body: &'static str) -> Self {
        self.b.response = Bytes::from_static(body.as_bytes());
        self
    }
    pub fn tls(mut self, cfg: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(cfg);
        self
    }
    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (rec, b, tls) = (
            Recorder {
                received: received.clone(),
                in_flight: in_flight.clone(),
            },
            self.b,
            self.tls,
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, b, tls) = (rec.clone(), b.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(rec.clone(), b.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            received,
            in_flight,
            task,
        }
    }
}

/// Where handlers record requests, and how many bodies are being read.
#[derive(Clone)]
struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<AtomicUsize>,
}

async fn handle(
    rec: Recorder,
    b: Behavior,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    rec.in_flight.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut r = Received {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body: Vec::new(),
        body_len: 0,
        complete: false,
    };
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    r.body_len += d.len() as u64;
                    if !b.sink {
                        r.body.extend_from_slice(d);
                    }
                }
            }
            Some(Err(_)) => break,
            None => {
                r.complete = true;
                break;
            }
        }
    }
    rec.received.lock().unwrap().push(r);
    rec.in_flight.fetch_sub(1, Ordering::SeqCst);
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    let mut resp = Response::new(Full::new(b.response.clone()));
    *resp.status_mut() = http::StatusCode::from_u16(b.status).unwrap();
    resp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static("yes"));
    resp.headers_mut().insert(
        "connection",
        http::HeaderValue::from_static("keep-alive, x-hop"),
    );
    resp.headers_mut().insert(
        "x-hop",
        http::HeaderValue::from_static("must-not-reach-client"),
    );
    Ok(resp)
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder {
            b: Behavior {
                delay: Duration::ZERO,
                status: 200,
                sink: false,
                response: Bytes::from_static(b"upstream-ok"),
            },
            tls: None,
        }
    }
    pub async fn http() -> Upstream {
        Self::builder().start().await
    }
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    /// Requests whose body is still being read (not yet in [`Upstream::received`]).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
