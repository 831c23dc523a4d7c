//! What a driver feeds into a stub besides messages and ticks.
//!
//! Owns [`ExecutorEvent`] (news from the task runtime) and [`LinkEvent`]
//! (news from the transport). Plain data.

use crate::state::{Checkpoint, FailKind, Outcome, OutputChunk, StateRef};

/// News from the side's executor (the task runtime driven by the driver).
///
/// The executor contract: after every batch of steps (one step, or as many
/// as the action's [`crate::Batch`] allows) the executor stops at the point
/// and reports [`ExecutorEvent::Reached`]; it runs on only when the stub
/// says [`crate::Action::Continue`] (or `Run`). So "pause at the next point"
/// is simply the stub not saying `Continue` (and [`crate::Action::Yield`]
/// while a batch runs). Output is reported per step, by point, so that
/// every point's output is delivered once however the steps were batched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorEvent {
    /// A batch ended: the executor is paused at `state`. `output` is what
    /// each step wrote (stdout and stderr, framed by the driver), one chunk
    /// for every point after the batch's start up to `state`, in order.
    Reached {
        /// The point reached and its digest.
        state: StateRef,
        /// The batch's output, a chunk per point.
        output: Vec<OutputChunk>,
    },
    /// The last step ended and the task finished with `outcome` at `state`.
    Finished {
        /// The final point and its digest.
        state: StateRef,
        /// The batch's output, a chunk per point.
        output: Vec<OutputChunk>,
        /// The exit status (or failure).
        outcome: Outcome,
    },
    /// A step of the batch that started at `at` failed (a trap or a
    /// limit). By determinism it would fail the same way anywhere, so this
    /// ends the task, at `at`: the points the batch passed before the
    /// failing step were never captured.
    Failed {
        /// The point the batch started from.
        at: StateRef,
        /// What stopped it.
        kind: FailKind,
        /// Why, for the user.
        reason: String,
        /// The output of the batch's steps before the failing one, a chunk
        /// per point (the user sees everything an uninterrupted run shows).
        output: Vec<OutputChunk>,
    },
    /// The answer to [`crate::Action::Capture`].
    Captured(Checkpoint),
    /// [`crate::Action::Capture`] of `state` could not be done (the store
    /// moved on to a newer state before the request was served). The stub
    /// forgets the request and asks again for whatever it holds then.
    CaptureFailed {
        /// The state that was asked for.
        state: StateRef,
    },
}

/// News from the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A connection to the peer is up (the local side may now say `Hello`).
    Connected,
    /// The connection is gone (closed, reset or timed out). The stub treats
    /// the session as lost at once.
    Lost,
}
