//! The deploy kit against the real gate: every metric the Grafana dashboard and the Prometheus
//! alert rules query is exported on `/metrics`, the dashboard's queries parse as PromQL, and
//! the alert rules pass their `promtool test rules` unit tests (`scripts/test-deploy`).

use crate::harness::certs::TestCa;
use crate::harness::upstream::Upstream;
use crate::harness::{require_tool, Dest, GateBuilder, GateProc};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/test-deploy` with `args`, one at a time (it may run apt-get, which takes a lock).
pub(crate) fn test_deploy(args: &[&str]) -> std::process::Output {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(repo().join("scripts/test-deploy"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

pub(crate) fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/transfer-gate.json")).unwrap();
    serde_json::from_str(&text).expect("deploy/grafana/transfer-gate.json is not valid JSON")
}

/// Every PromQL expression in the dashboard: panel targets' `expr` (rows may nest panels) and
/// the queries of `query` variables.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<String> {
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|c| exprs(c, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| exprs(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    exprs(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let q = &var["query"];
            let text = q["query"].as_str().or_else(|| q.as_str()).unwrap();
            out.push(text.to_owned());
        }
    }
    out
}

/// The `transfer_gate_*` family names a text mentions; histogram series suffixes are mapped
/// to their family (`_bucket`, `_sum`, `_count`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("transfer_gate_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        i = end;
    }
    names
}

/// The families `/metrics` declares (`# TYPE name kind`).
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A gate with one destination, one approval, a TLS proxy listener and a little traffic of
/// each kind, one failed TLS proxy handshake included.
async fn gate_with_traffic() -> (GateProc, Upstream) {
    let up = Upstream::http().await;
    let server_ca = TestCa::new("proxy server CA");
    let (cert, key) = server_ca.leaf_pem(&["127.0.0.1"]);
    let gate = GateBuilder::new()
        .file("proxy.pem", cert.as_bytes())
        .file("proxy.key", key.as_bytes())
        .gate_key("proxy_tls_listen = \"127.0.0.1:0\"")
        .gate_key("proxy_tls_cert = \"proxy.pem\"")
        .gate_key("proxy_tls_key = \"proxy.key\"")
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .approvals(
            r#"
[[approval]]
id = "SC-2026-0001"
mechanism = "standard_contract"
status = "active"
destinations = ["eu"]
categories = ["basic", "contact"]
max_subjects = 1000
max_sensitive_subjects = 10
valid_from = "2026-01-01"
valid_until = "2028-12-31"
"#,
        )
        .start()
        .await;
    let client = gate.client();
    // Unknown host: a block decision.
    let r = client
        .get("http://unregistered.example.org/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 451);
    // A registered destination with personal information: allow, ledger commit, bytes.
    let r = client
        .post("http://api.eu.test/v1/events")
        .header("content-type", "application/json")
        .body(r#"[{"user_id": 1, "phone": "13800138000"}, {"user_id": 2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PI under the approval is allowed");
    r.bytes().await.unwrap();
    assert_eq!(up.received().len(), 1, "the allowed request went upstream");
    assert_eq!(
        gate.entity_counts().await,
        (2, 0),
        "both subjects committed"
    );
    // Without personal information, and a domestic host.
    let r = client
        .get("http://api.eu.test/health")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PI-free traffic is allowed");
    // Domestic, to a port nothing listens on: passed through, and the connect fails.
    let r = client.get("http://localhost:9/").send().await.unwrap();
    assert_eq!(
        r.status(),
        502,
        "the domestic request reached its (closed) port"
    );
    // Plain HTTP on the TLS proxy listener: a failed handshake (reason `other`), so the
    // handshake-error family has a series.
    failed_tls_handshake(&gate).await;
    (gate, up)
}

/// Speaks plain HTTP to the TLS proxy listener and waits until the failed handshake is counted.
async fn failed_tls_handshake(gate: &GateProc) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gate
        .proxy_tls
        .expect("listen.json names the TLS proxy listener");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET http://api.eu.test/ HTTP/1.1\r\nHost: api.eu.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the gate did not close a connection that is not TLS"
    );
    let counted = crate::harness::poll_until(std::time::Duration::from_secs(5), || async {
        gate.metrics()
            .await
            .contains("transfer_gate_proxy_tls_handshake_errors_total{")
            .then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the failed TLS proxy handshake was not counted"
    );
}

fn missing(wanted: &BTreeSet<String>, have: &BTreeSet<String>) -> Vec<String> {
    wanted.difference(have).cloned().collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dash = dashboard();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() > 10, "no queries found in the dashboard");
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    // The dashboard covers what the issue asks for.
    for family in [
        "transfer_gate_threshold_utilization_ratio",
        "transfer_gate_destination_subjects",
        "transfer_gate_decisions_total",
        "transfer_gate_approval_expiry_timestamp_seconds",
        "transfer_gate_request_duration_seconds",
        "transfer_gate_ledger_commit_seconds",
        "transfer_gate_bytes_total",
        "transfer_gate_proxy_tls_handshake_errors_total",
    ] {
        assert!(
            wanted.contains(family),
            "the dashboard does not show {family}"
        );
    }
    let (gate, _up) = gate_with_traffic().await;
    let have = exported(&gate.metrics().await);
    let gone = missing(&wanted, &have);
    assert!(
        gone.is_empty(),
        "the dashboard queries metrics the gate does not export: {gone:?}\nexported: {have:?}"
    );
}

#[tokio::test]
async fn every_metric_the_alert_rules_use_is_exported() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let wanted = metric_names(&rules);
    assert!(wanted.contains("transfer_gate_threshold_utilization_ratio"));
    assert!(wanted.contains("transfer_gate_proxy_tls_handshake_errors_total"));
    let (gate, _up) = gate_with_traffic().await;
    let have = exported(&gate.metrics().await);
    let gone = missing(&wanted, &have);
    assert!(
        gone.is_empty(),
        "the alert rules use metrics the gate does not export: {gone:?}\nexported: {have:?}"
    );
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "transfer-gate");
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().unwrap();
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "panel {id} has no query");
        }
    }
}

/// Writes the dashboard's queries as recording rules (Grafana's variables replaced) and lets
/// `promtool check rules` parse them.
#[test]
fn dashboard_queries_parse_as_promql() {
    let tools = test_deploy(&["--install-only"]);
    assert!(
        tools.status.success(),
        "{}",
        String::from_utf8_lossy(&tools.stderr)
    );
    require_tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&dashboard()).iter().enumerate() {
        if q.starts_with("label_values(") {
            continue;
        }
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1d")
            .replace("$job", "transfer-gate")
            .replace("$client", ".*");
        let json = serde_json::to_string(&q).unwrap();
        yaml.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {json}\n"
        ));
    }
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `scripts/test-deploy`: `promtool check rules` and the `promtool test rules` unit tests of
/// every alert (it installs promtool when missing and fails when it cannot).
#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let out = test_deploy(&[]);
    assert!(
        out.status.success(),
        "scripts/test-deploy failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metric_names_are_extracted_by_family() {
    let names = metric_names(
        "histogram_quantile(0.9, rate(transfer_gate_request_duration_seconds_bucket[5m])) \
         / up{job=\"x\"} + my_transfer_gate_other + transfer_gate_ledger_commit_seconds_count",
    );
    let want: BTreeSet<String> = [
        "transfer_gate_request_duration_seconds",
        "transfer_gate_ledger_commit_seconds",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(names, want);
}

/// Writes what the shipped configs expect to find at deploy time: a 32-byte hash key (0600),
/// an admin token, the Redis password, and an interception CA (key 0600).
fn write_secrets(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let private = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    private("subject-hash.key", &[7u8; 32]);
    private("admin.token", b"0123456789abcdef0123456789abcdef\n");
    private("redis.password", b"Zq7requirepass3f9c\n");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "transfer-gate test interception CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    private("ca.key", key.serialize_pem().as_bytes());
}

/// `transfer-gate check` on a shipped gate.toml (with approvals.toml beside it), its absolute
/// deploy paths moved into a temporary directory.
fn check_shipped(gate_toml: &str, approvals: &str, moves: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(repo().join(gate_toml)).unwrap();
    for (from, to) in moves {
        let target = dir.path().join(to);
        std::fs::create_dir_all(&target).unwrap();
        text = text.replace(from, target.to_str().unwrap());
    }
    write_secrets(&dir.path().join("secrets"));
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    std::fs::copy(repo().join(approvals), dir.path().join("approvals.toml")).unwrap();
    let out = crate::harness::cli_on(dir.path().join("gate.toml"), &["check"]);
    let report = format!("{}{}", out.stdout, out.stderr);
    (out.success(), report)
}

#[test]
fn kubernetes_config_passes_check() {
    let (ok, report) = check_shipped(
        "deploy/kubernetes/gate.toml",
        "deploy/kubernetes/approvals.toml",
        &[
            ("/run/transfer-gate/secrets", "secrets"),
            ("/var/lib/transfer-gate", "data"),
        ],
    );
    assert!(
        ok,
        "deploy/kubernetes/gate.toml does not pass check:\n{report}"
    );
    assert!(report.contains("0 errors, 0 warnings"), "{report}");
}

#[test]
fn systemd_config_passes_check() {
    let (ok, report) = check_shipped(
        "deploy/systemd/gate.toml",
        "config/approvals.toml",
        &[
            ("/run/credentials/transfer-gate.service", "secrets"),
            ("/var/lib/transfer-gate", "data"),
            ("/var/log/transfer-gate", "log"),
        ],
    );
    assert!(
        ok,
        "deploy/systemd/gate.toml does not pass check:\n{report}"
    );
    assert!(report.contains("0 errors, 0 warnings"), "{report}");
}
