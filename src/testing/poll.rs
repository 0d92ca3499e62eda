//! Waiting for something to become true: one polling helper instead of hand-rolled loops of
//! `sleep` and deadlines, so a slow machine only makes a test slower, never wrong. Shared by
//! the unit tests, the integration harness (`tests/it/harness/poll.rs`) and the benchmarks.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// Polls `probe` every [`INTERVAL`] until it returns `Some`; `None` once `timeout` has passed
/// (the probe runs at least once, and once more at the deadline). The caller asserts on the
/// result (or uses [`eventually`]): a poll whose result is dropped checks nothing.
#[must_use = "a poll checks nothing unless its result is asserted on (or use `eventually`)"]
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `probe` until it returns `Some` and returns the value; panics naming `what` when it
/// has not within `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, probe).await {
        Some(v) => v,
        None => panic!("{what}: not within {timeout:?}"),
    }
}

/// [`poll_until`] for code that is not async (a child process, a file), blocking the thread.
#[must_use = "a poll checks nothing unless its result is asserted on"]
pub fn poll_until_blocking<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(INTERVAL);
    }
}
