//! What each side persists, and the requests that persist it.
//!
//! Owns [`PersistRequest`], [`StateWrite`] and the two journal records
//! ([`LocalRecord`], [`RemoteRecord`]): exactly what DESIGN §8 says a side
//! needs to go on after a crash (newest state, epoch and responsibility,
//! committed output, module). A stub emits a request; the driver writes it
//! atomically and fsyncs, then reports `handle_persisted(seq)`. A stub never
//! acknowledges anything to its peer before the driver said it is durable.
//! This module holds data and its encoding only. Records written by earlier
//! releases must keep decoding (see [`crate::codec`]): a crash must not cost
//! a task its journal because baton was upgraded in between.

use serde::{Deserialize, Serialize};

use crate::codec::{decode_record, encode_record, DecodeError};
use crate::message::{Finish, Proposal, WireTiming};
use crate::roles::Agreement;
use crate::state::{Blob, Checkpoint, OutputChunk, Point, StateRef};

/// A state to make durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateWrite {
    /// A checkpoint received from the peer. If it is a delta, its base is
    /// the newest state this side's store holds (the stub checked).
    Received(Checkpoint),
    /// A state this side's own executor reached and is paused at: the
    /// driver captures it from the executor however it likes (it has it
    /// live). Nothing here for the peer.
    Own(StateRef),
}

impl StateWrite {
    /// The state being written.
    pub fn state(&self) -> StateRef {
        match self {
            StateWrite::Received(c) => c.state,
            StateWrite::Own(s) => *s,
        }
    }
}

/// One atomic write.
///
/// The store keeps the newest state (highest point) and whatever a delta of
/// it needs; an older state never replaces a newer one. `record` replaces
/// the side's record; `output` is appended (remote only) and may be dropped
/// once a later record's `output_acked` covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistRequest {
    /// Sequence number: requests complete in order.
    pub seq: u64,
    /// The side's record, replacing the previous one.
    pub record: Record,
    /// A state to store, if any.
    pub state: Option<StateWrite>,
    /// Remote only: output to keep until the local side has it.
    pub output: Vec<OutputChunk>,
    /// Remote only: the module's bytes to store (its digest is in the
    /// config; the driver checks it before storing).
    pub module: Option<Blob>,
}

/// A side's journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The local side's record.
    Local(LocalRecord),
    /// The remote side's record.
    Remote(RemoteRecord),
}

/// What the local side needs after a crash (`baton resume`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The agreement in force.
    pub agreement: Agreement,
    /// The agreement was a takeover (made alone).
    pub takeover: bool,
    /// Highest epoch or session id minted so far (never reused).
    pub minted: u64,
    /// A proposal sent but not known to be accepted: after a crash the
    /// local side must assume the remote may have accepted it.
    pub pending: Option<Proposal>,
    /// The newest durable state in the store.
    pub durable: Option<StateRef>,
    /// The task finished (everything was delivered).
    pub finished: Option<Finish>,
    /// The user asked to run locally ("migrate back") until told otherwise.
    pub pinned_local: bool,
}

/// What the remote side needs after a crash (agent restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The agreement in force.
    pub agreement: Agreement,
    /// The newest durable state in the store.
    pub durable: Option<StateRef>,
    /// Output through this point has been delivered by the local side and
    /// may be dropped.
    pub output_acked: Point,
    /// The task finished here, with its final state.
    pub finished: Option<Finish>,
    /// The local side has the final state and output; the task may be
    /// forgotten.
    pub handed_back: bool,
    /// The module is stored.
    pub has_module: bool,
    /// The timing of the last session.
    pub timing: WireTiming,
}

impl LocalRecord {
    /// Encodes the record (versioned frame).
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Decodes a record.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] if the bytes are not a valid record frame.
    pub fn decode(bytes: &[u8]) -> Result<LocalRecord, DecodeError> {
        decode_record(bytes)
    }
}

impl RemoteRecord {
    /// Encodes the record (versioned frame).
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Decodes a record.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] if the bytes are not a valid record frame.
    pub fn decode(bytes: &[u8]) -> Result<RemoteRecord, DecodeError> {
        decode_record(bytes)
    }
}
