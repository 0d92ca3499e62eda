//! Configuration in typed stages: the files as written ([`raw`]) → [`load`], which validates
//! everything and collects *every* problem as a [`Diagnostic`] with file, key path and line → the
//! validated [`Config`], which has no loose options left for the request path to interpret.
//!
//! `transfer-gate check` is [`load`] plus printing; `/v1/reload` and `SIGHUP` call [`load`] off
//! the async runtime and swap the result in only when it has no errors.

pub mod diag;
mod files;
pub mod host_index;
pub mod locate;
pub mod pattern;
pub mod raw;
pub mod targets;
mod validate;

use crate::model::{Category, Regime};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use pattern::{normalize_host, HostPattern, PathGlob};
pub use validate::{load, valid_client_name};

/// `gate.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse what the policy refuses.
    Enforce,
    /// Decide the same way, forward everything, record `would_block`.
    Observe,
}

impl Mode {
    /// The config / metric string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// What to do with a body the inspection cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Refuse with 451 `unreadable_body`.
    Block,
    /// Forward it (the operator accepted the risk).
    Allow,
}

/// `destination.tls`: what a `CONNECT` to the destination gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Terminate TLS with a minted leaf and inspect.
    Intercept,
    /// Blind tunnel; the destination was declared to receive no PI.
    Tunnel,
}

/// `destination.exemption` (cac-2024 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// Cross-border HR management of employees.
    HrManagement,
    /// Performance of a contract with the individual.
    ContractPerformance,
    /// Emergencies protecting life or property.
    Emergency,
}

impl Exemption {
    /// The config string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Exemption::HrManagement => "hr_management",
            Exemption::ContractPerformance => "contract_performance",
            Exemption::Emergency => "emergency",
        }
    }
}

/// `[gate]`, validated.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Proxy listener.
    pub proxy_listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// ICAP REQMOD listener (`None`: off).
    pub icap_listen: Option<SocketAddr>,
    /// Bearer token file for `/v1/*`.
    pub admin_token_file: Option<PathBuf>,
    /// Enforce or observe.
    pub mode: Mode,
    /// Where the local ledger and state live.
    pub data_dir: PathBuf,
    /// The approval register.
    pub approvals_file: PathBuf,
    /// Audit log file; `None` is stdout.
    pub audit_log: Option<PathBuf>,
    /// For the 451 `Link` header.
    pub blocked_by_url: Option<String>,
    /// How long in-flight requests may run after SIGTERM.
    pub drain: Duration,
    /// Ranges a client-chosen target may never resolve to (`gate.deny_cidrs`).
    pub deny_cidrs: Vec<IpNet>,
    /// The only ports a domestic `CONNECT` may name (`gate.tunnel_ports`).
    pub tunnel_ports: Vec<u16>,
    /// Open proxy connections at most (`gate.max_connections`); beyond it accepting waits.
    pub max_connections: usize,
    /// What requests from no declared client get (`gate.unidentified`).
    pub unidentified: UnidentifiedPolicy,
    /// The TLS proxy listener (`gate.proxy_tls_listen` and its keys), when configured.
    pub proxy_tls: Option<ProxyTls>,
}

/// `gate.unidentified`: what a request from no declared client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnidentifiedPolicy {
    /// Served as client `unidentified`.
    Allow,
    /// Answered 407 `client_unidentified`.
    Refuse,
}

/// `gate.client_certificates`: whether the TLS proxy listener insists on a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// A certificate from `client_ca_file` identifies the client; none, or one from another
    /// CA, is ignored and the next way of identifying applies.
    Optional,
    /// The handshake is refused without a certificate from `client_ca_file`.
    Require,
}

/// The TLS proxy listener, validated.
#[derive(Debug, Clone)]
pub struct ProxyTls {
    /// `gate.proxy_tls_listen`.
    pub listen: SocketAddr,
    /// `gate.proxy_tls_cert`: the listener's certificate chain (PEM).
    pub cert: PathBuf,
    /// `gate.proxy_tls_key`: its private key (PEM).
    pub key: PathBuf,
    /// `gate.client_ca_file`: the CA whose client certificates identify services.
    pub client_ca_file: Option<PathBuf>,
    /// `gate.client_certificates`.
    pub client_certificates: ClientCertificates,
}

/// The client name of requests from no declared client (reserved: no `[[client]]` may use it).
pub const UNIDENTIFIED: &str = "unidentified";

/// One `[[client]]`: an internal service, and how its requests are recognised.
#[derive(Debug, Clone)]
pub struct Client {
    /// Unique name (`[a-z0-9_-]{1,64}`): metric label, audit field, `clients` allowlists.
    pub name: String,
    /// The team that owns it, for the report.
    pub owner: Option<String>,
    /// `mode = "observe"` observes this client's requests only; `gate.mode` still applies.
    pub mode: Mode,
    /// Client-certificate identities: URI SAN (SPIFFE ID), DNS SAN (`*.` for one label), or CN.
    pub tls_identities: Vec<String>,
    /// SHA-256 digests of the tokens it may present in `Proxy-Authorization`.
    pub token_sha256: Vec<[u8; 32]>,
    /// Source networks.
    pub cidrs: Vec<IpNet>,
}

/// `gate.max_connections` when absent.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// `[timeouts]`, validated (not in SPEC §12: the spec asks for the timeouts, not their keys).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connect to an upstream.
    pub connect: Duration,
    /// From sending the request head to receiving the upstream's response head.
    pub response_header: Duration,
    /// No body bytes in either direction for this long aborts the exchange; also the idle
    /// lifetime of pooled upstream connections.
    pub idle: Duration,
    /// The whole exchange, bodies included (`None`: unbounded).
    pub total: Option<Duration>,
    /// How long a client may take to send a request head.
    pub client_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            total: None,
            client_header: Duration::from_secs(10),
        }
    }
}

/// `[entity]`, validated.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Legal name.
    pub name: String,
    /// The regime whose thresholds apply.
    pub regime: Regime,
    /// Critical information infrastructure operator.
    pub ciio: bool,
    /// Declared number of people whose PI the entity processes.
    pub pi_subjects_processed: u64,
}

/// `ledger.backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, in `gate.data_dir`.
    Local,
    /// A Redis server.
    Redis {
        /// `redis://` or `rediss://` URL.
        url: String,
    },
    /// A Redis Cluster.
    RedisCluster {
        /// Seed nodes.
        nodes: Vec<String>,
    },
}

/// `[ledger]`, validated.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// Which backend.
    pub backend: Backend,
    /// The keyed-hash key file (created 0600 if missing).
    pub hash_key_file: PathBuf,
    /// Backend operation timeout.
    pub timeout: Duration,
    /// The Redis password, read from this file (kept out of the config; an ACL user name
    /// stays in the URL).
    pub redis_password_file: Option<PathBuf>,
    /// Extra trust roots (PEM) for `rediss://`.
    pub redis_ca_file: Option<PathBuf>,
}

/// `[inspection]`, validated.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Bodies over this get 413.
    pub max_body_bytes: u64,
    /// Bodies up to this are judged whole.
    pub atomic_body_bytes: u64,
    /// A record larger than this is unreadable.
    pub max_record_bytes: u64,
    /// All bytes the process holds for requests before releasing them (whole-read bodies,
    /// unjudged records, decoder windows), together.
    pub max_buffered_bytes: u64,
    /// Nesting deeper than this is unreadable.
    pub max_depth: u32,
    /// Decoded (decompressed) size cap.
    pub max_decoded_bytes: u64,
    /// Decoded ÷ encoded ratio cap.
    pub max_decompression_ratio: u64,
    /// An xlsx workbook is held and judged whole up to this size; larger is 413.
    pub max_workbook_bytes: u64,
    /// `protobuf_descriptor_sets`: the files (resolved against the config file's directory)
    /// and their message types, loaded (`None` when no file is configured or one failed).
    pub protobuf_descriptor_sets: Vec<PathBuf>,
    /// The loaded descriptor sets.
    pub protobuf_schemas: Option<crate::inspect::ProtobufSchemas>,
    /// Default for unreadable bodies.
    pub unreadable: Unreadable,
    /// Whether a resident ID alone is sensitive.
    pub resident_id_sensitive: bool,
    /// Subject fields, lower-cased, in priority order.
    pub fields: Vec<String>,
    /// Enabled detectors by name (`cn_resident_id`, `cn_mobile`, `email`, `bank_card`).
    pub detectors: Vec<String>,
    /// Headers inspected for identifiers, lower-cased.
    pub headers: Vec<String>,
    /// Field name (lower-cased) → category.
    pub categories: Vec<(String, Category)>,
}

/// The built-in detector names.
pub const DETECTORS: [&str; 4] = ["cn_resident_id", "cn_mobile", "email", "bank_card"];

/// The union of `[[domestic]]` blocks.
#[derive(Debug, Clone, Default)]
pub struct Domestic {
    /// Domestic host patterns.
    pub hosts: Vec<HostPattern>,
    /// Domestic networks, for IP-literal hosts.
    pub cidrs: Vec<IpNet>,
}

/// One registered overseas destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Unique name (metric label, approval reference).
    pub name: String,
    /// The overseas recipient's legal name.
    pub recipient: String,
    /// ISO country code.
    pub country: String,
    /// Host patterns routed to it.
    pub hosts: Vec<HostPattern>,
    /// What CONNECT gets; `None`: refused `uninspectable`.
    pub tls: Option<TlsMode>,
    /// Address override (`host:port`).
    pub connect_to: Option<String>,
    /// Originate TLS for origin-form / plain requests.
    pub upstream_https: bool,
    /// cac-2024 exemption.
    pub exemption: Option<Exemption>,
    /// Everything sent is sensitive.
    pub sensitive: bool,
    /// Override of `inspection.unreadable`.
    pub unreadable: Option<Unreadable>,
    /// Verify upstream certificates (default true).
    pub tls_verify: bool,
    /// Only these clients (names of `[[client]]`) may send here; `None`: every client.
    pub clients: Option<Vec<String>>,
    /// WebSocket upgrades are forwarded and every client message inspected (`websocket`);
    /// otherwise an upgrade is refused `uninspectable`.
    pub websocket: bool,
    /// How binary WebSocket messages are read (`websocket_binary`).
    pub websocket_binary: WebSocketBinary,
    /// Plain-HTTP upstream connections speak HTTP/2 with prior knowledge (h2c), as gRPC
    /// servers need (`upstream_http2`); TLS upstreams negotiate by ALPN whatever this says.
    pub upstream_http2: bool,
}

/// How a destination's binary WebSocket messages are read (`websocket_binary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebSocketBinary {
    /// Not set: binary messages are unreadable.
    #[default]
    Unreadable,
    /// `"protobuf"`: each binary message is one protobuf message, read without a schema
    /// (`docs/inspection.md`).
    Protobuf,
}

/// One important-data rule.
#[derive(Debug, Clone)]
pub struct ImportantData {
    /// Rule name.
    pub name: String,
    /// Destination names; `None` means all (`"*"`).
    pub destinations: Option<Vec<String>>,
    /// Path globs (any matches).
    pub paths: Vec<PathGlob>,
    /// Field names, lower-cased (any present matches).
    pub fields: Vec<String>,
}

/// `[tls]`, validated.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Interception CA certificate.
    pub ca_cert: Option<PathBuf>,
    /// Interception CA key.
    pub ca_key: Option<PathBuf>,
    /// Extra roots for upstream verification.
    pub upstream_ca_file: Option<PathBuf>,
}

/// `approval.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalMechanism {
    /// CAC security assessment.
    SecurityAssessment,
    /// Filed standard contract.
    StandardContract,
    /// Certification.
    Certification,
}

impl ApprovalMechanism {
    /// Every mechanism.
    pub const ALL: [ApprovalMechanism; 3] = [
        ApprovalMechanism::SecurityAssessment,
        ApprovalMechanism::StandardContract,
        ApprovalMechanism::Certification,
    ];

    /// The config / metric string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApprovalMechanism::SecurityAssessment => "security_assessment",
            ApprovalMechanism::StandardContract => "standard_contract",
            ApprovalMechanism::Certification => "certification",
        }
    }
}

/// `approval.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    /// Granted.
    Active,
    /// Applied for, not granted: permits nothing.
    Pending,
    /// Refused.
    Rejected,
    /// Withdrawn.
    Revoked,
}

impl ApprovalStatus {
    /// Every status.
    pub const ALL: [ApprovalStatus; 4] = [
        ApprovalStatus::Active,
        ApprovalStatus::Pending,
        ApprovalStatus::Rejected,
        ApprovalStatus::Revoked,
    ];

    /// The config string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Active => "active",
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Revoked => "revoked",
        }
    }
}

crate::model::serde_as_str!(ApprovalMechanism, ApprovalStatus);

/// One approval of the register, validated.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Unique id.
    pub id: String,
    /// Mechanism.
    pub mechanism: ApprovalMechanism,
    /// Status.
    pub status: ApprovalStatus,
    /// Destination names it covers (they share its volume).
    pub destinations: Vec<String>,
    /// Categories it covers (`basic` always implied).
    pub categories: Vec<Category>,
    /// Approved volume of subjects.
    pub max_subjects: Option<u64>,
    /// Approved volume of sensitive subjects.
    pub max_sensitive_subjects: Option<u64>,
    /// First valid day (Asia/Shanghai).
    pub valid_from: Option<time::Date>,
    /// Last valid day (Asia/Shanghai), inclusive.
    pub valid_until: Option<time::Date>,
    /// Free-text reference.
    pub reference: Option<String>,
}

/// The whole validated configuration: `gate.toml` plus the approvals file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    /// SHA-256 (hex) of the main file and the approvals file, for `transfer_gate_config_info`.
    pub sha256: String,
    /// `[gate]`
    pub gate: Gate,
    /// `[timeouts]`
    pub timeouts: Timeouts,
    /// `[entity]`
    pub entity: Entity,
    /// `[ledger]`
    pub ledger: LedgerSettings,
    /// `[inspection]`
    pub inspection: Inspection,
    /// `[[domestic]]`, merged.
    pub domestic: Domestic,
    /// `[[destination]]`
    pub destinations: Vec<Destination>,
    /// `[[important_data]]`
    pub important_data: Vec<ImportantData>,
    /// `[tls]`
    pub tls: TlsSettings,
    /// The approval register.
    pub approvals: Vec<Approval>,
    /// `[[client]]`: the internal services that send through the gate.
    pub clients: Vec<Client>,
    /// The destination and domestic host patterns indexed for [`crate::proxy::classify`].
    pub routes: host_index::Routes,
}

impl Config {
    /// The destination with this name.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// Resolves `p` relative to the directory of `file` (absolute paths stay as they are).
pub fn resolve(file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
