//! The encapsulated request body as the gate's request path sees it: a task ([`pump`]) reads
//! the ICAP chunks (the preview, `100 Continue`, the rest) from the connection and hands them
//! through a small bounded channel to an [`IcapBody`], so the body streams with back-pressure
//! and memory stays bounded by a few frames, whatever the body's size.

use super::response;
use super::wire::{Chunk, ChunkReader, MAX_FRAME};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// The buffered read side of an ICAP connection.
pub type Reader = BufReader<OwnedReadHalf>;

/// The write side of an ICAP connection, shared by the pump (`100 Continue`) and the answer.
pub struct Out {
    /// The socket's write half.
    pub wr: OwnedWriteHalf,
    /// A final answer to the current request has started: no `100 Continue` after it.
    pub responded: bool,
}

/// [`Out`] behind a lock.
pub type Writer = Arc<tokio::sync::Mutex<Out>>;

/// Frames in flight between the pump and the body.
pub const CHANNEL_FRAMES: usize = 4;

/// The largest preview the gate holds before it answers `100 Continue` (it advertises less).
pub const MAX_PREVIEW: u64 = 64 * 1024;

/// What the pump and the body tell the connection.
#[derive(Debug, Default)]
pub struct BodyState {
    /// The whole body came within the preview (`ieof`): a `204` is allowed without `Allow: 204`.
    pub whole_in_preview: AtomicBool,
    /// The body's end was delivered: the pump has read the terminating chunk.
    pub ended: AtomicBool,
}

/// The request body handed to the gate's request path.
pub struct IcapBody {
    rx: Option<mpsc::Receiver<Result<Bytes, BodyError>>>,
}

impl IcapBody {
    /// A body fed by `rx`; `None` for a request without a body (`null-body`).
    pub fn new(rx: Option<mpsc::Receiver<Result<Bytes, BodyError>>>, state: &BodyState) -> Self {
        if rx.is_none() {
            state.ended.store(true, Ordering::Release);
        }
        IcapBody { rx }
    }
}

impl Body for IcapBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                self.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }
}

/// Why the body could not be read to its end.
#[derive(Debug, thiserror::Error)]
#[error("ICAP request body: {0}")]
pub struct BodyError(String);

fn fail(why: impl std::fmt::Display) -> BodyError {
    BodyError(why.to_string())
}

/// Reads the chunked body of one REQMOD request from `rd` into `tx`. A preview (`preview` =
/// the client's `Preview` size) is held until its end; unless it ended with `ieof` the pump
/// answers `100 Continue` (when no final answer has started) before passing it on, then reads
/// the rest. Returns the reader when the body was read to its end (the connection can carry
/// another request), `None` when it broke, timed out (`idle` between reads) or was abandoned.
pub async fn pump(
    mut rd: Reader,
    preview: Option<u64>,
    tx: mpsc::Sender<Result<Bytes, BodyError>>,
    out: Writer,
    state: Arc<BodyState>,
    idle: Duration,
) -> Option<Reader> {
    let mut chunks = ChunkReader::default();
    let mut in_preview = preview.is_some();
    let limit = preview.unwrap_or(0).min(MAX_PREVIEW);
    let mut held: Vec<Bytes> = Vec::new();
    let mut held_len = 0u64;
    loop {
        let step = match tokio::time::timeout(idle, chunks.next(&mut rd)).await {
            Err(_) => Err(fail("idle timeout")),
            Ok(r) => r.map_err(fail),
        };
        match step {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return None;
            }
            Ok(Chunk::Data(b)) if in_preview => {
                held_len += b.len() as u64;
                if held_len > limit {
                    let _ = tx.send(Err(fail("preview larger than announced"))).await;
                    return None;
                }
                held.push(b);
            }
            Ok(Chunk::Data(b)) => {
                debug_assert!(b.len() <= MAX_FRAME);
                if tx.send(Ok(b)).await.is_err() {
                    return None;
                }
            }
            Ok(Chunk::End { ieof }) if in_preview => {
                in_preview = false;
                chunks = ChunkReader::default();
                if ieof {
                    state.whole_in_preview.store(true, Ordering::Release);
                } else {
                    let mut o = out.lock().await;
                    if o.responded {
                        return None;
                    }
                    let sent = tokio::time::timeout(idle, o.wr.write_all(response::CONTINUE)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        let _ = tx.send(Err(fail("cannot send 100 Continue"))).await;
                        return None;
                    }
                }
                for b in held.drain(..) {
                    if tx.send(Ok(b)).await.is_err() {
                        return None;
                    }
                }
                if ieof {
                    state.ended.store(true, Ordering::Release);
                    return Some(rd);
                }
            }
            Ok(Chunk::End { .. }) => {
                state.ended.store(true, Ordering::Release);
                return Some(rd);
            }
        }
    }
}
