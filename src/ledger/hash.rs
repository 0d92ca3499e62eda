//! Keyed hashing of subject identifiers (SPEC §4): every normalised identifier, with its
//! namespace, becomes a 128-bit [`SubjectKey`] under a secret key kept in
//! `ledger.hash_key_file`. The ledger, its files and its logs only ever see these keys.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length in bytes of the secret hashing key.
pub const HASH_KEY_LEN: usize = 32;

/// Inputs up to this length are hashed from a stack buffer in one shot.
const INLINE: usize = 128;

/// The 128-bit keyed hash of one data subject's identifier: the only form in which a subject
/// reaches the ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SubjectKey(pub [u8; 16]);

impl SubjectKey {
    /// The raw 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell keys apart in test output; the key is not an identifier,
        // but there is no reason to print more of it.
        write!(
            f,
            "SubjectKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Why the hashing key could not be loaded or created. Each is a startup error.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    /// The key file (or its directory) could not be read or created.
    #[error("hash key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file can be read by the group or by others.
    #[error("hash key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly [`HASH_KEY_LEN`] bytes.
    #[error("hash key file {path} holds {len} bytes; expected {HASH_KEY_LEN}")]
    Length {
        /// The key file.
        path: PathBuf,
        /// The number of bytes found.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate a hash key: {0}")]
    Random(String),
}

/// Turns (namespace, normalised identifier) into a [`SubjectKey`] with BLAKE3 in keyed mode.
#[derive(Clone)]
pub struct SubjectHasher {
    key: [u8; HASH_KEY_LEN],
}

impl fmt::Debug for SubjectHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectHasher { key: <redacted> }")
    }
}

impl SubjectHasher {
    /// A hasher over an explicit key (tests, benchmarks).
    pub const fn from_key(key: [u8; HASH_KEY_LEN]) -> Self {
        SubjectHasher { key }
    }

    /// Loads the key from `path`, or creates it (mode 0600, parent directories included) from
    /// the OS random number generator when the file does not exist.
    ///
    /// # Errors
    /// A key file readable by group or others, of the wrong length, or any I/O failure.
    pub fn load_or_create(path: &Path) -> Result<Self, HashKeyError> {
        let io = |source| HashKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                let mut key = [0u8; HASH_KEY_LEN];
                getrandom::fill(&mut key).map_err(|e| HashKeyError::Random(e.to_string()))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                }
                Ok(SubjectHasher { key })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn load(path: &Path) -> Result<Self, HashKeyError> {
        let io = |source| HashKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(HashKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::with_capacity(HASH_KEY_LEN + 1);
        Read::by_ref(&mut file)
            .take(HASH_KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let key: [u8; HASH_KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| HashKeyError::Length {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(SubjectHasher { key })
    }

    /// The key of one subject: `namespace` (e.g. `"phone"`, `"id_card"`) separates identifier
    /// kinds, so equal strings in different namespaces never collide. No allocation.
    pub fn hash(&self, namespace: &str, normalised_id: &[u8]) -> SubjectKey {
        // Input: namespace length (u64 LE) · namespace · identifier. The length prefix keeps
        // ("ab", "c") and ("a", "bc") apart.
        let n = 8 + namespace.len() + normalised_id.len();
        let out = if n <= INLINE {
            // The common case: one-shot hashing of a stack buffer (a streaming `Hasher` costs
            // more to set up than a short identifier costs to hash).
            let mut buf = [0u8; INLINE];
            buf[..8].copy_from_slice(&(namespace.len() as u64).to_le_bytes());
            buf[8..8 + namespace.len()].copy_from_slice(namespace.as_bytes());
            buf[8 + namespace.len()..n].copy_from_slice(normalised_id);
            blake3::keyed_hash(&self.key, &buf[..n])
        } else {
            let mut h = blake3::Hasher::new_keyed(&self.key);
            h.update(&(namespace.len() as u64).to_le_bytes());
            h.update(namespace.as_bytes());
            h.update(normalised_id);
            h.finalize()
        };
        let mut key = [0u8; 16];
        key.copy_from_slice(&out.as_bytes()[..16]);
        SubjectKey(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_key_with_mode_0600_and_reloads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/subject-hash.key");
        let a = SubjectHasher::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SubjectHasher::load_or_create(&path).unwrap();
        assert_eq!(
            a.hash("phone", b"13800000000"),
            b.hash("phone", b"13800000000")
        );
        assert_eq!(fs::read(&path).unwrap().len(), HASH_KEY_LEN);
    }

    #[test]
    fn rejects_wrong_permissions_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SubjectHasher::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            SubjectHasher::load_or_create(&path),
            Err(HashKeyError::Permissions { mode: 0o640, .. })
        ));
        fs::write(&path, [1u8; 31]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SubjectHasher::load_or_create(&path),
            Err(HashKeyError::Length { len: 31, .. })
        ));
    }

    #[test]
    fn namespaces_and_keys_separate_hashes() {
        let h = SubjectHasher::from_key([7; 32]);
        assert_ne!(h.hash("phone", b"1"), h.hash("email", b"1"));
        assert_ne!(h.hash("ab", b"c"), h.hash("a", b"bc"));
        // The one-shot and streaming paths agree (same input bytes).
        let long = vec![b'x'; 300];
        let mut s = blake3::Hasher::new_keyed(&[7; 32]);
        s.update(&5u64.to_le_bytes());
        s.update(b"phone");
        s.update(&long);
        assert_eq!(h.hash("phone", &long).0, s.finalize().as_bytes()[..16]);
        let mut s = blake3::Hasher::new_keyed(&[7; 32]);
        s.update(&5u64.to_le_bytes());
        s.update(b"phone");
        s.update(b"138");
        assert_eq!(h.hash("phone", b"138").0, s.finalize().as_bytes()[..16]);
        let other = SubjectHasher::from_key([8; 32]);
        assert_ne!(h.hash("phone", b"1"), other.hash("phone", b"1"));
        assert!(!format!("{h:?}").contains("7"));
    }
}
