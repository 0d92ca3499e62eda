//! Turns the raw files into a [`Config`], collecting every problem on the way.

use super::raw::*;
use super::*;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use toml::{Table, Value};

const TOP_KEYS: [&str; 9] = [
    "gate",
    "timeouts",
    "entity",
    "ledger",
    "inspection",
    "domestic",
    "destination",
    "important_data",
    "tls",
];

/// Loads and validates `gate.toml` (and the approvals file it names).
///
/// On success returns the config and its warnings; on failure every diagnostic found (errors
/// and warnings), so that the operator can fix everything in one pass.
///
/// # Errors
/// The list of diagnostics when any of them is an error.
pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut d = Diagnostics::default();
    let file = display_name(path);
    let mut hasher = Sha256::new();
    let table = read_table(path, &file, &mut d, &mut hasher);
    let cfg = table.and_then(|t| build(path, &file, &t, &mut d, &mut hasher));
    if let Some(cfg) = &cfg {
        // The files and directories `run` opens at start, checked the same way here, so
        // that `check` and `run` agree.
        super::files::check(cfg, &file, &mut d);
    }
    match cfg {
        Some(mut cfg) if !d.has_errors() => {
            cfg.sha256 = hex(&hasher.finalize());
            Ok((cfg, d.items))
        }
        _ => {
            if !d.has_errors() {
                d.error(&file, "", "configuration could not be loaded");
            }
            Err(d.items)
        }
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn read_table(path: &Path, file: &str, d: &mut Diagnostics, hasher: &mut Sha256) -> Option<Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            d.error(file, "", format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    hasher.update(text.as_bytes());
    match text.parse::<Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            d.error(
                file,
                "",
                format!("not valid TOML: {}", e.to_string().trim()),
            );
            None
        }
    }
}

fn de<T: DeserializeOwned>(v: &Value, file: &str, path: &str, d: &mut Diagnostics) -> Option<T> {
    match v.clone().try_into::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            d.error(file, path, e.to_string().trim().to_owned());
            None
        }
    }
}

fn section<T: DeserializeOwned>(
    t: &Table,
    key: &str,
    file: &str,
    d: &mut Diagnostics,
) -> Option<Option<T>> {
    match t.get(key) {
        None => Some(None),
        Some(v) => de(v, file, key, d).map(Some),
    }
}

fn array<T: DeserializeOwned>(
    t: &Table,
    key: &str,
    file: &str,
    d: &mut Diagnostics,
) -> Vec<Option<T>> {
    match t.get(key) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| de(v, file, &format!("{key}[{i}]"), d))
            .collect(),
        Some(_) => {
            d.error(
                file,
                key,
                format!("must be an array of tables (`[[{key}]]`)"),
            );
            Vec::new()
        }
    }
}

fn seconds(
    v: Option<f64>,
    default: Duration,
    file: &str,
    path: &str,
    d: &mut Diagnostics,
) -> Duration {
    match v {
        None => default,
        Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Duration::from_secs_f64(s),
        Some(_) => {
            d.error(file, path, "must be a positive number of seconds");
            default
        }
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

fn unreadable(v: &str, file: &str, path: &str, d: &mut Diagnostics) -> Unreadable {
    match v {
        "block" => Unreadable::Block,
        "allow" => Unreadable::Allow,
        _ => {
            d.error(file, path, format!("`{v}` is not one of: block, allow"));
            Unreadable::Block
        }
    }
}

fn build(
    path: &Path,
    file: &str,
    t: &Table,
    d: &mut Diagnostics,
    hasher: &mut Sha256,
) -> Option<Config> {
    for key in t.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            d.error(
                file,
                key.as_str(),
                format!(
                    "unknown section `{key}`; expected one of: {}",
                    TOP_KEYS.join(", ")
                ),
            );
        }
    }
    let raw_gate: Option<RawGate> = section(t, "gate", file, d).flatten();
    let raw_entity: Option<RawEntity> = section(t, "entity", file, d).flatten();
    if !t.contains_key("gate") {
        d.error(file, "gate", "missing section `[gate]`");
    }
    if !t.contains_key("entity") {
        d.error(file, "entity", "missing section `[entity]`");
    }
    let raw_timeouts: RawTimeouts = section(t, "timeouts", file, d)
        .flatten()
        .unwrap_or_default();
    let raw_ledger: RawLedger = section(t, "ledger", file, d).flatten().unwrap_or_default();
    let raw_insp: RawInspection = section(t, "inspection", file, d)
        .flatten()
        .unwrap_or_default();
    let raw_tls: RawTls = section(t, "tls", file, d).flatten().unwrap_or_default();
    let raw_domestic: Vec<Option<RawDomestic>> = array(t, "domestic", file, d);
    let raw_dests: Vec<Option<RawDestination>> = array(t, "destination", file, d);
    let raw_important: Vec<Option<RawImportantData>> = array(t, "important_data", file, d);

    let entity = raw_entity.map(|e| {
        let regime = e.regime.parse::<Regime>().unwrap_or_else(|_| {
            d.error(
                file,
                "entity.regime",
                format!("`{}` is not one of: cac-2024, cac-2022", e.regime),
            );
            Regime::Cac2024
        });
        if e.name.trim().is_empty() {
            d.error(file, "entity.name", "must not be empty");
        }
        Entity {
            name: e.name,
            regime,
            ciio: e.ciio,
            pi_subjects_processed: e.pi_subjects_processed,
        }
    });
    let regime = entity.as_ref().map(|e| e.regime).unwrap_or(Regime::Cac2024);

    let gate = raw_gate.map(|g| {
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
        let deny_cidrs = super::targets::deny_cidrs(g.deny_cidrs.as_deref(), file, d);
        let tunnel_ports = super::targets::tunnel_ports(g.tunnel_ports.as_deref(), file, d);
        let max_connections = g.max_connections.unwrap_or(super::DEFAULT_MAX_CONNECTIONS);
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
    });

    let def = Timeouts::default();
    let timeouts = Timeouts {
        connect: seconds(
            raw_timeouts.connect_seconds,
            def.connect,
            file,
            "timeouts.connect_seconds",
            d,
        ),
        response_header: seconds(
            raw_timeouts.response_header_seconds,
            def.response_header,
            file,
            "timeouts.response_header_seconds",
            d,
        ),
        idle: seconds(
            raw_timeouts.idle_seconds,
            def.idle,
            file,
            "timeouts.idle_seconds",
            d,
        ),
        total: raw_timeouts
            .total_seconds
            .map(|s| seconds(Some(s), def.idle, file, "timeouts.total_seconds", d)),
        client_header: seconds(
            raw_timeouts.client_header_seconds,
            def.client_header,
            file,
            "timeouts.client_header_seconds",
            d,
        ),
    };

    let ledger = validate_ledger(path, file, raw_ledger, d);
    let inspection = validate_inspection(file, raw_insp, d);

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

    if let Some(g) = &gate {
        super::targets::warn_denied_domestic(&domestic, &g.deny_cidrs, file, d);
    }
    let destinations = validate_destinations(file, raw_dests, &domestic, regime, d);
    let important_data = validate_important(file, raw_important, &destinations, d);

    let tls = TlsSettings {
        ca_cert: raw_tls.ca_cert.map(|p| resolve(path, &p)),
        ca_key: raw_tls.ca_key.map(|p| resolve(path, &p)),
        upstream_ca_file: raw_tls.upstream_ca_file.map(|p| resolve(path, &p)),
    };
    if tls.ca_cert.is_some() != tls.ca_key.is_some() {
        d.error(file, "tls", "ca_cert and ca_key go together");
    }
    if let (Some(cert), Some(key)) = (&tls.ca_cert, &tls.ca_key) {
        // The interception CA: readable, private key (0600), the two belonging together; both
        // files absent (before `ca init`) leaves interception off, which fails closed.
        match crate::tls::ca::InterceptCa::load_if_present(cert, key) {
            Ok(Some(_)) => {}
            Ok(None) => d.warn(file, "tls.ca_cert", format!("{} does not exist yet: create the CA with `transfer-gate ca init --out {}`; until then CONNECT to tls = \"intercept\" destinations is refused (uninspectable)", cert.display(), cert.parent().map(|p| p.display().to_string()).unwrap_or_else(|| ".".into()))),
            Err(e) => d.error(file, e.config_key(), e.to_string()),
        }
    }
    if destinations
        .iter()
        .any(|x| x.tls == Some(TlsMode::Intercept))
        && tls.ca_cert.is_none()
    {
        d.warn(file, "tls.ca_cert", "destinations use tls = \"intercept\" but no interception CA is configured; CONNECT to them will be refused");
    }

    let approvals = match &gate {
        Some(g) => load_approvals(&g.approvals_file, &destinations, regime, d, hasher),
        None => Vec::new(),
    };

    Some(Config {
        path: path.to_path_buf(),
        sha256: String::new(),
        gate: gate?,
        timeouts,
        entity: entity?,
        ledger,
        inspection,
        domestic,
        destinations,
        important_data,
        tls,
        approvals,
    })
}

fn validate_ledger(path: &Path, file: &str, raw: RawLedger, d: &mut Diagnostics) -> LedgerSettings {
    let backend = match raw.backend.as_deref().unwrap_or("local") {
        "local" => Backend::Local,
        "redis" => match (raw.redis_url, raw.redis_cluster) {
            (Some(url), None) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    d.error(
                        file,
                        "ledger.redis_url",
                        "must start with redis:// or rediss://",
                    );
                }
                Backend::Redis { url }
            }
            (None, Some(nodes)) if !nodes.is_empty() => Backend::RedisCluster { nodes },
            (Some(_), Some(_)) => {
                d.error(file, "ledger", "set redis_url or redis_cluster, not both");
                Backend::Local
            }
            _ => {
                d.error(
                    file,
                    "ledger.redis_url",
                    "backend = \"redis\" needs redis_url or redis_cluster",
                );
                Backend::Local
            }
        },
        other => {
            d.error(
                file,
                "ledger.backend",
                format!("`{other}` is not one of: local, redis"),
            );
            Backend::Local
        }
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(250);
    if timeout_ms == 0 {
        d.error(file, "ledger.timeout_ms", "must be positive");
    }
    LedgerSettings {
        backend,
        hash_key_file: resolve(
            path,
            raw.hash_key_file
                .as_deref()
                .unwrap_or("secrets/subject-hash.key"),
        ),
        timeout: Duration::from_millis(timeout_ms.max(1)),
        redis_password_file: raw.redis_password_file.map(|p| resolve(path, &p)),
        redis_ca_file: raw.redis_ca_file.map(|p| resolve(path, &p)),
    }
}

fn validate_inspection(file: &str, raw: RawInspection, d: &mut Diagnostics) -> Inspection {
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 30);
    let atomic_body_bytes = raw.atomic_body_bytes.unwrap_or(1 << 20);
    let max_record_bytes = raw.max_record_bytes.unwrap_or(1 << 20);
    let max_buffered_bytes = raw.max_buffered_bytes.unwrap_or(256 << 20);
    let max_depth = raw.max_depth.unwrap_or(64);
    for (k, v) in [
        ("inspection.max_body_bytes", max_body_bytes),
        ("inspection.atomic_body_bytes", atomic_body_bytes),
        ("inspection.max_record_bytes", max_record_bytes),
        ("inspection.max_buffered_bytes", max_buffered_bytes),
        ("inspection.max_depth", u64::from(max_depth)),
    ] {
        if v == 0 {
            d.error(file, k, "must be positive");
        }
    }
    // One streamed record of the largest size, with the largest decoder window, must fit:
    // otherwise such a request could never be judged.
    let one_request = max_record_bytes + crate::inspect::decoder_cost(crate::inspect::Coding::Zstd);
    if max_buffered_bytes > 0 && max_buffered_bytes < one_request {
        d.error(
            file,
            "inspection.max_buffered_bytes",
            format!(
                "must hold at least one record of max_record_bytes plus a decoder window: at least {one_request}"
            ),
        );
    }
    if atomic_body_bytes > max_body_bytes {
        d.error(
            file,
            "inspection.atomic_body_bytes",
            "must not exceed max_body_bytes",
        );
    }
    if atomic_body_bytes > 256 << 20 {
        d.error(
            file,
            "inspection.atomic_body_bytes",
            "is held in memory per request; at most 268435456 (256 MiB)",
        );
    }
    if max_record_bytes > 256 << 20 {
        d.error(
            file,
            "inspection.max_record_bytes",
            "is held in memory per request; at most 268435456 (256 MiB)",
        );
    }
    if max_depth > 1024 {
        d.error(file, "inspection.max_depth", "at most 1024");
    }
    let mut fields = Vec::new();
    for (i, f) in raw.subjects.fields.iter().enumerate() {
        let f = f.trim().to_ascii_lowercase();
        if f.is_empty() {
            d.error(
                file,
                format!("inspection.subjects.fields[{i}]"),
                "must not be empty",
            );
        } else if fields.contains(&f) {
            d.error(
                file,
                format!("inspection.subjects.fields[{i}]"),
                format!("`{f}` is listed twice"),
            );
        } else {
            fields.push(f);
        }
    }
    let mut detectors = Vec::new();
    for (i, det) in raw.subjects.detectors.iter().enumerate() {
        if !DETECTORS.contains(&det.as_str()) {
            d.error(
                file,
                format!("inspection.subjects.detectors[{i}]"),
                format!("`{det}` is not one of: {}", DETECTORS.join(", ")),
            );
        } else if !detectors.contains(det) {
            detectors.push(det.clone());
        }
    }
    let mut headers = Vec::new();
    for (i, h) in raw.subjects.headers.iter().enumerate() {
        match http::HeaderName::from_bytes(h.trim().as_bytes()) {
            Ok(n) => headers.push(n.as_str().to_owned()),
            Err(_) => d.error(
                file,
                format!("inspection.subjects.headers[{i}]"),
                format!("`{h}` is not a header name"),
            ),
        }
    }
    let mut categories: Vec<(String, Category)> = Vec::new();
    for (cat, names) in &raw.categories {
        let Ok(c) = cat.parse::<Category>() else {
            d.error(
                file,
                format!("inspection.categories.{cat}"),
                format!(
                    "`{cat}` is not a category; use one of: {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ),
            );
            continue;
        };
        for (i, n) in names.iter().enumerate() {
            let n = n.trim().to_ascii_lowercase();
            if let Some((_, other)) = categories.iter().find(|(f, _)| *f == n) {
                d.error(
                    file,
                    format!("inspection.categories.{cat}[{i}]"),
                    format!("`{n}` is already in category {other}"),
                );
            } else {
                categories.push((n, c));
            }
        }
    }
    if fields.is_empty() && detectors.is_empty() {
        d.warn(
            file,
            "inspection.subjects",
            "no subject fields and no detectors: the gate will find no personal information",
        );
    }
    Inspection {
        max_body_bytes,
        atomic_body_bytes,
        max_record_bytes,
        max_buffered_bytes,
        max_depth,
        max_decoded_bytes: raw
            .max_decoded_bytes
            .unwrap_or(max_body_bytes.saturating_mul(4)),
        max_decompression_ratio: raw.max_decompression_ratio.unwrap_or(100),
        unreadable: unreadable(
            raw.unreadable.as_deref().unwrap_or("block"),
            file,
            "inspection.unreadable",
            d,
        ),
        resident_id_sensitive: raw.resident_id_sensitive,
        fields,
        detectors,
        headers,
        categories,
    }
}

fn validate_destinations(
    file: &str,
    raws: Vec<Option<RawDestination>>,
    domestic: &Domestic,
    regime: Regime,
    d: &mut Diagnostics,
) -> Vec<Destination> {
    let mut out: Vec<Destination> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
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
                    if let Some(dom) = domestic.hosts.iter().find(|dp| dp.overlaps(&pat)) {
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
                    for other in &out {
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
        });
    }
    out
}

fn validate_important(
    file: &str,
    raws: Vec<Option<RawImportantData>>,
    dests: &[Destination],
    d: &mut Diagnostics,
) -> Vec<ImportantData> {
    let mut out = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("important_data[{i}]");
        let destinations = if r.destinations.is_empty() || r.destinations.iter().any(|x| x == "*") {
            None
        } else {
            for (j, n) in r.destinations.iter().enumerate() {
                if !dests.iter().any(|x| &x.name == n) {
                    d.error(
                        file,
                        format!("{p}.destinations[{j}]"),
                        format!("no destination is named `{n}`"),
                    );
                }
            }
            Some(r.destinations)
        };
        let mut paths = Vec::new();
        for (j, g) in r.paths.iter().enumerate() {
            match PathGlob::parse(g) {
                Ok(g) => paths.push(g),
                Err(e) => d.error(file, format!("{p}.paths[{j}]"), e),
            }
        }
        if r.paths.is_empty() && r.fields.is_empty() {
            d.error(file, &p, "a rule needs paths or fields");
        }
        out.push(ImportantData {
            name: r.name,
            destinations,
            paths,
            fields: r
                .fields
                .iter()
                .map(|f| f.trim().to_ascii_lowercase())
                .collect(),
        });
    }
    out
}

fn date(v: &Value, file: &str, path: &str, d: &mut Diagnostics) -> Option<time::Date> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Datetime(dt) => dt.to_string(),
        _ => {
            d.error(file, path, "must be a date (YYYY-MM-DD)");
            return None;
        }
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(&s, fmt) {
        Ok(x) => Some(x),
        Err(_) => {
            d.error(file, path, format!("`{s}` is not a date (YYYY-MM-DD)"));
            None
        }
    }
}

fn load_approvals(
    path: &Path,
    dests: &[Destination],
    regime: Regime,
    d: &mut Diagnostics,
    hasher: &mut Sha256,
) -> Vec<Approval> {
    let file = display_name(path);
    let Some(t) = read_table(path, &file, d, hasher) else {
        return Vec::new();
    };
    for key in t.keys() {
        if key != "approval" {
            d.error(
                &file,
                key.as_str(),
                format!("unknown key `{key}`; the file holds `[[approval]]` tables"),
            );
        }
    }
    let raws: Vec<Option<RawApproval>> = array(&t, "approval", &file, d);
    let mut out: Vec<Approval> = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let Some(r) = raw else { continue };
        let p = format!("approval[{i}]");
        if r.id.trim().is_empty() {
            d.error(&file, format!("{p}.id"), "must not be empty");
        } else if out.iter().any(|a| a.id == r.id) {
            d.error(
                &file,
                format!("{p}.id"),
                format!("approval `{}` is defined twice", r.id),
            );
        }
        let mechanism = match r.mechanism.as_str() {
            "security_assessment" => ApprovalMechanism::SecurityAssessment,
            "standard_contract" => ApprovalMechanism::StandardContract,
            "certification" => ApprovalMechanism::Certification,
            o => {
                d.error(&file, format!("{p}.mechanism"), format!("`{o}` is not one of: security_assessment, standard_contract, certification"));
                ApprovalMechanism::StandardContract
            }
        };
        let status = match r.status.as_str() {
            "active" => ApprovalStatus::Active,
            "pending" => ApprovalStatus::Pending,
            "rejected" => ApprovalStatus::Rejected,
            "revoked" => ApprovalStatus::Revoked,
            o => {
                d.error(
                    &file,
                    format!("{p}.status"),
                    format!("`{o}` is not one of: active, pending, rejected, revoked"),
                );
                ApprovalStatus::Pending
            }
        };
        if r.destinations.is_empty() {
            d.error(
                &file,
                format!("{p}.destinations"),
                "an approval names at least one destination",
            );
        }
        for (j, n) in r.destinations.iter().enumerate() {
            if !dests.iter().any(|x| &x.name == n) {
                d.error(
                    &file,
                    format!("{p}.destinations[{j}]"),
                    format!("no destination is named `{n}` in the gate config"),
                );
            }
        }
        let mut categories = Vec::new();
        for (j, c) in r.categories.iter().enumerate() {
            match c.parse::<Category>() {
                Ok(c) => categories.push(c),
                Err(_) => d.error(
                    &file,
                    format!("{p}.categories[{j}]"),
                    format!(
                        "`{c}` is not a category; use one of: {}",
                        Category::ALL.map(Category::as_str).join(", ")
                    ),
                ),
            }
        }
        let valid_from = r
            .valid_from
            .as_ref()
            .and_then(|v| date(v, &file, &format!("{p}.valid_from"), d));
        let valid_until = r
            .valid_until
            .as_ref()
            .and_then(|v| date(v, &file, &format!("{p}.valid_until"), d));
        if mechanism == ApprovalMechanism::SecurityAssessment && r.valid_until.is_none() {
            d.error(
                &file,
                format!("{p}.valid_until"),
                "a security assessment has a validity end date; valid_until is required",
            );
        }
        if let (Some(f), Some(u)) = (valid_from, valid_until) {
            if u < f {
                d.error(&file, format!("{p}.valid_until"), "is before valid_from");
            }
            if mechanism == ApprovalMechanism::SecurityAssessment {
                let years = match regime {
                    Regime::Cac2022 => 2,
                    Regime::Cac2024 => 3,
                };
                let limit = f.replace_year(f.year() + years).unwrap_or_else(|_| {
                    f.saturating_add(time::Duration::days(365 * i64::from(years)))
                });
                if u > limit {
                    d.warn(
                        &file,
                        format!("{p}.valid_until"),
                        format!(
                            "longer than the {years} years a security assessment is valid under {}",
                            regime.as_str()
                        ),
                    );
                }
            }
        }
        if r.max_subjects == Some(0) {
            d.warn(
                &file,
                format!("{p}.max_subjects"),
                "0 permits no transfer of PI",
            );
        }
        out.push(Approval {
            id: r.id,
            mechanism,
            status,
            destinations: r.destinations,
            categories,
            max_subjects: r.max_subjects,
            max_sensitive_subjects: r.max_sensitive_subjects,
            valid_from,
            valid_until,
            reference: r.reference,
        });
    }
    out
}
