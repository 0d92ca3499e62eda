//! The Grafana dashboard's queries evaluated by `promtool test rules` over series a real
//! Prometheus would hold, with the job variable substituted the way Grafana does:
//! - "Gate instances up" counts the gate's targets only, whichever jobs the variable's All
//!   value matches (other jobs' `up` series are never summed in);
//! - "Refusals in the selected range" sees a series whose first refusal falls inside the range
//!   (`increase()` alone cannot see a series' first increment).

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

/// What Grafana puts for `$job` when "All" is selected: the variable's `allValue` when it
/// has one, else the alternation of every value the variable's query found.
fn all_value(dash: &serde_json::Value, values: &[&str]) -> String {
    let var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "job")
        .unwrap();
    match var["allValue"].as_str() {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => format!("({})", values.join("|")),
    }
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
    let q = q.replace("$job", &job).replace("$__range", "10m");
    let series = r#"
      # first refusal to eu at 8m: the series appears with the value 1
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="block",reason="approval_required"}'
        values: '_x8 1x12'
      # refused before the range and once more inside it (3 at 8m)
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="us",decision="block",reason="unknown_destination"}'
        values: '1x3 2x4 3x12'
      # refusals before the range only
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="b",destination="jp",decision="would_block",reason="category_not_approved"}'
        values: '1x2 4x18'
      # allowed requests are not refusals
      - series: 'transfer_gate_decisions_total{job="transfer-gate",instance="a",destination="eu",decision="allow",reason="allowed"}'
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
