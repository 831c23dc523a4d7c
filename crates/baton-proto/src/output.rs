//! What a stub asks of its driver, and what it tells the user.
//!
//! Owns [`Action`] (things the driver must do: drive the executor, persist,
//! deliver output, finish), [`Transmit`] (messages to send) and [`Event`]
//! (the user-facing event log of DESIGN §12). Plain data.

use core::time::Duration;

use crate::journal::PersistRequest;
use crate::message::{Channel, ErrorCode, Message};
use crate::roles::{Epoch, Mode, Side};
use crate::state::{Digest, Outcome, OutputChunk, Point, StateRef};

/// Something the driver must do, in the order the stub emits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start executing from `from`. If the executor is paused exactly at
    /// `from`, just run the next step; otherwise restore `from` from the
    /// store (it is always a state this side holds) and run from there. If
    /// `from` is the task's final state, report
    /// [`crate::ExecutorEvent::Finished`] at once.
    Run {
        /// The state to run from.
        from: StateRef,
        /// How many steps to run before reporting.
        batch: Batch,
    },
    /// The executor is paused at a point: run the next step (or steps, as
    /// `batch` allows).
    Continue {
        /// How many steps to run before reporting.
        batch: Batch,
    },
    /// End the batch in flight at the next point (the stub wants the
    /// executor back: a migration, a reconfiguration, a drain). A step in
    /// flight still runs to its end.
    Yield,
    /// Stop executing: abandon any step in flight and stay idle.
    Stop,
    /// Produce a checkpoint of `state` (from the paused executor, or from
    /// the store if the executor is elsewhere) and hand it back with
    /// [`crate::ExecutorEvent::Captured`]. Make it a delta against `base` if
    /// you can, else a full checkpoint. The executor stays where it is.
    Capture {
        /// The state to encode.
        state: StateRef,
        /// The preferred delta base (a state the peer durably holds).
        base: Option<StateRef>,
    },
    /// Make this durable (atomically, fsynced), then call
    /// `handle_persisted(now, seq)`. Requests complete in order.
    Persist(Box<PersistRequest>),
    /// Local side only: write this output for the user now, and remember
    /// durably that it was written (the driver tells the stub the newest
    /// delivered point on recovery).
    Deliver(OutputChunk),
    /// Local side only: the task is over. Write back its files from `state`
    /// (if any), report `outcome`, and exit.
    Finish {
        /// The final state, if the task reached one.
        state: Option<StateRef>,
        /// How it ended.
        outcome: Outcome,
    },
}

/// How far the executor may run before it reports a point: at least one
/// step, then more while `budget` lasts, never past `stop_at`, and never
/// after an [`Action::Yield`]. The points in between are never digested,
/// persisted or shipped: this is how a side syncs at most every
/// `--sync-every` (each step's output is still reported by its point).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Wall time after which no further step starts. Zero: one step.
    pub budget: Duration,
    /// The batch ends at this point at the latest (`--migrate point:N`).
    pub stop_at: Option<Point>,
}

impl Batch {
    /// One step, then report.
    pub const ONE: Batch = Batch {
        budget: Duration::ZERO,
        stop_at: None,
    };
}

/// A message for the peer, with the channel it should travel on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The logical channel (control, bulk, output).
    pub channel: Channel,
    /// The message.
    pub message: Message,
}

impl Transmit {
    pub(crate) fn new(message: Message) -> Transmit {
        Transmit {
            channel: message.channel(),
            message,
        }
    }
}

/// Something for the user's event log (`--events`, DESIGN §12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A point was reached (on either side, as far as this stub knows).
    Point {
        /// The point and its digest.
        state: StateRef,
        /// Where it was reached.
        side: Side,
    },
    /// The executor moved.
    Migrated {
        /// The old executor.
        from: Side,
        /// The new executor.
        to: Side,
        /// The point the new executor starts from.
        point: Point,
        /// How long no side executed (estimated by the local side).
        downtime: Duration,
    },
    /// Responsibility was (re-)established with a new epoch.
    Responsibility {
        /// The point it took effect at.
        point: Point,
        /// The responsible side.
        holder: Side,
        /// The executor.
        executor: Side,
        /// The mode.
        mode: Mode,
        /// The new epoch.
        epoch: Epoch,
        /// True if the local side took over alone (the remote stayed away).
        takeover: bool,
    },
    /// The session was lost.
    Disconnected {
        /// The newest point this side knows of.
        point: Point,
        /// The agreed executor at that moment.
        executor: Side,
        /// The agreed responsible side.
        holder: Side,
        /// Steps the non-executing side lagged behind (the most that async
        /// mode can lose).
        lag: u64,
    },
    /// This side started executing on its own after a disconnection (a
    /// failover or a takeover).
    Resumed {
        /// This side.
        side: Side,
        /// The point it resumed from.
        point: Point,
        /// Steps known to have been done beyond that point and now redone.
        lost_steps: u64,
    },
    /// A session was re-established; the newest consistent state wins.
    Reconnected {
        /// The local side's newest point.
        point_local: Option<Point>,
        /// The remote side's newest point.
        point_remote: Option<Point>,
        /// The side holding the newer state.
        winner: Side,
    },
    /// The two sides computed different digests for the same point. The
    /// task is stopped; nothing is merged.
    Divergence {
        /// The point.
        point: Point,
        /// The local side's digest.
        local: Digest,
        /// The remote side's digest.
        remote: Digest,
    },
    /// The task finished.
    Finished {
        /// How.
        outcome: Outcome,
        /// At which point.
        point: Point,
        /// On which side the final step ran (as far as this stub knows).
        side: Side,
    },
    /// The peer reported a fatal error.
    PeerError {
        /// What kind.
        code: ErrorCode,
        /// Its explanation.
        text: String,
    },
}

/// The newest of two optional states (by point).
pub(crate) fn newest(a: Option<StateRef>, b: Option<StateRef>) -> Option<StateRef> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.point > x.point { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Does an optional state reach point `p` (nothing reaches no point)?
pub(crate) fn reaches(s: Option<StateRef>, p: Point) -> bool {
    s.is_some_and(|s| s.point >= p)
}

/// The point of an optional state, or 0.
pub(crate) fn point_of(s: Option<StateRef>) -> Point {
    s.map_or(Point(0), |s| s.point)
}

/// Digest helper for events: the digest of an optional state.
#[allow(dead_code)]
pub(crate) fn digest_of(s: Option<StateRef>) -> Option<Digest> {
    s.map(|s| s.digest)
}

impl Event {
    /// The `responsibility` event for an agreement reached on `p` (not a
    /// takeover).
    pub(crate) fn agreed(p: &crate::message::Proposal) -> Event {
        Event::Responsibility {
            point: p.anchor.point,
            holder: p.assignment.responsible,
            executor: p.assignment.executor,
            mode: p.assignment.mode,
            epoch: p.epoch,
            takeover: false,
        }
    }
}
