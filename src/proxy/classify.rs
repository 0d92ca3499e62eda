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

/// Classifies `host` (a name or an IP literal, with or without IPv6 brackets, no port): the
/// first destination in config order with a matching pattern, else domestic (an IP literal in a
/// domestic network, or a name matching a domestic pattern), else unknown. One hash lookup per
/// label of the host, whatever the number of patterns (`Config::routes`).
pub fn classify(cfg: &Config, host: &str) -> Class {
    let host = normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
    if let Some(i) = cfg.routes.destinations.first_match(&host) {
        return Class::Destination(i);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if cfg.domestic.cidrs.iter().any(|n| n.contains(&ip)) {
            return Class::Domestic;
        }
        return Class::Unknown;
    }
    if cfg.routes.domestic.first_match(&host).is_some() {
        Class::Domestic
    } else {
        Class::Unknown
    }
}

/// The linear scan `classify` replaced, kept as the reference of its differential test.
#[cfg(test)]
pub(crate) fn classify_linear(cfg: &Config, host: &str) -> Class {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::host_index::Routes;
    use crate::config::HostPattern;
    use proptest::prelude::*;

    /// A loaded config whose destinations and domestic set the test replaces.
    fn base() -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gate.toml"),
            "[gate]\nproxy_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[entity]\nname = \"Co\"\nregime = \"cac-2024\"\n[[destination]]\nname = \"d\"\nrecipient = \"R\"\ncountry = \"DE\"\nhosts = [\"api.eu.test\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("approvals.toml"), "").unwrap();
        match crate::config::load(&dir.path().join("gate.toml")) {
            Ok((c, _)) => c,
            Err(d) => panic!("{d:?}"),
        }
    }

    const LABELS: [&str; 7] = ["a", "b", "example", "com", "EXAMPLE", "10", "1"];

    fn name() -> impl Strategy<Value = String> {
        crate::config::host_index::strategies::name(&LABELS)
    }

    fn pattern() -> impl Strategy<Value = Option<HostPattern>> {
        crate::config::host_index::strategies::pattern(&LABELS)
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (name(), prop::bool::weighted(0.2))
                .prop_map(|(n, dot)| format!("{n}{}", if dot { "." } else { "" })),
            1 => prop::sample::select(&["10.1.2.3", "[::1]", "::1", "10.1.1.1", "192.0.2.1"][..])
                .prop_map(str::to_owned),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The indexed lookup answers what the linear scan answered, overlapping patterns and
        /// domestic ones included.
        #[test]
        fn classify_is_the_linear_scan(
            dests in prop::collection::vec(prop::collection::vec(pattern(), 1..4), 0..10),
            domestic in prop::collection::vec(pattern(), 0..5),
            hosts in prop::collection::vec(host(), 1..16),
        ) {
            let mut cfg = base();
            let template = cfg.destinations[0].clone();
            cfg.destinations = dests
                .into_iter()
                .enumerate()
                .map(|(i, ps)| {
                    let mut d = template.clone();
                    d.name = format!("d{i}");
                    d.hosts = ps.into_iter().flatten().collect();
                    d
                })
                .collect();
            cfg.domestic.hosts = domestic.into_iter().flatten().collect();
            cfg.domestic.cidrs = vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()];
            cfg.routes = Routes::build(&cfg.destinations, &cfg.domestic);
            for h in &hosts {
                prop_assert_eq!(classify(&cfg, h), classify_linear(&cfg, h), "host {:?}", h);
            }
        }
    }
}
