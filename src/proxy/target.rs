//! Target rules (SPEC §2 "The gate is never a way around itself"): what the gate refuses to
//! connect to when a proxy client chose the host (a domestic tunnel or forward, a destination
//! without `connect_to`). The check is made on every address the name resolves to, before
//! connecting, and again on the connected socket (a target that turns out to be this very host
//! is caught even on an address the gate does not know it has):
//! - never the gate's own listeners ([`OwnEndpoints::add_listener`]: proxy, admin, and any
//!   listener added later) nor the ledger backend's servers (the Redis hosts, resolved);
//! - never an address in `gate.deny_cidrs`;
//! - a domestic `CONNECT` only to a port in `gate.tunnel_ports` ([`TargetRules::tunnel_port_allowed`],
//!   checked before any resolution or connection).
//!
//! A destination's `connect_to` is the operator's own setting and is dialled without these rules.

use crate::config::{Backend, Gate as GateSettings};
use ipnet::IpNet;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The gate's own endpoints, process-wide: its listeners and its ledger's servers.
#[derive(Debug, Default)]
pub struct OwnEndpoints {
    listeners: RwLock<Vec<SocketAddr>>,
    ledger_hosts: Vec<(String, u16)>,
    ledger: RwLock<Vec<SocketAddr>>,
}

impl OwnEndpoints {
    /// The endpoints of a gate whose ledger is `backend` (listeners are added once bound).
    pub fn new(backend: &Backend) -> Self {
        OwnEndpoints {
            ledger_hosts: ledger_hosts(backend),
            ..OwnEndpoints::default()
        }
    }

    /// Adds a bound listener (its real address, after binding port 0).
    pub fn add_listener(&self, addr: SocketAddr) {
        let mut l = self.listeners.write().unwrap_or_else(|p| p.into_inner());
        if !l.contains(&addr) {
            l.push(addr);
        }
    }

    /// The listeners added so far.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ledger servers' addresses as last resolved.
    pub fn ledger_addrs(&self) -> Vec<SocketAddr> {
        self.ledger
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves the ledger's host names again (a Service address may change). Addresses that
    /// no longer resolve stay in the set: forgetting one would open it.
    pub async fn refresh_ledger(&self) {
        let mut found = Vec::new();
        for (host, port) in &self.ledger_hosts {
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => found.extend(addrs.map(canonical)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "ledger host did not resolve for the target rules");
                }
                Err(_) => tracing::debug!("ledger host lookup timed out for the target rules"),
            }
        }
        let mut l = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        for a in found {
            if !l.contains(&a) {
                l.push(a);
            }
        }
    }

    /// Whether `addr` is one of the gate's own endpoints. `same_host`: the address is known to
    /// be this host (then any own port matches).
    fn owns(&self, addr: SocketAddr, same_host: bool) -> bool {
        let ip = addr.ip();
        let local = same_host || ip.is_loopback() || ip.is_unspecified();
        let hit = |e: &SocketAddr| e.port() == addr.port() && (local || canonical(*e).ip() == ip);
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(hit)
            || self
                .ledger
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(hit)
    }
}

/// The `host:port` of every server the ledger backend connects to.
fn ledger_hosts(backend: &Backend) -> Vec<(String, u16)> {
    let urls: Vec<&str> = match backend {
        Backend::Local => Vec::new(),
        Backend::Redis { url } => vec![url.as_str()],
        Backend::RedisCluster { nodes } => nodes.iter().map(String::as_str).collect(),
    };
    urls.into_iter().filter_map(redis_host_port).collect()
}

/// The host and port of a `redis://` / `rediss://` URL or a bare `host:port`.
fn redis_host_port(s: &str) -> Option<(String, u16)> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("redis://{s}")
    };
    match url.as_str().into_connection_info().ok()?.addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => Some((h.trim_matches(['[', ']']).to_owned(), p)),
        _ => None,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it reaches.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The rules of one configuration.
#[derive(Debug)]
pub struct TargetRules {
    own: Arc<OwnEndpoints>,
    deny: Vec<IpNet>,
    tunnel_ports: Vec<u16>,
    /// Recent lookups of [`TargetRules::any_forbidden`]: `(host, port)` → when, and the
    /// addresses (empty: the name did not resolve in time). Checked again on every use, so a
    /// change of the gate's own endpoints applies at once.
    resolved: Mutex<HashMap<(String, u16), Lookup>>,
}

/// One remembered lookup: when, and the addresses found.
type Lookup = (Instant, Arc<[SocketAddr]>);

/// How long a lookup of [`TargetRules::any_forbidden`] is reused.
const RESOLVED_TTL: Duration = Duration::from_secs(30);
/// At most this many names are remembered (the map is cleared when full).
const RESOLVED_MAX: usize = 4096;
/// How long a lookup may take before the name counts as not resolving.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// A target the rules refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("forbidden target")]
pub struct Forbidden;

impl TargetRules {
    /// The rules of `gate` over the process's own endpoints.
    pub fn new(own: Arc<OwnEndpoints>, gate: &GateSettings) -> Self {
        TargetRules {
            own,
            deny: gate.deny_cidrs.clone(),
            tunnel_ports: gate.tunnel_ports.clone(),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Rules that refuse nothing (unit tests of the code that dials).
    #[cfg(test)]
    pub(crate) fn refusing_nothing() -> Self {
        TargetRules {
            own: Arc::new(OwnEndpoints::default()),
            deny: vec![],
            tunnel_ports: vec![],
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a domestic `CONNECT` may name `port`.
    pub fn tunnel_port_allowed(&self, port: u16) -> bool {
        self.tunnel_ports.contains(&port)
    }

    /// Checks an address before connecting to it.
    ///
    /// # Errors
    /// [`Forbidden`] for an own endpoint or a denied range.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Forbidden> {
        let addr = canonical(addr);
        if self.deny.iter().any(|n| n.contains(&addr.ip())) || self.own.owns(addr, false) {
            return Err(Forbidden);
        }
        Ok(())
    }

    /// For a target another party dials (an ICAP client such as Squid connects by itself, and
    /// may pick any address of the name): whether **any** address `host:port` resolves to is
    /// refused. A name that does not resolve here within a second is not refused (the dialler
    /// will fail too). Lookups are reused for 30 s: this runs on every ICAP request, and a
    /// resolver that stalls must not stall the requests with it.
    pub async fn any_forbidden(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return self.check(SocketAddr::new(ip, port)).is_err();
        }
        let key = (host.to_ascii_lowercase(), port);
        let cached = {
            let m = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            m.get(&key)
                .filter(|(at, _)| at.elapsed() < RESOLVED_TTL)
                .map(|(_, a)| a.clone())
        };
        let addrs = match cached {
            Some(a) => a,
            None => {
                let lookup = tokio::net::lookup_host((host, port));
                let found: Arc<[SocketAddr]> =
                    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                        Ok(Ok(addrs)) => addrs.collect(),
                        _ => Arc::from(Vec::new()),
                    };
                let mut m = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                if m.len() >= RESOLVED_MAX {
                    m.clear();
                }
                m.insert(key, (Instant::now(), found.clone()));
                found
            }
        };
        addrs.iter().any(|a| self.check(*a).is_err())
    }

    /// Checks a connected socket: a connection whose local and peer addresses are equal goes to
    /// this very host, whatever address it was dialled on.
    fn check_connected(&self, s: &TcpStream) -> Result<(), Forbidden> {
        let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) else {
            return Err(Forbidden);
        };
        let (local, peer) = (canonical(local), canonical(peer));
        let same_host = local.ip() == peer.ip();
        if self.deny.iter().any(|n| n.contains(&peer.ip())) || self.own.owns(peer, same_host) {
            return Err(Forbidden);
        }
        Ok(())
    }
}

/// Why [`dial`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Every address the name resolved to is refused by the rules.
    #[error("forbidden target")]
    Forbidden,
    /// Resolution or connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Connects to `host:port`, trying its addresses in order and skipping those `rules` refuse
/// (with no rules: a plain connect). The caller bounds the time.
///
/// # Errors
/// [`DialError::Forbidden`] when every address was refused (and none failed to connect for
/// another reason first); else the last connection error.
pub async fn dial(
    host: &str,
    port: u16,
    rules: Option<&TargetRules>,
) -> Result<TcpStream, DialError> {
    let Some(rules) = rules else {
        return Ok(TcpStream::connect((host, port)).await?);
    };
    let mut forbidden = false;
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if rules.check(addr).is_err() {
            forbidden = true;
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(s) => {
                if rules.check_connected(&s).is_err() {
                    forbidden = true;
                    continue;
                }
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) if !forbidden => Err(DialError::Io(e)),
        _ if forbidden => Err(DialError::Forbidden),
        _ => Err(DialError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            "the host resolved to no address",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(deny: &[&str], ports: &[u16]) -> TargetRules {
        let own = Arc::new(OwnEndpoints::new(&Backend::Redis {
            url: "redis://:pw@10.9.8.7:6380/0".into(),
        }));
        own.add_listener("0.0.0.0:3128".parse().unwrap());
        own.add_listener("127.0.0.1:9464".parse().unwrap());
        own.ledger
            .write()
            .unwrap()
            .push("10.9.8.7:6380".parse().unwrap());
        TargetRules {
            own,
            deny: deny.iter().map(|c| c.parse().unwrap()).collect(),
            tunnel_ports: ports.to_vec(),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn ok(r: &TargetRules, a: &str) -> bool {
        r.check(a.parse().unwrap()).is_ok()
    }

    #[test]
    fn own_endpoints_are_refused_whatever_deny_cidrs_says() {
        let r = rules(&[], &[443]);
        assert!(!ok(&r, "127.0.0.1:3128"));
        assert!(
            !ok(&r, "127.0.0.2:9464"),
            "any loopback address of an own port"
        );
        assert!(!ok(&r, "[::1]:9464"));
        assert!(!ok(&r, "[::ffff:127.0.0.1]:3128"), "IPv4-mapped");
        assert!(!ok(&r, "0.0.0.0:3128"));
        assert!(!ok(&r, "10.9.8.7:6380"), "the Redis server");
        assert!(!ok(&r, "127.0.0.1:6380"), "the Redis port on loopback");
        assert!(ok(&r, "10.9.8.6:6380"), "another host on the same port");
        assert!(
            ok(&r, "127.0.0.1:8080"),
            "loopback opened by an explicit deny_cidrs"
        );
        assert!(ok(&r, "10.1.2.3:3128"), "a remote host on the proxy's port");
    }

    #[test]
    fn denied_ranges_and_tunnel_ports() {
        let deny: Vec<&str> = crate::config::targets::DEFAULT_DENY_CIDRS.to_vec();
        let r = rules(&deny, &[443]);
        assert!(!ok(&r, "127.0.0.1:8080"));
        assert!(!ok(&r, "169.254.169.254:80"), "cloud metadata");
        assert!(!ok(&r, "[fe80::1]:80"));
        assert!(!ok(&r, "[::ffff:169.254.169.254]:80"));
        assert!(!ok(&r, "0.1.2.3:80"));
        assert!(!ok(&r, "[::]:80"));
        assert!(ok(&r, "10.1.2.3:5432"));
        assert!(r.tunnel_port_allowed(443));
        assert!(!r.tunnel_port_allowed(5432));
    }

    #[test]
    fn redis_urls_name_their_servers() {
        assert_eq!(
            redis_host_port("redis://user:pw@redis.svc:6379/0"),
            Some(("redis.svc".into(), 6379))
        );
        assert_eq!(
            redis_host_port("rediss://[::1]:7000"),
            Some(("::1".into(), 7000))
        );
        assert_eq!(
            redis_host_port("127.0.0.1:7001"),
            Some(("127.0.0.1".into(), 7001))
        );
        assert_eq!(
            redis_host_port("redis://10.0.0.1"),
            Some(("10.0.0.1".into(), 6379))
        );
    }

    #[tokio::test]
    async fn dial_refuses_this_host_on_an_own_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let own = Arc::new(OwnEndpoints::default());
        own.add_listener(addr);
        let r = TargetRules {
            own,
            deny: vec![],
            tunnel_ports: vec![],
            resolved: Mutex::new(HashMap::new()),
        };
        assert!(matches!(
            dial("localhost", addr.port(), Some(&r)).await,
            Err(DialError::Forbidden)
        ));
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = other.local_addr().unwrap().port();
        assert!(dial("127.0.0.1", port, Some(&r)).await.is_ok());
    }
}
