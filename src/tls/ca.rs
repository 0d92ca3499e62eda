//! The interception CA: created by `transfer-gate ca init` ([`init`]), loaded from
//! `tls.ca_cert` / `tls.ca_key` when the configuration loads ([`InterceptCa::load`]), and used by
//! [`super::mint`] to sign the short-lived leaf certificates of intercepted connections.
//!
//! The key file must not be readable by group or others: a leaked interception key lets anyone
//! impersonate every host to every client that trusts the CA, so the gate refuses to start (and
//! `check` reports an error) when it is.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The certificate file `ca init` writes.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The key file `ca init` writes (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// The common name of a CA made by `ca init`.
pub const DEFAULT_CA_NAME: &str = "transfer-gate interception CA";
/// How long a CA made by `ca init` is valid.
const CA_VALIDITY_DAYS: i64 = 5 * 365;

/// Why the interception CA could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The key file is readable by group or others.
    #[error("{} is readable by group or others (mode {mode:03o}); the interception key must be private: chmod 600 {}", path.display(), path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The certificate file holds no usable CA certificate.
    #[error("{}: not a PEM CA certificate: {reason}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file holds no usable private key.
    #[error("{}: not a PEM PKCS#8 private key (ECDSA P-256/P-384, Ed25519 or RSA): {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A test leaf signed with the key does not verify against the certificate.
    #[error("{} and {} do not belong together: {reason}", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The verifier's complaint.
        reason: String,
    },
    /// `ca init` would overwrite a file.
    #[error("{} already exists; pass --force to replace it (clients trusting the old CA must then trust the new one)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// rcgen failed to build a certificate.
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl CaError {
    /// The `gate.toml` key the problem belongs to (for `check`).
    pub fn config_key(&self) -> &'static str {
        match self {
            CaError::Cert { .. } | CaError::Read { .. } => "tls.ca_cert",
            CaError::ReadKey { .. } | CaError::KeyPermissions { .. } | CaError::Key { .. } => {
                "tls.ca_key"
            }
            _ => "tls",
        }
    }
}

/// A loaded interception CA: its certificate and the issuer (name, key id, key) that signs leaves.
pub struct InterceptCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for InterceptCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptCa").finish_non_exhaustive()
    }
}

impl InterceptCa {
    /// The CA of a PEM certificate and key (not checked to belong together: see
    /// `super::load`).
    pub(super) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<InterceptCa, PemError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PemError::Cert(e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PemError::Key(e.to_string()))?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| PemError::Cert(e.to_string()))?;
        Ok(InterceptCa { issuer, cert_der })
    }

    /// Creates a new CA (ECDSA P-256, valid five years, may sign only leaves) and returns it with
    /// its certificate and key in PEM.
    ///
    /// # Errors
    /// When rcgen fails.
    pub fn generate(common_name: &str) -> Result<(InterceptCa, CaPem), CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "transfer-gate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = CaPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        let ca = InterceptCa {
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, pem))
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

pub(super) enum PemError {
    Cert(String),
    Key(String),
}

/// A CA's certificate and private key in PEM.
pub struct CaPem {
    /// `-----BEGIN CERTIFICATE-----` …
    pub cert: String,
    /// `-----BEGIN PRIVATE KEY-----` … (PKCS#8)
    pub key: String,
}

/// A random positive 16-byte serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the clock still gives distinct serials.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_be_bytes();
    }
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

/// Refuses a key file whose mode lets group or others read (or write) it.
///
/// # Errors
/// [`CaError::KeyPermissions`], or [`CaError::ReadKey`] when the file cannot be inspected.
pub fn check_key_permissions(key: &Path) -> Result<(), CaError> {
    let meta = std::fs::metadata(key).map_err(|source| CaError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: key.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The files `ca init` wrote.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The certificate (mode 0644): distribute it to clients.
    pub cert: PathBuf,
    /// The private key (mode 0600): keep it on the gate only.
    pub key: PathBuf,
}

/// `transfer-gate ca init`: creates a CA in `dir` (`ca.pem` 0644 and `ca.key` 0600), refusing to
/// overwrite existing files unless `force`.
///
/// # Errors
/// [`CaError::Exists`] without `force`; I/O and rcgen errors.
pub fn init(dir: &Path, common_name: &str, force: bool) -> Result<CaFiles, CaError> {
    let files = CaFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    if !force {
        for p in [&files.cert, &files.key] {
            if p.symlink_metadata().is_ok() {
                return Err(CaError::Exists { path: p.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let (_, pem) = InterceptCa::generate(common_name)?;
    // The key first: if it cannot be written privately, no certificate is left behind.
    write_file(&files.key, pem.key.as_bytes(), 0o600, force)?;
    write_file(&files.cert, pem.cert.as_bytes(), 0o644, force)?;
    Ok(files)
}

fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        // Replace, never write through: a fresh file gets `mode` from the start.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    opts.create_new(true);
    let mut f = opts.open(path).map_err(err)?;
    // The umask may have narrowed the mode further; make it exact.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_private_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path(), DEFAULT_CA_NAME, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        let ca = InterceptCa::load(&files.cert, &files.key).unwrap();
        assert!(!ca.cert_der().is_empty());

        let before = std::fs::read(&files.key).unwrap();
        assert!(matches!(
            init(dir.path(), DEFAULT_CA_NAME, false),
            Err(CaError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&files.key).unwrap(), before);
        init(dir.path(), DEFAULT_CA_NAME, true).unwrap();
        assert_ne!(std::fs::read(&files.key).unwrap(), before);
        assert_eq!(mode(&files.key), 0o600);
    }

    #[test]
    fn absent_files_are_no_ca_but_half_a_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        assert!(InterceptCa::load_if_present(&cert, &key).unwrap().is_none());
        init(dir.path(), DEFAULT_CA_NAME, false).unwrap();
        std::fs::remove_file(&key).unwrap();
        let e = InterceptCa::load_if_present(&cert, &key).unwrap_err();
        assert_eq!(e.config_key(), "tls.ca_key");
    }

    #[test]
    fn a_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path(), DEFAULT_CA_NAME, false).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = InterceptCa::load(&files.cert, &files.key).unwrap_err();
        assert!(
            matches!(e, CaError::KeyPermissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"));
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let fa = init(a.path(), "a", false).unwrap();
        let fb = init(b.path(), "b", false).unwrap();
        let e = InterceptCa::load(&fa.cert, &fb.key).unwrap_err();
        assert!(matches!(e, CaError::Mismatch { .. }), "{e}");
        let e = InterceptCa::load(&fa.key, &fa.key).unwrap_err();
        assert!(matches!(e, CaError::Cert { .. }), "{e}");
    }
}
