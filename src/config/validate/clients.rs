//! `[[client]]`: the internal services that send through the gate (SPEC §2 "Who is sending") —
//! their names, owners and modes, and the identities that recognise them (certificate
//! identities, token digests, source networks), none of which two clients may share; and each
//! destination's `clients` allowlist, which may name only declared clients.

use super::gate::mode;
use crate::config::raw::RawClient;
use crate::config::{Client, Destination, Diagnostics, Mode, UNIDENTIFIED};
use ipnet::IpNet;
use std::collections::HashMap;

/// Validates every `[[client]]` block. `icap`: whether the ICAP listener is on, where a name
/// alone identifies a client (Squid's `X-Client-Username`).
pub(super) fn validate(
    file: &str,
    raws: Vec<Option<RawClient>>,
    icap: bool,
    d: &mut Diagnostics,
) -> Vec<Client> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut identities: HashMap<String, String> = HashMap::new();
    let mut digests: HashMap<[u8; 32], String> = HashMap::new();
    let mut cidrs: HashMap<IpNet, String> = HashMap::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("client[{i}]");
        if !valid_name(&r.name) {
            d.error(
                file,
                format!("{p}.name"),
                "use 1 to 64 of a-z, 0-9, `_` and `-`",
            );
        }
        if r.name == UNIDENTIFIED {
            d.error(
                file,
                format!("{p}.name"),
                format!("`{UNIDENTIFIED}` is reserved for requests from no declared client"),
            );
        }
        if names.insert(r.name.clone(), i).is_some() {
            d.error(
                file,
                format!("{p}.name"),
                format!("client `{}` is defined twice", r.name),
            );
        }
        let mode = r
            .mode
            .as_deref()
            .map_or(Mode::Enforce, |m| mode(m, file, &format!("{p}.mode"), d));
        let mut tls_identities = Vec::new();
        for (j, id) in r.tls_identities.iter().enumerate() {
            let key = format!("{p}.tls_identities[{j}]");
            if !valid_identity(id) {
                d.error(file, &key, "an identity is a URI (e.g. a SPIFFE ID), a DNS name (`*.` for one label) or a subject CN: printable ASCII, no spaces, at most 255 characters");
                continue;
            }
            let norm = normalize_identity(id);
            if let Some(other) = identities.insert(norm.clone(), r.name.clone()) {
                d.error(
                    file,
                    &key,
                    format!("identity `{id}` is claimed by client `{other}` too"),
                );
            }
            tls_identities.push(norm);
        }
        let mut token_sha256 = Vec::new();
        for (j, h) in r.token_sha256.iter().enumerate() {
            let key = format!("{p}.token_sha256[{j}]");
            let Some(digest) = parse_digest(h) else {
                d.error(file, &key, "must be 64 hex digits, the SHA-256 of the token (`transfer-gate client token NAME` prints it)");
                continue;
            };
            if let Some(other) = digests.insert(digest, r.name.clone()) {
                d.error(
                    file,
                    &key,
                    format!("this digest is claimed by client `{other}` too"),
                );
            }
            token_sha256.push(digest);
        }
        let mut nets = Vec::new();
        for (j, c) in r.cidrs.iter().enumerate() {
            let key = format!("{p}.cidrs[{j}]");
            match parse_cidr(c) {
                Some(net) => {
                    if let Some(other) = cidrs.insert(net, r.name.clone()) {
                        d.error(
                            file,
                            &key,
                            format!("`{c}` is claimed by client `{other}` too (overlapping networks may differ in prefix, not be the same)"),
                        );
                    }
                    nets.push(net);
                }
                None => d.error(
                    file,
                    &key,
                    format!("`{c}` is not a network (e.g. 10.20.0.0/16) or an address"),
                ),
            }
        }
        if tls_identities.is_empty() && token_sha256.is_empty() && nets.is_empty() && !icap {
            d.warn(
                file,
                &p,
                format!("client `{}` has no tls_identities, token_sha256 or cidrs and gate.icap_listen is off (where Squid's user name could name it): no request can be identified as it", r.name),
            );
        }
        out.push(Client {
            name: r.name,
            owner: r.owner.filter(|o| !o.trim().is_empty()),
            mode,
            tls_identities,
            token_sha256,
            cidrs: nets,
        });
    }
    out
}

/// Checks each destination's `clients` against the declared clients.
pub(super) fn check_allowlists(
    file: &str,
    destinations: &[Destination],
    clients: &[Client],
    d: &mut Diagnostics,
) {
    let names: std::collections::HashSet<&str> = clients.iter().map(|c| c.name.as_str()).collect();
    for (i, dest) in destinations.iter().enumerate() {
        let Some(list) = &dest.clients else { continue };
        if list.is_empty() {
            d.warn(
                file,
                format!("destination[{i}].clients"),
                "an empty list: no client may send here (leave the key out to let every client send)",
            );
        }
        for (j, name) in list.iter().enumerate() {
            if !names.contains(name.as_str()) {
                let hint = if name == UNIDENTIFIED {
                    " (`unidentified` requests cannot be allowed by name; declare the client)"
                } else {
                    ""
                };
                d.error(
                    file,
                    format!("destination[{i}].clients[{j}]"),
                    format!("`{name}` is not a declared [[client]]{hint}"),
                );
            }
        }
    }
}

/// `[a-z0-9_-]{1,64}`.
pub(crate) fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_identity(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// DNS names (and `*.` patterns) compare case-insensitively; URIs and CNs as written.
fn normalize_identity(id: &str) -> String {
    if id.contains(':') {
        id.to_owned()
    } else {
        id.to_ascii_lowercase()
    }
}

fn parse_digest(h: &str) -> Option<[u8; 32]> {
    let h = h.trim();
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in h.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A network, or a single address as its /32 or /128; host bits are cleared.
fn parse_cidr(c: &str) -> Option<IpNet> {
    let c = c.trim();
    if let Ok(n) = c.parse::<IpNet>() {
        return Some(n.trunc());
    }
    c.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_digests_and_networks() {
        assert!(valid_name("billing-api_2"));
        for bad in ["", "Billing", "a b", "x.y", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        let d = parse_digest(&"0f".repeat(32)).unwrap_or_default();
        assert_eq!(d, [0x0f; 32]);
        assert!(parse_digest(&"0g".repeat(32)).is_none());
        assert!(parse_digest("abc").is_none());
        assert_eq!(
            parse_cidr("10.20.1.2/16").map(|n| n.to_string()),
            Some("10.20.0.0/16".into())
        );
        assert_eq!(
            parse_cidr("127.0.0.2").map(|n| n.to_string()),
            Some("127.0.0.2/32".into())
        );
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert_eq!(normalize_identity("API.Corp.CN"), "api.corp.cn");
        assert_eq!(
            normalize_identity("spiffe://corp/ns/A"),
            "spiffe://corp/ns/A"
        );
    }
}
