//! The test harness: start the real `transfer-gate` binary on a temporary config whose
//! listeners bind port 0 and report their addresses in `data/listen.json` ([`GateBuilder`]),
//! loopback upstreams that record exactly what they received ([`upstream::Upstream`]), a test
//! CA ([`certs::TestCa`]), clients (reqwest and `curl`), the binary as a command ([`cli`]) and
//! waiting for conditions ([`eventually`]).
//!
//! Every check must be able to fail. Three rules for every helper here and every test that
//! uses them (also in docs/architecture.md, "Tests"):
//! - A helper never turns "missing" into a passing value: a series the gate does not export, an
//!   unreadable file or `/proc` field, a request without an answer fails the test with what was
//!   missing ([`GateProc::metric`] panics; expecting absence is explicit, with
//!   [`GateProc::metric_opt`]). A transport error is an outcome the test asserts on
//!   ([`redis::Outcome`]), never a request silently left out.
//! - A helper that polls returns its result and the caller asserts on it ([`poll_until`] is
//!   `#[must_use]`; [`eventually`] panics naming what it waited for).
//! - `let _ =` (or `if let Ok(..)`) on the result of the thing under test is a defect: assert on
//!   the status, the error, the bytes.

pub mod approvals;
pub mod certs;
pub mod cli;
pub mod ledger;
pub mod peer;
pub mod poll;
pub mod redis;
pub mod squid;
pub mod upstream;

pub use cli::{cli_on, command, CliOutput, BIN};
pub use poll::{eventually, poll_until, poll_until_blocking};
pub use transfer_gate::testing::require_tool;

/// The gate's refusal reason on a response (`X-Transfer-Gate-Reason`), empty when absent.
pub fn reason_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-transfer-gate-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A free loopback port (bound, then released). Only for a port that must be known before a
/// process starts (Squid's, Redis's, a dead address); the gate's own listeners bind port 0.
/// Today in Asia/Shanghai (the counting window's calendar).
pub fn shanghai_today() -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::hours(8)).date()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `[[destination]]` block.
#[derive(Clone, Debug)]
pub struct Dest {
    pub name: String,
    pub hosts: Vec<String>,
    pub extra: Vec<(String, String)>,
}

impl Dest {
    pub fn new(name: &str, host: &str) -> Self {
        Dest {
            name: name.into(),
            hosts: vec![host.into()],
            extra: vec![],
        }
    }
    /// Send this destination's traffic to `addr` (split-horizon override).
    pub fn connect_to(self, addr: SocketAddr) -> Self {
        self.set("connect_to", &format!("\"{addr}\""))
    }
    /// Any other key, as a raw TOML value.
    pub fn set(mut self, key: &str, toml_value: &str) -> Self {
        self.extra.push((key.into(), toml_value.into()));
        self
    }
}

/// Builds a temporary config and starts the gate binary on it.
pub struct GateBuilder {
    dir: tempfile::TempDir,
    dests: Vec<Dest>,
    sections: Vec<String>,
    gate_extra: Vec<String>,
    approvals: String,
    timeouts: String,
    ledger: Option<String>,
    env: Vec<(String, String)>,
    entity: String,
    target_rules: Option<String>,
    wrapper: Vec<String>,
    fields: Vec<String>,
}

/// The harness's `gate.deny_cidrs`: the default without loopback, because the test upstreams
/// live on loopback (the gate's own listeners and ledger stay refused whatever this says).
pub const TEST_DENY_CIDRS: &str =
    "deny_cidrs = [\"169.254.0.0/16\", \"fe80::/10\", \"0.0.0.0/8\", \"::/128\"]";

impl Default for GateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GateBuilder {
    pub fn new() -> Self {
        GateBuilder {
            dir: tempfile::tempdir().unwrap(),
            dests: vec![],
            sections: vec![],
            gate_extra: vec![],
            approvals: String::new(),
            timeouts: String::new(),
            ledger: None,
            env: vec![],
            entity: "regime = \"cac-2024\"".into(),
            target_rules: Some(TEST_DENY_CIDRS.into()),
            wrapper: vec![],
            fields: vec!["user_id".into()],
        }
    }
    /// Runs the gate under a wrapper command that execs it (e.g. `prlimit --nofile=256:256 --`),
    /// so the gate keeps the wrapper's pid.
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }
    /// Leaves `gate.deny_cidrs` out of the config: the shipped default (loopback refused).
    pub fn default_deny_cidrs(mut self) -> Self {
        self.target_rules = None;
        self
    }
    /// The `[entity]` keys (default `regime = "cac-2024"`), e.g. `regime = "cac-2022"\nciio = true`.
    pub fn entity(mut self, toml_lines: &str) -> Self {
        self.entity = toml_lines.into();
        self
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn destination(mut self, d: Dest) -> Self {
        self.dests.push(d);
        self
    }
    /// A raw TOML section appended to gate.toml (e.g. `[tls]\nupstream_ca_file = "ca.pem"`).
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push(toml.into());
        self
    }
    /// An extra `key = value` line in `[gate]`; `{proxy_port}` and `{admin_port}` are replaced
    /// by the gate's ports (which are then chosen before the start instead of by the gate).
    pub fn gate_key(mut self, line: &str) -> Self {
        self.gate_extra.push(line.into());
        self
    }
    /// `inspection.subjects.fields` (default `["user_id"]`).
    pub fn subject_fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
    pub fn timeouts(mut self, toml_lines: &str) -> Self {
        self.timeouts = toml_lines.into();
        self
    }
    /// The body of the `[ledger]` section, replacing the default (a per-gate local ledger
    /// with `hash_key_file = "secrets/subject-hash.key"`), e.g. a shared Redis and key file.
    pub fn ledger_toml(mut self, toml_lines: &str) -> Self {
        self.ledger = Some(toml_lines.into());
        self
    }
    /// `entity.regime` (default `cac-2024`).
    pub fn regime(mut self, regime: &str) -> Self {
        self.entity = format!("regime = \"{regime}\"");
        self
    }
    pub fn approvals(mut self, toml: &str) -> Self {
        self.approvals = toml.into();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Writes a file into the config directory.
    pub fn file(self, name: &str, contents: &[u8]) -> Self {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
        self
    }

    /// The gate.toml text for the given ports.
    pub fn render(&self, proxy: u16, admin: u16) -> String {
        let mut s = String::new();
        writeln!(
            s,
            "[gate]\nproxy_listen = \"127.0.0.1:{proxy}\"\nadmin_listen = \"127.0.0.1:{admin}\""
        )
        .unwrap();
        writeln!(s, "data_dir = \"data\"\napprovals_file = \"approvals.toml\"\naudit_log = \"data/audit.jsonl\"\ndrain_seconds = 5").unwrap();
        writeln!(
            s,
            "blocked_by_url = \"https://compliance.example.cn/transfer-gate\""
        )
        .unwrap();
        if let Some(rules) = &self.target_rules {
            writeln!(s, "{rules}").unwrap();
        }
        for l in &self.gate_extra {
            let l = l
                .replace("{proxy_port}", &proxy.to_string())
                .replace("{admin_port}", &admin.to_string());
            writeln!(s, "{l}").unwrap();
        }
        writeln!(s, "\n[timeouts]\n{}", self.timeouts).unwrap();
        writeln!(s, "\n[entity]\nname = \"Test Co.\"\n{}\n", self.entity).unwrap();
        let ledger = self
            .ledger
            .as_deref()
            .unwrap_or("hash_key_file = \"secrets/subject-hash.key\"");
        writeln!(s, "[ledger]\n{ledger}\n").unwrap();
        let fields: Vec<String> = self.fields.iter().map(|f| format!("\"{f}\"")).collect();
        writeln!(s, "[inspection.subjects]\nfields = [{}]\ndetectors = [\"cn_resident_id\", \"cn_mobile\", \"email\", \"bank_card\"]\nheaders = [\"x-user-id\"]\n", fields.join(", ")).unwrap();
        writeln!(
            s,
            "[[domestic]]\nhosts = [\"*.cn\", \"localhost\"]\ncidrs = [\"127.0.0.0/8\"]\n"
        )
        .unwrap();
        for d in &self.dests {
            let hosts: Vec<String> = d.hosts.iter().map(|h| format!("\"{h}\"")).collect();
            writeln!(s, "[[destination]]\nname = \"{}\"\nrecipient = \"Test Recipient Ltd\"\ncountry = \"DE\"\nhosts = [{}]", d.name, hosts.join(", ")).unwrap();
            for (k, v) in &d.extra {
                writeln!(s, "{k} = {v}").unwrap();
            }
            writeln!(s).unwrap();
        }
        for sec in &self.sections {
            writeln!(s, "{sec}\n").unwrap();
        }
        s
    }

    /// Writes the config files and returns the gate.toml path (without starting anything).
    pub fn write(&self, proxy: u16, admin: u16) -> PathBuf {
        let cfg = self.dir.path().join("gate.toml");
        std::fs::write(&cfg, self.render(proxy, admin)).unwrap();
        std::fs::write(self.dir.path().join("approvals.toml"), &self.approvals).unwrap();
        cfg
    }

    /// Starts the gate, learns the addresses it bound and waits until `/readyz` answers 200.
    pub async fn start(self) -> GateProc {
        // Port 0 unless the config must name the ports itself.
        let named = self
            .gate_extra
            .iter()
            .any(|l| l.contains("{proxy_port}") || l.contains("{admin_port}"));
        let (proxy, admin) = if named {
            (free_port(), free_port())
        } else {
            (0, 0)
        };
        let cfg = self.write(proxy, admin);
        let log = self.dir.path().join("gate.log");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut gate = GateProc {
            child: None,
            dir: self.dir,
            config: cfg,
            log,
            env: self.env,
            wrapper: self.wrapper,
            proxy: unbound,
            admin: unbound,
            icap: None,
            proxy_tls: None,
        };
        gate.launch().await;
        gate
    }
}

fn spawn(cfg: &Path, log: &Path, env: &[(String, String)], wrapper: &[String]) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            require_tool(program);
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => command::<_, &str>([]),
    };
    cmd.args(["run", "-c"]).arg(cfg).stdout(out).stderr(err);
    cmd.env(
        "RUST_LOG",
        std::env::var("GATE_LOG").unwrap_or_else(|_| "info".into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// A running gate process.
pub struct GateProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    /// The proxy listener's address, as the gate reported it.
    pub proxy: SocketAddr,
    /// The admin listener's address, as the gate reported it.
    pub admin: SocketAddr,
    /// The ICAP listener's address, when `gate.icap_listen` is set.
    pub icap: Option<SocketAddr>,
    /// The TLS proxy listener's address, when `gate.proxy_tls_listen` is set.
    pub proxy_tls: Option<SocketAddr>,
}

impl GateProc {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }
    pub fn proxy_port(&self) -> u16 {
        self.proxy.port()
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Spawns the gate process, reads the addresses it bound from `data/listen.json` and
    /// waits until it is ready.
    async fn launch(&mut self) {
        let listen = self.dir.path().join("data/listen.json");
        // A file left by the previous process names its ports, not the new ones.
        let _ = std::fs::remove_file(&listen);
        let child = spawn(&self.config, &self.log, &self.env, &self.wrapper);
        let pid = child.id();
        self.child = Some(child);
        let bound = poll_until(Duration::from_secs(30), || {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten();
            let doc = std::fs::read(&listen)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|v| v["pid"] == pid);
            async move {
                if let Some(st) = exited {
                    return Some(Err(st));
                }
                doc.map(Ok)
            }
        })
        .await;
        let doc = match bound {
            Some(Ok(doc)) => doc,
            Some(Err(st)) => panic!("the gate exited ({st}); log:\n{}", self.logs()),
            None => panic!(
                "the gate wrote no data/listen.json within 30 s; log:\n{}",
                self.logs()
            ),
        };
        let addr = |key: &str| doc[key].as_str().map(|a| a.parse::<SocketAddr>().unwrap());
        self.proxy = addr("proxy").unwrap();
        self.admin = addr("admin").unwrap();
        self.icap = addr("icap");
        self.proxy_tls = addr("proxy_tls");
        self.wait_ready().await;
    }

    /// Waits until `/readyz` answers 200 (panics with the log after 30 s).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = self.admin_url("/readyz");
        let ready = poll_until(Duration::from_secs(30), || async {
            let r = client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        if ready.is_none() {
            panic!("gate not ready after 30 s; log:\n{}", self.logs());
        }
    }

    /// Waits until `transfer_gate_ledger_up` reads 1 (panics with the log after 30 s).
    pub async fn wait_ledger_up(&self) {
        self.wait_ledger(true).await;
    }

    /// Waits until `transfer_gate_ledger_up` reads `up` (panics with the log after 30 s).
    pub async fn wait_ledger(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        let read = |text: String| {
            text.lines()
                .find(|l| l.starts_with("transfer_gate_ledger_up{"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let reached = poll_until(Duration::from_secs(30), || async {
            (read(self.metrics().await) == Some(want)).then_some(())
        })
        .await;
        if reached.is_none() {
            let v = read(self.metrics().await);
            panic!(
                "transfer_gate_ledger_up is not {want} after 30 s ({v:?}); log:\n{}",
                self.logs()
            );
        }
    }

    /// `GET /readyz` status code.
    pub async fn readyz(&self) -> u16 {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A reqwest client that sends everything through the gate as an HTTP proxy.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy_url()).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// `GET /v1/status` (loopback, no token).
    pub async fn status(&self) -> serde_json::Value {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.admin_url("/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Entity window counts (all, sensitive) from `/v1/status`.
    pub async fn entity_counts(&self) -> (u64, u64) {
        let s = self.status().await;
        (
            s["entity_subjects"]["all"].as_u64().unwrap(),
            s["entity_subjects"]["sensitive"].as_u64().unwrap(),
        )
    }

    /// POSTs a JSON body through the gate.
    pub async fn post_json(&self, url: &str, body: impl Into<String>) -> reqwest::Response {
        self.client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap()
    }

    /// POSTs a JSON body through the gate, with `Proxy-Authorization: Bearer <token>` when a
    /// client token is given, and returns the status.
    pub async fn post_status(&self, url: &str, body: &str, token: Option<&str>) -> u16 {
        let mut r = self
            .client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.header("proxy-authorization", format!("Bearer {t}"));
        }
        r.send().await.unwrap().status().as_u16()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric series (exact label text as rendered). A series the gate does
    /// not export fails the test, naming the series and what the family does export: a
    /// missing or mislabelled series never reads as 0. A test that expects the series to be
    /// absent (or polls until it appears) uses [`GateProc::metric_opt`].
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        match series_value(&text, series) {
            Some(v) => v,
            None => panic!(
                "metric series {series} is not exported; {}",
                family_summary(&text, series)
            ),
        }
    }

    /// The value of one metric series, `None` when the gate does not export it.
    pub async fn metric_opt(&self, series: &str) -> Option<f64> {
        series_value(&self.metrics().await, series)
    }

    /// Polls until the audit log holds at least `n` lines and returns them all (panics with
    /// what it holds after 20 s).
    pub async fn audit_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let path = self.dir().join("data/audit.jsonl");
        let read = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let got = poll_until(Duration::from_secs(20), || async {
            Some(read()).filter(|l| l.len() >= n)
        })
        .await;
        got.unwrap_or_else(|| panic!("expected {n} audit lines, have: {:#?}", read()))
    }

    /// Sends a signal to the gate process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        poll_until_blocking(within, || child.try_wait().unwrap()).and_then(|st| st.code())
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the gate again on the same config and data directory.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }

    /// Resident memory of the gate process in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The gate's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// A `kB` field of the gate's `/proc/<pid>/status`; an unreadable file or a missing field
    /// fails the test (a memory bound must never pass on a reading of 0).
    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (is the gate still running?)"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{path} has no {field} field"))
    }
}

impl Drop for GateProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of `series` (exact name and label text) in a Prometheus text exposition.
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().unwrap())
    })
}

/// What the exposition holds of `series`'s family (for a failure message): its series, or the
/// families it exports when it has none.
fn family_summary(text: &str, series: &str) -> String {
    let family = series.split('{').next().unwrap_or(series);
    let same: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .collect();
    if same.is_empty() {
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        families.dedup();
        format!(
            "the family {family} has no series; exported families: {}",
            families.join(", ")
        )
    } else {
        format!("the family {family} exports:\n{}", same.join("\n"))
    }
}

/// Runs `curl` with `args` and returns (status code, stdout). `-s` and the status line are added.
pub fn curl(args: &[&str]) -> (u16, String) {
    require_tool("curl");
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // `-w` always prints the code (`000` when there was no HTTP response): text without one
    // is a failure of the run, never a status.
    let (body, code) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl printed no status line: {text:?}"));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no status code: {text:?}"));
    (code, body.to_owned())
}

/// POSTs `body` as JSON to `url` with Python `requests` through the HTTP proxy `proxy`;
/// returns (status, `X-Transfer-Gate-Reason`, body).
pub fn python_post(proxy: &str, url: &str, body: &str) -> (u16, String, String) {
    require_tool("python3");
    let script = "import sys, requests\n\
        r = requests.post(sys.argv[2], data=sys.argv[3].encode(), headers={'content-type': 'application/json'}, proxies={'http': sys.argv[1]}, timeout=60)\n\
        print(r.status_code)\n\
        print(r.headers.get('x-transfer-gate-reason', ''))\n\
        sys.stdout.write(r.text)\n";
    let out = Command::new("python3")
        .args(["-c", script, proxy, url, body])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 with requests is required (scripts/test installs python3-requests): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.splitn(3, '\n');
    let status = it.next().unwrap_or("0").trim().parse().unwrap_or(0);
    let reason = it.next().unwrap_or("").trim().to_owned();
    (status, reason, it.next().unwrap_or("").to_owned())
}

/// Samples a process's resident memory every 20 ms on a thread until stopped.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak = peak.max(kb << 10);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    /// Stops sampling and returns the peak RSS in bytes; fails the test when not one sample
    /// was taken (a memory bound must never pass on a reading of 0).
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self.thread.join().unwrap();
        assert!(peak > 0, "no resident memory sample was taken");
        peak
    }
}
