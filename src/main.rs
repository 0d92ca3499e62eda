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
    /// Validate the configuration and approvals; print every error and warning.
    Check {
        /// The gate configuration file.
        #[arg(short, long, default_value = "config/gate.toml")]
        config: PathBuf,
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
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
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
