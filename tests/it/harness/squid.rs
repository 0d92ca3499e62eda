//! A real Squid (the Debian `squid` package) in front of the gate's ICAP listener: a generated
//! `squid.conf` in a temporary directory (loopback `http_port` on a free port, no cache, pid and
//! logs in the directory, test host names in its own `hosts_file`) followed by the shipped
//! fragment `deploy/squid/transfer-gate.conf` as it is, only its ICAP service URI pointed at the
//! test gate's port — so the tests run what operators include. Started with `squid -N` (no
//! daemon); killed when dropped. Run as root, Squid drops to its `cache_effective_user`
//! (Debian: `proxy`), so the directory is world-writable.

use super::{free_port, poll_until, require_tool};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Squid.
pub struct Squid {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Squid's `http_port`.
    pub addr: SocketAddr,
}

impl Squid {
    /// Starts Squid with its ICAP REQMOD service at `127.0.0.1:icap_port`, resolving each of
    /// `hosts` to 127.0.0.1; waits until it accepts connections.
    pub async fn start(icap_port: u16, hosts: &[&str]) -> Squid {
        Self::start_with(icap_port, hosts, "").await
    }

    /// [`Squid::start`] with extra `squid.conf` lines, placed before the `http_access` rules
    /// (`{dir}` in them is replaced by Squid's directory).
    pub async fn start_with(icap_port: u16, hosts: &[&str], extra: &str) -> Squid {
        require_tool("squid");
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o777);
        let port = free_port();
        let d = dir.path().display();
        let extra = extra.replace("{dir}", &d.to_string());
        let conf = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log\n\
             coredump_dir {d}\n\
             hosts_file {d}/hosts\n\
             cache deny all\n\
             cache_mem 8 MB\n\
             visible_hostname transfer-gate-test\n\
             pinger_enable off\n\
             logfile_rotate 0\n\
             shutdown_lifetime 0 seconds\n\
             {extra}\n\
             http_access allow localhost\n\
             http_access deny all\n\
             {}\n",
            shipped_fragment(icap_port)
        );
        std::fs::write(dir.path().join("squid.conf"), conf).unwrap();
        let hosts_file: String = hosts.iter().map(|h| format!("127.0.0.1 {h}\n")).collect();
        std::fs::write(dir.path().join("hosts"), hosts_file).unwrap();
        let out = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("squid")
            .arg("-N")
            .arg("-f")
            .arg(dir.path().join("squid.conf"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut squid = Squid {
            child: Some(child),
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        squid.wait_listening().await;
        squid
    }

    async fn wait_listening(&mut self) {
        let addr = self.addr;
        let listening = poll_until(Duration::from_secs(30), || {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            async move {
                if let Some(st) = exited {
                    return Some(Err(st));
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .ok()
                    .map(|_| Ok(()))
            }
        })
        .await;
        match listening {
            Some(Ok(())) => {}
            Some(Err(st)) => panic!("squid exited with {st}; log:\n{}", self.logs()),
            None => panic!("squid not listening after 30 s; log:\n{}", self.logs()),
        }
    }

    /// `http://127.0.0.1:<port>`, for clients' proxy settings.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Squid's cache.log and stderr.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}\n{}", read("stderr.log"), read("cache.log"))
    }

    /// A reqwest client that uses this Squid as its HTTP proxy.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy_url()).unwrap())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }
}

/// `deploy/squid/transfer-gate.conf` with its service URI pointed at `127.0.0.1:icap_port`.
fn shipped_fragment(icap_port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/squid/transfer-gate.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    const URI: &str = "icap://127.0.0.1:1344/reqmod";
    assert!(
        text.contains(URI),
        "{} no longer names {URI}",
        path.display()
    );
    text.replace(URI, &format!("icap://127.0.0.1:{icap_port}/reqmod"))
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for Squid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
