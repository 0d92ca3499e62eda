//! Where the judged bytes of a request to a destination go: the seam between the gate's
//! request path ([`super::forward::serve_destination_with`]: inspection, policy, reservation,
//! audit, metrics) and the party that receives what the gate releases. The proxy listener's
//! sink is the upstream ([`Upstream`]); the ICAP listener's sink is the ICAP client
//! (`crate::icap`), which forwards the request itself.

use super::forward::Forbidden;
use super::gated::Shared;
use super::{Gate, Snapshot};
use crate::respond::GateBody;
use http::uri::{Authority, Scheme};
use http::Response;
use std::future::Future;

/// What a sink learns about the request it receives.
#[derive(Clone, Copy)]
pub struct SendCtx<'a> {
    /// The gate.
    pub gate: &'a Gate,
    /// The snapshot the request started with.
    pub snap: &'a Snapshot,
    /// The destination index (into `snap.config.destinations`).
    pub dest: usize,
    /// The request id.
    pub request_id: &'a str,
    /// The gated body's shared summary, when the body streams record by record (a refusal
    /// recorded there means the body failed on purpose).
    pub gated: Option<&'a Shared>,
}

/// The receiver of a judged request. The body releases only bytes whose records the gate has
/// durably reserved; a streamed body fails (an error frame) at the first refused record, and
/// the sink must then make sure the request never completes downstream.
pub trait Sink: Send + Sync {
    /// The audit record's `origin` (`proxy`, `icap`).
    fn origin(&self) -> &'static str;

    /// Sends the request; the answer is what the client of the gate's listener receives.
    ///
    /// # Errors
    /// [`Forbidden`] when the destination's host resolved only to addresses the target rules
    /// of SPEC §2 refuse (nothing was sent).
    fn send(
        &self,
        cx: SendCtx<'_>,
        parts: http::request::Parts,
        body: GateBody,
    ) -> impl Future<Output = Result<Response<GateBody>, Forbidden>> + Send;
}

/// The proxy listener's sink: the destination's upstream server.
pub struct Upstream {
    /// The scheme the client used (`https` inside an intercepted `CONNECT`).
    pub scheme: Scheme,
    /// The authority the request is for.
    pub authority: Authority,
}

impl Sink for Upstream {
    fn origin(&self) -> &'static str {
        "proxy"
    }

    async fn send(
        &self,
        cx: SendCtx<'_>,
        parts: http::request::Parts,
        body: GateBody,
    ) -> Result<Response<GateBody>, Forbidden> {
        let dest = &cx.snap.config.destinations[cx.dest];
        let scheme = if dest.upstream_https {
            Scheme::HTTPS
        } else {
            self.scheme.clone()
        };
        super::forward::forward(
            cx.gate,
            cx.snap,
            &cx.snap.routes[cx.dest],
            &dest.name,
            scheme,
            self.authority.clone(),
            parts,
            body,
            cx.request_id,
            cx.gated,
        )
        .await
    }
}
