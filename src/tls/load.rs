//! Loading the interception CA from its files: permissions, PEM, and a self-test that the key
//! signs leaves a client accepts under the certificate ([`super::mint::self_test`]). Kept apart
//! from [`super::ca`] so that the CA does not depend on the minting that depends on it.

use super::ca::{check_key_permissions, CaError, InterceptCa, PemError};
use std::io;
use std::path::Path;

impl InterceptCa {
    /// Loads the CA from PEM files, refusing a key file that group or others can read.
    ///
    /// # Errors
    /// See [`CaError`]; the certificate and key are also checked to belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<InterceptCa, CaError> {
        check_key_permissions(key)?;
        let cert_pem = std::fs::read_to_string(cert).map_err(|source| CaError::Read {
            path: cert.to_path_buf(),
            source,
        })?;
        let key_pem = std::fs::read_to_string(key).map_err(|source| CaError::ReadKey {
            path: key.to_path_buf(),
            source,
        })?;
        let ca = Self::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            PemError::Cert(reason) => CaError::Cert {
                path: cert.to_path_buf(),
                reason,
            },
            PemError::Key(reason) => CaError::Key {
                path: key.to_path_buf(),
                reason,
            },
        })?;
        super::mint::self_test(&ca).map_err(|reason| CaError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason,
        })?;
        Ok(ca)
    }

    /// Like [`load`](Self::load), but `None` when neither file exists yet (a fresh install
    /// before `ca init`): interception is then unavailable and `CONNECT` to intercept
    /// destinations stays refused `uninspectable` (fail closed).
    ///
    /// # Errors
    /// As [`load`](Self::load), when either file exists.
    pub fn load_if_present(cert: &Path, key: &Path) -> Result<Option<InterceptCa>, CaError> {
        let absent = |p: &Path| matches!(p.symlink_metadata(), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if absent(cert) && absent(key) {
            return Ok(None);
        }
        Self::load(cert, key).map(Some)
    }
}
