//! Validation of the target-rule keys of `[gate]` (SPEC §2 "The gate is never a way around
//! itself"): `gate.deny_cidrs` (ranges a client-chosen target may never resolve to, unless the
//! operator opens them by setting the list explicitly) and `gate.tunnel_ports` (the only ports
//! a domestic `CONNECT` may name).

use super::diag::Diagnostics;
use super::Domestic;
use ipnet::IpNet;

/// `gate.deny_cidrs` when the key is absent: loopback, link-local (cloud metadata lives there),
/// "this network" and the unspecified address.
pub const DEFAULT_DENY_CIDRS: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
    "::/128",
];

/// `gate.tunnel_ports` when the key is absent (as Squid's `SSL_ports`).
pub const DEFAULT_TUNNEL_PORTS: [u16; 1] = [443];

/// The validated `gate.deny_cidrs`: the default when absent, else exactly the listed ranges.
pub(super) fn deny_cidrs(raw: Option<&[String]>, file: &str, d: &mut Diagnostics) -> Vec<IpNet> {
    let Some(list) = raw else {
        return DEFAULT_DENY_CIDRS
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        match c.parse::<IpNet>() {
            Ok(n) => out.push(n.trunc()),
            Err(_) => d.error(
                file,
                format!("gate.deny_cidrs[{i}]"),
                format!("`{c}` is not a CIDR (e.g. 169.254.0.0/16)"),
            ),
        }
    }
    out
}

/// The validated `gate.tunnel_ports`: the default when absent.
pub(super) fn tunnel_ports(raw: Option<&[u16]>, file: &str, d: &mut Diagnostics) -> Vec<u16> {
    let Some(list) = raw else {
        return DEFAULT_TUNNEL_PORTS.to_vec();
    };
    for (i, p) in list.iter().enumerate() {
        if *p == 0 {
            d.error(file, format!("gate.tunnel_ports[{i}]"), "0 is not a port");
        }
    }
    list.iter().copied().filter(|p| *p != 0).collect()
}

/// Warns about domestic ranges the gate will never connect to because `deny_cidrs` covers them:
/// listing them as domestic suggests they are reachable when they are not.
pub(super) fn warn_denied_domestic(
    domestic: &Domestic,
    deny: &[IpNet],
    file: &str,
    d: &mut Diagnostics,
) {
    for net in &domestic.cidrs {
        if let Some(by) = deny.iter().find(|x| x.contains(net)) {
            d.warn(
                file,
                "domestic.cidrs",
                format!("{net} is listed as domestic but lies in gate.deny_cidrs ({by}): the gate never connects there; set gate.deny_cidrs explicitly to open it"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_explicit_lists() {
        let mut d = Diagnostics::default();
        let def = deny_cidrs(None, "f", &mut d);
        assert_eq!(def.len(), 6);
        assert!(def
            .iter()
            .any(|n| n.contains(&"127.9.9.9".parse::<std::net::IpAddr>().unwrap())));
        let explicit = deny_cidrs(Some(&["169.254.0.0/16".to_owned()]), "f", &mut d);
        assert_eq!(explicit.len(), 1, "an explicit list replaces the default");
        assert!(d.items.is_empty());
        let _ = deny_cidrs(Some(&["10.0.0.0/33".to_owned()]), "f", &mut d);
        assert!(d.has_errors());
        let mut d = Diagnostics::default();
        assert_eq!(tunnel_ports(None, "f", &mut d), vec![443]);
        assert_eq!(
            tunnel_ports(Some(&[443, 8443]), "f", &mut d),
            vec![443, 8443]
        );
        assert!(d.items.is_empty());
        let _ = tunnel_ports(Some(&[0]), "f", &mut d);
        assert!(d.has_errors());
    }
}
