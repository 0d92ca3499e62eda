//! Requests allowed and refused per destination in the last hour and the last day, for
//! `/v1/status` and the console's Destinations page (SPEC §6). Counted by
//! [`super::Gate::count_decision`] next to `transfer_gate_decisions_total`, on the gate's
//! (injectable) clock; kept in memory only, so they start at zero with the process.
//!
//! Each destination that has seen a decision holds 60 minute buckets and 24 hour buckets in
//! rings indexed by the minute (hour) number; a bucket carries the number it counts for, and
//! one found holding an older number is reset when reused, so nothing ever sweeps the rings.
//! "The last hour" is the current minute and the 59 before it; "the last day" the current
//! hour and the 23 before it. A destination costs about 1 KiB, allocated at its first
//! decision; a decision costs one hash lookup by name, whatever the number of destinations.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

const MINUTES: usize = 60;
const HOURS: usize = 24;

/// Requests allowed and refused in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Decisions other than `block` (allowed, and `would_block` in observe mode).
    pub allowed: u64,
    /// `block` decisions.
    pub refused: u64,
}

/// A destination's requests in the last hour and the last day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentTally {
    /// The current minute and the 59 before it.
    pub last_hour: Tally,
    /// The current hour and the 23 before it.
    pub last_day: Tally,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The minute (hour) number since the epoch this bucket counts for.
    stamp: u32,
    allowed: u32,
    refused: u32,
}

impl Bucket {
    fn add(&mut self, stamp: u32, refused: bool) {
        if self.stamp != stamp {
            *self = Bucket {
                stamp,
                ..Bucket::default()
            };
        }
        if refused {
            self.refused = self.refused.saturating_add(1);
        } else {
            self.allowed = self.allowed.saturating_add(1);
        }
    }
}

#[derive(Debug)]
struct Rings {
    minutes: [Bucket; MINUTES],
    hours: [Bucket; HOURS],
}

/// The sum of the buckets of `ring` whose number is within `span` of `now`.
fn sum(ring: &[Bucket], now: u32, span: u32) -> Tally {
    ring.iter()
        .filter(|b| (b.allowed | b.refused) != 0 && now.saturating_sub(b.stamp) < span)
        .fold(Tally::default(), |t, b| Tally {
            allowed: t.allowed + u64::from(b.allowed),
            refused: t.refused + u64::from(b.refused),
        })
}

/// Minute and hour numbers since the epoch (0 before it).
fn stamps(now: SystemTime) -> (u32, u32) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    (clamp(secs / 60), clamp(secs / 3600))
}

/// Per destination name, the minute and hour rings.
#[derive(Debug, Default)]
pub struct RecentRequests {
    by_destination: Mutex<HashMap<Box<str>, Box<Rings>>>,
}

impl RecentRequests {
    /// Empty: no destination has seen a decision.
    pub fn new() -> Self {
        RecentRequests::default()
    }

    /// Counts one decision on `destination` at `now`: refused when `refused`, else allowed.
    pub fn count(&self, destination: &str, refused: bool, now: SystemTime) {
        let (minute, hour) = stamps(now);
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rings = match map.get_mut(destination) {
            Some(r) => r,
            None => map.entry(destination.into()).or_insert_with(|| {
                Box::new(Rings {
                    minutes: [Bucket::default(); MINUTES],
                    hours: [Bucket::default(); HOURS],
                })
            }),
        };
        rings.minutes[minute as usize % MINUTES].add(minute, refused);
        rings.hours[hour as usize % HOURS].add(hour, refused);
    }

    /// `destination`'s requests in the last hour and day as of `now` (zeros when it has seen
    /// none).
    pub fn get(&self, destination: &str, now: SystemTime) -> RecentTally {
        let (minute, hour) = stamps(now);
        let map = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(destination) {
            Some(r) => RecentTally {
                last_hour: sum(&r.minutes, minute, MINUTES as u32),
                last_day: sum(&r.hours, hour, HOURS as u32),
            },
            None => RecentTally::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn tally(allowed: u64, refused: u64) -> Tally {
        Tally { allowed, refused }
    }

    // 2025-06-01T10:00:00Z, the start of an hour.
    const T0: u64 = 1_748_772_000;

    #[test]
    fn counts_roll_out_of_the_hour_then_the_day() {
        let r = RecentRequests::new();
        r.count("eu", false, at(T0 + 10));
        r.count("eu", true, at(T0 + 20));
        r.count("eu", false, at(T0 + 70)); // the next minute
        r.count("us", true, at(T0 + 70));
        let now = r.get("eu", at(T0 + 80));
        assert_eq!(now.last_hour, tally(2, 1));
        assert_eq!(now.last_day, tally(2, 1));
        assert_eq!(r.get("us", at(T0 + 80)).last_hour, tally(0, 1));
        assert_eq!(r.get("nobody", at(T0 + 80)), RecentTally::default());
        // 59 minutes after the first minute: still in the hour.
        assert_eq!(r.get("eu", at(T0 + 59 * 60)).last_hour, tally(2, 1));
        // One hour on, the first minute's two requests left the hour; the day keeps them.
        let later = r.get("eu", at(T0 + 3600 + 10));
        assert_eq!(later.last_hour, tally(1, 0));
        assert_eq!(later.last_day, tally(2, 1));
        // An hour and two minutes on: nothing in the last hour, all in the day.
        let later = r.get("eu", at(T0 + 3600 + 130));
        assert_eq!(later.last_hour, tally(0, 0));
        assert_eq!(later.last_day, tally(2, 1));
        // 23 hours on: still in the day; 24 hours on: gone.
        assert_eq!(r.get("eu", at(T0 + 23 * 3600 + 59)).last_day, tally(2, 1));
        assert_eq!(r.get("eu", at(T0 + 24 * 3600)), RecentTally::default());
    }

    #[test]
    fn a_reused_bucket_starts_again() {
        let r = RecentRequests::new();
        r.count("eu", true, at(T0));
        r.count("eu", true, at(T0 + 1));
        // The same minute slot an hour later, and the same hour slot a day later.
        r.count("eu", false, at(T0 + 24 * 3600 + 5));
        let t = r.get("eu", at(T0 + 24 * 3600 + 6));
        assert_eq!(t.last_hour, tally(1, 0));
        assert_eq!(t.last_day, tally(1, 0));
        // Within a minute: a rollover to the next minute keeps both in the hour.
        r.count("eu", true, at(T0 + 24 * 3600 + 61));
        let t = r.get("eu", at(T0 + 24 * 3600 + 62));
        assert_eq!(t.last_hour, tally(1, 1));
        assert_eq!(t.last_day, tally(1, 1));
    }
}
