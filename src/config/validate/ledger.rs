//! `[ledger]`: the backend (local or Redis), its hash key, timeout and Redis credentials.

use crate::config::raw::RawLedger;
use crate::config::{resolve, Backend, Diagnostics, LedgerSettings};
use std::path::Path;
use std::time::Duration;

/// Validates `[ledger]`; `path` is the config file (relative paths are resolved against it).
pub(super) fn validate(
    path: &Path,
    file: &str,
    raw: RawLedger,
    d: &mut Diagnostics,
) -> LedgerSettings {
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
