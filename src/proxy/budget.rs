//! The process-wide budget of buffered request bytes (`inspection.max_buffered_bytes`, SPEC
//! §9): every byte the gate holds for a request before it may release it — a body read whole,
//! the bytes of a streamed record not yet judged, a decompressor's window — is charged here
//! first, so many requests at once (HTTP/1.1 connections or h2 streams) cannot grow memory past
//! the budget.
//!
//! - A body that would be read whole takes its declared length at once or not at all; without
//!   it, the body is gated record by record instead (the spec's "or is gated record by record").
//! - A streamed body charges its held bytes as they arrive; when the budget is spent it stops
//!   reading its client (back-pressure) until others release, and `timeouts.idle_seconds`
//!   ends a wait that lasts too long (the client gets 503 `gate_busy`).
//!
//! The budget is counted in KiB (semaphore permits); a charge is returned when its [`Charge`]
//! is dropped, however the request ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit.
const UNIT: u64 = 1024;

/// Units for `bytes` (rounded up).
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    /// The configured size, in units.
    total: AtomicU64,
}

/// Bytes charged to the budget by one request; returned on drop.
#[derive(Debug, Default)]
pub struct Charge {
    permit: Option<OwnedSemaphorePermit>,
}

impl Charge {
    /// Bytes this charge covers.
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |p| p.num_permits() as u64 * UNIT)
    }

    /// Returns what this charge holds beyond `bytes` (rounded up to whole KiB).
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = units(bytes);
        if let Some(p) = &mut self.permit {
            let have = p.num_permits() as u64;
            if have > keep {
                drop(p.split((have - keep) as usize));
            }
        }
    }

    fn absorb(&mut self, p: OwnedSemaphorePermit) {
        match &mut self.permit {
            Some(mine) => mine.merge(p),
            None => self.permit = Some(p),
        }
    }
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let u = units(bytes).min(Semaphore::MAX_PERMITS as u64);
        Budget {
            sem: Arc::new(Semaphore::new(u as usize)),
            total: AtomicU64::new(u),
        }
    }

    /// Bytes not charged to any request now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// The configured size in bytes.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed) * UNIT
    }

    /// Bytes charged to requests now.
    pub fn in_use(&self) -> u64 {
        self.total().saturating_sub(self.available())
    }

    /// Adds `bytes` more to `charge` if the budget has them now.
    pub fn try_grow(&self, charge: &mut Charge, bytes: u64) -> bool {
        let Ok(n) = u32::try_from(units(bytes)) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        match self.sem.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                charge.absorb(p);
                true
            }
            Err(_) => false,
        }
    }

    /// A charge of `bytes` taken now, if the budget has them.
    pub fn try_charge(&self, bytes: u64) -> Option<Charge> {
        let mut c = Charge::default();
        self.try_grow(&mut c, bytes).then_some(c)
    }

    /// Waits until `bytes` more can be added to a charge; `None` when they never can (more
    /// than the whole budget) or the budget was closed.
    pub fn grow(
        &self,
        bytes: u64,
    ) -> impl std::future::Future<Output = Option<OwnedSemaphorePermit>> + Send + 'static {
        let sem = self.sem.clone();
        let n = u32::try_from(units(bytes))
            .ok()
            .filter(|n| u64::from(*n) <= self.total.load(Ordering::Relaxed));
        async move {
            match n {
                Some(n) => sem.acquire_many_owned(n).await.ok(),
                None => None,
            }
        }
    }

    /// Adds a permit obtained from [`Budget::grow`] to `charge`.
    pub fn add(charge: &mut Charge, permit: OwnedSemaphorePermit) {
        charge.absorb(permit);
    }

    /// Changes the size to `bytes` (a reload): growth is available at once; a smaller budget
    /// takes effect as requests in flight return what they hold.
    pub fn resize(&self, bytes: u64) {
        let new = units(bytes).min(Semaphore::MAX_PERMITS as u64);
        let old = self.total.swap(new, Ordering::Relaxed);
        if new > old {
            self.sem.add_permits((new - old) as usize);
        } else if new < old {
            let mut left = old - new;
            // What is free now goes at once; the rest as it is returned.
            let now = self.sem.forget_permits(left as usize) as u64;
            left -= now;
            if left > 0 {
                let sem = self.sem.clone();
                tokio::spawn(async move {
                    while left > 0 {
                        let n = left.min(u64::from(u32::MAX)) as u32;
                        match sem.acquire_many(n).await {
                            Ok(p) => p.forget(),
                            Err(_) => return,
                        }
                        left -= u64::from(n);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_are_returned_on_drop_and_never_exceed_the_budget() {
        let b = Budget::new(10 * UNIT);
        let mut c = b.try_charge(4 * UNIT).unwrap();
        assert_eq!(c.bytes(), 4 * UNIT);
        assert!(b.try_grow(&mut c, 5 * UNIT));
        assert_eq!(b.available(), UNIT);
        assert!(b.try_charge(2 * UNIT).is_none());
        // One byte costs a whole unit.
        let d = b.try_charge(1).unwrap();
        assert_eq!(b.available(), 0);
        c.shrink_to(3 * UNIT + 1);
        assert_eq!(c.bytes(), 4 * UNIT);
        assert_eq!(b.available(), 5 * UNIT);
        drop(c);
        drop(d);
        assert_eq!(b.available(), 10 * UNIT);
        assert_eq!(b.in_use(), 0);
        // More than the whole budget can never be had.
        assert!(b.grow(11 * UNIT).await.is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_what_another_returns() {
        let b = Arc::new(Budget::new(4 * UNIT));
        let c = b.try_charge(4 * UNIT).unwrap();
        let wait = tokio::spawn(b.grow(2 * UNIT));
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(c);
        let p = wait.await.unwrap().unwrap();
        assert_eq!(p.num_permits(), 2);
    }

    #[tokio::test]
    async fn resizing_applies_now_or_as_charges_return() {
        let b = Budget::new(8 * UNIT);
        b.resize(12 * UNIT);
        assert_eq!(b.available(), 12 * UNIT);
        let c = b.try_charge(10 * UNIT).unwrap();
        b.resize(4 * UNIT);
        assert_eq!(b.total(), 4 * UNIT);
        assert_eq!(b.available(), 0);
        drop(c);
        // The background shrink takes what comes back.
        for _ in 0..100 {
            if b.available() == 4 * UNIT {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(b.available(), 4 * UNIT);
    }
}
