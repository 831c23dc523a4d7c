//! The simulated task: a deterministic computation whose state at point k
//! is one 64-bit value, with a digest, an output per step and checkpoints
//! (full, or a delta that is only correct on its base).
//!
//! A delta applied to the wrong base yields a wrong value, and so a state
//! whose digest is not the lineage's: exactly the fork that invariant I1
//! forbids. The simulator knows the one true lineage and checks every state
//! it sees against it.

use crate::sim::rng::mix;
use crate::state::{Blob, Checkpoint, Digest, Outcome, Point, StateRef};

/// The one true lineage of a simulated task.
#[derive(Clone, Debug)]
pub(crate) struct FakeTask {
    values: Vec<u64>,
}

impl FakeTask {
    pub(crate) fn new(seed: u64, steps: u64) -> FakeTask {
        let mut values = Vec::with_capacity(steps as usize + 1);
        let mut v = mix(seed ^ 0x5eed);
        values.push(v);
        for k in 0..steps {
            v = step(v, Point(k));
            values.push(v);
        }
        FakeTask { values }
    }

    /// The final point.
    pub(crate) fn last(&self) -> Point {
        Point(self.values.len() as u64 - 1)
    }

    /// The true value at `p`.
    pub(crate) fn value(&self, p: Point) -> Option<u64> {
        self.values.get(p.0 as usize).copied()
    }

    pub(crate) fn state(&self, p: Point) -> StateRef {
        StateRef::new(p, digest(p, self.value(p).unwrap_or(0)))
    }

    pub(crate) fn outcome(&self) -> Outcome {
        Outcome::Exit((self.values.last().copied().unwrap_or(0) % 7) as i32)
    }

    /// The output of the step ending at `p`.
    pub(crate) fn output(&self, p: Point) -> Blob {
        output(p, self.value(p).unwrap_or(0))
    }
}

/// One step of the computation.
pub(crate) fn step(v: u64, from: Point) -> u64 {
    mix(v ^ from.0.wrapping_mul(0x9e37_79b9))
}

/// The digest of the state `(p, v)`.
pub(crate) fn digest(p: Point, v: u64) -> Digest {
    let mut d = [0u8; 32];
    let mut x = v ^ p.0.rotate_left(17);
    for chunk in d.chunks_mut(8) {
        x = mix(x.wrapping_add(0x1234_5678));
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    Digest(d)
}

/// What the step ending at `p` with value `v` writes.
pub(crate) fn output(p: Point, v: u64) -> Blob {
    Blob::from(format!("{}:{:04x}\n", p.0, v & 0xffff).into_bytes())
}

/// Encodes `(p, v)` fully, or as a delta against `base = (bp, bv)`,
/// padded to `size` bytes (the simulator scales real sizes down, so that
/// what a stub measures matches what the network charges).
pub(crate) fn encode(p: Point, v: u64, base: Option<(StateRef, u64)>, size: usize) -> Checkpoint {
    let mut bytes = Vec::with_capacity(size.max(17));
    match base {
        None => {
            bytes.push(0);
            bytes.extend_from_slice(&p.0.to_le_bytes());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Some((_, bv)) => {
            bytes.push(1);
            bytes.extend_from_slice(&p.0.to_le_bytes());
            bytes.extend_from_slice(&(v ^ bv).to_le_bytes());
        }
    }
    bytes.resize(size.max(17), 0);
    Checkpoint {
        state: StateRef::new(p, digest(p, v)),
        base: base.map(|(b, _)| b),
        bytes: Blob::from(bytes),
    }
}

/// Decodes a checkpoint, applying a delta to `base_value`. `None` if the
/// bytes are not a checkpoint, or a delta comes without a base.
pub(crate) fn decode(bytes: &[u8], base_value: Option<u64>) -> Option<(Point, u64)> {
    let (&tag, rest) = bytes.split_first()?;
    let p = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let x = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    match tag {
        0 => Some((Point(p), x)),
        1 => Some((Point(p), x ^ base_value?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_need_their_base() {
        let t = FakeTask::new(1, 10);
        let (b, v) = (t.state(Point(3)), t.value(Point(3)).unwrap_or(0));
        let p7 = t.value(Point(7)).unwrap_or(0);
        let cp = encode(Point(7), p7, Some((b, v)), 100);
        assert_eq!(decode(cp.bytes.as_bytes(), Some(v)), Some((Point(7), p7)));
        let wrong = decode(cp.bytes.as_bytes(), t.value(Point(4))).map(|x| x.1);
        assert_ne!(wrong, Some(p7));
        assert_eq!(cp.state, t.state(Point(7)));
    }
}
