//! The TLS proxy listener's side of identification: its rustls server configuration (the
//! gate's certificate, h2 and HTTP/1.1 by ALPN, client certificates asked for when
//! `gate.client_ca_file` is set) and the identities a verified client certificate carries.
//!
//! rustls' stock client verifier refuses a certificate from another CA at the handshake. That
//! is what `client_certificates = "require"` wants; under `"optional"` such a certificate must
//! be ignored instead, so [`ClientCa`] accepts any chain at the handshake (the client still
//! proves it holds the key) and [`ClientCa::verify`] checks it against the CA afterwards: only
//! a chain that verifies yields [`PeerIdentities`].

use crate::config::{ClientCertificates, ProxyTls};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentities {
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// The subject CN.
    pub cn: Option<String>,
}

impl PeerIdentities {
    /// Reads the identities of a DER certificate; `None` when it does not parse.
    pub fn of(der: &[u8]) -> Option<PeerIdentities> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut p = PeerIdentities::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => p.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => p.dns.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
        p.cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(p)
    }
}

/// Why the TLS proxy listener could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ProxyTlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{key} ({path}): {message}")]
    File {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate and key, or the CA.
    #[error("TLS proxy listener: {0}")]
    Tls(String),
}

/// The client CA of the TLS proxy listener: the verifier used at the handshake and again
/// after it.
#[derive(Debug)]
pub struct ClientCa {
    webpki: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
}

impl ClientCa {
    /// Verifies a client's chain against the CA; the holder's identities when it verifies.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Option<PeerIdentities> {
        let (end, intermediates) = chain.split_first()?;
        self.webpki
            .verify_client_cert(end, intermediates, UnixTime::now())
            .ok()?;
        PeerIdentities::of(end)
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.mandatory {
            self.webpki
                .verify_client_cert(end_entity, intermediates, now)
        } else {
            // Optional: any chain passes the handshake and is verified again afterwards
            // (`ClientCa::verify`); one that does not verify identifies nobody.
            Ok(ClientCertVerified::assertion())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The TLS proxy listener's configuration and its client CA (when one is set).
pub struct ProxyTlsConfig {
    /// The rustls server configuration (ALPN h2, http/1.1).
    pub server: Arc<rustls::ServerConfig>,
    /// The client CA, when `gate.client_ca_file` is set.
    pub client_ca: Option<Arc<ClientCa>>,
}

/// Builds the TLS proxy listener's configuration from the validated keys.
///
/// # Errors
/// A file that cannot be read or parsed, or a key that does not fit the certificate.
pub fn server_config(t: &ProxyTls) -> Result<ProxyTlsConfig, ProxyTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&t.cert, "gate.proxy_tls_cert")?;
    let key = read_key(&t.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyTlsError::Tls(e.to_string()))?;
    let client_ca = match &t.client_ca_file {
        None => None,
        Some(p) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(p, "gate.client_ca_file")? {
                roots.add(c).map_err(|e| ProxyTlsError::File {
                    key: "gate.client_ca_file",
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ProxyTlsError::Tls(e.to_string()))?;
            Some(Arc::new(ClientCa {
                webpki,
                mandatory: t.client_certificates == ClientCertificates::Require,
            }))
        }
    };
    let builder = match &client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| ProxyTlsError::Tls(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ProxyTlsConfig {
        server: Arc::new(server),
        client_ca,
    })
}

fn read_certs(
    path: &Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ProxyTlsError> {
    let err = |message: String| ProxyTlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ProxyTlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| ProxyTlsError::File {
        key: "gate.proxy_tls_key",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The `reason` label of `transfer_gate_proxy_tls_handshake_errors_total` for a failed
/// handshake.
pub fn handshake_error_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "other";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        ) => "unknown_ca",
        _ => "other",
    }
}
