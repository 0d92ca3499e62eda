//! Where a request goes: its target (absolute-form URL, or `Host` for a client that calls the
//! gate directly) and the target host's class — a domestic host (not a cross-border
//! transfer), a registered overseas destination, or an unknown host (refused: the destination
//! list is an allowlist).

use crate::config::{normalize_host, Config};
use http::uri::{Authority, Scheme};
use http::Request;
use std::net::{IpAddr, SocketAddr};

/// The class of a target host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Inside the country: forwarded or tunnelled without inspection.
    Domestic,
    /// A registered destination, by index into `Config::destinations`.
    Destination(usize),
    /// Neither.
    Unknown,
}

/// The metric / audit label for hosts that are no destination.
pub const UNKNOWN_LABEL: &str = "unknown";
/// The metric / audit label for domestic hosts.
pub const DOMESTIC_LABEL: &str = "domestic";

/// Classifies `host` (a name or an IP literal, with or without IPv6 brackets, no port).
pub fn classify(cfg: &Config, host: &str) -> Class {
    let host = normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
    if let Some(i) = cfg
        .destinations
        .iter()
        .position(|d| d.hosts.iter().any(|p| p.matches(&host)))
    {
        return Class::Destination(i);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if cfg.domestic.cidrs.iter().any(|n| n.contains(&ip)) {
            return Class::Domestic;
        }
        return Class::Unknown;
    }
    if cfg.domestic.hosts.iter().any(|p| p.matches(&host)) {
        Class::Domestic
    } else {
        Class::Unknown
    }
}

/// Where a plain-HTTP request is going.
pub(crate) struct Target {
    /// `http`, or `https` for an absolute-form `https://` URL.
    pub scheme: Scheme,
    /// The host, without port.
    pub host: String,
    /// Host and port.
    pub authority: Authority,
}

/// Whether `auth` names the gate's own listener (an h2 `:authority` of a client that calls the
/// gate directly), in which case the `Host` header says where the request goes.
pub(crate) fn is_self(auth: &Authority, local: SocketAddr) -> bool {
    auth.port_u16() == Some(local.port())
        && auth
            .host()
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == local.ip() || (ip.is_loopback() && local.ip().is_loopback()))
}

/// The target of a request: its absolute-form URL's authority (unless that names the gate's
/// own listener at `local`), else its `Host` header.
pub(crate) fn target<B>(req: &Request<B>, local: SocketAddr) -> Result<Target, &'static str> {
    let uri = req.uri();
    if let Some(auth) = uri.authority().filter(|a| !is_self(a, local)) {
        let scheme = match uri.scheme_str() {
            Some("http") | None => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(_) => return Err("only http and https URLs can be proxied"),
        };
        return Ok(Target {
            scheme,
            host: auth.host().to_owned(),
            authority: auth.clone(),
        });
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("the request names no host (absolute-form URL or Host header)")?;
    let authority: Authority = host.parse().map_err(|_| "the Host header is not a host")?;
    Ok(Target {
        scheme: Scheme::HTTP,
        host: authority.host().to_owned(),
        authority,
    })
}
