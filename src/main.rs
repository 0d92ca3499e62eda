//! The `transfer-gate` command line: a thin layer over the library.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use transfer_gate::config::{self, Severity};

#[derive(Parser)]
#[command(
    name = "transfer-gate",
    version,
    about = "Egress proxy that counts and gates cross-border transfers of personal information"
)]
struct Cli {
    /// Log format for application logs (RUST_LOG sets the level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "TRANSFER_GATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate.
    Run {
        /// The gate configuration file.
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
    },
    /// Validate the configuration, approvals and the files they name (key modes, CA pair,
    /// writable data_dir and audit log, Redis password and CA files); print every error and
    /// warning. Exit code 0: usable (warnings allowed); 2: errors (`run` would refuse it).
    Check {
        /// The gate configuration file.
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
    },
    /// Show the running gate's counts, thresholds, destinations and approvals as tables.
    Status {
        /// The gate configuration file (for the admin address and token).
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
        /// Print the raw JSON of `/v1/status` instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The data-flow inventory for an assessment or filing, from the running gate.
    Report {
        /// The gate configuration file (for the admin address and token).
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
        /// First month (YYYY-MM, Asia/Shanghai); default: the first one recorded.
        #[arg(long, value_name = "YYYY-MM")]
        from: Option<String>,
        /// Last month (YYYY-MM); default: the current one.
        #[arg(long, value_name = "YYYY-MM")]
        to: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Which mechanism is required now, when thresholds will be crossed, when to apply and
    /// renew. Exit code 0: nothing due; 1: an action is due; 2: error.
    Assess {
        /// The gate configuration file (for the admin address and token).
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The TLS interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Move the subject ledger between backends (local → Redis).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Write the local ledger (gate.data_dir) to a file of keyed hashes (stop the gate first).
    Export {
        /// The gate configuration file.
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
        /// The file to write (created with mode 0600; never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Load an export into the Redis ledger of the configuration (empty namespace only).
    Import {
        /// The gate configuration file (ledger.backend = "redis", the same hash key file).
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
        /// The export to read.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

fn ledger_cmd(command: LedgerCommand) -> ExitCode {
    use transfer_gate::ledger::migrate;
    let (path, export, file) = match command {
        LedgerCommand::Export { config, out } => (config, true, out),
        LedgerCommand::Import { config, input } => (config, false, input),
    };
    let cfg = match config::load(&path) {
        Ok((cfg, _)) => cfg,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!("transfer-gate: configuration has errors");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(async {
        if export {
            migrate::export_file(&cfg, &file).await
        } else {
            migrate::import_file(&cfg, &file).await
        }
    });
    match r {
        Ok(m) => {
            println!(
                "{} {} subject entries and {} monthly tallies ({} entries outside every window skipped)",
                if export { "exported" } else { "imported" },
                m.subjects,
                m.tallies,
                m.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "transfer-gate: ledger {}: {e}",
                if export { "export" } else { "import" }
            );
            ExitCode::from(1)
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Md,
    Json,
    Html,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the interception CA: DIR/ca.pem (give it to clients) and DIR/ca.key (0600).
    Init {
        /// The directory to write ca.pem and ca.key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files (clients must then trust the new CA).
        #[arg(long)]
        force: bool,
        /// The CA's common name, as clients will display it.
        #[arg(long, default_value = transfer_gate::tls::ca::DEFAULT_CA_NAME)]
        name: String,
    },
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn status(path: &std::path::Path, raw: bool) -> ExitCode {
    let cfg = match config::load(path) {
        Ok((cfg, _)) => cfg,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    match rt.block_on(transfer_gate::admin_client::get_json(&cfg, "/v1/status")) {
        Ok(v) if raw => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", transfer_gate::status::render(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("transfer-gate: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_for_client(path: &std::path::Path) -> Option<config::Config> {
    match config::load(path) {
        Ok((cfg, _)) => Some(cfg),
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            None
        }
    }
}

fn report(
    path: &std::path::Path,
    format: ReportFormat,
    from: Option<&str>,
    to: Option<&str>,
    out: Option<&std::path::Path>,
) -> ExitCode {
    use transfer_gate::report::{self, Month};
    let mut query = Vec::new();
    for (name, v) in [("from", from), ("to", to)] {
        if let Some(v) = v {
            let Some(m) = Month::parse(v) else {
                eprintln!("transfer-gate: --{name} must be a month YYYY-MM, not `{v}`");
                return ExitCode::from(2);
            };
            query.push(format!("{name}={m}"));
        }
    }
    let Some(cfg) = load_for_client(path) else {
        return ExitCode::from(2);
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(2);
    };
    let url = if query.is_empty() {
        "/v1/report".to_owned()
    } else {
        format!("/v1/report?{}", query.join("&"))
    };
    let doc = match rt.block_on(transfer_gate::admin_client::get_json(&cfg, &url)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match format {
        ReportFormat::Md => report::md::render(&doc),
        ReportFormat::Json => report::json::render(&doc),
        ReportFormat::Html => report::html::render(&doc),
    };
    match out {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("transfer-gate: cannot write {}: {e}", p.display());
                ExitCode::from(2)
            }
        },
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}

fn assess(path: &std::path::Path, raw: bool) -> ExitCode {
    let Some(cfg) = load_for_client(path) else {
        return ExitCode::from(2);
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(2);
    };
    let get = |p: &'static str| rt.block_on(transfer_gate::admin_client::get_json(&cfg, p));
    let (status, history) = match (get("/v1/status"), get("/v1/history")) {
        (Ok(s), Ok(h)) => (s, h),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(2);
        }
    };
    let a = transfer_gate::assess::assess(&status, &history);
    if raw {
        println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
    } else {
        print!("{}", transfer_gate::assess::render(&a));
    }
    if a["actions_due"].as_u64().unwrap_or(0) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn ca_init(out: &std::path::Path, name: &str, force: bool) -> ExitCode {
    let files = match transfer_gate::tls::ca::init(out, name, force) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(1);
        }
    };
    // Absolute paths: the snippet below works wherever gate.toml lives.
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert, key) = (abs(&files.cert), abs(&files.key));
    let (cert, key) = (cert.display(), key.display());
    println!(
        "Created the interception CA \"{name}\":
  certificate  {cert}   (install it in the trust store of every client that uses the gate)
  private key  {key}   (mode 0600; keep it on the gate host only, never copy it to clients)

1. Point the gate at it in gate.toml, then restart it or reload it (SIGHUP):

     [tls]
     ca_cert = \"{cert}\"
     ca_key  = \"{key}\"

2. Make clients trust it:

   Debian/Ubuntu system store (curl, wget, Go, most OpenSSL programs):
     sudo cp {cert} /usr/local/share/ca-certificates/transfer-gate.crt
     sudo update-ca-certificates
   RHEL/Fedora:
     sudo cp {cert} /etc/pki/ca-trust/source/anchors/transfer-gate.pem && sudo update-ca-trust
   One process, OpenSSL/Go/Ruby (the file replaces the default bundle, so include both):
     cat /etc/ssl/certs/ca-certificates.crt {cert} > bundle.pem
     export SSL_CERT_FILE=$PWD/bundle.pem
   Node.js (adds to the built-in roots):
     export NODE_EXTRA_CA_CERTS={cert}
   Python requests (uses certifi, not the system store):
     export REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   # after update-ca-certificates
   Java (JDK 9+):
     keytool -importcert -noprompt -cacerts -storepass changeit -alias transfer-gate -file {cert}
   curl, one call:
     curl --proxy http://GATE:3128 --cacert {cert} https://…

Clients that pin certificates cannot be intercepted: their handshakes fail and nothing is
forwarded (transfer_gate_tls_client_errors_total counts them)."
    );
    ExitCode::SUCCESS
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let diags = match config::load(path) {
        Ok((_, warnings)) => warnings,
        Err(diags) => diags,
    };
    for d in &diags {
        println!("{d}");
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    println!("{errors} errors, {warnings} warnings");
    if errors > 0 {
        // The same code as `run` on the same config.
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

// glibc malloc showed up as ~12% of the gate's CPU under load (per-request buffers freed on
// other worker threads); mimalloc's thread-local heaps remove most of it (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Status { config, json } => status(&config, json),
        Command::Report {
            config,
            format,
            from,
            to,
            out,
        } => report(
            &config,
            format,
            from.as_deref(),
            to.as_deref(),
            out.as_deref(),
        ),
        Command::Assess { config, json } => assess(&config, json),
        Command::Ca {
            command: CaCommand::Init { out, force, name },
        } => ca_init(&out, &name, force),
        Command::Ledger { command } => {
            init_logs(cli.log_format);
            ledger_cmd(command)
        }
        Command::Run { config } => {
            init_logs(cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(transfer_gate::app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(transfer_gate::app::StartError::Config(diags)) => {
                    for d in &diags {
                        eprintln!("{d}");
                    }
                    eprintln!("transfer-gate: configuration has errors; not started");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("transfer-gate: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
