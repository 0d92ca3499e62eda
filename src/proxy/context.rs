//! The per-request context every phase of the request path receives ([`RequestCx`]): the gate,
//! the configuration snapshot the request started with, the client connection, who is sending
//! and the request id. It sits below the phases: every phase imports it, it imports none of
//! them.

use super::{Gate, Snapshot};
use crate::audit::AuditRecord;
use crate::identity::Identity;
use std::net::SocketAddr;
use std::sync::Arc;

/// The client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The gate's address the client connected to.
    pub local: SocketAddr,
}

/// One request's context through the phases: the gate, the configuration snapshot it started
/// with, the client connection, the client's identity and the request id.
#[derive(Clone, Copy)]
pub struct RequestCx<'a> {
    /// The gate.
    pub gate: &'a Arc<Gate>,
    /// The configuration the request started with (a reload does not change it mid-request).
    pub snap: &'a Arc<Snapshot>,
    /// The client connection.
    pub conn: Conn,
    /// Who is sending (SPEC §2), decided before anything else.
    pub identity: Identity,
    /// The listener the request came through (the audit's `origin`: `proxy`, `icap`).
    pub origin: &'static str,
    /// The request id.
    pub request_id: &'a str,
}

impl RequestCx<'_> {
    /// An audit record of this request to `destination`, with the client's identity.
    pub fn audit(&self, destination: &str, method: &str, path: &str) -> AuditRecord {
        let mut rec = AuditRecord::new(self.request_id, self.conn.peer, destination, method, path);
        rec.client_name = self.snap.clients.name_arc(self.identity);
        rec.identified_by = self.identity.by.map(|b| b.as_str());
        rec.origin = self.origin;
        rec
    }

    /// The client's name (`unidentified` when none), for metric labels.
    pub fn client_name(&self) -> &str {
        self.snap.clients.name(self.identity)
    }

    /// Whether this request is observed rather than enforced: `gate.mode` or its client's
    /// `mode` says so.
    pub fn observed(&self) -> bool {
        !crate::policy::enforce(&self.snap.config) || self.snap.clients.observed(self.identity)
    }
}
