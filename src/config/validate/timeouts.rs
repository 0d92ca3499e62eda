//! `[timeouts]`: connect, response header, idle, total and client header timeouts in seconds.

use crate::config::raw::RawTimeouts;
use crate::config::{Diagnostics, Timeouts};
use std::time::Duration;

/// Validates `[timeouts]`, filling in the defaults.
pub(super) fn validate(file: &str, raw_timeouts: RawTimeouts, d: &mut Diagnostics) -> Timeouts {
    let def = Timeouts::default();
    Timeouts {
        connect: seconds(
            raw_timeouts.connect_seconds,
            def.connect,
            file,
            "timeouts.connect_seconds",
            d,
        ),
        response_header: seconds(
            raw_timeouts.response_header_seconds,
            def.response_header,
            file,
            "timeouts.response_header_seconds",
            d,
        ),
        idle: seconds(
            raw_timeouts.idle_seconds,
            def.idle,
            file,
            "timeouts.idle_seconds",
            d,
        ),
        total: raw_timeouts
            .total_seconds
            .map(|s| seconds(Some(s), def.idle, file, "timeouts.total_seconds", d)),
        client_header: seconds(
            raw_timeouts.client_header_seconds,
            def.client_header,
            file,
            "timeouts.client_header_seconds",
            d,
        ),
    }
}

fn seconds(
    v: Option<f64>,
    default: Duration,
    file: &str,
    path: &str,
    d: &mut Diagnostics,
) -> Duration {
    match v {
        None => default,
        Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Duration::from_secs_f64(s),
        Some(_) => {
            d.error(file, path, "must be a positive number of seconds");
            default
        }
    }
}
