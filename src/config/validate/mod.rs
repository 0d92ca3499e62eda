//! Turns the raw files into a [`Config`], collecting every problem on the way: this module
//! reads and parses the files and runs one validator per section, in the order of
//! SPEC §12, each in its own file.

mod approvals;
mod clients;
mod destinations;
mod domestic;
mod entity;
mod gate;
mod important;
mod inspection;
mod ledger;
mod timeouts;
mod tls;

use crate::config::locate::Source;
use crate::config::raw::*;
use crate::config::{Config, Diagnostic, Diagnostics};
use crate::model::Regime;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::Path;
use toml::{Table, Value};

/// Whether `n` is a valid client name (`[a-z0-9_-]{1,64}`).
pub fn valid_client_name(n: &str) -> bool {
    clients::valid_name(n)
}

/// The sections `gate.toml` may hold.
const TOP_KEYS: [&str; 10] = [
    "gate",
    "timeouts",
    "entity",
    "ledger",
    "inspection",
    "domestic",
    "destination",
    "important_data",
    "tls",
    "client",
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
    let cfg = read_table(path, &file, &mut d, &mut hasher).and_then(|(t, source)| {
        d.set_source(Some(source));
        build(path, &file, &t, &mut d, &mut hasher)
    });
    if let Some(cfg) = &cfg {
        // The files and directories `run` opens at start, checked the same way here, so
        // that `check` and `run` agree.
        crate::config::files::check(cfg, &file, &mut d);
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

/// Reads and parses one file; its [`Source`] locates the keys of later diagnostics.
fn read_table(
    path: &Path,
    file: &str,
    d: &mut Diagnostics,
    hasher: &mut Sha256,
) -> Option<(Table, Source)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            d.error(file, "", format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    hasher.update(text.as_bytes());
    match text.parse::<Table>() {
        Ok(t) => Some((t, Source::new(file, text))),
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
            let message = e.to_string().trim().to_owned();
            // serde names an unknown field first: point at its line rather than its table's.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(key, _)| key.to_owned());
            match unknown {
                Some(key) => d.error_at_key(file, path, &key, message),
                None => d.error(file, path, message),
            }
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

/// Validates every section of the parsed `gate.toml`, then the approvals file it names.
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
    let raw_clients: Vec<Option<RawClient>> = array(t, "client", file, d);

    let entity = raw_entity.map(|e| entity::validate(file, e, d));
    let regime = entity.as_ref().map(|e| e.regime).unwrap_or(Regime::Cac2024);
    let gate = raw_gate.map(|g| gate::validate(path, file, g, d));
    let timeouts = timeouts::validate(file, raw_timeouts, d);
    let ledger = ledger::validate(path, file, raw_ledger, d);
    let inspection = inspection::validate(path, file, raw_insp, d);
    let domestic = domestic::validate(file, raw_domestic, d);
    if let Some(g) = &gate {
        crate::config::targets::warn_denied_domestic(&domestic, &g.deny_cidrs, file, d);
    }
    let destinations = destinations::validate(file, raw_dests, &domestic, regime, d);
    let important_data = important::validate(file, raw_important, &destinations, d);
    let tls = tls::validate(path, file, raw_tls, &destinations, d);
    let icap = gate.as_ref().is_some_and(|g| g.icap_listen.is_some());
    let clients = clients::validate(file, raw_clients, icap, d);
    clients::check_allowlists(file, &destinations, &clients, d);
    let approvals = match &gate {
        Some(g) => approvals::load(&g.approvals_file, &destinations, regime, d, hasher),
        None => Vec::new(),
    };

    let routes = crate::config::host_index::Routes::build(&destinations, &domestic);
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
        clients,
        routes,
    })
}
