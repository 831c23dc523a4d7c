//! The lineage vocabulary: points, digests, checkpoints, output.
//!
//! Owns the value types that name a task's states ([`Point`], [`Digest`],
//! [`StateRef`]) and carry them ([`Checkpoint`], [`OutputChunk`], [`Blob`]).
//! To the protocol a checkpoint is opaque bytes plus (point, digest); this
//! module must never look inside the bytes or depend on the task runtime.

use core::fmt;
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A designated point of execution: the boundary between two steps, numbered
/// 0, 1, 2, … Point 0 is the state right after the task was created.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Point(pub u64);

impl Point {
    /// The point after this one.
    pub fn next(self) -> Point {
        Point(self.0.saturating_add(1))
    }

    /// How many steps lie between `earlier` and this point (zero if none).
    pub fn steps_since(self, earlier: Point) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cryptographic hash (BLAKE3 in baton) of the canonical state at a point,
/// or of a module's bytes. The protocol only compares digests; it never
/// computes one.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    /// The full digest in lower-case hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One entry of the lineage: the state at `point` has digest `digest`.
///
/// Determinism means there is only one lineage, so two `StateRef`s with the
/// same point and different digests are a divergence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateRef {
    /// The point.
    pub point: Point,
    /// The digest of the canonical state at that point.
    pub digest: Digest,
}

impl StateRef {
    /// A reference to the state at `point` with `digest`.
    pub fn new(point: Point, digest: Digest) -> StateRef {
        StateRef { point, digest }
    }
}

impl fmt::Debug for StateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{:?}", self.point, self.digest)
    }
}

/// Immutable bytes that are cheap to clone (checkpoints, modules, output).
///
/// Encoded on the wire as a length-prefixed byte string.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(Arc<[u8]>);

impl Blob {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Arc::from(v))
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Blob {
        Blob(Arc::from(v))
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                // Preallocate cautiously: a hostile length must not allocate.
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Blob::from(v))
            }
        }
        d.deserialize_byte_buf(BlobVisitor)
    }
}

/// An encoded state, or a delta from an earlier state, with its identity.
///
/// The bytes are opaque to the protocol (they come from and go to the task
/// runtime). If `base` is `Some`, the bytes are a delta that can only be
/// applied to the state `base`; otherwise they are a full state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The state these bytes encode.
    pub state: StateRef,
    /// The state the delta applies to, or `None` for a full checkpoint.
    pub base: Option<StateRef>,
    /// The encoded checkpoint.
    pub bytes: Blob,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.base {
            Some(b) => write!(
                f,
                "Delta({:?} on {:?}, {}B)",
                self.state,
                b,
                self.bytes.len()
            ),
            None => write!(f, "Full({:?}, {}B)", self.state, self.bytes.len()),
        }
    }
}

/// The output (stdout and stderr, framed by the driver) of the step that
/// ended at `point`, i.e. of the step from `point - 1` to `point`.
///
/// Output is part of the lineage: re-executing a step produces the same bytes,
/// so the local side delivers each point's output exactly once and drops the
/// copies.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The point at the end of the step that produced the bytes.
    pub point: Point,
    /// The bytes, opaque to the protocol.
    pub bytes: Blob,
}

impl fmt::Debug for OutputChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Output({:?}, {}B)", self.point, self.bytes.len())
    }
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The task finished with this exit status.
    Exit(i32),
    /// A step failed (a trap or a limit) with this message. Determinism means
    /// the step fails the same way on either side, so this ends the task.
    Failed(String),
    /// The two sides computed different digests for the same point; nothing
    /// was merged and the task was stopped.
    Diverged {
        /// The point where the digests differ.
        point: Point,
    },
}
