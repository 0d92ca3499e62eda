//! `transfer-gate check` and startup on broken configurations: every error listed with file,
//! line and key path (a key that is absent points at its table; nothing at all, no line),
//! non-zero exit, and the shipped example accepted as it is.

use crate::harness::cli_on;
use std::path::Path;

fn check(dir: &Path, gate: &str, approvals: &str) -> (i32, String) {
    std::fs::write(dir.join("gate.toml"), gate).unwrap();
    std::fs::write(dir.join("approvals.toml"), approvals).unwrap();
    let out = cli_on(dir.join("gate.toml"), &["check"]);
    (out.code.unwrap_or(-1), out.stdout)
}

const GOOD_HEAD: &str = r#"
[gate]
proxy_listen = "127.0.0.1:13128"
admin_listen = "127.0.0.1:19464"

[entity]
name = "Co"
regime = "cac-2024"
"#;

#[test]
fn the_shipped_example_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = cli_on(root.join("config/gate.toml"), &["check"]);
    let text = out.stdout;
    assert!(out.code == Some(0), "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[test]
fn every_error_is_listed_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let gate = r#"
[gate]
proxy_listen = "127.0.0.1:99999"
admin_listen = "not-an-address"
mode = "chaos"

[entity]
name = "Co"
regime = "cac-2030"

[inspection]
unreadable = "maybe"
atomic_body_bytes = 10
max_body_bytes = 5

[inspection.subjects]
fields = ["user_id", "user_id"]
detectors = ["cn_mobile", "telepathy"]

[inspection.categories]
secret = ["x"]

[[domestic]]
hosts = ["*.cn"]
cidrs = ["10.0.0.0/33"]

[[destination]]
name = "eu"
recipient = "EU GmbH"
country = "DE"
hosts = ["api.eu.test", "bad host"]
tls = "sometimes"

[[destination]]
name = "eu"
recipient = "EU GmbH"
country = "DE"
hosts = ["api.example.cn"]
exemption = "because"

[[destination]]
name = "typo"
hosts = ["x.test"]
colour = "blue"

[[important_data]]
name = "rule"
destinations = ["nowhere"]
paths = ["no-slash"]
"#;
    let approvals = r#"
[[approval]]
id = "A1"
mechanism = "handshake"
status = "granted"
destinations = ["mars"]
categories = ["basic", "gossip"]
valid_from = "2025-01-01"

[[approval]]
id = "A1"
mechanism = "security_assessment"
status = "active"
destinations = ["eu"]
valid_from = "2025-13-01"
"#;
    let (code, out) = check(dir.path(), gate, approvals);
    assert_eq!(code, 2, "{out}");
    for expected in [
        "error: gate.toml:3: gate.proxy_listen: `127.0.0.1:99999` is not an address:port",
        "error: gate.toml:4: gate.admin_listen: `not-an-address`",
        "error: gate.toml:5: gate.mode: `chaos`",
        "error: gate.toml:9: entity.regime: `cac-2030`",
        "error: gate.toml:12: inspection.unreadable: `maybe`",
        "error: gate.toml:13: inspection.atomic_body_bytes: must not exceed max_body_bytes",
        "error: gate.toml:17: inspection.subjects.fields[1]: `user_id` is listed twice",
        "error: gate.toml:18: inspection.subjects.detectors[1]: `telepathy`",
        "error: gate.toml:21: inspection.categories.secret:",
        "error: gate.toml:25: domestic[0].cidrs[0]: `10.0.0.0/33` is not a CIDR",
        "error: gate.toml:31: destination[0].hosts[1]:",
        "error: gate.toml:32: destination[0].tls: `sometimes`",
        "error: gate.toml:35: destination[1].name: destination `eu` is defined twice",
        "error: gate.toml:38: destination[1].hosts[0]: `api.example.cn` is also domestic",
        "error: gate.toml:39: destination[1].exemption: `because`",
        "error: gate.toml:44: destination[2]: unknown field `colour`",
        "error: gate.toml:48: important_data[0].destinations[0]: no destination is named `nowhere`",
        "error: gate.toml:49: important_data[0].paths[0]:",
        "error: approvals.toml:4: approval[0].mechanism: `handshake`",
        "error: approvals.toml:5: approval[0].status: `granted`",
        "error: approvals.toml:6: approval[0].destinations[0]: no destination is named `mars`",
        "error: approvals.toml:7: approval[0].categories[1]: `gossip`",
        "error: approvals.toml:11: approval[1].id: approval `A1` is defined twice",
        "error: approvals.toml:15: approval[1].valid_from: `2025-13-01` is not a date",
        "error: approvals.toml:10: approval[1].valid_until: a security assessment has a validity end date",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
}

#[test]
fn syntax_errors_and_missing_sections() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(dir.path(), "[gate\nproxy_listen = 1", "");
    assert_eq!(code, 2);
    assert!(out.contains("error: gate.toml: not valid TOML"), "{out}");

    let (code, out) = check(dir.path(), "[mystery]\nx = 1\n", "");
    assert_eq!(code, 2);
    for expected in [
        "gate.toml:1: mystery: unknown section",
        // Nothing to point at: no line.
        "gate.toml: gate: missing section",
        "gate.toml: entity: missing section",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }

    std::fs::remove_file(dir.path().join("approvals.toml")).unwrap();
    std::fs::write(dir.path().join("gate.toml"), GOOD_HEAD).unwrap();
    let out = cli_on(dir.path().join("gate.toml"), &["check"]);
    let text = out.stdout;
    assert_eq!(out.code, Some(2));
    assert!(text.contains("approvals.toml: cannot read"), "{text}");
}

#[test]
fn warnings_do_not_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let gate = format!(
        "{GOOD_HEAD}\n[[destination]]\nname = \"eu\"\nrecipient = \"EU\"\ncountry = \"DE\"\nhosts = [\"api.eu.test\"]\ntls_verify = false\n"
    );
    let approvals = r#"
[[approval]]
id = "SA-1"
mechanism = "security_assessment"
status = "active"
destinations = ["eu"]
valid_from = "2025-01-01"
valid_until = "2029-06-30"
"#;
    let (code, out) = check(dir.path(), &gate, approvals);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: gate.toml:15: destination[0].tls_verify"),
        "{out}"
    );
    assert!(
        out.contains("warning: approvals.toml:8: approval[0].valid_until: longer than the 3 years"),
        "{out}"
    );
}

#[test]
fn run_refuses_an_invalid_config_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate.toml"), "[gate]\nproxy_listen = \"x\"\nadmin_listen = \"y\"\n[entity]\nname = \"Co\"\nregime = \"cac-2024\"\n").unwrap();
    std::fs::write(dir.path().join("approvals.toml"), "").unwrap();
    let out = cli_on(dir.path().join("gate.toml"), &["run"]);
    assert_eq!(out.code, Some(2));
    let err = out.stderr;
    assert!(
        err.contains("gate.proxy_listen") && err.contains("gate.admin_listen"),
        "{err}"
    );
}

#[test]
fn clients_claimed_twice_and_unknown_names_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let gate = format!(
        r#"
[gate]
proxy_listen = "127.0.0.1:13128"
admin_listen = "127.0.0.1:19464"
unidentified = "sometimes"
client_certificates = "require"

[entity]
name = "Co"
regime = "cac-2024"

[[destination]]
name = "eu"
recipient = "R"
country = "DE"
hosts = ["api.eu.test"]
clients = ["billing", "nobody"]

[[client]]
name = "billing"
token_sha256 = ["{digest}"]
cidrs = ["10.20.0.0/16"]
tls_identities = ["spiffe://corp/billing"]

[[client]]
name = "billing"
token_sha256 = ["{digest}", "abc"]
cidrs = ["10.20.0.0/16", "10.0.0.0/33"]
tls_identities = ["spiffe://corp/billing"]

[[client]]
name = "unidentified"

[[client]]
name = "Bad Name"
"#
    );
    let (code, text) = check(dir.path(), &gate, "");
    assert_eq!(code, 2, "{text}");
    for needle in [
        "gate.unidentified: `sometimes` is not one of: allow, refuse",
        "gate.client_certificates: only with gate.proxy_tls_listen",
        "client[1].name: client `billing` is defined twice",
        "client[1].token_sha256[0]: this digest is claimed by client `billing` too",
        "client[1].token_sha256[1]: must be 64 hex digits",
        "client[1].cidrs[0]: `10.20.0.0/16` is claimed by client `billing` too",
        "client[1].cidrs[1]: `10.0.0.0/33` is not a network",
        "client[1].tls_identities[0]: identity `spiffe://corp/billing` is claimed by client `billing` too",
        "client[2].name: `unidentified` is reserved",
        "client[3].name: use 1 to 64 of a-z",
        "destination[0].clients[1]: `nobody` is not a declared [[client]]",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn the_tls_proxy_listener_needs_its_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let gate = r#"
[gate]
proxy_listen = "127.0.0.1:13128"
admin_listen = "127.0.0.1:19464"
proxy_tls_listen = "127.0.0.1:0"
client_certificates = "require"

[entity]
name = "Co"
regime = "cac-2024"
"#;
    let (code, text) = check(dir.path(), gate, "");
    assert_eq!(code, 2, "{text}");
    for needle in [
        "gate.proxy_tls_cert: needed with gate.proxy_tls_listen",
        "gate.proxy_tls_key: needed with gate.proxy_tls_listen",
        "gate.client_certificates: `require` needs gate.client_ca_file",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}
