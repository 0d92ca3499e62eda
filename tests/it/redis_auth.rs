//! Redis credentials and TLS through the real binary (SPEC §12): a `requirepass` redis-server
//! used through `ledger.redis_password_file` (the password never appears in the gate's log,
//! metrics or status), a wrong or missing password keeping the ledger down, and a TLS-only
//! redis-server whose certificate comes from a private CA, reached with `rediss://` and
//! `ledger.redis_ca_file` (and refused without it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::certs::TestCa;
use crate::harness::redis::RedisServer;
use crate::harness::upstream::Upstream;
use crate::harness::{free_port, Dest, GateBuilder, GateProc};
use crate::readiness::key_file;

const URL: &str = "http://api.eu.test/v1/events";
const PASSWORD: &str = "Zq7-requirepass-3f9c";

fn secret(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

async fn gate(ledger: String, up: &Upstream) -> GateProc {
    GateBuilder::new()
        .destination(Dest::new("eu", "api.eu.test").connect_to(up.addr))
        .ledger_toml(&ledger)
        .start()
        .await
}

async fn pi_status(gate: &GateProc, id: u64) -> u16 {
    gate.post_json(URL, format!("{{\"user_id\": {id}}}"))
        .await
        .status()
        .as_u16()
}

/// Whether anything the gate shows holds the password.
async fn leaks(gate: &GateProc) -> bool {
    gate.logs().contains(PASSWORD)
        || gate.metrics().await.contains(PASSWORD)
        || gate.status().await.to_string().contains(PASSWORD)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requirepass_redis_is_used_through_the_password_file() {
    let redis = RedisServer::with_args(&["--requirepass", PASSWORD]);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let up = Upstream::http().await;
    let pw = secret(dir.path(), "redis.password", &format!("{PASSWORD}\n"));
    let ledger = |extra: &str| {
        format!(
            "backend = \"redis\"\nredis_url = \"{}\"\nhash_key_file = \"{}\"\ntimeout_ms = 300\n{extra}",
            redis.url(),
            key.display()
        )
    };
    let g = gate(ledger(&format!("redis_password_file = \"{pw}\"")), &up).await;
    g.wait_ledger_up().await;
    assert_eq!(pi_status(&g, 1).await, 200);
    // The count is in this Redis (read with the password).
    let keys = redis.cli(&[
        "--no-auth-warning",
        "-a",
        PASSWORD,
        "--scan",
        "--pattern",
        "tg:*",
    ]);
    assert!(keys.lines().count() > 0, "no ledger keys in Redis: {keys}");
    assert!(!leaks(&g).await, "the password shows:\n{}", g.logs());
    drop(g);

    // A wrong password and no password: the gate runs, PI-free traffic flows, the ledger is down.
    let wrong = secret(dir.path(), "wrong.password", "not-the-password\n");
    for extra in [format!("redis_password_file = \"{wrong}\""), String::new()] {
        let g = gate(ledger(&extra), &up).await;
        assert_eq!(g.readyz().await, 200);
        g.wait_ledger(false).await;
        assert_eq!(pi_status(&g, 2).await, 503);
        assert_eq!(g.post_json(URL, r#"{"event":"ping"}"#).await.status(), 200);
        assert!(!g.logs().contains("not-the-password"), "{}", g.logs());
    }
}

/// A redis-server that speaks TLS on `tls_port` with a certificate for 127.0.0.1 signed by
/// `ca` (and plain on its harness port, which the gate is not given), with `requirepass`.
fn tls_redis(ca: &TestCa, dir: &Path, tls_port: u16) -> RedisServer {
    let (cert, key) = ca.leaf_pem(&["127.0.0.1", "localhost"]);
    let cert_path = dir.join("redis.pem");
    let key_path = dir.join("redis.key");
    let ca_path = dir.join("redis-ca.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let port = tls_port.to_string();
    RedisServer::with_args(&[
        "--tls-port",
        &port,
        "--tls-cert-file",
        cert_path.to_str().unwrap(),
        "--tls-key-file",
        key_path.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca_path.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_needs_the_redis_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Example Corp Redis CA");
    let tls_port = free_port();
    let _redis = tls_redis(&ca, dir.path(), tls_port);
    let key = key_file(dir.path());
    let pw = secret(dir.path(), "redis.password", PASSWORD);
    let up = Upstream::http().await;
    let ledger = |extra: &str| {
        format!(
            "backend = \"redis\"\nredis_url = \"rediss://127.0.0.1:{tls_port}/\"\nhash_key_file = \"{}\"\nredis_password_file = \"{pw}\"\ntimeout_ms = 1000\n{extra}",
            key.display()
        )
    };
    // With the company's CA as an extra root: TLS verifies, the password is accepted.
    let ca_file = dir.path().join("redis-ca.pem");
    let g = gate(
        ledger(&format!("redis_ca_file = \"{}\"", ca_file.display())),
        &up,
    )
    .await;
    g.wait_ledger_up().await;
    assert_eq!(pi_status(&g, 1).await, 200);
    assert!(!leaks(&g).await, "the password shows:\n{}", g.logs());
    drop(g);

    // Without it the server's certificate is not trusted: the ledger stays down, fail closed.
    let g = gate(ledger(""), &up).await;
    assert_eq!(g.readyz().await, 200);
    g.wait_ledger(false).await;
    assert_eq!(pi_status(&g, 2).await, 503);
    assert_eq!(g.post_json(URL, r#"{"event":"ping"}"#).await.status(), 200);
}
