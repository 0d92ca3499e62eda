//! The runtime shape of the request path: one single-threaded tokio runtime per core, each on
//! its own thread, with no work stealing between them (as nginx runs one event loop per worker
//! and Pingora its "no-steal" runtime).
//!
//! A connection accepted by a listener is handed to one worker, round robin, and lives there
//! to its end: its socket is registered with that worker's reactor, its requests, their
//! inspection, the upstream exchange (each worker has its own pool of upstream connections,
//! see [`current`]) and the answer all run on the same thread, so a request wakes no other
//! thread unless it must (a new subject's durable commit, the audit writer's batch). The
//! process's main multi-threaded runtime keeps the admin listener and the background tasks.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker running on this thread (`None`: not a worker thread).
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many workers the gate runs: one per core the process may use (at most 64).
pub fn count() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .clamp(1, 64)
}

/// The index of the worker whose thread this is, `None` outside the workers (the main
/// runtime, tests). Per-worker resources (upstream pools) are chosen by it.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// A running pool of workers. Dropping it stops them: tasks still running on a worker are
/// dropped (the listener's drain has let in-flight requests finish before that).
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` workers (at least one), named `tg-worker-<i>`.
    ///
    /// # Errors
    /// When a runtime or a thread cannot be created.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop);
            // Not joined: joining from inside an async task would block the caller's runtime;
            // each thread ends on its own within the shutdown timeout once stopped.
            std::thread::Builder::new()
                .name(format!("tg-worker-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(i)));
                    let _ = rt.block_on(stopped);
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?;
        }
        Ok(w)
    }

    /// Runs `fut` on the next worker, round robin. The future is created on the caller's
    /// thread but polled only on the worker's: whatever must be registered with the worker's
    /// reactor (a socket, a timer) is created inside it.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(fut));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_on_its_own_thread_with_its_index() {
        let w = Workers::start(2).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let tx = tx.clone();
            w.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send((current(), name));
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (Some(0), Some("tg-worker-0".to_owned())),
                (Some(0), Some("tg-worker-0".to_owned())),
                (Some(1), Some("tg-worker-1".to_owned())),
                (Some(1), Some("tg-worker-1".to_owned())),
            ]
        );
        assert_eq!(current(), None, "the test's own thread is not a worker");
    }
}
