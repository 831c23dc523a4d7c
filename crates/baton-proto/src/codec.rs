//! The binary encoding of messages and journal records.
//!
//! Owns the wire format: a frame is two magic bytes, one version byte, then
//! the value in [postcard](https://docs.rs/postcard) encoding, with nothing
//! after it. Decoding is bounded: the frame's size is checked before anything
//! is read, postcard never allocates more than the input holds, and the
//! decoded value is checked against [`Limits`]. Every failure is a
//! [`DecodeError`]; nothing here panics on any input. This module must not
//! interpret messages beyond those bounds.
//!
//! Within one [`VERSION`] the encoding only grows, so that journals written
//! by earlier releases keep decoding: a type may gain an enum variant at the
//! end (postcard writes a variant's position), and a form that is no longer
//! written stays readable ([`crate::Outcome`]'s legacy failure, variant 1).
//! A decoder of an earlier release refuses a frame that uses a newer variant
//! as [`DecodeError::Malformed`]. `tests/golden.rs` pins the bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::message::{Message, Summary};
use crate::state::Outcome;

/// The magic bytes that open every protocol message frame.
pub const MESSAGE_MAGIC: [u8; 2] = *b"bP";
/// The magic bytes that open every journal record frame.
pub const RECORD_MAGIC: [u8; 2] = *b"bJ";
/// The version of the encoding. A decoder refuses any other.
pub const VERSION: u8 = 1;

const HEADER: usize = 3;

/// Bounds applied when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes (checkpoints and modules included).
    pub max_message: usize,
    /// Longest text (task id, error text, failure message), in bytes.
    pub max_text: usize,
    /// Most output chunks in one message.
    pub max_chunks: usize,
    /// Largest opaque `meta` blob in a `Hello`, in bytes.
    pub max_meta: usize,
}

impl Default for Limits {
    /// 1 GiB frames, 4 KiB texts, 4096 chunks, 64 KiB meta.
    fn default() -> Limits {
        Limits {
            max_message: 1 << 30,
            max_text: 4096,
            max_chunks: 4096,
            max_meta: 64 << 10,
        }
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Fewer bytes than a frame header.
    #[error("truncated frame: {len} bytes, a frame needs at least {HEADER}")]
    Truncated {
        /// How many bytes there were.
        len: usize,
    },
    /// The frame does not start with the expected magic bytes.
    #[error("not a baton frame (bad magic bytes)")]
    BadMagic,
    /// The frame's version is not one this decoder knows.
    #[error("unsupported encoding version {found} (this build speaks {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The frame is larger than [`Limits::max_message`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes left over after the value.
    #[error("{count} unexpected bytes after the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The value decoded but breaks a limit (named).
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

fn encode_frame<T: Serialize>(magic: [u8; 2], value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&magic);
    out.push(VERSION);
    // postcard only fails for types whose length is unknown up front or for
    // a full fixed buffer; neither can happen with these types and a Vec.
    postcard::to_extend(value, out).unwrap_or_else(|_| unreachable!("postcard to Vec"))
}

fn decode_frame<T: DeserializeOwned>(
    magic: [u8; 2],
    bytes: &[u8],
    limits: &Limits,
) -> Result<T, DecodeError> {
    if bytes.len() > limits.max_message {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_message,
        });
    }
    let (header, body) = match bytes.split_first_chunk::<HEADER>() {
        Some(split) => split,
        None => return Err(DecodeError::Truncated { len: bytes.len() }),
    };
    if header[..2] != magic {
        return Err(DecodeError::BadMagic);
    }
    if header[2] != VERSION {
        return Err(DecodeError::UnsupportedVersion { found: header[2] });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

impl Message {
    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(MESSAGE_MAGIC, self)
    }

    /// Decodes one frame.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]: the frame is too short, too large, of another
    /// version, malformed, followed by extra bytes, or breaks a [`Limits`]
    /// bound. Never panics.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
        let msg: Message = decode_frame(MESSAGE_MAGIC, bytes, limits)?;
        msg.validate(limits)?;
        Ok(msg)
    }

    /// Checks the bounds that the encoding itself cannot express.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Invalid`] naming the broken bound.
    pub fn validate(&self, limits: &Limits) -> Result<(), DecodeError> {
        let text = |s: &str, what: &'static str| {
            if s.len() > limits.max_text {
                Err(DecodeError::Invalid(what))
            } else {
                Ok(())
            }
        };
        let summary = |s: &Summary| match &s.finished {
            Some(f) => outcome_ok(&f.outcome, limits),
            None => Ok(()),
        };
        match self {
            Message::Hello(h) => {
                text(&h.task.0, "task id too long")?;
                if h.meta.len() > limits.max_meta {
                    return Err(DecodeError::Invalid("hello meta too large"));
                }
                if h.timing.heartbeat_nanos == 0 || h.timing.disconnect_after_nanos == 0 {
                    return Err(DecodeError::Invalid("zero timing"));
                }
                summary(&h.summary)
            }
            Message::Welcome(w) => summary(&w.summary),
            Message::Heartbeat(h) => summary(&h.summary),
            Message::Output(o) => {
                if o.chunks.len() > limits.max_chunks {
                    return Err(DecodeError::Invalid("too many output chunks"));
                }
                Ok(())
            }
            Message::Finished(f) => outcome_ok(&f.finish.outcome, limits),
            Message::Error(e) => text(&e.text, "error text too long"),
            Message::Goodbye(_)
            | Message::Module(_)
            | Message::Checkpoint(_)
            | Message::Ack(_)
            | Message::Propose(_)
            | Message::Accept(_)
            | Message::Reject(_) => Ok(()),
        }
    }
}

fn outcome_ok(o: &Outcome, limits: &Limits) -> Result<(), DecodeError> {
    match o {
        Outcome::Failed { reason, .. } if reason.len() > limits.max_text => {
            Err(DecodeError::Invalid("failure message too long"))
        }
        _ => Ok(()),
    }
}

/// Encodes a journal record (see [`crate::journal`]) as one frame.
pub(crate) fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    encode_frame(RECORD_MAGIC, value)
}

/// Decodes a journal record frame.
pub(crate) fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_frame(RECORD_MAGIC, bytes, &Limits::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Accept, ErrorCode, ErrorMsg};
    use crate::roles::{Epoch, SessionId};

    fn accept() -> Message {
        Message::Accept(Accept {
            session: SessionId(7),
            epoch: Epoch(9),
        })
    }

    #[test]
    fn round_trip() {
        let m = accept();
        let bytes = m.encode();
        assert_eq!(&bytes[..3], b"bP\x01");
        assert_eq!(Message::decode(&bytes, &Limits::default()).ok(), Some(m));
    }

    #[test]
    fn rejects_bad_frames() {
        let l = Limits::default();
        let good = accept().encode();
        assert!(matches!(
            Message::decode(&good[..2], &l),
            Err(DecodeError::Truncated { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'x';
        assert!(matches!(
            Message::decode(&bad, &l),
            Err(DecodeError::BadMagic)
        ));
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(matches!(
            Message::decode(&bad, &l),
            Err(DecodeError::UnsupportedVersion { found: 2 })
        ));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            Message::decode(&bad, &l),
            Err(DecodeError::TrailingBytes { count: 1 })
        ));
        let small = Limits {
            max_message: 4,
            ..l
        };
        assert!(matches!(
            Message::decode(&good, &small),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            Message::decode(&good[..4], &l),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn enforces_text_limit() {
        let m = Message::Error(ErrorMsg {
            session: SessionId(1),
            code: ErrorCode::Internal,
            text: "x".repeat(5000),
        });
        let e = Message::decode(&m.encode(), &Limits::default());
        assert!(matches!(e, Err(DecodeError::Invalid(_))));
    }
}
