//! Connection setup for the Redis ledger: the password from `ledger.redis_password_file` (kept
//! out of the URL and the config; an ACL user name stays in the URL) and, for `rediss://`, the
//! trust roots: the system's plus `ledger.redis_ca_file`. Nothing here ever logs the password;
//! [`RedisAuth`]'s `Debug` hides it.

use std::path::{Path, PathBuf};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{IntoConnectionInfo, RedisResult, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Credentials and trust for the Redis connection.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAuth {
    /// The password (`ledger.redis_password_file`), sent with `AUTH` / `HELLO`.
    password: Option<String>,
    /// The trust roots for `rediss://` in PEM (system roots plus `ledger.redis_ca_file`);
    /// `None`: the client library's defaults (the system roots).
    roots_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAuth")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("extra_roots", &self.roots_pem.is_some())
            .finish()
    }
}

/// Why the Redis password or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisAuthError {
    /// The password file could not be read, or is empty.
    #[error("redis password file {}: {reason}", path.display())]
    Password {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the password).
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("redis CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl RedisAuth {
    /// No password, the system roots.
    pub fn none() -> Self {
        RedisAuth::default()
    }

    /// Reads the password file (one line; the line end is not part of the password) and the
    /// CA file (PEM certificates, added to the system roots).
    ///
    /// # Errors
    /// A file that cannot be read, an empty password, a CA file without certificates.
    pub fn load(
        password_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Self, RedisAuthError> {
        let password = password_file.map(read_password).transpose()?;
        let roots_pem = ca_file.map(roots_with).transpose()?;
        Ok(RedisAuth {
            password,
            roots_pem,
        })
    }

    /// Whether a password is set.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// A client for one server at `url`, with the password and roots applied.
    pub(crate) fn server_client(&self, url: &str) -> RedisResult<redis::Client> {
        let mut info = url.into_connection_info()?;
        if let Some(p) = &self.password {
            info.redis.password = Some(p.clone());
        }
        match (&self.roots_pem, &info.addr) {
            (Some(roots), redis::ConnectionAddr::TcpTls { .. }) => redis::Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.clone()),
                },
            ),
            _ => redis::Client::open(info),
        }
    }

    /// A cluster client builder for `nodes`, with the password and roots applied.
    pub(crate) fn cluster_builder(&self, nodes: &[String]) -> ClusterClientBuilder {
        let mut b = ClusterClient::builder(nodes.to_vec());
        if let Some(p) = &self.password {
            b = b.password(p.clone());
        }
        let tls = nodes.iter().any(|n| n.starts_with("rediss://"));
        if let (Some(roots), true) = (&self.roots_pem, tls) {
            b = b.certs(TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.clone()),
            });
        }
        b
    }
}

fn read_password(path: &Path) -> Result<String, RedisAuthError> {
    let err = |reason: String| RedisAuthError::Password {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let pw = text.strip_suffix('\n').unwrap_or(&text);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(err("empty".into()));
    }
    if pw.contains(['\n', '\r']) {
        return Err(err("holds more than one line".into()));
    }
    Ok(pw.to_owned())
}

/// The system roots that rustls accepts, plus every certificate of `ca_file`, as PEM (the
/// client library takes its roots as one PEM blob and replaces the system's with it).
fn roots_with(ca_file: &Path) -> Result<Vec<u8>, RedisAuthError> {
    let err = |reason: String| RedisAuthError::Ca {
        path: ca_file.to_owned(),
        reason,
    };
    let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if extra.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let mut out = String::new();
    for c in &extra {
        let mut probe = rustls::RootCertStore::empty();
        probe
            .add(c.clone())
            .map_err(|e| err(format!("not a usable trust anchor: {e}")))?;
        out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())));
    }
    for c in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot parse is skipped, as for upstream TLS.
        if rustls::RootCertStore::empty().add(c.clone()).is_ok() {
            out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())));
        }
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_loses_its_line_end_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret pass\n").unwrap();
        let a = RedisAuth::load(Some(&p), None).unwrap();
        assert_eq!(a.password.as_deref(), Some("s3cret pass"));
        assert!(!format!("{a:?}").contains("s3cret"));
        let c = a.server_client("redis://gate@127.0.0.1:1/0").unwrap();
        let info = c.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("gate"));
        assert_eq!(info.redis.password.as_deref(), Some("s3cret pass"));

        std::fs::write(&p, "\n").unwrap();
        assert!(RedisAuth::load(Some(&p), None).is_err());
        std::fs::write(&p, "a\nb\n").unwrap();
        assert!(RedisAuth::load(Some(&p), None).is_err());
        let missing = dir.path().join("missing");
        let e = RedisAuth::load(Some(&missing), None).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        assert!(RedisAuth::load(None, Some(&p)).is_err());
        // The roots are only used for rediss://.
        let a = RedisAuth::none();
        assert!(a.server_client("redis://127.0.0.1:1/").is_ok());
    }
}
