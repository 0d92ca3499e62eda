//! Where a request goes: a domestic host (not a cross-border transfer), a registered overseas
//! destination, or an unknown host (refused: the destination list is an allowlist).

use crate::config::{normalize_host, Config};
use std::net::IpAddr;

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
