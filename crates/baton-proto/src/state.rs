//! The lineage vocabulary: points, digests, checkpoints, output.
//!
//! Owns the value types that name a task's states ([`Point`], [`Digest`],
//! [`StateRef`]) and carry them ([`Checkpoint`], [`OutputChunk`], [`Blob`]),
//! and how a task ends ([`Outcome`], [`FailKind`]).
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
/// Encoded on the wire as a length-prefixed byte string. Made from a
/// `Vec<u8>` without copying it: a checkpoint of a large memory is tens of
/// megabytes, and a copy per checkpoint cost as much resident memory again
/// and a page fault per page.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(Arc<Vec<u8>>);

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
        Blob(Arc::new(v))
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Blob {
        Blob(Arc::new(v.to_vec()))
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
///
/// Encoded through a private wire form whose variant numbers are the format:
/// number 1 is the failure as releases before [`FailKind`] wrote it (the
/// kind as a `"[trap] "` prefix of the text), still read and turned into
/// [`Outcome::Failed`], never written; number 3 is the typed failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OutcomeWire", into = "OutcomeWire")]
pub enum Outcome {
    /// The task finished with this exit status.
    Exit(i32),
    /// A step failed. Determinism means the step fails the same way on
    /// either side, so this ends the task.
    Failed {
        /// What stopped it (the local side maps it to an exit status).
        kind: FailKind,
        /// Why, for the user (at most [`crate::Limits::max_text`] bytes on
        /// the wire).
        reason: String,
    },
    /// The two sides computed different digests for the same point; nothing
    /// was merged and the task was stopped.
    Diverged {
        /// The point where the digests differ.
        point: Point,
    },
}

/// What made a step fail, as far as the side that ran it could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailKind {
    /// The task trapped: a bug in the task or in its input.
    Trap,
    /// A limit stopped it (step time, memory).
    Limit,
    /// Anything else: the host could not run it.
    Error,
}

impl FailKind {
    /// The kind's name: `"trap"`, `"limit"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::Trap => "trap",
            FailKind::Limit => "limit",
            FailKind::Error => "error",
        }
    }

    /// Splits a failure text of the legacy form (`"[trap] unreachable"`)
    /// into its kind and the text after the tag. A text without a known tag
    /// is an [`FailKind::Error`], kept whole.
    fn from_legacy(mut reason: String) -> (FailKind, String) {
        const TAGS: [(&str, FailKind); 3] = [
            ("[trap] ", FailKind::Trap),
            ("[limit] ", FailKind::Limit),
            ("[error] ", FailKind::Error),
        ];
        for (tag, kind) in TAGS {
            if reason.starts_with(tag) {
                reason.drain(..tag.len());
                return (kind, reason);
            }
        }
        (FailKind::Error, reason)
    }
}

/// The encoding of [`Outcome`]. Postcard writes the variant's position, so
/// these must never be reordered; a new form is appended.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Outcome")]
enum OutcomeWire {
    /// 0.
    Exit(i32),
    /// 1: a failure as written before the kind was typed. Decoded only.
    LegacyFailed(String),
    /// 2.
    Diverged { point: Point },
    /// 3.
    Failed { kind: FailKind, reason: String },
}

impl From<OutcomeWire> for Outcome {
    fn from(w: OutcomeWire) -> Outcome {
        match w {
            OutcomeWire::Exit(code) => Outcome::Exit(code),
            OutcomeWire::LegacyFailed(text) => {
                let (kind, reason) = FailKind::from_legacy(text);
                Outcome::Failed { kind, reason }
            }
            OutcomeWire::Diverged { point } => Outcome::Diverged { point },
            OutcomeWire::Failed { kind, reason } => Outcome::Failed { kind, reason },
        }
    }
}

impl From<Outcome> for OutcomeWire {
    fn from(o: Outcome) -> OutcomeWire {
        match o {
            Outcome::Exit(code) => OutcomeWire::Exit(code),
            Outcome::Failed { kind, reason } => OutcomeWire::Failed { kind, reason },
            Outcome::Diverged { point } => OutcomeWire::Diverged { point },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `text` the way releases before the typed kind did.
    fn legacy(text: &str) -> Vec<u8> {
        postcard::to_allocvec(&OutcomeWire::LegacyFailed(text.into())).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Outcome> {
        postcard::from_bytes(bytes).ok()
    }

    fn failed(kind: FailKind, reason: &str) -> Option<Outcome> {
        Some(Outcome::Failed {
            kind,
            reason: reason.into(),
        })
    }

    #[test]
    fn legacy_failures_recover_their_kind() {
        let cases = [
            ("[trap] unreachable", FailKind::Trap, "unreachable"),
            ("[limit] step took 3s", FailKind::Limit, "step took 3s"),
            (
                "[error] no task to step",
                FailKind::Error,
                "no task to step",
            ),
            ("no tag at all", FailKind::Error, "no tag at all"),
            ("[trap]no space", FailKind::Error, "[trap]no space"),
            ("[TRAP] upper", FailKind::Error, "[TRAP] upper"),
            ("", FailKind::Error, ""),
            ("[trap] ", FailKind::Trap, ""),
        ];
        for (text, kind, reason) in cases {
            assert_eq!(decode(&legacy(text)), failed(kind, reason), "{text:?}");
        }
    }

    #[test]
    fn typed_failures_round_trip_and_never_use_the_legacy_form() {
        for kind in [FailKind::Trap, FailKind::Limit, FailKind::Error] {
            // A reason that looks tagged stays as it is: only the legacy
            // form is parsed.
            let o = Outcome::Failed {
                kind,
                reason: "[trap] looks tagged".into(),
            };
            let bytes = postcard::to_allocvec(&o).unwrap_or_default();
            assert_eq!(bytes.first(), Some(&3));
            assert_eq!(decode(&bytes), Some(o));
        }
    }

    #[test]
    fn other_outcomes_keep_their_encoding() {
        let exit = postcard::to_allocvec(&Outcome::Exit(-1)).unwrap_or_default();
        assert_eq!(exit, [0, 1]);
        let div = Outcome::Diverged { point: Point(300) };
        let bytes = postcard::to_allocvec(&div).unwrap_or_default();
        assert_eq!(bytes, [2, 0xac, 0x02]);
        assert_eq!(decode(&bytes), Some(div));
    }

    #[test]
    fn unknown_kinds_and_forms_are_refused() {
        assert_eq!(decode(&[3, 3, 0]), None); // kind 3 does not exist
        assert_eq!(decode(&[4]), None); // form 4 does not exist
        assert_eq!(decode(&[1, 5, b'a']), None); // text shorter than its length
    }

    #[test]
    fn kind_names() {
        let names = [FailKind::Trap, FailKind::Limit, FailKind::Error].map(FailKind::as_str);
        assert_eq!(names, ["trap", "limit", "error"]);
    }
}
