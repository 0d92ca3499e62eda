//! The files and directories the configuration names, checked the way `run` will use them at
//! start: the hash key (mode, length; with Redis it must exist), `data_dir` and the audit log
//! (writable by this user), the upstream CA file (parsed), the Redis address, password file and
//! CA file, the TLS proxy listener's certificate, key and client CA, and the inspection
//! settings the engine is built from. [`super::load`] runs these
//! checks, so `check`, `run` and reload agree on what is an error. (The interception CA pair
//! and the admin token are checked where their keys are validated.)
//!
//! What only a running gate can know is not checked here: whether the listeners can be bound,
//! whether Redis answers and holds this hash key, whether another gate holds `data_dir`.

use super::{Backend, Config, Diagnostics};
use crate::ledger::SubjectHasher;
use rustix::fs::Access;
use std::path::Path;

/// Adds every problem of the files `cfg` names to `d` (errors are attributed to `file`).
pub(super) fn check(cfg: &Config, file: &str, d: &mut Diagnostics) {
    hash_key(cfg, file, d);
    writable_dir(&cfg.gate.data_dir, file, "gate.data_dir", d);
    if let Some(p) = &cfg.gate.audit_log {
        audit_log(p, file, d);
    }
    if let Some(p) = &cfg.tls.upstream_ca_file {
        if let Err(e) = crate::tls::client::root_store(Some(p)) {
            d.error(file, "tls.upstream_ca_file", e.to_string());
        }
    }
    redis(cfg, file, d);
    if let Some(t) = &cfg.gate.proxy_tls {
        // The TLS proxy listener's certificate, key and client CA, loaded as `run` loads them.
        if let Err(e) = crate::identity::tls::server_config(t) {
            d.error(file, "gate.proxy_tls_listen", e.to_string());
        }
    }
    if let Err(e) = crate::proxy::inspect_config(cfg) {
        d.error(file, "inspection", e.to_string());
    }
}

fn hash_key(cfg: &Config, file: &str, d: &mut Diagnostics) {
    let path = &cfg.ledger.hash_key_file;
    let key = "ledger.hash_key_file";
    match path.symlink_metadata() {
        // Loading an existing key is what `run` does (mode, length, readable).
        Ok(_) => {
            if let Err(e) = SubjectHasher::load_or_create(path) {
                d.error(file, key, e.to_string());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cfg.ledger.backend == Backend::Local {
                // Created (0600) at the first start: its directory must be writable.
                let dir = path.parent().unwrap_or(Path::new("."));
                if let Some(problem) = creatable(dir) {
                    d.error(
                        file,
                        key,
                        format!(
                            "{} does not exist and cannot be created: {problem}",
                            path.display()
                        ),
                    );
                }
            } else {
                d.error(file, key, format!(
                    "{} does not exist; with backend = \"redis\" every replica must use the same key, so the gate does not create one: create it once (head -c 32 /dev/urandom > {0}; chmod 600 {0}) and give the same file to every replica",
                    path.display()
                ));
            }
        }
        Err(e) => d.error(file, key, format!("{}: {e}", path.display())),
    }
}

/// Why `dir` (or, when it does not exist yet, the directory that would hold it) cannot be
/// created or written by this user; `None` when it can.
fn creatable(dir: &Path) -> Option<String> {
    let mut probe = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    loop {
        match probe.metadata() {
            Ok(m) if m.is_dir() => {
                return rustix::fs::access(probe, Access::WRITE_OK | Access::EXEC_OK)
                    .err()
                    .map(|e| format!("{} is not writable: {e}", probe.display()));
            }
            Ok(_) => return Some(format!("{} is not a directory", probe.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                // A relative path's last component: the current directory holds it.
                Some(_) => probe = Path::new("."),
                None => return Some(format!("{} does not exist", dir.display())),
            },
            Err(e) => return Some(format!("{}: {e}", probe.display())),
        }
    }
}

fn writable_dir(dir: &Path, file: &str, key: &str, d: &mut Diagnostics) {
    if let Some(problem) = creatable(dir) {
        d.error(file, key, problem);
    }
}

fn audit_log(path: &Path, file: &str, d: &mut Diagnostics) {
    let key = "gate.audit_log";
    match path.metadata() {
        Ok(m) if m.is_dir() => d.error(file, key, format!("{} is a directory", path.display())),
        Ok(_) => {
            if let Err(e) = rustix::fs::access(path, Access::WRITE_OK) {
                d.error(
                    file,
                    key,
                    format!("{} is not writable: {e}", path.display()),
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            writable_dir(path.parent().unwrap_or(Path::new(".")), file, key, d);
        }
        Err(e) => d.error(file, key, format!("{}: {e}", path.display())),
    }
}

fn redis(cfg: &Config, file: &str, d: &mut Diagnostics) {
    let l = &cfg.ledger;
    let urls: Vec<&str> = match &l.backend {
        Backend::Local => {
            for (set, key) in [
                (
                    l.redis_password_file.is_some(),
                    "ledger.redis_password_file",
                ),
                (l.redis_ca_file.is_some(), "ledger.redis_ca_file"),
            ] {
                if set {
                    d.warn(file, key, "ignored: ledger.backend is local");
                }
            }
            return;
        }
        Backend::Redis { url } => vec![url.as_str()],
        Backend::RedisCluster { nodes } => nodes.iter().map(String::as_str).collect(),
    };
    let key = match l.backend {
        Backend::RedisCluster { .. } => "ledger.redis_cluster",
        _ => "ledger.redis_url",
    };
    for url in &urls {
        match redis::IntoConnectionInfo::into_connection_info(*url) {
            Ok(info) if info.redis.password.is_some() => {
                if l.redis_password_file.is_some() {
                    d.error(file, key, "holds a password and ledger.redis_password_file is set too: keep the password in the file only");
                } else {
                    d.warn(file, key, "holds a password: the config is not a secret (a ConfigMap, a file readable by many); move it to ledger.redis_password_file");
                }
            }
            Ok(_) => {}
            // The parse errors name what is wrong, not the URL (it may hold a password).
            Err(e) => d.error(file, key, format!("not a Redis address: {e}")),
        }
    }
    if l.redis_ca_file.is_some() && !urls.iter().any(|u| u.starts_with("rediss://")) {
        d.warn(
            file,
            "ledger.redis_ca_file",
            "only used for rediss:// (TLS) addresses",
        );
    }
    if let Err(e) =
        crate::ledger::RedisAuth::load(l.redis_password_file.as_deref(), l.redis_ca_file.as_deref())
    {
        let key = match e {
            crate::ledger::RedisAuthError::Password { .. } => "ledger.redis_password_file",
            crate::ledger::RedisAuthError::Ca { .. } => "ledger.redis_ca_file",
        };
        d.error(file, key, e.to_string());
    }
}
