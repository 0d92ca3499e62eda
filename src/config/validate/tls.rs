//! `[tls]`: the interception CA (both files or neither, a private key that belongs to the
//! certificate) and extra upstream roots.

use crate::config::raw::RawTls;
use crate::config::{resolve, Destination, Diagnostics, TlsMode, TlsSettings};
use std::path::Path;

/// Validates `[tls]`; warns when destinations want interception and no CA is configured.
pub(super) fn validate(
    path: &Path,
    file: &str,
    raw_tls: RawTls,
    destinations: &[Destination],
    d: &mut Diagnostics,
) -> TlsSettings {
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
    tls
}
