//! The task's random number generator, for `random_get`.
//!
//! This file owns the generator only. It is BLAKE3 in keyed XOF mode: the
//! key is derived from the task's seed, and the whole generator state is the
//! key plus the number of bytes drawn so far, so it is trivially captured
//! and restored, and the stream does not depend on how the guest splits its
//! requests. It must not touch guest memory or other host state.

use serde::{Deserialize, Serialize};

/// Context string for deriving the generator key from the seed; changing it
/// changes every task's random stream.
const KEY_CONTEXT: &str = "baton wasi random_get v1";

/// A seeded CSPRNG whose state is `(key, offset)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rng {
    key: [u8; 32],
    offset: u64,
}

impl Rng {
    /// The generator for `seed`, at the start of its stream.
    pub(crate) fn new(seed: u64) -> Self {
        Rng {
            key: blake3::derive_key(KEY_CONTEXT, &seed.to_le_bytes()),
            offset: 0,
        }
    }

    /// Fills `buf` with the next `buf.len()` bytes of the stream.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut reader = blake3::Hasher::new_keyed(&self.key).finalize_xof();
        reader.set_position(self.offset);
        reader.fill(buf);
        self.offset = self.offset.wrapping_add(buf.len() as u64);
    }

    /// Bytes drawn so far.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_however_split() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut whole = [0u8; 100];
        a.fill(&mut whole);
        let mut parts = [0u8; 100];
        let (x, y) = parts.split_at_mut(37);
        b.fill(x);
        b.fill(y);
        assert_eq!(whole, parts);
        assert_eq!(a, b);
        assert_eq!(a.offset(), 100);
    }

    #[test]
    fn different_seed_different_stream() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(2);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn restored_generator_continues_the_stream() {
        let mut a = Rng::new(42);
        let mut first = [0u8; 10];
        a.fill(&mut first);
        let mut b = a.clone();
        let (mut x, mut y) = ([0u8; 10], [0u8; 10]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(first, x);
    }
}
