//! `check` and `run` agree: every check `run` makes at start on the files the config names
//! (hash key mode and length, the interception CA pair, the upstream CA file, the admin
//! token, `data_dir` and the audit log, the Redis password and CA files) is made by `check`
//! too, and both exit 2 with the same message. A usable config passes `check` (exit 0) and
//! `run` starts on it.

use crate::harness::certs::TestCa;
use crate::harness::{cli_on, command, poll_until_blocking, GateBuilder};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// `transfer-gate check -c cfg`: exit code and stdout.
fn check(cfg: &Path) -> (i32, String) {
    let out = cli_on(cfg, &["check"]);
    (out.code.unwrap_or(-1), out.stdout)
}

/// `transfer-gate run -c cfg` until it exits (at most 30 s): exit code and stderr; `None`
/// when it is still running (it started), after which it is killed.
fn run(cfg: &Path) -> Option<(i32, String)> {
    let dir = cfg.parent().unwrap();
    let log = dir.join("run.log");
    let mut child = command(["run", "-c"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let exited = poll_until_blocking(Duration::from_secs(30), || child.try_wait().unwrap());
    match exited {
        Some(st) => Some((
            st.code().unwrap_or(-1),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

fn private(path: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A gate config in a fresh directory, changed by `setup` (which gets the directory).
fn config(
    setup: impl FnOnce(&Path, GateBuilder) -> GateBuilder,
) -> (GateBuilder, std::path::PathBuf) {
    let b = GateBuilder::new();
    let dir = b.dir().to_path_buf();
    let b = setup(&dir, b);
    let cfg = b.write(0, 0);
    (b, cfg)
}

/// `check` and `run` both exit 2 and both name `key` and `needle`.
fn both_refuse(
    what: &str,
    key: &str,
    needle: &str,
    setup: impl FnOnce(&Path, GateBuilder) -> GateBuilder,
) {
    let (_b, cfg) = config(setup);
    let (code, out) = check(&cfg);
    assert_eq!(code, 2, "{what}: check exit code\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("error: gate.toml:") && l.contains(key) && l.contains(needle)),
        "{what}: check does not report `{key}` … `{needle}`:\n{out}"
    );
    let (code, err) = run(&cfg).unwrap_or_else(|| panic!("{what}: run started anyway"));
    assert_eq!(code, 2, "{what}: run exit code\n{err}");
    assert!(
        err.contains(key) && err.contains(needle),
        "{what}: run does not report `{key}` … `{needle}`:\n{err}"
    );
}

#[test]
fn check_fails_like_run_on_a_hash_key_readable_by_the_group() {
    both_refuse(
        "0640 hash key",
        "ledger.hash_key_file",
        "has mode 640",
        |dir, b| {
            private(&dir.join("secrets/subject-hash.key"), &[1u8; 32], 0o640);
            b
        },
    );
    both_refuse(
        "short hash key",
        "ledger.hash_key_file",
        "holds 16 bytes",
        |dir, b| {
            private(&dir.join("secrets/subject-hash.key"), &[1u8; 16], 0o600);
            b
        },
    );
}

#[test]
fn check_fails_like_run_on_the_interception_ca() {
    let tls = "[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"";
    both_refuse(
        "CA key 0644",
        "tls.ca_key",
        "readable by group or others",
        |dir, b| {
            let ca = TestCa::new("gate CA");
            private(&dir.join("secrets/ca.pem"), ca.cert_pem.as_bytes(), 0o644);
            private(&dir.join("secrets/ca.key"), ca.key_pem().as_bytes(), 0o644);
            b.section(tls)
        },
    );
    both_refuse(
        "CA pair of two CAs",
        "tls",
        "do not belong together",
        |dir, b| {
            let (one, other) = (TestCa::new("one"), TestCa::new("other"));
            private(&dir.join("secrets/ca.pem"), one.cert_pem.as_bytes(), 0o644);
            private(
                &dir.join("secrets/ca.key"),
                other.key_pem().as_bytes(),
                0o600,
            );
            b.section(tls)
        },
    );
}

#[test]
fn check_fails_like_run_on_the_files_the_gate_opens() {
    both_refuse(
        "upstream CA file without a certificate",
        "tls.upstream_ca_file",
        "no certificate",
        |dir, b| {
            std::fs::write(dir.join("partner.pem"), "not a certificate\n").unwrap();
            b.section("[tls]\nupstream_ca_file = \"partner.pem\"")
        },
    );
    both_refuse(
        "admin token missing",
        "gate.admin_token_file",
        "cannot read",
        |_, b| b.gate_key("admin_token_file = \"secrets/missing.token\""),
    );
    both_refuse(
        "data_dir is a file",
        "gate.data_dir",
        "not a directory",
        |dir, b| {
            std::fs::write(dir.join("data"), "").unwrap();
            b
        },
    );
    both_refuse(
        "audit log is a directory",
        "gate.audit_log",
        "is a directory",
        |dir, b| {
            std::fs::create_dir_all(dir.join("data/audit.jsonl")).unwrap();
            b
        },
    );
}

#[test]
fn check_fails_like_run_on_the_redis_files() {
    let ledger = |extra: &str| {
        format!("backend = \"redis\"\nredis_url = \"rediss://127.0.0.1:1/\"\nhash_key_file = \"secrets/subject-hash.key\"\n{extra}")
    };
    both_refuse(
        "Redis password file missing",
        "ledger.redis_password_file",
        "redis password file",
        |dir, b| {
            private(&dir.join("secrets/subject-hash.key"), &[1u8; 32], 0o600);
            b.ledger_toml(&ledger("redis_password_file = \"secrets/redis.password\""))
        },
    );
    both_refuse(
        "Redis password file empty",
        "ledger.redis_password_file",
        "empty",
        |dir, b| {
            private(&dir.join("secrets/subject-hash.key"), &[1u8; 32], 0o600);
            private(&dir.join("secrets/redis.password"), b"\n", 0o600);
            b.ledger_toml(&ledger("redis_password_file = \"secrets/redis.password\""))
        },
    );
    both_refuse(
        "Redis CA file without a certificate",
        "ledger.redis_ca_file",
        "no certificate",
        |dir, b| {
            private(&dir.join("secrets/subject-hash.key"), &[1u8; 32], 0o600);
            std::fs::write(dir.join("redis-ca.pem"), "nothing\n").unwrap();
            b.ledger_toml(&ledger("redis_ca_file = \"redis-ca.pem\""))
        },
    );
    both_refuse(
        "Redis hash key missing",
        "ledger.hash_key_file",
        "does not exist",
        |_, b| b.ledger_toml(&ledger("")),
    );
}

#[tokio::test]
async fn a_usable_config_passes_check_and_runs() {
    let (b, cfg) = config(|dir, b| {
        let ca = TestCa::new("gate CA");
        private(&dir.join("secrets/ca.pem"), ca.cert_pem.as_bytes(), 0o644);
        private(&dir.join("secrets/ca.key"), ca.key_pem().as_bytes(), 0o600);
        private(&dir.join("secrets/subject-hash.key"), &[1u8; 32], 0o600);
        b.section("[tls]\nca_cert = \"secrets/ca.pem\"\nca_key = \"secrets/ca.key\"")
    });
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 errors"), "{out}");
    // Starts and becomes ready (panics with the log otherwise).
    let gate = b.start().await;
    assert_eq!(gate.readyz().await, 200);
}

#[tokio::test]
async fn a_second_gate_on_the_same_data_dir_refuses_to_start() {
    let mut gate = GateBuilder::new().start().await;
    let data = gate.dir().join("data");
    // The same config again (a manual run next to the service): refused before anything in
    // the directory is opened, naming it and the running gate's process.
    let (code, err) = run(&gate.config).expect("a second gate started on the same data_dir");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", gate.pid())), "{err}");
    assert!(err.contains("in use by another transfer-gate"), "{err}");
    // The first one is unaffected.
    assert_eq!(gate.readyz().await, 200);
    // `ledger export` would read a log that changes under it: refused the same way.
    let export = gate.dir().join("export.jsonl");
    let out = cli_on(
        &gate.config,
        &["ledger", "export", "--out", export.to_str().unwrap()],
    );
    let text = &out.stderr;
    assert!(!out.success(), "{text}");
    assert!(text.contains(&format!("pid {}", gate.pid())), "{text}");
    // kill -9 releases the lock with the process: a restart on the directory works.
    gate.restart().await;
    assert_eq!(gate.readyz().await, 200);
}
