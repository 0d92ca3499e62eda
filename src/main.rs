//! The `transfer-gate` command line: parses the arguments, sets up logging and calls the
//! library ([`transfer_gate::cli`] does the work of each command and picks the exit code).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use transfer_gate::cli::{self, client::ReportFormat, ledger::Direction};

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
    /// The services that send through the gate (`[[client]]`).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Mint a random token for a client: print the token once and the `token_sha256` line
    /// for its `[[client]]` block.
    Token {
        /// The client's name (as in its `[[client]]` block).
        name: String,
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

// glibc malloc showed up as ~12% of the gate's CPU under load (per-request buffers freed on
// other worker threads); mimalloc's thread-local heaps remove most of it (BENCHMARKS.md).
// The `system-alloc` feature keeps the system allocator, for heap profilers that hook
// `malloc` (heaptrack; `scripts/bench-connections`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => cli::check(&config),
        Command::Status { config, json } => cli::client::status(&config, json),
        Command::Report {
            config,
            format,
            from,
            to,
            out,
        } => cli::client::report(
            &config,
            format,
            from.as_deref(),
            to.as_deref(),
            out.as_deref(),
        ),
        Command::Assess { config, json } => cli::client::assess(&config, json),
        Command::Ca {
            command: CaCommand::Init { out, force, name },
        } => cli::ca::init(&out, &name, force),
        Command::Client {
            command: ClientCommand::Token { name },
        } => cli::token::token(&name),
        Command::Ledger { command } => {
            init_logs(cli.log_format);
            match command {
                LedgerCommand::Export { config, out } => {
                    cli::ledger::migrate(&config, Direction::Export, &out)
                }
                LedgerCommand::Import { config, input } => {
                    cli::ledger::migrate(&config, Direction::Import, &input)
                }
            }
        }
        Command::Run { config } => {
            init_logs(cli.log_format);
            cli::run(config)
        }
    }
}
