//! Who does what: sides, modes, epochs and the agreed assignment.
//!
//! Owns [`Side`], [`Mode`], [`Epoch`], [`SessionId`], [`Assignment`] and
//! [`Agreement`]: the facts the two stubs agree on. This module holds plain
//! data only; the rules for changing it live in the stubs.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::state::StateRef;

/// One of the two sides of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The side of `baton run`, where the user is.
    Local,
    /// The agent the task was extended onto.
    Remote,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }

    /// `"local"` or `"remote"`, as in the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How state flows from the executor to the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// The executor does not pass point k until the peer durably holds k.
    Sync,
    /// The executor never waits; the newest state is streamed and points that
    /// arrive while a checkpoint is in flight are coalesced.
    Async,
}

impl Mode {
    /// `"sync"` or `"async"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A number that grows with every change of executor or responsibility.
///
/// Only the local stub mints epochs (and session ids, from the same counter),
/// so no two different assignments ever carry the same epoch. A stub rejects
/// proposals and acceptances whose epoch is not newer than what it holds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

/// Identifies one session: the span between a `Hello` and its loss. Messages
/// of other sessions are ignored (they are stale).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SessionId(pub u64);

/// Who executes, who is responsible, and how state flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    /// The side that runs steps.
    pub executor: Side,
    /// The side that continues executing if the connection is lost.
    pub responsible: Side,
    /// How state flows from the executor to the other side.
    pub mode: Mode,
}

impl Assignment {
    /// Everything on the local side: how every task starts.
    pub fn local(mode: Mode) -> Assignment {
        Assignment {
            executor: Side::Local,
            responsible: Side::Local,
            mode,
        }
    }
}

/// An assignment both stubs recorded, with its epoch and the state it starts
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The epoch of this agreement.
    pub epoch: Epoch,
    /// Who does what from the anchor on.
    pub assignment: Assignment,
    /// The state at which the assignment took effect (the executor starts
    /// from it). `None` only for the initial, implicit agreement.
    pub anchor: Option<StateRef>,
}
