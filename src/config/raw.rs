//! The configuration files exactly as written: serde structs with `deny_unknown_fields` and
//! defaults, before any validation. Each top-level section (and each array element) is
//! deserialized on its own so that one bad section does not hide the problems of the others.

use serde::Deserialize;
use std::collections::BTreeMap;

fn default_mode() -> String {
    "enforce".into()
}
fn default_data_dir() -> String {
    "data".into()
}
fn default_approvals_file() -> String {
    "approvals.toml".into()
}
fn default_drain() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

/// `[gate]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub proxy_listen: String,
    pub admin_listen: String,
    pub icap_listen: Option<String>,
    pub admin_token_file: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default = "default_approvals_file")]
    pub approvals_file: String,
    pub audit_log: Option<String>,
    pub blocked_by_url: Option<String>,
    #[serde(default = "default_drain")]
    pub drain_seconds: u64,
    pub tunnel_ports: Option<Vec<u16>>,
    pub deny_cidrs: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub unidentified: Option<String>,
    pub proxy_tls_listen: Option<String>,
    pub proxy_tls_cert: Option<String>,
    pub proxy_tls_key: Option<String>,
    pub client_ca_file: Option<String>,
    pub client_certificates: Option<String>,
}

/// One `[[client]]` block: an internal service that sends through the gate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    pub owner: Option<String>,
    pub mode: Option<String>,
    #[serde(default)]
    pub tls_identities: Vec<String>,
    #[serde(default)]
    pub token_sha256: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// `[timeouts]` (not in SPEC §12; seconds, fractions allowed)
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_seconds: Option<f64>,
    pub response_header_seconds: Option<f64>,
    pub idle_seconds: Option<f64>,
    pub total_seconds: Option<f64>,
    pub client_header_seconds: Option<f64>,
}

/// `[entity]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    pub name: String,
    pub regime: String,
    #[serde(default)]
    pub ciio: bool,
    #[serde(default)]
    pub pi_subjects_processed: u64,
}

/// `[ledger]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub backend: Option<String>,
    pub hash_key_file: Option<String>,
    pub redis_url: Option<String>,
    pub redis_cluster: Option<Vec<String>>,
    pub redis_password_file: Option<String>,
    pub redis_ca_file: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// `[inspection.subjects]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSubjects {
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub detectors: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `[inspection]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInspection {
    pub max_body_bytes: Option<u64>,
    pub atomic_body_bytes: Option<u64>,
    pub max_record_bytes: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub max_depth: Option<u32>,
    pub max_decoded_bytes: Option<u64>,
    pub max_decompression_ratio: Option<u64>,
    pub max_workbook_bytes: Option<u64>,
    #[serde(default)]
    pub protobuf_descriptor_sets: Vec<String>,
    pub unreadable: Option<String>,
    #[serde(default = "default_true")]
    pub resident_id_sensitive: bool,
    #[serde(default)]
    pub subjects: RawSubjects,
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<String>>,
}

/// One `[[domestic]]` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomestic {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// One `[[destination]]` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub name: String,
    pub recipient: Option<String>,
    pub country: Option<String>,
    pub hosts: Vec<String>,
    pub tls: Option<String>,
    pub connect_to: Option<String>,
    pub upstream_scheme: Option<String>,
    pub exemption: Option<String>,
    #[serde(default)]
    pub sensitive: bool,
    pub unreadable: Option<String>,
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    pub clients: Option<Vec<String>>,
    #[serde(default)]
    pub websocket: bool,
    pub websocket_binary: Option<String>,
    #[serde(default)]
    pub upstream_http2: bool,
}

/// One `[[important_data]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImportantData {
    pub name: String,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `[tls]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub upstream_ca_file: Option<String>,
}

/// One `[[approval]]` of the approvals file. Dates may be TOML dates or strings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    pub id: String,
    pub mechanism: String,
    pub status: String,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    pub max_subjects: Option<u64>,
    pub max_sensitive_subjects: Option<u64>,
    pub valid_from: Option<toml::Value>,
    pub valid_until: Option<toml::Value>,
    pub reference: Option<String>,
}
