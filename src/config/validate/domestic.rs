//! `[[domestic]]`: the hosts and networks that are inside China (never counted).

use crate::config::raw::RawDomestic;
use crate::config::{Diagnostics, Domestic, HostPattern};
use ipnet::IpNet;

/// Validates every `[[domestic]]` block into one [`Domestic`] set.
pub(super) fn validate(
    file: &str,
    raw_domestic: Vec<Option<RawDomestic>>,
    d: &mut Diagnostics,
) -> Domestic {
    let mut domestic = Domestic::default();
    for (i, dom) in raw_domestic.into_iter().enumerate() {
        let Some(dom) = dom else { continue };
        for (j, h) in dom.hosts.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(p) => domestic.hosts.push(p),
                Err(e) => d.error(file, format!("domestic[{i}].hosts[{j}]"), e),
            }
        }
        for (j, c) in dom.cidrs.iter().enumerate() {
            match c.parse::<IpNet>() {
                Ok(n) => domestic.cidrs.push(n),
                Err(_) => d.error(
                    file,
                    format!("domestic[{i}].cidrs[{j}]"),
                    format!("`{c}` is not a CIDR (e.g. 10.0.0.0/8)"),
                ),
            }
        }
    }
    domestic
}
