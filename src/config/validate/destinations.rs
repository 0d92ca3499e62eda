//! `[[destination]]`: the overseas recipients, their hosts (which must not overlap each other
//! or the domestic set), TLS handling, upstream, exemption and report details.

use super::inspection::unreadable;
use crate::config::host_index::OverlapIndex;
use crate::config::raw::RawDestination;
use crate::config::{
    Destination, Diagnostics, Domestic, Exemption, HostPattern, TlsMode, WebSocketBinary,
};
use crate::model::Regime;
use std::collections::HashSet;

/// Validates every `[[destination]]` block against the domestic set and the regime.
pub(super) fn validate(
    file: &str,
    raws: Vec<Option<RawDestination>>,
    domestic: &Domestic,
    regime: Regime,
    d: &mut Diagnostics,
) -> Vec<Destination> {
    let mut out: Vec<Destination> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Overlap checks through indexes (not every pair): ids are domestic pattern and `out`
    // indices; the diagnostics are those of the pairwise comparison, in the same order.
    let mut domestic_idx = OverlapIndex::default();
    for (k, p) in domestic.hosts.iter().enumerate() {
        domestic_idx.insert(p, k);
    }
    let mut dest_idx = OverlapIndex::default();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("destination[{i}]");
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            d.error(
                file,
                format!("{p}.name"),
                "use letters, digits, `-`, `_` and `.` only",
            );
        }
        if matches!(r.name.as_str(), "unknown" | "domestic") {
            d.error(
                file,
                format!("{p}.name"),
                format!("`{}` is reserved", r.name),
            );
        }
        if !seen.insert(r.name.clone()) {
            d.error(
                file,
                format!("{p}.name"),
                format!("destination `{}` is defined twice", r.name),
            );
        }
        if r.hosts.is_empty() {
            d.error(file, format!("{p}.hosts"), "at least one host is needed");
        }
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            match HostPattern::parse(h) {
                Ok(pat) => {
                    if let Some(dom) = domestic_idx
                        .overlapping(&pat)
                        .first()
                        .map(|&k| &domestic.hosts[k])
                    {
                        d.error(file, &hp, format!("`{h}` is also domestic (matches `{dom}`); a host is either domestic or overseas"));
                    }
                    if let Ok(ip) = pat
                        .to_string()
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                    {
                        if domestic.cidrs.iter().any(|n| n.contains(&ip)) {
                            d.error(file, &hp, format!("`{h}` is in a domestic network"));
                        }
                    }
                    for other in dest_idx.overlapping(&pat).into_iter().map(|k| &out[k]) {
                        if let Some(op) = other.hosts.iter().find(|op| op.overlaps(&pat)) {
                            d.error(
                                file,
                                &hp,
                                format!("`{h}` overlaps `{op}` of destination `{}`", other.name),
                            );
                        }
                    }
                    hosts.push(pat);
                }
                Err(e) => d.error(file, hp, e),
            }
        }
        let tls = match r.tls.as_deref() {
            None => None,
            Some("intercept") => Some(TlsMode::Intercept),
            Some("tunnel") => Some(TlsMode::Tunnel),
            Some(o) => {
                d.error(
                    file,
                    format!("{p}.tls"),
                    format!("`{o}` is not one of: intercept, tunnel"),
                );
                None
            }
        };
        let upstream_https = match r.upstream_scheme.as_deref() {
            None | Some("http") => false,
            Some("https") => true,
            Some(o) => {
                d.error(
                    file,
                    format!("{p}.upstream_scheme"),
                    format!("`{o}` is not one of: http, https"),
                );
                false
            }
        };
        let websocket_binary = match r.websocket_binary.as_deref() {
            None => WebSocketBinary::Unreadable,
            Some("protobuf") => WebSocketBinary::Protobuf,
            Some(o) => {
                d.error(
                    file,
                    format!("{p}.websocket_binary"),
                    format!("`{o}` is not one of: protobuf"),
                );
                WebSocketBinary::Unreadable
            }
        };
        if r.websocket_binary.is_some() && !r.websocket {
            d.error(
                file,
                format!("{p}.websocket_binary"),
                "is set but `websocket` is not true",
            );
        }
        if r.upstream_http2 && upstream_https {
            d.warn(
                file,
                format!("{p}.upstream_http2"),
                "has no effect with upstream_scheme = \"https\": TLS upstreams negotiate HTTP/2 by ALPN",
            );
        }
        if let Some(c) = &r.connect_to {
            let ok = c
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                d.error(
                    file,
                    format!("{p}.connect_to"),
                    format!("`{c}` is not host:port"),
                );
            }
        }
        let exemption = match r.exemption.as_deref() {
            None => None,
            Some(e) => {
                let ex = match e {
                    "hr_management" => Some(Exemption::HrManagement),
                    "contract_performance" => Some(Exemption::ContractPerformance),
                    "emergency" => Some(Exemption::Emergency),
                    o => {
                        d.error(file, format!("{p}.exemption"), format!("`{o}` is not one of: hr_management, contract_performance, emergency"));
                        None
                    }
                };
                if ex.is_some() && regime != Regime::Cac2024 {
                    d.error(
                        file,
                        format!("{p}.exemption"),
                        "exemptions exist only under regime cac-2024",
                    );
                }
                ex
            }
        };
        if !r.tls_verify {
            d.warn(
                file,
                format!("{p}.tls_verify"),
                "upstream certificate verification is off for this destination",
            );
        }
        if tls == Some(TlsMode::Tunnel) {
            d.warn(file, format!("{p}.tls"), "a blind tunnel is not inspected: only for destinations that receive no personal information");
        }
        let country = r.country.unwrap_or_default();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            d.warn(
                file,
                format!("{p}.country"),
                "should be an ISO 3166 two-letter code (the report names it)",
            );
        }
        if r.recipient.as_deref().unwrap_or("").is_empty() {
            d.warn(
                file,
                format!("{p}.recipient"),
                "the overseas recipient's legal name is needed for the report",
            );
        }
        for p in &hosts {
            dest_idx.insert(p, out.len());
        }
        out.push(Destination {
            name: r.name,
            recipient: r.recipient.unwrap_or_default(),
            country,
            hosts,
            tls,
            connect_to: r.connect_to,
            upstream_https,
            exemption,
            sensitive: r.sensitive,
            unreadable: r
                .unreadable
                .map(|u| unreadable(&u, file, &format!("{p}.unreadable"), d)),
            tls_verify: r.tls_verify,
            websocket: r.websocket,
            websocket_binary,
            upstream_http2: r.upstream_http2,
            clients: r.clients,
        });
    }
    out
}
