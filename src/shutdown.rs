//! The drain signal: one [`Drain`] handle that `main` (on SIGTERM/SIGINT) or a test triggers,
//! and [`DrainWatch`] clones that every listener watches. Listeners stop accepting when it
//! fires; in-flight connections get `gate.drain_seconds` to finish.

use tokio::sync::watch;

/// The trigger side.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// The watching side; cheap to clone.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// A new, untriggered drain signal and its first watcher.
    pub fn new() -> (Drain, DrainWatch) {
        let (tx, rx) = watch::channel(false);
        (Drain { tx }, DrainWatch { rx })
    }

    /// Starts the drain. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another watcher.
    pub fn watcher(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }
}

impl DrainWatch {
    /// Resolves once the drain has started (immediately if it already has).
    pub async fn signaled(&mut self) {
        // An error means the trigger was dropped: treat as a drain.
        let _ = self.rx.wait_for(|v| *v).await;
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_the_trigger() {
        let (drain, mut w) = Drain::new();
        let mut w2 = drain.watcher();
        assert!(!w.is_draining());
        drain.trigger();
        w.signaled().await;
        w2.signaled().await;
        assert!(w2.is_draining());
    }
}
