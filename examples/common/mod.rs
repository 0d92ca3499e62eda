//! What the gate benchmarks (`bench_memory`, `bench_intercept`) share: reading a numeric
//! setting from the environment, a free loopback port, and starting the release gate as a
//! child process on a configuration of theirs, ready once its `/readyz` answers 200.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use transfer_gate::testing::poll::poll_until;

/// The environment variable `name` as a number, `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running gate process, killed on drop.
pub struct Gate {
    /// The process.
    pub child: Child,
    /// Its proxy listener.
    pub proxy: SocketAddr,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` in `dir` on a `gate.toml` of a `[gate]` section (free proxy and admin ports,
/// data and audit log in `dir/data`) followed by `rest`, with an empty approval register, and
/// waits (30 s at most) until it is ready. Its log goes to `dir/gate.log`.
pub async fn start_gate(bin: &Path, dir: &Path, rest: &str) -> Result<Gate> {
    let (proxy, admin) = (free_port()?, free_port()?);
    let cfg = format!(
        r#"[gate]
proxy_listen = "127.0.0.1:{proxy}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "data"
approvals_file = "approvals.toml"
audit_log = "data/audit.jsonl"

{rest}"#
    );
    std::fs::write(dir.join("gate.toml"), cfg)?;
    std::fs::write(dir.join("approvals.toml"), "")?;
    let log = std::fs::File::create(dir.join("gate.log"))?;
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(dir.join("gate.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let gate = Gate {
        child,
        proxy: SocketAddr::from(([127, 0, 0, 1], proxy)),
    };
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let ready = poll_until(Duration::from_secs(30), || async {
        let r = client.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    if ready.is_none() {
        bail!(
            "gate not ready; log:\n{}",
            std::fs::read_to_string(dir.join("gate.log")).unwrap_or_default()
        );
    }
    Ok(gate)
}
