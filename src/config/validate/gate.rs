//! `[gate]`: the listeners (proxy, admin, ICAP) and how they may be exposed, the mode, the
//! admin token, the data directory, the approvals file, the audit log and the target rules.

use crate::config::raw::RawGate;
use crate::config::{resolve, Diagnostics, Gate, Mode};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Validates `[gate]`; `path` is the config file (relative paths are resolved against it).
pub(super) fn validate(path: &Path, file: &str, g: RawGate, d: &mut Diagnostics) -> Gate {
    let mode = match g.mode.as_str() {
        "enforce" => Mode::Enforce,
        "observe" => Mode::Observe,
        other => {
            d.error(
                file,
                "gate.mode",
                format!("`{other}` is not one of: enforce, observe"),
            );
            Mode::Enforce
        }
    };
    let proxy_listen = socket(&g.proxy_listen, file, "gate.proxy_listen", d);
    let admin_listen = socket(&g.admin_listen, file, "gate.admin_listen", d);
    if proxy_listen == admin_listen && proxy_listen.port() != 0 {
        d.error(
            file,
            "gate.admin_listen",
            "must differ from gate.proxy_listen",
        );
    }
    let icap_listen = g
        .icap_listen
        .as_deref()
        .map(|v| socket(v, file, "gate.icap_listen", d));
    if let Some(i) = icap_listen.filter(|i| i.port() != 0) {
        if i == proxy_listen || i == admin_listen {
            d.error(
                file,
                "gate.icap_listen",
                "must differ from gate.proxy_listen and gate.admin_listen",
            );
        }
        if !i.ip().is_loopback() {
            d.warn(
                file,
                "gate.icap_listen",
                "not on loopback: ICAP has no authentication, so any host that reaches this address can have requests judged and counted; restrict it to the proxies by network policy",
            );
        }
    }
    if !admin_listen.ip().is_loopback() && g.admin_token_file.is_none() {
        d.error(
            file,
            "gate.admin_listen",
            "not a loopback address and no gate.admin_token_file: set a token file (or listen on 127.0.0.1), the admin API must not be open to the network",
        );
    }
    let deny_cidrs = crate::config::targets::deny_cidrs(g.deny_cidrs.as_deref(), file, d);
    let tunnel_ports = crate::config::targets::tunnel_ports(g.tunnel_ports.as_deref(), file, d);
    let max_connections = g
        .max_connections
        .unwrap_or(crate::config::DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        d.error(file, "gate.max_connections", "must be positive");
    }
    let admin_token_file = g.admin_token_file.map(|p| resolve(path, &p));
    if let Some(p) = &admin_token_file {
        match std::fs::read_to_string(p) {
            Ok(s) if s.trim().len() >= 16 => {}
            Ok(_) => d.error(
                file,
                "gate.admin_token_file",
                "the token must be at least 16 characters",
            ),
            Err(e) => d.error(
                file,
                "gate.admin_token_file",
                format!("cannot read {}: {e}", p.display()),
            ),
        }
    }
    if let Some(u) = &g.blocked_by_url {
        if !(u.starts_with("https://") || u.starts_with("http://"))
            || u.contains(['<', '>', '"', ' '])
        {
            d.error(file, "gate.blocked_by_url", "must be an http(s) URL");
        }
    }
    Gate {
        proxy_listen,
        admin_listen,
        icap_listen,
        admin_token_file,
        mode,
        data_dir: resolve(path, &g.data_dir),
        approvals_file: resolve(path, &g.approvals_file),
        audit_log: g.audit_log.map(|p| resolve(path, &p)),
        blocked_by_url: g.blocked_by_url,
        drain: Duration::from_secs(g.drain_seconds),
        deny_cidrs,
        tunnel_ports,
        max_connections: max_connections.max(1),
    }
}

fn socket(v: &str, file: &str, path: &str, d: &mut Diagnostics) -> SocketAddr {
    match v.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            d.error(
                file,
                path,
                format!("`{v}` is not an address:port (e.g. 127.0.0.1:3128)"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}
