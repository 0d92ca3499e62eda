//! The commands that ask the running gate through its admin API (`status`, `report`,
//! `assess`): the configuration only supplies the admin address and token.

use crate::admin_client::get_json;
use std::path::Path;
use std::process::ExitCode;

/// The output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown.
    Md,
    /// JSON.
    Json,
    /// HTML with a data-flow diagram.
    Html,
}

/// `status`: the `/v1/status` view as tables, or its raw JSON. Exit 0, 2 on configuration
/// errors, 1 when the gate cannot be asked.
pub fn status(path: &Path, raw: bool) -> ExitCode {
    let cfg = match super::load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    match super::block_on(get_json(&cfg, "/v1/status")) {
        None => ExitCode::from(1),
        Some(Ok(v)) if raw => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some(Ok(v)) => {
            print!("{}", crate::status::render(&v));
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("transfer-gate: {e}");
            ExitCode::from(1)
        }
    }
}

/// `report`: the data-flow inventory from `from` to `to` (months `YYYY-MM`), to `out` or
/// standard output. Exit 0, or 2 on any error (bad month, configuration, gate unreachable,
/// file not writable).
pub fn report(
    path: &Path,
    format: ReportFormat,
    from: Option<&str>,
    to: Option<&str>,
    out: Option<&Path>,
) -> ExitCode {
    use crate::report::{self, Month};
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
    let cfg = match super::load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let url = if query.is_empty() {
        "/v1/report".to_owned()
    } else {
        format!("/v1/report?{}", query.join("&"))
    };
    let doc = match super::block_on(get_json(&cfg, &url)) {
        None => return ExitCode::from(2),
        Some(Ok(v)) => v,
        Some(Err(e)) => {
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

/// `assess`: which mechanism is required now and what is due, as text or JSON. Exit 0 when
/// nothing is due, 1 when an action is due, 2 on any error.
pub fn assess(path: &Path, raw: bool) -> ExitCode {
    let cfg = match super::load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let fetched = super::block_on(async {
        (
            get_json(&cfg, "/v1/status").await,
            get_json(&cfg, "/v1/history").await,
        )
    });
    let (status, history) = match fetched {
        None => return ExitCode::from(2),
        Some((Ok(s), Ok(h))) => (s, h),
        Some((Err(e), _) | (_, Err(e))) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(2);
        }
    };
    let typed = serde_json::from_value(status)
        .map_err(|e| format!("/v1/status: {e}"))
        .and_then(|s| {
            Ok((
                s,
                serde_json::from_value(history).map_err(|e| format!("/v1/history: {e}"))?,
            ))
        });
    let (status, history) = match typed {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(2);
        }
    };
    let a = crate::assess::assess(&status, &history);
    if raw {
        println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
    } else {
        print!("{}", crate::assess::render(&a));
    }
    if a.actions_due > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
