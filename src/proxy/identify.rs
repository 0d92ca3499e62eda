//! The identification step (SPEC §5 step 0): whether a request's identity must be answered
//! 407 `client_unidentified`, and that answer — audit line and decision sample under the label
//! of where the request was going. How a client is recognised is `crate::identity`'s
//! business; this is where the request path acts on it, for the proxy listeners and the
//! requests inside an intercepted `CONNECT` alike.

use super::classify::{classify, target, Class, DOMESTIC_LABEL, UNKNOWN_LABEL};
use super::context::RequestCx;
use super::gated::Summary;
use super::outcome::refuse_audited;
use super::Snapshot;
use crate::config::UnidentifiedPolicy;
use crate::identity::Identity;
use crate::policy::{Decision, Reason, Refusal};
use crate::respond::GateBody;
use http::{Method, Request, Response};
use std::net::SocketAddr;

/// Whether an identity must be answered 407: unidentified under `gate.unidentified = "refuse"`.
pub(crate) fn must_refuse(snap: &Snapshot, id: Identity) -> bool {
    id.client.is_none() && snap.config.gate.unidentified == UnidentifiedPolicy::Refuse
}

/// The 407 `client_unidentified` answer, with its audit line and decision sample under the
/// label of where the request was going. Nothing of the credential is logged.
pub(crate) async fn unidentified<B>(
    cx: RequestCx<'_>,
    req: &Request<B>,
) -> (Response<GateBody>, Decision) {
    let label = destination_label(cx.snap, req, cx.conn.local);
    let path = if req.method() == Method::CONNECT {
        ""
    } else {
        req.uri().path()
    };
    let rec = cx.audit(label, req.method().as_str(), path);
    let refusal = Refusal::new(Reason::ClientUnidentified, label);
    refuse_audited(
        cx.gate,
        cx.snap,
        refusal,
        cx.request_id,
        rec,
        &Summary::default(),
    )
    .await
}

/// The metric and audit label of where a request is going: its destination's name,
/// `domestic`, or `unknown`.
fn destination_label<'s, B>(snap: &'s Snapshot, req: &Request<B>, local: SocketAddr) -> &'s str {
    let host = if req.method() == Method::CONNECT {
        req.uri().authority().map(|a| a.host().to_owned())
    } else {
        target(req, local).ok().map(|t| t.host)
    };
    match host.map(|h| classify(&snap.config, &h)) {
        Some(Class::Destination(i)) => &snap.config.destinations[i].name,
        Some(Class::Domestic) => DOMESTIC_LABEL,
        _ => UNKNOWN_LABEL,
    }
}
