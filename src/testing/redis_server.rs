//! Real Redis for tests and benchmarks: a `redis-server` ([`RedisServer`]) or a 3-node Redis
//! Cluster ([`RedisCluster`], `--cluster-enabled yes` + `redis-cli --cluster create`) on free
//! loopback ports in a temporary directory, killed on drop. A missing `redis-server` fails the
//! test (`scripts/test` installs it). Used by the Redis ledger's unit tests, the integration
//! harness (`tests/it/harness/redis.rs`) and `examples/bench_redis.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::poll::poll_until_blocking;
use super::{require_tool, TempDir};

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// Sends one inline command and returns the raw reply (enough for PING, INFO, CLUSTER INFO).
pub fn raw_command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // A simple string, an error, an integer, or a complete bulk string.
                if out.ends_with(b"\r\n") && reply_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn reply_complete(b: &[u8]) -> bool {
    match b.first() {
        Some(b'$') => {
            let Some(nl) = b.iter().position(|c| *c == b'\n') else {
                return false;
            };
            let len: i64 = String::from_utf8_lossy(&b[1..nl - 1]).parse().unwrap_or(-1);
            len < 0 || b.len() >= nl + 1 + len as usize + 2
        }
        _ => true,
    }
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// A standalone server with AOF on and `appendfsync always` (what the ledger docs ask for).
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    /// A server with extra `redis-server` arguments.
    pub fn with_args(extra: &[&str]) -> Self {
        require_tool("redis-server");
        let dir = TempDir::new("redis");
        let port = free_port_pair();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--dir".into());
        args.push(dir.path().display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = RedisServer {
            child: None,
            dir,
            port,
            args,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        // A server with `requirepass` answers NOAUTH: it is up.
        let up = poll_until_blocking(Duration::from_secs(20), || {
            raw_command(self.port, "PING")
                .filter(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
        });
        assert!(
            up.is_some(),
            "redis-server on port {} not ready; log:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (the AOF is replayed).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, then start again on the same port with its data gone (AOF and RDB files
    /// deleted; a Cluster node keeps its `nodes.conf`, so it rejoins owning the same slots,
    /// empty): a server or node replaced by an empty one.
    pub fn restart_empty(&mut self) {
        self.kill();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "appendonlydir" {
                std::fs::remove_dir_all(e.path()).unwrap();
            } else if name.ends_with(".rdb") || name.ends_with(".aof") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        self.spawn();
    }

    /// A field of `INFO <section>` (e.g. `used_memory`).
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let r = raw_command(self.port, &format!("INFO {section}"))?;
        r.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_owned())
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-node Redis Cluster (masters only), each node a [`RedisServer`].
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled yes` servers and joins them with
    /// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`.
    pub fn start() -> Self {
        require_tool("redis-cli");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::with_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster { nodes };
        let ok = poll_until_blocking(Duration::from_secs(30), || {
            c.nodes
                .iter()
                .all(|n| {
                    raw_command(n.port, "CLUSTER INFO")
                        .is_some_and(|r| r.contains("cluster_state:ok"))
                })
                .then_some(())
        });
        assert!(ok.is_some(), "cluster not ok after 30 s");
        c
    }

    /// `redis://127.0.0.1:<port>` of every node (seed list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr()))
            .collect()
    }
}
