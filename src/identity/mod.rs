//! Who is sending (SPEC §2 "Who is sending: clients"): the declared `[[client]]`s compiled
//! into a [`Clients`] matcher when the configuration loads, and the one place a request's
//! [`Identity`] is decided — a verified client certificate of the connection ([`tls`]), then
//! `Proxy-Authorization` (Bearer or Basic, against SHA-256 digests), then the source address
//! (longest prefix), else unidentified. A connection's certificate and address belong to every
//! request and h2 stream on it; the requests inside a `CONNECT` carry the `CONNECT`'s identity
//! ([`Carried`]). The proxy and ICAP listeners call [`Clients::identify`]; nothing below them
//! knows how a client was recognised, only its [`Identity`].

pub mod tls;

use crate::config::{Client, Mode, UNIDENTIFIED};
use base64::Engine as _;
use http::HeaderValue;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How a request's client was recognised (the audit's `identified_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifiedBy {
    /// A client certificate on the TLS proxy listener.
    Certificate,
    /// A token in `Proxy-Authorization`.
    Token,
    /// The source address.
    Address,
    /// The ICAP client's `X-Client-Username` / `X-Client-IP`.
    Icap,
}

impl IdentifiedBy {
    /// The audit string.
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentifiedBy::Certificate => "certificate",
            IdentifiedBy::Token => "token",
            IdentifiedBy::Address => "address",
            IdentifiedBy::Icap => "icap",
        }
    }
}

/// A request's client: an index into the configuration's `clients` (of the snapshot the
/// request runs under) and how it was recognised; `None` is unidentified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    /// The client's index in `Config::clients`.
    pub client: Option<u16>,
    /// How it was recognised (`None` when unidentified).
    pub by: Option<IdentifiedBy>,
}

impl Identity {
    /// No declared client.
    pub const UNIDENTIFIED: Identity = Identity {
        client: None,
        by: None,
    };
}

/// The identity a `CONNECT` request had, carried by name to the requests inside its tunnel (a
/// reload between them may renumber the clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The client's name (`None`: unidentified).
    pub name: Option<Arc<str>>,
    /// How the `CONNECT` was identified.
    pub by: Option<IdentifiedBy>,
}

/// What a connection knows of its client before any request: the verified client
/// certificate's identities (TLS proxy listener), inside a `CONNECT` the identity it had, and
/// the last token that verified on it.
#[derive(Debug, Clone, Default)]
pub struct ConnIdentity {
    /// A client certificate that verified against `gate.client_ca_file`.
    pub certificate: Option<Arc<tls::PeerIdentities>>,
    /// The identity of the `CONNECT` whose tunnel this connection is.
    pub carried: Option<Arc<Carried>>,
    /// The last `Proxy-Authorization` value that verified on this connection.
    pub verified: Arc<VerifiedToken>,
}

/// The last `Proxy-Authorization` value that verified on a connection, the client it named and
/// the [`Clients`] generation it was verified under. A keep-alive client sends the same value
/// on every request: the next one is compared (in constant time) instead of hashed again.
#[derive(Debug, Default)]
pub struct VerifiedToken(std::sync::Mutex<Option<Verified>>);

/// One verified `Proxy-Authorization` value.
#[derive(Debug)]
struct Verified {
    value: Box<[u8]>,
    generation: u64,
    client: u16,
}

impl VerifiedToken {
    fn get(&self, value: &[u8], generation: u64) -> Option<u16> {
        let g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let v = g.as_ref()?;
        (v.generation == generation && ct_eq(&v.value, value)).then_some(v.client)
    }

    fn set(&self, value: &[u8], generation: u64, client: u16) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Verified {
            value: value.into(),
            generation,
            client,
        });
    }
}

/// Equal length and content, compared without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Each [`Clients`] gets its own generation, so a token verified under one configuration is
/// never taken for a client of another.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Why a request could not be identified where it had to be: a credential that does not
/// verify (never a fall-back to the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCredential;

/// The longest `Proxy-Authorization` value looked at; longer is a bad credential.
const MAX_CREDENTIAL: usize = 4096;

/// The declared clients, compiled for lookups whose cost does not grow with their number.
#[derive(Debug, Default)]
pub struct Clients {
    generation: u64,
    names: Vec<Arc<str>>,
    modes: Vec<Mode>,
    by_name: HashMap<Arc<str>, u16>,
    /// URI SANs, DNS SANs and CNs written exactly.
    exact: HashMap<String, u16>,
    /// `*.suffix` patterns, by suffix.
    wildcard: HashMap<String, u16>,
    /// Token digests by their first 8 bytes; the whole digest is compared in constant time.
    tokens: HashMap<[u8; 8], ([u8; 32], u16)>,
    /// Source networks: per prefix length (longest first), network → client.
    v4: Vec<(u8, HashMap<IpNet, u16>)>,
    v6: Vec<(u8, HashMap<IpNet, u16>)>,
}

impl Clients {
    /// Compiles the validated `[[client]]` blocks (at most `u16::MAX`).
    pub fn new(clients: &[Client]) -> Clients {
        let mut c = Clients {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Clients::default()
        };
        for (i, cl) in clients.iter().enumerate().take(usize::from(u16::MAX)) {
            let i = i as u16;
            let name: Arc<str> = Arc::from(cl.name.as_str());
            c.names.push(name.clone());
            c.modes.push(cl.mode);
            c.by_name.insert(name, i);
            for id in &cl.tls_identities {
                match id.strip_prefix("*.") {
                    Some(suffix) => c.wildcard.insert(suffix.to_owned(), i),
                    None => c.exact.insert(id.clone(), i),
                };
            }
            for d in &cl.token_sha256 {
                c.tokens.insert(prefix(d), (*d, i));
            }
            for net in &cl.cidrs {
                let table = match net {
                    IpNet::V4(_) => &mut c.v4,
                    IpNet::V6(_) => &mut c.v6,
                };
                let len = net.prefix_len();
                let at = match table.iter().position(|(l, _)| *l == len) {
                    Some(at) => at,
                    None => {
                        table.push((len, HashMap::new()));
                        table.len() - 1
                    }
                };
                table[at].1.insert(*net, i);
            }
        }
        c.v4.sort_by_key(|t| std::cmp::Reverse(t.0));
        c.v6.sort_by_key(|t| std::cmp::Reverse(t.0));
        c
    }

    /// Whether `Proxy-Authorization` is consulted (some client declares `token_sha256`).
    pub fn uses_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The name of `id`'s client, or `unidentified`.
    pub fn name(&self, id: Identity) -> &str {
        id.client
            .and_then(|i| self.names.get(usize::from(i)))
            .map_or(UNIDENTIFIED, |n| n)
    }

    /// The name of `id`'s client, shared (`None` when unidentified): for audit records.
    pub fn name_arc(&self, id: Identity) -> Option<Arc<str>> {
        id.client
            .and_then(|i| self.names.get(usize::from(i)))
            .cloned()
    }

    /// The client's index by name.
    pub fn index(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    /// Whether `id`'s client is in observe mode (`mode = "observe"`).
    pub fn observed(&self, id: Identity) -> bool {
        id.client
            .and_then(|i| self.modes.get(usize::from(i)))
            .is_some_and(|m| *m == Mode::Observe)
    }

    /// Identifies a request, first match wins (SPEC §2): the connection's verified certificate,
    /// then `Proxy-Authorization` (only when some client declares tokens), then the source
    /// address; a request inside a `CONNECT` carries the `CONNECT`'s identity.
    ///
    /// # Errors
    /// A `Proxy-Authorization` that does not verify: 407, never a fall-back to the address.
    pub fn identify(
        &self,
        conn: &ConnIdentity,
        authorization: Option<&HeaderValue>,
        peer: IpAddr,
    ) -> Result<Identity, BadCredential> {
        if let Some(carried) = &conn.carried {
            let client = carried.name.as_deref().and_then(|n| self.index(n));
            return Ok(match client {
                Some(_) => Identity {
                    client,
                    by: carried.by,
                },
                None => Identity::UNIDENTIFIED,
            });
        }
        if let Some(client) = conn
            .certificate
            .as_deref()
            .and_then(|p| self.by_certificate(p))
        {
            return Ok(Identity {
                client: Some(client),
                by: Some(IdentifiedBy::Certificate),
            });
        }
        if let (true, Some(value)) = (self.uses_tokens(), authorization) {
            let value = value.as_bytes();
            let client = match conn.verified.get(value, self.generation) {
                Some(c) => c,
                None => {
                    let c = self.by_token(value).ok_or(BadCredential)?;
                    conn.verified.set(value, self.generation, c);
                    c
                }
            };
            return Ok(Identity {
                client: Some(client),
                by: Some(IdentifiedBy::Token),
            });
        }
        Ok(self
            .by_address(peer)
            .map_or(Identity::UNIDENTIFIED, |client| Identity {
                client: Some(client),
                by: Some(IdentifiedBy::Address),
            }))
    }

    /// Identifies a request an ICAP client passed on: `X-Client-Username` when it names a
    /// declared client, else `X-Client-IP` against the source networks.
    pub fn identify_icap(&self, username: Option<&str>, client_ip: Option<IpAddr>) -> Identity {
        let found = username
            .map(str::trim)
            .and_then(|u| self.index(u))
            .or_else(|| client_ip.and_then(|ip| self.by_address(ip)));
        match found {
            Some(client) => Identity {
                client: Some(client),
                by: Some(IdentifiedBy::Icap),
            },
            None => Identity::UNIDENTIFIED,
        }
    }

    /// The client whose identity a verified certificate carries: its URI SANs, then its DNS
    /// SANs (exact, or `*.` for one label), then — only without any SAN — its subject CN.
    pub fn by_certificate(&self, p: &tls::PeerIdentities) -> Option<u16> {
        if let Some(i) = p.uris.iter().find_map(|u| self.exact.get(u.as_str())) {
            return Some(*i);
        }
        for dns in &p.dns {
            let dns = dns.to_ascii_lowercase();
            if let Some(i) = self.exact.get(&dns) {
                return Some(*i);
            }
            if let Some((_, suffix)) = dns.split_once('.') {
                if let Some(i) = self.wildcard.get(suffix) {
                    return Some(*i);
                }
            }
        }
        if p.uris.is_empty() && p.dns.is_empty() {
            if let Some(cn) = &p.cn {
                return self
                    .exact
                    .get(cn.as_str())
                    .or_else(|| self.exact.get(&cn.to_ascii_lowercase()))
                    .copied();
            }
        }
        None
    }

    /// The client a `Proxy-Authorization` value names: `Bearer <token>`, or
    /// `Basic base64(<name>:<token>)` whose name is the token's client.
    fn by_token(&self, value: &[u8]) -> Option<u16> {
        if value.len() > MAX_CREDENTIAL {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.token_client(rest.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            let (user, token) = (&decoded[..colon], &decoded[colon + 1..]);
            let client = self.token_client(token)?;
            return (self.names[usize::from(client)].as_bytes() == user).then_some(client);
        }
        None
    }

    fn token_client(&self, token: &[u8]) -> Option<u16> {
        if token.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token).into();
        let (stored, client) = self.tokens.get(&prefix(&digest))?;
        ct_eq(stored, &digest).then_some(*client)
    }

    /// The client of the longest source prefix containing `ip`.
    pub fn by_address(&self, ip: IpAddr) -> Option<u16> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let table = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        table.iter().find_map(|(len, nets)| {
            let net = IpNet::new(ip, *len).ok()?.trunc();
            nets.get(&net).copied()
        })
    }
}

fn prefix(d: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&d[..8]);
    p
}

/// The token's `token_sha256` line value: the hex SHA-256 of `token`.
pub fn token_digest_hex(token: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests;
