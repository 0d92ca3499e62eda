//! Leaf certificates for intercepted connections: [`Minter`] signs a short-lived certificate for
//! a TLS server name with the interception CA and keeps it in a bounded cache ([`LeafCache`]:
//! at most `max` names, each reused for half its validity, least recently used evicted first).
//! [`server_config`] is the rustls server side of interception: ALPN `h2` and `http/1.1`, a
//! certificate resolver that mints for the client's SNI. The proxy checks the SNI against the
//! `CONNECT` target before the handshake goes on (see `proxy::intercept`).

use super::ca::{random_serial, InterceptCa};
use super::client::{provider, TlsConfigError};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a minted leaf is valid (clients see a fresh certificate at least this often).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How many names the leaf cache holds.
pub const LEAF_CACHE_MAX: usize = 1024;
/// Backdating of `notBefore`, for clients whose clocks run a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why a leaf could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// rcgen could not build or sign the certificate.
    #[error("cannot mint a leaf certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls could not load the leaf key.
    #[error("cannot load the leaf key: {0}")]
    Key(#[from] rustls::Error),
}

/// A bounded map from server name to certificate with expiry and least-recently-used eviction.
/// Eviction scans the map, which is cheap at this size and happens only on a miss.
#[derive(Debug)]
pub struct LeafCache<V> {
    max: usize,
    ttl: Duration,
    tick: u64,
    map: HashMap<String, Entry<V>>,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    expires: Instant,
    used: u64,
}

impl<V: Clone> LeafCache<V> {
    /// An empty cache of at most `max` entries (at least one), each living `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        LeafCache {
            max: max.max(1),
            ttl,
            tick: 0,
            map: HashMap::new(),
        }
    }

    /// The live entry for `name`, marked as used.
    pub fn get(&mut self, name: &str, now: Instant) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(name) {
            Some(e) if e.expires > now => {
                e.used = tick;
                Some(e.value.clone())
            }
            Some(_) => {
                self.map.remove(name);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `name`, evicting expired entries and then the least recently used.
    pub fn insert(&mut self, name: String, value: V, now: Instant) {
        self.tick += 1;
        if !self.map.contains_key(&name) && self.map.len() >= self.max {
            self.map.retain(|_, e| e.expires > now);
            while self.map.len() >= self.max {
                let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.map.remove(&oldest);
            }
        }
        self.map.insert(
            name,
            Entry {
                value,
                expires: now + self.ttl,
                used: self.tick,
            },
        );
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Mints and caches leaf certificates signed by the interception CA.
pub struct Minter {
    ca: InterceptCa,
    provider: Arc<CryptoProvider>,
    validity: Duration,
    cache: Mutex<LeafCache<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter over `ca` with the default validity and cache bound.
    pub fn new(ca: InterceptCa) -> Self {
        Self::with_limits(ca, LEAF_VALIDITY, LEAF_CACHE_MAX)
    }

    /// A minter with explicit leaf validity and cache size; cached leaves are reused for half
    /// their validity, so a client never gets one close to expiry.
    pub fn with_limits(ca: InterceptCa, validity: Duration, max: usize) -> Self {
        Minter {
            ca,
            provider: provider(),
            validity,
            cache: Mutex::new(LeafCache::new(max, validity / 2)),
        }
    }

    /// The certificate and key for `name` (lower-cased), from the cache or freshly minted.
    ///
    /// # Errors
    /// See [`MintError`].
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, MintError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let now = Instant::now();
        if let Some(k) = self.lock().get(&name, now) {
            return Ok(k);
        }
        // Minted outside the lock: two racing handshakes may both mint; either result is fine.
        let key = Arc::new(self.mint(&name)?);
        self.lock().insert(name, key.clone(), now);
        Ok(key)
    }

    /// How many leaves are cached.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeafCache<Arc<CertifiedKey>>> {
        // A poisoned cache is still a valid cache (entries are inserted whole).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(&self, name: &str) -> Result<CertifiedKey, MintError> {
        let (der, key) = mint_der(&self.ca, name, self.validity)?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))?;
        Ok(CertifiedKey::new(vec![der], signing))
    }
}

/// A leaf for `name` valid from one hour ago for `validity`: its DER and its PKCS#8 key.
fn mint_der(
    ca: &InterceptCa,
    name: &str,
    validity: Duration,
) -> Result<(CertificateDer<'static>, Vec<u8>), rcgen::Error> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.der().clone(), key.serialize_der()))
}

/// Mints a leaf and verifies it against the CA certificate as the only root: proves the key
/// belongs to the certificate and that clients trusting the certificate will accept the leaves.
pub(crate) fn self_test(ca: &InterceptCa) -> Result<(), String> {
    const NAME: &str = "self-test.transfer-gate.invalid";
    let (leaf, _) = mint_der(ca, NAME, Duration::from_secs(600)).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| e.to_string())?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(NAME).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Resolves the certificate for the client's SNI by minting; no SNI, no certificate.
#[derive(Debug)]
struct MintingResolver(Arc<Minter>);

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.0.certified_key(name) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(sni = name, error = %e, "cannot mint an interception certificate");
                None
            }
        }
    }
}

/// Resolves no certificate: the handshake fails with an alert (refused SNI).
#[derive(Debug)]
struct Refuse;

impl ResolvesServerCert for Refuse {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

fn build(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Provider(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The interception server config: ALPN h2 and http/1.1, leaves minted for the SNI.
///
/// # Errors
/// When the crypto provider supports none of the safe protocol versions.
pub fn server_config(minter: Arc<Minter>) -> Result<Arc<ServerConfig>, TlsConfigError> {
    build(Arc::new(MintingResolver(minter)))
}

/// A server config that fails every handshake with an alert (used for a refused SNI).
///
/// # Errors
/// When the crypto provider supports none of the safe protocol versions.
pub fn refusing_config() -> Result<Arc<ServerConfig>, TlsConfigError> {
    build(Arc::new(Refuse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::DEFAULT_CA_NAME;

    fn minter(max: usize) -> Minter {
        let (ca, _) = InterceptCa::generate(DEFAULT_CA_NAME).unwrap();
        Minter::with_limits(ca, LEAF_VALIDITY, max)
    }

    #[test]
    fn a_minted_leaf_verifies_for_its_name_only() {
        let (ca, _) = InterceptCa::generate(DEFAULT_CA_NAME).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let m = Minter::new(ca);
        let k = m.certified_key("API.eu.test.").unwrap();
        let leaf = &k.cert[0];
        let ok = ServerName::try_from("api.eu.test").unwrap();
        v.verify_server_cert(leaf, &[], &ok, &[], UnixTime::now())
            .unwrap();
        let other = ServerName::try_from("evil.example.org").unwrap();
        assert!(v
            .verify_server_cert(leaf, &[], &other, &[], UnixTime::now())
            .is_err());
        // Short-lived: not valid two days from now.
        let later = UnixTime::since_unix_epoch(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(2 * 24 * 3600),
        );
        assert!(v.verify_server_cert(leaf, &[], &ok, &[], later).is_err());
    }

    #[test]
    fn leaves_are_cached_per_name() {
        let m = minter(8);
        let a = m.certified_key("a.test").unwrap();
        let again = m.certified_key("A.TEST").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = m.certified_key("b.test").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(m.cached(), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let mut c = LeafCache::new(3, Duration::from_secs(60));
        c.insert("a".into(), 1, t0);
        c.insert("b".into(), 2, t0);
        c.insert("c".into(), 3, t0);
        assert_eq!(c.get("a", t0), Some(1)); // b is now the least recently used
        c.insert("d".into(), 4, t0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b", t0), None);
        assert_eq!(c.get("a", t0), Some(1));
        assert_eq!(c.get("d", t0), Some(4));
        for i in 0..100 {
            c.insert(format!("n{i}"), i, t0);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn cache_entries_expire() {
        let t0 = Instant::now();
        let mut c = LeafCache::new(2, Duration::from_secs(10));
        c.insert("a".into(), 1, t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(c.get("a", t0 + Duration::from_secs(10)), None);
        assert!(c.is_empty());
        // Expired entries go first when the cache is full.
        c.insert("x".into(), 1, t0);
        c.insert("y".into(), 2, t0 + Duration::from_secs(5));
        c.insert("z".into(), 3, t0 + Duration::from_secs(12));
        assert_eq!(c.get("y", t0 + Duration::from_secs(12)), Some(2));
        assert_eq!(c.get("x", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn the_minter_cache_is_bounded() {
        let m = minter(4);
        for i in 0..10 {
            m.certified_key(&format!("h{i}.test")).unwrap();
            assert!(m.cached() <= 4);
        }
        assert_eq!(m.cached(), 4);
    }
}
