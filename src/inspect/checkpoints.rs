//! Checkpoints of a decoding stage: which input offsets produced which output offsets, and
//! the release rule that maps "output judged up to here" back to "input that may go". Shared
//! by the stages of the decoding chain (`charset`, `transfer`) without their depending on the
//! chain itself.

use std::collections::VecDeque;

/// Checkpoints `(input consumed, output produced)` of a decoding stage, and the release rule:
/// an input prefix may go once every byte of its output is judged, less `lag` bytes that may
/// still hold the start of an unfinished unit.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    list: VecDeque<(u64, u64)>,
    released: u64,
    lag: u64,
}

impl Checkpoints {
    pub(crate) fn new(lag: u64) -> Self {
        Checkpoints {
            list: VecDeque::new(),
            released: 0,
            lag,
        }
    }

    /// Records that `input` bytes have produced `output` bytes (both totals).
    pub(crate) fn push(&mut self, input: u64, output: u64) {
        if self.list.back().is_none_or(|&(i, _)| input > i) {
            self.list.push_back((input, output));
        }
    }

    /// The input offset that may be released when the output is judged up to `frontier`.
    pub(crate) fn release_for(&mut self, frontier: u64) -> u64 {
        let mut best = None;
        while let Some(&(e, d)) = self.list.front() {
            if d > frontier {
                break;
            }
            best = Some(e);
            if self.list.len() > 1 && self.list[1].1 <= frontier {
                self.list.pop_front();
            } else {
                break;
            }
        }
        if let Some(e) = best {
            self.released = self.released.max(e.saturating_sub(self.lag));
        }
        self.released
    }
}
