//! The side's memory of the lineage, for divergence checks.
//!
//! Owns [`Lineage`]: the most recent (point, digest) pairs this side has seen
//! (reached, received or reported by the peer). Determinism means each point
//! has one digest; a second, different one is a divergence, which the stub
//! reports and never merges. Bounded; never persisted (after a crash only the
//! durable state is known, and that is enough).

use std::collections::BTreeMap;

use crate::state::{Digest, Point, StateRef};

/// A bounded map from point to digest.
#[derive(Clone, Debug)]
pub(crate) struct Lineage {
    known: BTreeMap<Point, Digest>,
    window: usize,
}

impl Lineage {
    pub(crate) fn new(window: usize) -> Lineage {
        Lineage {
            known: BTreeMap::new(),
            window: window.max(1),
        }
    }

    /// The digest this side knows for `state.point`, if it differs.
    pub(crate) fn conflict(&self, state: StateRef) -> Option<Digest> {
        self.known
            .get(&state.point)
            .copied()
            .filter(|d| *d != state.digest)
    }

    /// Remembers `state`; returns the digest it conflicts with, if any (then
    /// the known one is kept).
    pub(crate) fn record(&mut self, state: StateRef) -> Option<Digest> {
        if let Some(mine) = self.conflict(state) {
            return Some(mine);
        }
        self.known.insert(state.point, state.digest);
        while self.known.len() > self.window {
            self.known.pop_first();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: u64, d: u8) -> StateRef {
        StateRef::new(Point(p), Digest([d; 32]))
    }

    #[test]
    fn detects_and_forgets() {
        let mut l = Lineage::new(2);
        assert_eq!(l.record(s(1, 1)), None);
        assert_eq!(l.record(s(1, 1)), None);
        assert_eq!(l.record(s(1, 2)), Some(Digest([1; 32])));
        l.record(s(2, 2));
        l.record(s(3, 3));
        assert_eq!(l.conflict(s(1, 9)), None, "forgotten beyond the window");
        assert_eq!(l.conflict(s(3, 9)), Some(Digest([3; 32])));
    }
}
