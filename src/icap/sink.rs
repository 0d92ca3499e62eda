//! The ICAP client as the sink of the gate's request path ([`crate::proxy::sink::Sink`]): what
//! the gate releases of an allowed request goes back to the ICAP client (Squid) in a
//! `200 OK` that carries the request, record by record as the gate releases it, and the ICAP
//! client forwards it. A body refused part-way is cut off mid-chunk and the connection closed,
//! so the ICAP client never completes the request upstream. A request judged whole gets
//! `204 No Content` when the client allows it.

use super::body::{BodyState, Writer};
use super::response;
use crate::proxy::sink::Forbidden;
use crate::proxy::sink::{SendCtx, Sink};
use crate::respond::{self, Failure, GateBody};
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How far the answer to the ICAP client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing written: the connection answers with the request path's response.
    NotStarted = 0,
    /// A complete answer (`204`, or `200` with the whole request) was written.
    Complete = 1,
    /// The answer was cut off (a refused record, a broken client): the connection must close.
    Aborted = 2,
}

/// The sink of one REQMOD request.
pub struct IcapSink {
    out: Writer,
    http_head: Bytes,
    had_body: bool,
    allow_204: bool,
    body: Arc<BodyState>,
    istag: String,
    idle: Duration,
    max_body: u64,
    answer: AtomicU8,
}

/// What the ICAP client said about the request it encapsulated.
#[derive(Debug, Clone)]
pub struct Encapsulated {
    /// The raw HTTP request head, as received.
    pub http_head: Bytes,
    /// Whether the request has a body.
    pub had_body: bool,
    /// Whether the client accepts `204 No Content` outside a preview (`Allow: 204`).
    pub allow_204: bool,
}

impl IcapSink {
    /// A sink answering on `out` for the encapsulated request `req`.
    pub fn new(
        out: Writer,
        req: Encapsulated,
        body: Arc<BodyState>,
        istag: String,
        idle: Duration,
        max_body: u64,
    ) -> Self {
        let Encapsulated {
            http_head,
            had_body,
            allow_204,
        } = req;
        IcapSink {
            out,
            http_head,
            had_body,
            allow_204,
            body,
            istag,
            idle,
            max_body,
            answer: AtomicU8::new(Answer::NotStarted as u8),
        }
    }

    /// How far the answer got.
    pub fn answer(&self) -> Answer {
        match self.answer.load(Ordering::Acquire) {
            0 => Answer::NotStarted,
            1 => Answer::Complete,
            _ => Answer::Aborted,
        }
    }

    fn set(&self, a: Answer) {
        self.answer.store(a as u8, Ordering::Release);
    }

    /// Writes `bytes` as (part of) the final answer.
    async fn write(&self, bytes: &[u8]) -> bool {
        let mut o = self.out.lock().await;
        o.responded = true;
        matches!(
            tokio::time::timeout(self.idle, o.wr.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// Cuts the answer off: the ICAP client sees a broken body and fails the request.
    async fn abort(&self) {
        self.set(Answer::Aborted);
        let mut o = self.out.lock().await;
        o.responded = true;
        let _ = tokio::time::timeout(self.idle, o.wr.shutdown()).await;
    }

    /// Lets a request through that the gate does not inspect (domestic, a declared tunnel):
    /// `204` when allowed without reading the body, else the request echoed as it streams.
    pub async fn pass(&self, body: GateBody, bytes_up: &IntCounter) -> Response<GateBody> {
        let may_204 = !self.had_body || self.body.whole_in_preview.load(Ordering::Acquire);
        self.relay(body, may_204, bytes_up).await
    }

    /// Answers with `body`: `204` when `may_204` and the client accepts it, else `200` with the
    /// request head and the body's frames as chunks, as they come.
    async fn relay(
        &self,
        mut body: GateBody,
        may_204: bool,
        bytes_up: &IntCounter,
    ) -> Response<GateBody> {
        let no_body_wanted =
            self.allow_204 || self.body.whole_in_preview.load(Ordering::Acquire) || !self.had_body;
        if may_204 && no_body_wanted {
            drop(body);
            let ok = self.write(&response::no_content(&self.istag)).await;
            self.set(if ok {
                Answer::Complete
            } else {
                Answer::Aborted
            });
            return placeholder();
        }
        if !self.had_body {
            let ok = self
                .write(&response::request_head(&self.istag, &self.http_head, false))
                .await;
            self.set(if ok {
                Answer::Complete
            } else {
                Answer::Aborted
            });
            return placeholder();
        }
        let mut started = false;
        let mut sent = 0u64;
        loop {
            match body.frame().await {
                None => {
                    let mut msg = Vec::new();
                    if !started {
                        msg.extend_from_slice(&response::request_head(
                            &self.istag,
                            &self.http_head,
                            true,
                        ));
                    }
                    msg.extend_from_slice(response::LAST_CHUNK);
                    if self.write(&msg).await {
                        self.set(Answer::Complete);
                    } else {
                        self.abort().await;
                    }
                    return placeholder();
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "ICAP request body failed");
                    if started {
                        self.abort().await;
                    }
                    return respond::failure(
                        Failure::BadRequest("the request body could not be read"),
                        "",
                    );
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    if sent > self.max_body {
                        if started {
                            self.abort().await;
                            return placeholder();
                        }
                        return respond::failure(Failure::TooLarge, "");
                    }
                    let mut msg = Vec::with_capacity(data.len() + 256);
                    if !started {
                        msg.extend_from_slice(&response::request_head(
                            &self.istag,
                            &self.http_head,
                            true,
                        ));
                        started = true;
                    }
                    msg.extend_from_slice(&response::chunk(&data));
                    if !self.write(&msg).await {
                        self.abort().await;
                        return placeholder();
                    }
                    bytes_up.inc_by(data.len() as u64);
                }
            }
        }
    }
}

/// The response the request path sees when the answer went to the ICAP client already.
fn placeholder() -> Response<GateBody> {
    Response::new(respond::full(Bytes::new()))
}

impl Sink for IcapSink {
    fn origin(&self) -> &'static str {
        "icap"
    }

    async fn send(
        &self,
        cx: SendCtx<'_>,
        _parts: http::request::Parts,
        body: GateBody,
    ) -> Result<Response<GateBody>, Forbidden> {
        // Judged whole (no gated stream): all of it was reserved before this point. The ICAP
        // client dials the upstream itself: the gate's target rules are its own (SPEC §2).
        let may_204 = cx.gated.is_none();
        Ok(self
            .relay(
                body,
                may_204,
                &cx.snap.routes[cx.dest].bytes(&cx.snap.clients, cx.identity)[0],
            )
            .await)
    }
}
