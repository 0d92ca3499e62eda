//! `[gate]`: the listeners (proxy, admin, ICAP) and how they may be exposed, the mode, the
//! admin token, the data directory, the approvals file, the audit log and the target rules.

use crate::config::raw::RawGate;
use crate::config::{
    resolve, ClientCertificates, Diagnostics, Gate, Mode, ProxyTls, UnidentifiedPolicy,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Validates `[gate]`; `path` is the config file (relative paths are resolved against it).
pub(super) fn validate(path: &Path, file: &str, g: RawGate, d: &mut Diagnostics) -> Gate {
    let mode = mode(&g.mode, file, "gate.mode", d);
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
    let unidentified = match g.unidentified.as_deref() {
        None | Some("allow") => UnidentifiedPolicy::Allow,
        Some("refuse") => UnidentifiedPolicy::Refuse,
        Some(other) => {
            d.error(
                file,
                "gate.unidentified",
                format!("`{other}` is not one of: allow, refuse"),
            );
            UnidentifiedPolicy::Allow
        }
    };
    let proxy_tls = proxy_tls(path, file, &g, [proxy_listen, admin_listen], d);
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
        unidentified,
        proxy_tls,
    }
}

/// `gate.mode` and a client's `mode`.
pub(super) fn mode(v: &str, file: &str, key: &str, d: &mut Diagnostics) -> Mode {
    match v {
        "enforce" => Mode::Enforce,
        "observe" => Mode::Observe,
        other => {
            d.error(
                file,
                key,
                format!("`{other}` is not one of: enforce, observe"),
            );
            Mode::Enforce
        }
    }
}

/// The TLS proxy listener's keys: all or nothing of listen, cert and key; the client CA and
/// whether certificates are required only with it.
fn proxy_tls(
    path: &Path,
    file: &str,
    g: &RawGate,
    others: [SocketAddr; 2],
    d: &mut Diagnostics,
) -> Option<ProxyTls> {
    let client_certificates = match g.client_certificates.as_deref() {
        None | Some("optional") => ClientCertificates::Optional,
        Some("require") => ClientCertificates::Require,
        Some(other) => {
            d.error(
                file,
                "gate.client_certificates",
                format!("`{other}` is not one of: optional, require"),
            );
            ClientCertificates::Optional
        }
    };
    let Some(listen) = g.proxy_tls_listen.as_deref() else {
        for (key, set) in [
            ("gate.proxy_tls_cert", g.proxy_tls_cert.is_some()),
            ("gate.proxy_tls_key", g.proxy_tls_key.is_some()),
            ("gate.client_ca_file", g.client_ca_file.is_some()),
            ("gate.client_certificates", g.client_certificates.is_some()),
        ] {
            if set {
                d.error(
                    file,
                    key,
                    "only with gate.proxy_tls_listen (the TLS proxy listener)",
                );
            }
        }
        return None;
    };
    let listen = socket(listen, file, "gate.proxy_tls_listen", d);
    if listen.port() != 0 && others.contains(&listen) {
        d.error(
            file,
            "gate.proxy_tls_listen",
            "must differ from gate.proxy_listen and gate.admin_listen",
        );
    }
    let mut file_key = |key: &str, v: &Option<String>| match v {
        Some(p) => resolve(path, p),
        None => {
            d.error(file, key, "needed with gate.proxy_tls_listen (PEM file)");
            Default::default()
        }
    };
    let cert = file_key("gate.proxy_tls_cert", &g.proxy_tls_cert);
    let key = file_key("gate.proxy_tls_key", &g.proxy_tls_key);
    let client_ca_file = g.client_ca_file.as_deref().map(|p| resolve(path, p));
    if client_ca_file.is_none() && client_certificates == ClientCertificates::Require {
        d.error(
            file,
            "gate.client_certificates",
            "`require` needs gate.client_ca_file (the CA that signs the clients' certificates)",
        );
    }
    Some(ProxyTls {
        listen,
        cert,
        key,
        client_ca_file,
        client_certificates,
    })
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
