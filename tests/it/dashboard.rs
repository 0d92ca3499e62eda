//! The Grafana dashboard's queries evaluated by `promtool test rules` over series a real
//! Prometheus would hold, with the job and client variables substituted the way Grafana does:
//! - "Gate instances up" counts the gate's targets only, whichever jobs the variable's All
//!   value matches (other jobs' `up` series are never summed in);
//! - "Refusals in the selected range" sees a series whose first refusal falls inside the range
//!   (`increase()` alone cannot see a series' first increment);
//! - the client dimension: the Client variable, "Decisions by client", "Refusals by client and
//!   reason", "Body bytes per client" and the TLS handshake panel attribute to each client, and
//!   the panels filtered by `$client` still count, under All, series that have no `client`.

use crate::deploy::{dashboard, test_deploy};
use crate::harness::require_tool;
use std::process::Command;

/// The first query of the panel whose title starts with `title`.
fn panel_queries(dash: &serde_json::Value, title: &str) -> Vec<String> {
    let panel = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"].as_str().is_some_and(|t| t.starts_with(title)))
        .unwrap_or_else(|| panic!("no panel titled `{title}…`"));
    panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// The template variable `name`.
fn variable<'d>(dash: &'d serde_json::Value, name: &str) -> &'d serde_json::Value {
    dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable `{name}`"))
}

/// What Grafana puts for `$name` when "All" is selected: the variable's `allValue` when it
/// has one, else the alternation of every value the variable's query found.
fn all_value_of(dash: &serde_json::Value, name: &str, values: &[&str]) -> String {
    match variable(dash, name)["allValue"].as_str() {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => format!("({})", values.join("|")),
    }
}

/// `$job`'s "All" value.
fn all_value(dash: &serde_json::Value, values: &[&str]) -> String {
    all_value_of(dash, "job", values)
}

/// Runs a `promtool test rules` file of `promql_expr_test`s; panics with promtool's output.
fn promtool_test(yaml: &str) {
    let tools = test_deploy(&["--install-only"]);
    assert!(
        tools.status.success(),
        "{}",
        String::from_utf8_lossy(&tools.stderr)
    );
    require_tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard_test.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\n--- test file ---\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One expression test: `expr` at `at` gives exactly `samples` (`(labels, value)`).
fn expr_test(expr: &str, at: &str, samples: &[(&str, f64)]) -> String {
    let mut s = format!(
        "      - expr: {}\n        eval_time: {at}\n        exp_samples:\n",
        quoted(expr)
    );
    for (labels, value) in samples {
        s.push_str(&format!(
            "          - labels: {}\n            value: {value}\n",
            quoted(labels)
        ));
    }
    s
}

const INSTANCES: &str = r#"
      # two replicas of the gate (b stops at 11m; its own series are stale from 16m), and a
      # second gate job with a namespaced name
      - series: 'up{job="transfer-gate",instance="a"}'
        values: '1x20'
      - series: 'up{job="transfer-gate",instance="b"}'
        values: '1x10 0x10'
      - series: 'transfer_gate_config_info{job="transfer-gate",instance="a",sha256="s",regime="cac-2024",mode="enforce"}'
        values: '1x20'
      - series: 'transfer_gate_config_info{job="transfer-gate",instance="b",sha256="s",regime="cac-2024",mode="enforce"}'
        values: '1x10 _x10'
      - series: 'transfer_gate_ledger_up{job="transfer-gate",instance="a",backend="redis"}'
        values: '1x20'
      - series: 'transfer_gate_ledger_up{job="transfer-gate",instance="b",backend="redis"}'
        values: '1x10 _x10'
      - series: 'up{job="gates/transfer-gate",instance="c"}'
        values: '1x20'
      - series: 'transfer_gate_config_info{job="gates/transfer-gate",instance="c",sha256="t",regime="cac-2024",mode="enforce"}'
        values: '1x20'
      - series: 'transfer_gate_ledger_up{job="gates/transfer-gate",instance="c",backend="local"}'
        values: '0x20'
      # everything else Prometheus scrapes
      - series: 'up{job="node",instance="n1"}'
        values: '1x20'
      - series: 'up{job="node",instance="n2"}'
        values: '1x20'
      - series: 'up{job="transfer-gate-redis",instance="r"}'
        values: '1x20'
      - series: 'up{job="prometheus",instance="p"}'
        values: '1x20'
"#;

#[test]
fn gate_instances_up_counts_only_the_gate_jobs() {
    let dash = dashboard();
    let queries = panel_queries(&dash, "Gate instances up");
    // Instances up, instances expected, and the ledger's state: each is checked below.
    assert_eq!(queries.len(), 3, "{queries:?}");
    let mut tests = String::new();
    // All selected (as the dashboard defines it), an operator's `.*`, and one job.
    for job in [
        all_value(&dash, &["transfer-gate", "gates/transfer-gate"]),
        ".*".to_owned(),
    ] {
        let q: Vec<String> = queries.iter().map(|q| q.replace("$job", &job)).collect();
        tests.push_str(&expr_test(&q[0], "17m", &[("{}", 2.0)]));
        tests.push_str(&expr_test(&q[1], "17m", &[("{}", 3.0)]));
        tests.push_str(&expr_test(&q[2], "17m", &[("{}", 1.0)]));
    }
    let one: Vec<String> = queries
        .iter()
        .map(|q| q.replace("$job", "transfer-gate"))
        .collect();
    tests.push_str(&expr_test(&one[0], "17m", &[("{}", 1.0)]));
    tests.push_str(&expr_test(&one[1], "17m", &[("{}", 2.0)]));
    promtool_test(&format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:{INSTANCES}    promql_expr_test:\n{tests}"
    ));
}

#[test]
fn refusals_in_the_range_include_a_series_first_increment() {
    let dash = dashboard();
    let q = panel_queries(&dash, "Refusals in the selected range").remove(0);
    let job = all_value(&dash, &["transfer-gate"]);
    // The dashboard's range is the last 10 minutes at 15m: (5m, 15m].
    let client = all_value_of(&dash, "client", &["billing"]);
    let q = q
        .replace("$job", &job)
        .replace("$client", &client)
        .replace("$__range", "10m");
    let series = r#"
      # first refusal to eu at 8m: the series appears with the value 1
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="block",reason="approval_required",client="billing"}'
        values: '_x8 1x12'
      # refused before the range and once more inside it (3 at 8m); written before the gate
      # had the `client` label: All still counts it
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="us",decision="block",reason="unknown_destination"}'
        values: '1x3 2x4 3x12'
      # refusals before the range only
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="b",destination="jp",decision="would_block",reason="category_not_approved",client="billing"}'
        values: '1x2 4x18'
      # allowed requests are not refusals
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="allow",reason="allowed",client="billing"}'
        values: '_x8 5x12'
"#;
    let present = format!("count by (destination, decision, reason) ({q})");
    let eu_only = format!(
        "({q}) * on (destination) group_left () label_replace(vector(1), \"destination\", \"eu\", \"\", \"\")"
    );
    let tests = expr_test(
        &present,
        "15m",
        &[
            (
                r#"{destination="eu",decision="block",reason="approval_required"}"#,
                1.0,
            ),
            (
                r#"{destination="us",decision="block",reason="unknown_destination"}"#,
                1.0,
            ),
        ],
    ) + &expr_test(
        &eu_only,
        "15m",
        &[(
            r#"{destination="eu",decision="block",reason="approval_required"}"#,
            1.0,
        )],
    );
    promtool_test(&format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:{series}    promql_expr_test:\n{tests}"
    ));
}

/// What the Client variable's `label_values(selector, label)` lists, as PromQL:
/// `group by (label) (selector)`.
fn label_values_as_promql(query: &str) -> String {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    format!("group by ({}) ({})", label.trim(), selector.trim())
}

/// Two replicas' series of three clients, one series written before the gate had the `client`
/// label, and an `unknown_ca` handshake error once a minute from 5m.
const CLIENTS: &str = r#"
      # billing: 1 request/s allowed at eu (two replicas, half each), 100 B/s sent up
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="allow",reason="allowed",client="billing"}'
        values: '0+30x20'
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="b",destination="eu",decision="allow",reason="allowed",client="billing"}'
        values: '0+30x20'
      - series: 'transfer_gate_bytes_total{job="transfer-gate",instance="a",destination="eu",direction="upstream",client="billing"}'
        values: '0+6000x20'
      - series: 'transfer_gate_bytes_total{job="transfer-gate",instance="a",destination="eu",direction="downstream",client="billing"}'
        values: '0+60000x20'
      # crm: 2 requests/s allowed at jp; not in eu's clients, first refused there at 8m
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="jp",decision="allow",reason="allowed",client="crm"}'
        values: '0+120x20'
      - series: 'transfer_gate_bytes_total{job="transfer-gate",instance="a",destination="jp",direction="upstream",client="crm"}'
        values: '0+3000x20'
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="block",reason="client_not_allowed",client="crm"}'
        values: '_x8 1x12'
      # batch-jobs in observe mode: would_block at eu before the range and once inside it
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="b",destination="eu",decision="would_block",reason="client_not_allowed",client="batch-jobs"}'
        values: '1x3 2x4 3x12'
      # unidentified requests refused 407, only before the range
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="domestic",decision="block",reason="client_unidentified",client="unidentified"}'
        values: '1x2 4x18'
      # a series from before the `client` label: 0.5 request/s allowed at eu
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="allow",reason="allowed"}'
        values: '0+30x20'
      # another job's gate is not selected
      - series: 'transfer_gate_decisions_total{job="other-gate",instance="o",destination="eu",decision="allow",reason="allowed",client="billing"}'
        values: '0+600x20'
      # a service with a certificate of another CA, once a minute from 5m; health checks
      - series: 'transfer_gate_proxy_tls_handshake_errors_total{job="transfer-gate",instance="a",reason="unknown_ca"}'
        values: '_x5 1+1x15'
      - series: 'transfer_gate_proxy_tls_handshake_errors_total{job="transfer-gate",instance="b",reason="other"}'
        values: '0x20'
"#;

/// The client dimension: the Client variable lists the clients the decisions name, and its
/// All value (`.*`) also matches series written before the `client` label existed; "Decisions by
/// client", "Refusals by client and reason", "Body bytes per client" and the handshake panel
/// give each client's numbers; the older panels filtered by `$client` sum over every client
/// under All and narrow to the selection otherwise.
#[test]
fn client_panels_attribute_by_client() {
    let dash = dashboard();
    let var = variable(&dash, "client");
    assert_eq!(var["type"], "query");
    assert_eq!(var["includeAll"], true);
    assert_eq!(var["multi"], true);
    let listing = var["query"]["query"].as_str().unwrap();
    assert_eq!(var["definition"].as_str().unwrap(), listing);
    assert!(
        listing.starts_with("label_values(transfer_gate_decisions_total")
            && listing.ends_with(", client)"),
        "{listing}"
    );
    let job = all_value(&dash, &["transfer-gate"]);
    let all = all_value_of(
        &dash,
        "client",
        &["billing", "crm", "batch-jobs", "unidentified"],
    );
    let sub = |q: &str, client: &str| {
        q.replace("$job", &job)
            .replace("$client", client)
            .replace("$__rate_interval", "5m")
            .replace("$__range", "10m")
    };
    // Rates are compared rounded to a thousandth (extrapolation leaves float noise).
    let rounded = |q: String| format!("round({q}, 0.001)");
    let mut tests = expr_test(
        &sub(&label_values_as_promql(listing), ""),
        "15m",
        &[
            (r#"{client="billing"}"#, 1.0),
            (r#"{client="crm"}"#, 1.0),
            (r#"{client="batch-jobs"}"#, 1.0),
            (r#"{client="unidentified"}"#, 1.0),
            ("{}", 1.0),
        ],
    );

    let by_client = panel_queries(&dash, "Decisions by client").remove(0);
    tests += &expr_test(
        &rounded(sub(&by_client, &all)),
        "15m",
        &[
            (r#"{client="billing",decision="allow"}"#, 1.0),
            (r#"{client="crm",decision="allow"}"#, 2.0),
            (r#"{client="crm",decision="block"}"#, 0.0),
            (r#"{client="batch-jobs",decision="would_block"}"#, 0.0),
            (r#"{client="unidentified",decision="block"}"#, 0.0),
            (r#"{decision="allow"}"#, 0.5),
        ],
    );
    // One client selected, and two (Grafana's multi-value regex).
    tests += &expr_test(
        &rounded(sub(&by_client, "billing")),
        "15m",
        &[(r#"{client="billing",decision="allow"}"#, 1.0)],
    );
    tests += &expr_test(
        &rounded(sub(&by_client, "(billing|crm)")),
        "15m",
        &[
            (r#"{client="billing",decision="allow"}"#, 1.0),
            (r#"{client="crm",decision="allow"}"#, 2.0),
            (r#"{client="crm",decision="block"}"#, 0.0),
        ],
    );

    // Refusals in the range (5m, 15m]: crm's first refusal at eu and batch-jobs' one more;
    // the 407s before the range are not there.
    let refusals = panel_queries(&dash, "Refusals by client and reason").remove(0);
    let present = |q: String| format!("count by (client, destination, decision, reason) ({q})");
    tests += &expr_test(
        &present(sub(&refusals, &all)),
        "15m",
        &[
            (
                r#"{client="crm",destination="eu",decision="block",reason="client_not_allowed"}"#,
                1.0,
            ),
            (
                r#"{client="batch-jobs",destination="eu",decision="would_block",reason="client_not_allowed"}"#,
                1.0,
            ),
        ],
    );
    tests += &expr_test(
        &sub(&refusals, "crm"),
        "15m",
        &[(
            r#"{client="crm",destination="eu",decision="block",reason="client_not_allowed"}"#,
            1.0,
        )],
    );

    let bytes = panel_queries(&dash, "Body bytes per client").remove(0);
    tests += &expr_test(
        &rounded(sub(&bytes, &all)),
        "15m",
        &[
            (r#"{client="billing",destination="eu"}"#, 100.0),
            (r#"{client="crm",destination="jp"}"#, 50.0),
        ],
    );

    // The older panels under All count every client and the series without the label; with a
    // client selected, that client only.
    let by_reason = panel_queries(&dash, "Decisions by reason").remove(0);
    let allowed = |q: String| {
        format!("{q} * on (decision) group_left () label_replace(vector(1), \"decision\", \"allow\", \"\", \"\")")
    };
    tests += &expr_test(
        &rounded(allowed(sub(&by_reason, &all))),
        "15m",
        &[(r#"{decision="allow",reason="allowed"}"#, 3.5)],
    );
    tests += &expr_test(
        &rounded(allowed(sub(&by_reason, "billing"))),
        "15m",
        &[(r#"{decision="allow",reason="allowed"}"#, 1.0)],
    );
    let dest_bytes = panel_queries(&dash, "Body bytes per destination").remove(0);
    tests += &expr_test(
        &rounded(sub(&dest_bytes, "crm")),
        "15m",
        &[(r#"{destination="jp",direction="upstream"}"#, 50.0)],
    );

    // One unknown_ca a minute: 5 in a 5m window; `other` shows as 0.
    let handshakes = panel_queries(&dash, "Client certificates refused").remove(0);
    tests += &expr_test(
        &rounded(sub(&handshakes, &all)),
        "15m",
        &[
            (r#"{reason="unknown_ca"}"#, 5.0),
            (r#"{reason="other"}"#, 0.0),
        ],
    );
    promtool_test(&format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:{CLIENTS}    promql_expr_test:\n{tests}"
    ));
}
